//! TLS: SDS secrets and the transport sockets that use them.
//!
//! Certificates never sit inline in listeners or clusters: each certificate file is one SDS
//! `Secret` (pushed over ADS), and transport sockets name it. A renewed certificate is then a
//! new version of one secret — Envoy serves it to new connections and leaves the listener, its
//! open connections and its filter chain alone. The secrets carry the PEM bytes themselves, not
//! file paths: Envoy may run on another machine or container, and its own file watching misses
//! renewed files outside the watched folder (ENVOY-NOTES).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context,
    secret, subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use super::pb;
use crate::model::{self, Gateway, TlsVersion};

pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// Every secret the gateway's listeners and upstreams name, sorted by name. A file used twice is
/// one secret (the config layer names secrets per file).
pub(super) fn secrets(gw: &Gateway) -> Vec<Secret> {
    let mut out: BTreeMap<String, Secret> = BTreeMap::new();
    let mut add_cert = |c: &model::TlsCertificate| {
        out.entry(c.secret.0.clone())
            .or_insert_with(|| certificate_secret(c));
    };
    for l in &gw.listeners {
        if let Some(tls) = &l.tls {
            tls.certificates.iter().for_each(&mut add_cert);
        }
    }
    for u in gw.upstreams.values() {
        if let Some(c) = u.tls.as_ref().and_then(|t| t.client_certificate.as_ref()) {
            add_cert(c);
        }
    }
    let mut cas: Vec<&model::TrustedCa> = Vec::new();
    for l in &gw.listeners {
        if let Some(auth) = l.tls.as_ref().and_then(|t| t.client_auth.as_ref()) {
            cas.push(&auth.ca);
        }
    }
    for u in gw.upstreams.values() {
        if let Some(t) = &u.tls {
            cas.push(&t.ca);
        }
    }
    for ca in cas {
        out.entry(ca.secret.0.clone())
            .or_insert_with(|| ca_secret(ca));
    }
    out.into_values().collect()
}

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(text.to_owned())),
        ..Default::default()
    }
}

fn certificate_secret(c: &model::TlsCertificate) -> Secret {
    Secret {
        name: c.secret.0.clone(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&c.chain_pem)),
            private_key: Some(inline(c.key_pem.expose_pem())),
            ..Default::default()
        })),
    }
}

fn ca_secret(ca: &model::TrustedCa) -> Secret {
    Secret {
        name: ca.secret.0.clone(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(&ca.pem)),
                ..Default::default()
            },
        )),
    }
}

fn sds(name: &model::SecretName) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.0.clone(),
        sds_config: Some(pb::ads()),
    }
}

fn transport_socket<M: prost::Name>(context: M) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pb::any(context))),
    }
}

fn protocol(v: TlsVersion) -> tls_parameters::TlsProtocol {
    match v {
        TlsVersion::V1_2 => tls_parameters::TlsProtocol::TlSv12,
        TlsVersion::V1_3 => tls_parameters::TlsProtocol::TlSv13,
    }
}

/// TLS termination for a listener's filter chain. Envoy picks the certificate whose SANs match
/// the client's SNI (exact, then wildcard) among all of the context's certificates, and the
/// first one when none matches or the client sends no SNI.
pub(super) fn downstream(tls: &model::ListenerTls, http2: bool) -> TransportSocket {
    let validation = tls.client_auth.as_ref().map(|a| {
        common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(&a
            .ca
            .secret))
    });
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: protocol(tls.min_version) as i32,
                tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: tls
                .certificates
                .iter()
                .map(|c| sds(&c.secret))
                .collect(),
            // ALPN decides the protocol of the connection; the HCM's AUTO codec follows it.
            alpn_protocols: if http2 {
                vec!["h2".to_owned(), "http/1.1".to_owned()]
            } else {
                vec!["http/1.1".to_owned()]
            },
            validation_context_type: validation,
            ..Default::default()
        }),
        require_client_certificate: tls.client_auth.as_ref().map(|a| pb::bool_value(a.required)),
        ..Default::default()
    };
    transport_socket(context)
}

/// TLS origination to an upstream: the CA bundle verifies the chain, and the certificate must
/// name `sni` (Envoy checks no name unless told to).
pub(super) fn upstream(tls: &model::UpstreamTls, http2: bool) -> TransportSocket {
    let context = UpstreamTlsContext {
        sni: tls.sni.clone(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: tls
                .client_certificate
                .iter()
                .map(|c| sds(&c.secret))
                .collect(),
            alpn_protocols: vec![if http2 { "h2" } else { "http/1.1" }.to_owned()],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                                san_type: subject_alt_name_matcher::SanType::Dns as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(string_matcher::MatchPattern::Exact(
                                        tls.sni.clone(),
                                    )),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(&tls.ca.secret)),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    transport_socket(context)
}

/// For a static bootstrap (`envoy --mode validate`, benchmarks): the transport socket names its
/// secrets as static ones (no SDS source), which the bootstrap then carries itself.
pub(super) fn use_static_secrets(ts: &mut TransportSocket) -> Result<(), prost::DecodeError> {
    use prost::Message;
    fn strip(common: &mut CommonTlsContext) {
        for s in &mut common.tls_certificate_sds_secret_configs {
            s.sds_config = None;
        }
        match &mut common.validation_context_type {
            Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                s,
            )) => s.sds_config = None,
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
                if let Some(s) = &mut c.validation_context_sds_secret_config {
                    s.sds_config = None;
                }
            }
            _ => {}
        }
    }
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut ts.config_type else {
        return Ok(());
    };
    if any.type_url == <DownstreamTlsContext as prost::Name>::type_url() {
        let mut c = DownstreamTlsContext::decode(any.value.as_slice())?;
        c.common_tls_context.iter_mut().for_each(strip);
        *any = pb::any(c);
    } else if any.type_url == <UpstreamTlsContext as prost::Name>::type_url() {
        let mut c = UpstreamTlsContext::decode(any.value.as_slice())?;
        c.common_tls_context.iter_mut().for_each(strip);
        *any = pb::any(c);
    }
    Ok(())
}

/// A secret as `render` shows it: private keys replaced, certificates and CAs as they are.
pub(super) fn redacted(secret: &Secret) -> Secret {
    let mut s = secret.clone();
    if let Some(secret::Type::TlsCertificate(c)) = &mut s.r#type {
        c.private_key = Some(inline(REDACTED));
    }
    s
}

/// What stands in for a private key wherever config is shown.
pub const REDACTED: &str = "[redacted]";
