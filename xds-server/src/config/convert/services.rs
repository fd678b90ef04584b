//! `services`.

use std::net::SocketAddr;

use super::Cx;
use super::upstream::duration;
use crate::config::dto::{FailureModeDto, ServicesDto};
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::{FailureMode, Services, defaults};

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
        };
    };
    Services {
        ext_authz: address(cx, &s.ext_authz, defaults::EXT_AUTHZ),
        ratelimit: address(cx, &s.ratelimit, defaults::RATELIMIT),
        timeout: duration(&s.timeout, defaults::SERVICE_TIMEOUT),
        ext_authz_failure: mode(or(&s.ext_authz_failure, FailureModeDto::Deny)),
        ratelimit_failure: mode(or(&s.ratelimit_failure, FailureModeDto::Allow)),
        aggregator: address(cx, &s.aggregator, defaults::AGGREGATOR),
        aggregator_loopback: address(cx, &s.aggregator_loopback, defaults::AGGREGATOR_LOOPBACK),
    }
}

fn address(cx: &Cx<'_>, field: &Option<Spanned<String>>, default: SocketAddr) -> SocketAddr {
    cx.check_opt(field, |text| {
        syntax::socket_addr(text).map_err(|message| {
            if syntax::dns_target(text).is_ok() {
                format!(
                    "`{text}` is a host name: this version of vrata needs IP:PORT here \
                     (e.g. 127.0.0.1:18001)"
                )
            } else {
                message
            }
        })
    })
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
