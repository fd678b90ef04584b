//! `upstreams.<name>`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::Cx;
use crate::config::diagnostic::exclusive;
use crate::config::dto::{
    BalanceDto, CircuitBreakerDto, DurationDto, EndpointDto, HealthCheckDto, OutlierDetectionDto,
    UpstreamDto,
};
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::{
    Balance, CircuitBreaker, Endpoint, Endpoints, HashOn, HealthCheck, OutlierDetection, Upstream,
    defaults,
};

pub(crate) fn convert(
    cx: &Cx<'_>,
    name: &Spanned<String>,
    dto: &Spanned<UpstreamDto>,
) -> Option<Upstream> {
    let name = cx.name(name);
    let u = dto.get()?;
    let endpoints = endpoints(cx, u, dto);
    let balance = balance(cx, u);
    let health_check = match &u.health_check {
        None => Some(None),
        Some(hc) => hc.get().and_then(|hc| health_check(cx, hc)).map(Some),
    };
    let outlier_detection = u
        .outlier_detection
        .as_ref()
        .map(|o| o.get().map(|o| outlier_detection(cx, o)));
    let tls = match &u.tls {
        None => Some(None),
        Some(t) => super::tls::upstream(cx, t, endpoints.as_ref()).map(Some),
    };
    let circuit_breaker = u
        .circuit_breaker
        .as_ref()
        .map(|c| c.get().map(|c| circuit_breaker(cx, c)));
    Some(Upstream {
        name: name?,
        endpoints: endpoints?,
        balance: balance?,
        connect_timeout: duration(&u.connect_timeout, defaults::CONNECT_TIMEOUT),
        http2: or(&u.http2, false),
        health_check: health_check?,
        outlier_detection: outlier_detection.map_or(Some(None), |o| o.map(Some))?,
        circuit_breaker: circuit_breaker.map_or(Some(None), |c| c.map(Some))?,
        tls: tls?,
    })
}

pub(crate) fn duration(field: &Option<Spanned<DurationDto>>, default: Duration) -> Duration {
    or(field, DurationDto(default)).0
}

/// An integer field within `range`, or `default` when absent.
pub(crate) fn bounded(
    cx: &Cx<'_>,
    field: &Option<Spanned<u32>>,
    key: &str,
    range: RangeInclusive<u32>,
    default: u32,
) -> u32 {
    let Some(f) = field else { return default };
    cx.check(f, |v| {
        if range.contains(v) {
            Ok(*v)
        } else if *range.end() == u32::MAX {
            Err(format!(
                "`{key}` must be at least {}, found {v}",
                range.start()
            ))
        } else {
            Err(format!(
                "`{key}` must be from {} to {}, found {v}",
                range.start(),
                range.end()
            ))
        }
    })
    .unwrap_or(default)
}

fn endpoints(cx: &Cx<'_>, u: &UpstreamDto, dto: &Spanned<UpstreamDto>) -> Option<Endpoints> {
    match (&u.endpoints, &u.dns) {
        (None, None) => {
            cx.error(
                dto.pos(),
                "an upstream needs `endpoints` (a list of IP:PORT) or `dns` (host:port)",
            );
            None
        }
        (Some(_), Some(dns)) => {
            cx.error(dns.pos(), exclusive("dns", &["endpoints"]));
            None
        }
        (None, Some(dns)) => cx
            .check(dns, |d| syntax::dns_target(d))
            .map(|(host, port)| Endpoints::Dns { host, port }),
        (Some(list), None) => {
            let items = list.get()?;
            if items.is_empty() {
                cx.error(
                    list.pos(),
                    "`endpoints` is empty: list at least one IP:PORT",
                );
                return None;
            }
            let mut out: Vec<Endpoint> = Vec::new();
            let mut ok = true;
            for item in items {
                match endpoint(cx, item) {
                    Some(e) if out.iter().any(|o| o.address == e.address) => {
                        cx.error(
                            item.pos(),
                            format!("endpoint `{}` is listed twice", e.address),
                        );
                        ok = false;
                    }
                    Some(e) => out.push(e),
                    None => ok = false,
                }
            }
            ok.then_some(Endpoints::Static(out))
        }
    }
}

fn endpoint(cx: &Cx<'_>, item: &Spanned<EndpointDto>) -> Option<Endpoint> {
    match item.get()? {
        EndpointDto::Address(text) => {
            let address = endpoint_address(text)
                .map_err(|m| cx.error(item.pos(), m))
                .ok()?;
            Some(Endpoint {
                address,
                weight: defaults::WEIGHT,
            })
        }
        EndpointDto::Weighted(w) => {
            let address = cx.check(&w.address, |a| endpoint_address(a));
            let weight = bounded(cx, &w.weight, "weight", 1..=128, defaults::WEIGHT);
            Some(Endpoint {
                address: address?,
                weight,
            })
        }
    }
}

fn endpoint_address(text: &str) -> Result<SocketAddr, String> {
    syntax::socket_addr(text).map_err(|message| {
        if syntax::dns_target(text).is_ok() {
            format!(
                "`{text}` is not an IP address: endpoints are IP:PORT; for a DNS name write \
                 `dns: {text}` instead of `endpoints`"
            )
        } else {
            message
        }
    })
}

fn balance(cx: &Cx<'_>, u: &UpstreamDto) -> Option<Balance> {
    let kind = or(&u.balance, BalanceDto::RoundRobin);
    let hash_on = cx.check_opt(&u.hash_on, |h| hash_on(h));
    match kind {
        BalanceDto::RingHash | BalanceDto::Maglev => {
            let hash = match hash_on {
                Ok(Some(h)) => h,
                Ok(None) => {
                    let which = if kind == BalanceDto::Maglev {
                        "maglev"
                    } else {
                        "ring_hash"
                    };
                    if let Some(b) = &u.balance {
                        cx.error(
                            b.pos(),
                            format!(
                                "`balance: {which}` needs `hash_on`: header:NAME, cookie:NAME or ip"
                            ),
                        );
                    }
                    return None;
                }
                Err(()) => return None,
            };
            Some(if kind == BalanceDto::Maglev {
                Balance::Maglev(hash)
            } else {
                Balance::RingHash(hash)
            })
        }
        BalanceDto::RoundRobin | BalanceDto::LeastRequest | BalanceDto::Random => {
            if let Some(h) = &u.hash_on {
                cx.error(
                    h.pos(),
                    "`hash_on` only applies to `balance: ring_hash` or `balance: maglev`",
                );
                return None;
            }
            Some(match kind {
                BalanceDto::LeastRequest => Balance::LeastRequest,
                BalanceDto::Random => Balance::Random,
                _ => Balance::RoundRobin,
            })
        }
    }
}

fn hash_on(text: &str) -> Result<HashOn, String> {
    if text == "ip" {
        return Ok(HashOn::Ip);
    }
    if let Some(name) = text.strip_prefix("header:") {
        return syntax::header_name(name).map(HashOn::Header);
    }
    if let Some(name) = text.strip_prefix("cookie:") {
        // Cookie names are RFC 6265 tokens, the same alphabet as header names, case kept.
        return syntax::header_name(name)
            .map(|_| HashOn::Cookie(name.to_owned()))
            .map_err(|_| format!("invalid cookie name `{name}`"));
    }
    Err(format!(
        "invalid `hash_on` value `{text}`: expected header:NAME, cookie:NAME or ip"
    ))
}

fn health_check(cx: &Cx<'_>, hc: &HealthCheckDto) -> Option<HealthCheck> {
    // Every field is checked before a missing one ends the conversion.
    let path = cx.check(&hc.path, |p| syntax::path(p));
    let healthy_after = bounded(
        cx,
        &hc.healthy_after,
        "healthy_after",
        1..=u32::MAX,
        defaults::HEALTHY_AFTER,
    );
    let unhealthy_after = bounded(
        cx,
        &hc.unhealthy_after,
        "unhealthy_after",
        1..=u32::MAX,
        defaults::UNHEALTHY_AFTER,
    );
    Some(HealthCheck {
        path: path?,
        interval: duration(&hc.interval, defaults::HEALTH_INTERVAL),
        timeout: duration(&hc.timeout, defaults::HEALTH_TIMEOUT),
        healthy_after,
        unhealthy_after,
    })
}

fn outlier_detection(cx: &Cx<'_>, o: &OutlierDetectionDto) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: bounded(
            cx,
            &o.consecutive_5xx,
            "consecutive_5xx",
            1..=u32::MAX,
            defaults::CONSECUTIVE_5XX,
        ),
        eject_for: duration(&o.eject_for, defaults::EJECT_FOR),
    }
}

fn circuit_breaker(cx: &Cx<'_>, c: &CircuitBreakerDto) -> CircuitBreaker {
    let limit = |field: &Option<Spanned<u32>>, key: &str| {
        field
            .as_ref()
            .map(|_| bounded(cx, field, key, 1..=u32::MAX, 1))
    };
    CircuitBreaker {
        max_connections: limit(&c.max_connections, "max_connections"),
        max_pending: limit(&c.max_pending, "max_pending"),
        max_requests: limit(&c.max_requests, "max_requests"),
        max_retries: limit(&c.max_retries, "max_retries"),
    }
}
