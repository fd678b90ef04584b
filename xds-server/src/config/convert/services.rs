//! `services`.

use super::Cx;
use super::upstream::duration;
use crate::config::dto::{FailureModeDto, ServicesDto};
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::{FailureMode, ServiceAddress, Services, defaults};

pub(crate) fn convert(cx: &Cx<'_>, dto: Option<&ServicesDto>) -> Services {
    let Some(s) = dto else {
        return Services {
            ext_authz: defaults::EXT_AUTHZ,
            ratelimit: defaults::RATELIMIT,
            timeout: defaults::SERVICE_TIMEOUT,
            ext_authz_failure: FailureMode::Deny,
            ratelimit_failure: FailureMode::Allow,
            aggregator: defaults::AGGREGATOR,
            aggregator_loopback: defaults::AGGREGATOR_LOOPBACK,
            response_cache: defaults::RESPONSE_CACHE,
        };
    };
    Services {
        ext_authz: address(cx, &s.ext_authz, defaults::EXT_AUTHZ),
        ratelimit: address(cx, &s.ratelimit, defaults::RATELIMIT),
        timeout: duration(&s.timeout, defaults::SERVICE_TIMEOUT),
        ext_authz_failure: mode(or(&s.ext_authz_failure, FailureModeDto::Deny)),
        ratelimit_failure: mode(or(&s.ratelimit_failure, FailureModeDto::Allow)),
        aggregator: ip_address(cx, &s.aggregator, defaults::AGGREGATOR),
        aggregator_loopback: ip_address(cx, &s.aggregator_loopback, defaults::AGGREGATOR_LOOPBACK),
        response_cache: address(cx, &s.response_cache, defaults::RESPONSE_CACHE),
    }
}

/// `IP:PORT`, or `HOST:PORT` with a DNS name Envoy resolves (docker-compose service names,
/// Kubernetes services: every address of the name is a replica).
fn address(
    cx: &Cx<'_>,
    field: &Option<Spanned<String>>,
    default: ServiceAddress,
) -> ServiceAddress {
    cx.check_opt(field, |text| match syntax::socket_addr(text) {
        Ok(addr) => Ok(ServiceAddress::Ip(addr)),
        Err(message) => match syntax::dns_target(text) {
            Ok((host, port)) => Ok(ServiceAddress::Dns { host, port }),
            Err(_) => Err(format!(
                "{message}, or HOST:PORT with a DNS name (e.g. ext-authz:18001)"
            )),
        },
    })
    .ok()
    .flatten()
    .unwrap_or(default)
}

/// `IP:PORT` only: the aggregator's address (a static endpoint) and the loopback listener
/// Envoy binds for it.
fn ip_address(
    cx: &Cx<'_>,
    field: &Option<Spanned<String>>,
    default: std::net::SocketAddr,
) -> std::net::SocketAddr {
    cx.check_opt(field, |text| syntax::socket_addr(text))
        .ok()
        .flatten()
        .unwrap_or(default)
}

fn mode(m: FailureModeDto) -> FailureMode {
    match m {
        FailureModeDto::Allow => FailureMode::Allow,
        FailureModeDto::Deny => FailureMode::Deny,
    }
}
