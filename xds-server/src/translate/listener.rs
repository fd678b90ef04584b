//! Listeners -> Envoy listeners, each with one lean, hardened HTTP connection manager whose
//! routes come over RDS (a RouteConfiguration named after the listener).

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};

use super::{
    access_log, authz, cache, cluster::CONNECTION_BUFFER_LIMIT, local_reply, observability, pb,
    rate_limit, tls,
};
use crate::model;

pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Idle downstream connections are closed after an hour (Envoy's edge best practice; Envoy's
/// own default never closes them).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// A client gets 10 s to send its request headers: bounds slowloris-style connection hoarding
/// without touching slow bodies or long responses.
const REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 limits from Envoy's edge best practice: 100 streams per connection, 64 KiB stream
/// and 1 MiB connection windows (Envoy's defaults of 2^31 streams and 256 MiB windows let one
/// client pin a lot of memory).
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
const H2_INITIAL_STREAM_WINDOW: u32 = 64 * 1024;
const H2_INITIAL_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The optional HTTP filters, decided once for all listeners.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HttpFilters<'a> {
    pub cors: bool,
    /// The ext_authz filter, calling ext-authz at these settings.
    pub ext_authz: Option<&'a model::Services>,
    /// The ratelimit filter, calling the service these settings name.
    pub rate_limit: Option<&'a model::Services>,
    /// The ext_proc filter calling response-cache.
    pub cache: Option<&'a model::Services>,
    /// Envoy's OpenTelemetry tracer (not a filter: an HCM setting, decided with them).
    pub tracing: Option<&'a model::Tracing>,
}

pub(super) fn listener(listener: &model::Listener, filters: &HttpFilters<'_>) -> Listener {
    let hcm = http_connection_manager(listener, filters);
    Listener {
        name: listener.name.as_str().to_owned(),
        address: Some(pb::ip_address(listener.address)),
        per_connection_buffer_limit_bytes: Some(pb::u32_value(CONNECTION_BUFFER_LIMIT)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pb::any(hcm))),
            }],
            transport_socket: listener
                .tls
                .as_ref()
                .map(|t| tls::downstream(t, listener.http2)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The HCM. Lean on purpose — every per-request feature costs CPU on every request (tracing,
/// dynamic stats, `x-envoy-*` response headers are all off) — and hardened for untrusted
/// clients.
pub(super) fn http_connection_manager(
    listener: &model::Listener,
    filters: &HttpFilters<'_>,
) -> HttpConnectionManager {
    let name = listener.name.as_str();
    let verifies_clients = listener
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth.is_some());
    let mut http_filters = Vec::new();
    if filters.cors {
        // Does nothing on a route without a CorsPolicy (typed_per_filter_config). Before
        // ext_authz: preflights carry no token and are answered here (see `authz`).
        http_filters.push(http_filter(CORS_FILTER, Cors {}));
    }
    if let Some(services) = filters.ext_authz {
        // Off unless a route turns it on (see `authz`). Before the ratelimit filter, whose
        // `claim:` keys read the metadata ext-authz returns.
        http_filters.push(http_filter(
            authz::EXT_AUTHZ_FILTER,
            authz::filter(services),
        ));
    }
    if let Some(services) = filters.rate_limit {
        // After CORS, so preflights are answered without spending quota; calls the service
        // only on routes with rate_limits (per route, so a change never touches the listener).
        http_filters.push(http_filter(
            rate_limit::RATELIMIT_FILTER,
            rate_limit::filter(services),
        ));
    }
    if let Some(services) = filters.cache {
        // After ext_authz and the ratelimit filter: a cached answer is still only for callers
        // with the route's rights, and still spends quota. Disabled in the chain: only routes
        // with `cache` turn it on (see `cache`).
        http_filters.push(HttpFilter {
            disabled: true,
            ..http_filter(cache::CACHE_FILTER, cache::filter(services))
        });
    }
    // Router last (Envoy requires it).
    http_filters.push(http_filter(
        ROUTER_FILTER,
        Router {
            suppress_envoy_headers: true,
            dynamic_stats: Some(pb::bool_value(false)),
            ..Default::default()
        },
    ));

    HttpConnectionManager {
        stat_prefix: name.to_owned(),
        codec_type: if listener.http2 {
            // HTTP/1.1, or HTTP/2 with prior knowledge (h2c) / ALPN, detected per connection.
            http_connection_manager::CodecType::Auto
        } else {
            http_connection_manager::CodecType::Http1
        } as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(pb::ads()),
            route_config_name: name.to_owned(),
        })),
        http_filters,
        access_log: if listener.access_log {
            vec![access_log::stdout_json()]
        } else {
            Vec::new()
        },
        local_reply_config: Some(local_reply::config(filters.ext_authz.is_some())),
        // Off unless `observability.tracing` is set: a span per request costs CPU.
        tracing: filters.tracing.map(observability::hcm_tracing),

        // Request ids: generated when absent, a client's kept (it ties client and gateway logs
        // together), and always echoed so clients can report it.
        generate_request_id: Some(pb::bool_value(true)),
        preserve_external_request_id: true,
        always_set_request_id_in_response: true,

        // Client address: the TCP peer, or the address `trusted_hops` proxies in front of the
        // gateway put in x-forwarded-for. Envoy then overwrites x-forwarded-proto from an
        // untrusted peer and strips x-envoy-* headers from external requests (Envoy >= 1.33
        // treats no address as internal unless configured).
        use_remote_address: Some(pb::bool_value(true)),
        xff_num_trusted_hops: listener.trusted_hops,

        // Path hardening: routing decisions and the upstream see the same, normalized path.
        // RFC 3986 normalization (`/a/../b` -> `/b`) and `//` merging.
        normalize_path: Some(pb::bool_value(true)),
        merge_slashes: true,
        // `%2F`/`%5C` in a path: decoding them silently would change what an upstream sees
        // versus what the route matched, keeping them would let `/admin%2Fusers` slip past a
        // route guarding `/admin/`. UNESCAPE_AND_REDIRECT makes the client come back with the
        // decoded path (a 307, method kept), so both sides always agree — Envoy's edge
        // recommendation. Rejecting would break clients that merely over-encode.
        path_with_escaped_slashes_action:
            http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndRedirect as i32,
        // Hosts match virtual hosts without trailing dot (`api.example.com.`). The port is
        // ignored for matching by the route configuration (`ignore_port_in_host_matching`),
        // not stripped here: stripping would also drop it from redirect URLs (Envoy #19589)
        // and from the Host upstreams see.
        strip_trailing_host_dot: true,
        // The upstream's `server` header passes through (a route can remove it); Envoy adds
        // none of its own, so the gateway does not advertise what it runs.
        server_header_transformation:
            http_connection_manager::ServerHeaderTransformation::PassThrough as i32,
        common_http_protocol_options: Some(HttpProtocolOptions {
            idle_timeout: Some(pb::duration(IDLE_TIMEOUT)),
            // `x_user_id` could alias `x-user-id` behind CGI-style upstreams: refuse it (400).
            headers_with_underscores_action:
                http_protocol_options::HeadersWithUnderscoresAction::RejectRequest as i32,
            ..Default::default()
        }),
        request_headers_timeout: Some(pb::duration(REQUEST_HEADERS_TIMEOUT)),
        // `x-forwarded-client-cert`: a client-sent one is always dropped; with mTLS, Envoy sets
        // it from the verified client certificate (subject, URI and DNS SANs, hash).
        forward_client_cert_details: if verifies_clients {
            http_connection_manager::ForwardClientCertDetails::SanitizeSet
        } else {
            http_connection_manager::ForwardClientCertDetails::Sanitize
        } as i32,
        set_current_client_cert_details: verifies_clients.then_some(
            http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(pb::bool_value(true)),
                uri: true,
                dns: true,
                ..Default::default()
            },
        ),
        // HTTP/1: Envoy's defaults already refuse a request with both Content-Length and
        // Transfer-Encoding (no `allow_chunked_length`) and close the connection on any
        // invalid message (no `stream_error_on_invalid_http_message`).
        http2_protocol_options: listener.http2.then(|| Http2ProtocolOptions {
            max_concurrent_streams: Some(pb::u32_value(H2_MAX_CONCURRENT_STREAMS)),
            initial_stream_window_size: Some(pb::u32_value(H2_INITIAL_STREAM_WINDOW)),
            initial_connection_window_size: Some(pb::u32_value(H2_INITIAL_CONNECTION_WINDOW)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_filter<M: prost::Name>(name: &str, config: M) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(config))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;

    fn model_listener() -> model::Listener {
        model::Listener {
            name: Name::new("public").expect("valid"),
            address: "0.0.0.0:8080".parse().expect("addr"),
            trusted_hops: 0,
            http2: false,
            redirect_https: false,
            access_log: false,
            tls: None,
        }
    }

    fn hcm_of(l: &Listener) -> HttpConnectionManager {
        let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!("typed config expected");
        };
        prost::Message::decode(any.value.as_slice()).expect("an HCM")
    }

    fn router_of(hcm: &HttpConnectionManager) -> Router {
        let last = hcm.http_filters.last().expect("filters");
        assert_eq!(last.name, ROUTER_FILTER);
        let Some(http_filter::ConfigType::TypedConfig(any)) = &last.config_type else {
            panic!("typed config expected");
        };
        prost::Message::decode(any.value.as_slice()).expect("a Router")
    }

    #[test]
    fn names_and_rds() {
        let l = listener(&model_listener(), &HttpFilters::default());
        assert_eq!(l.name, "public");
        assert_eq!(l.address, Some(pb::socket_address("0.0.0.0", 8080)));
        assert_eq!(l.filter_chains[0].filters[0].name, HTTP_CONNECTION_MANAGER);
        let hcm = hcm_of(&l);
        assert_eq!(hcm.stat_prefix, "public");
        assert_eq!(
            hcm.route_specifier,
            Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(pb::ads()),
                route_config_name: "public".into(),
            }))
        );
    }

    #[test]
    fn lean_filter_chain() {
        let hcm = hcm_of(&listener(&model_listener(), &HttpFilters::default()));
        assert_eq!(hcm.http_filters.len(), 1, "router only without CORS");
        let router = router_of(&hcm);
        assert!(router.suppress_envoy_headers);
        assert_eq!(router.dynamic_stats, Some(pb::bool_value(false)));
        assert!(hcm.tracing.is_none());
        assert!(hcm.access_log.is_empty());

        let hcm = hcm_of(&listener(
            &model_listener(),
            &HttpFilters {
                cors: true,
                ext_authz: None,
                rate_limit: None,
                cache: None,
                tracing: None,
            },
        ));
        let names: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [CORS_FILTER, ROUTER_FILTER]);
    }

    #[test]
    fn request_id_and_client_address() {
        let mut model = model_listener();
        model.trusted_hops = 2;
        let hcm = hcm_of(&listener(&model, &HttpFilters::default()));
        assert_eq!(hcm.generate_request_id, Some(pb::bool_value(true)));
        assert!(hcm.preserve_external_request_id);
        assert!(hcm.always_set_request_id_in_response);
        assert_eq!(hcm.use_remote_address, Some(pb::bool_value(true)));
        assert_eq!(hcm.xff_num_trusted_hops, 2);
        assert!(!hcm.skip_xff_append);
    }

    #[test]
    fn hardening() {
        let hcm = hcm_of(&listener(&model_listener(), &HttpFilters::default()));
        assert_eq!(hcm.normalize_path, Some(pb::bool_value(true)));
        assert!(hcm.merge_slashes);
        assert_eq!(
            hcm.path_with_escaped_slashes_action,
            http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndRedirect as i32
        );
        assert_eq!(hcm.strip_port_mode, None);
        assert_eq!(
            hcm.common_http_protocol_options
                .expect("options")
                .headers_with_underscores_action,
            http_protocol_options::HeadersWithUnderscoresAction::RejectRequest as i32
        );
        // Content-Length + chunked stays refused: Envoy's default, left alone.
        assert!(hcm.http_protocol_options.is_none());
        assert!(hcm.stream_error_on_invalid_http_message.is_none());
    }

    #[test]
    fn http2_means_auto_codec() {
        let mut model = model_listener();
        let hcm = hcm_of(&listener(&model, &HttpFilters::default()));
        assert_eq!(
            hcm.codec_type,
            http_connection_manager::CodecType::Http1 as i32
        );
        assert!(hcm.http2_protocol_options.is_none());
        model.http2 = true;
        let hcm = hcm_of(&listener(&model, &HttpFilters::default()));
        assert_eq!(
            hcm.codec_type,
            http_connection_manager::CodecType::Auto as i32
        );
        assert!(hcm.http2_protocol_options.is_some());
    }

    #[test]
    fn access_log_only_when_asked() {
        let mut model = model_listener();
        model.access_log = true;
        let hcm = hcm_of(&listener(&model, &HttpFilters::default()));
        assert_eq!(hcm.access_log.len(), 1);
        assert_eq!(hcm.access_log[0].name, access_log::STDOUT_LOGGER);
    }

    #[test]
    fn problem_json_local_replies() {
        let hcm = hcm_of(&listener(&model_listener(), &HttpFilters::default()));
        assert_eq!(hcm.local_reply_config, Some(local_reply::config(false)));
    }
}
