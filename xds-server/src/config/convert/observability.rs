//! `observability`: the stats listener and tracing.

use std::net::SocketAddr;

use super::Cx;
use super::listener::Addresses;
use crate::config::dto::{ObservabilityDto, TracingDto};
use crate::config::spanned::Spanned;
use crate::config::syntax;
use crate::model::{Endpoint, Endpoints, Observability, Tracing, defaults};

/// The stats listener's name, used in the address-clash messages (and as the Envoy listener
/// name, see `translate::observability`).
pub(crate) const STATS_LISTENER: &str = "vrata_prometheus";

pub(crate) fn convert(
    cx: &Cx<'_>,
    dto: Option<&ObservabilityDto>,
    addresses: &mut Addresses,
) -> Observability {
    let Some(o) = dto else {
        return Observability::default();
    };
    let prometheus = o.prometheus.as_ref().and_then(Spanned::get).and_then(|p| {
        let addr = cx.check(&p.address, |a| syntax::socket_addr(a))?;
        addresses.claim(cx, addr, STATS_LISTENER, p.address.pos());
        Some(addr)
    });
    let tracing = o
        .tracing
        .as_ref()
        .and_then(Spanned::get)
        .and_then(|t| tracing(cx, t));
    Observability {
        prometheus,
        tracing,
    }
}

fn tracing(cx: &Cx<'_>, t: &TracingDto) -> Option<Tracing> {
    let endpoint = cx.check(&t.otlp_endpoint, |url| otlp_endpoint(url));
    let service_name = match &t.service_name {
        None => Some(defaults::TRACE_SERVICE_NAME.to_owned()),
        Some(s) => cx.check(s, |s| {
            if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
                Err("`service_name` must be 1 to 255 printable characters".to_owned())
            } else {
                Ok(s.clone())
            }
        }),
    };
    let sample_ratio = match &t.sample_ratio {
        None => Some(defaults::SAMPLE_RATIO),
        Some(r) => cx.check(r, |r| {
            if (0.0..=1.0).contains(r) {
                Ok(*r)
            } else {
                Err(format!("`sample_ratio` {r} is not between 0.0 and 1.0"))
            }
        }),
    };
    let (collector, authority, path) = endpoint?;
    Some(Tracing {
        collector,
        authority,
        path,
        service_name: service_name?,
        sample_ratio: sample_ratio?,
    })
}

/// `http://HOST:PORT[/BASE]` -> (where, authority, `/BASE/v1/traces`).
fn otlp_endpoint(url: &str) -> Result<(Endpoints, String, String), String> {
    let invalid = |why: &str| {
        format!(
            "invalid `otlp_endpoint` `{url}`: {why} (expected http://HOST:PORT, e.g. http://otel-collector:4318)"
        )
    };
    if url.starts_with("https://") {
        return Err(invalid(
            "https is not supported yet: send to a collector on the gateway's network over http",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("the scheme must be http"))?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || base.contains(['?', '#']) {
        return Err(invalid("a host, a port and an optional path only"));
    }
    let collector = if let Ok(addr) = authority.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(invalid("port 0 is not allowed"));
        }
        Endpoints::Static(vec![Endpoint {
            address: addr,
            weight: defaults::WEIGHT,
        }])
    } else {
        let (host, port) = syntax::dns_target(authority)
            .map_err(|_| invalid("the port is required (OTLP/HTTP uses 4318)"))?;
        Endpoints::Dns { host, port }
    };
    Ok((collector, authority.to_owned(), format!("{base}/v1/traces")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_endpoints() {
        let (c, a, p) = otlp_endpoint("http://otel-collector:4318").expect("valid");
        assert_eq!(
            c,
            Endpoints::Dns {
                host: "otel-collector".into(),
                port: 4318
            }
        );
        assert_eq!(
            (a.as_str(), p.as_str()),
            ("otel-collector:4318", "/v1/traces")
        );
        let (c, _, p) = otlp_endpoint("http://127.0.0.1:4318/otlp/").expect("valid");
        assert!(matches!(c, Endpoints::Static(e) if e[0].address.port() == 4318));
        assert_eq!(p, "/otlp/v1/traces");
        for bad in [
            "otel:4318",
            "https://otel:4318",
            "http://otel",
            "http://127.0.0.1:0",
            "http://u@otel:4318",
            "http://otel:4318/x?y",
        ] {
            assert!(otlp_endpoint(bad).is_err(), "{bad}");
        }
    }
}
