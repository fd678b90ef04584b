//! Small syntax checks for the strings of a gateway file: addresses, host names, virtual-host
//! domains, CORS origins, methods, header names and values. Each returns a message ready for a
//! diagnostic.

use std::net::SocketAddr;

use crate::model::{HeaderName, Method};

/// `IP:PORT` (IPv6 in brackets), port not 0.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("invalid address `{text}`: expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080")
    })?;
    if addr.port() == 0 {
        return Err(format!("invalid address `{text}`: port 0 is not allowed"));
    }
    Ok(addr)
}

/// A DNS name: dot-separated labels of letters, digits and `-` (not at either end of a label),
/// at most 63 characters a label and 253 in all; a trailing dot is allowed.
pub(crate) fn is_hostname(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `host:port` with a DNS name (for `dns:` upstreams).
pub(crate) fn dns_target(text: &str) -> Result<(String, u16), String> {
    let invalid =
        || format!("invalid DNS target `{text}`: expected host:port, e.g. orders.internal:8080");
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    if !is_hostname(host) {
        return Err(invalid());
    }
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if port == 0 {
        return Err(format!(
            "invalid DNS target `{text}`: port 0 is not allowed"
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// A virtual-host domain: `*`, `*.suffix`, `prefix*` or a host name; lower-cased.
pub(crate) fn virtual_host(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let ok = if lower == "*" {
        true
    } else if let Some(suffix) = lower.strip_prefix("*.") {
        is_hostname(suffix)
    } else if let Some(prefix) = lower.strip_suffix('*') {
        !prefix.is_empty()
            && !prefix.contains('*')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    } else {
        is_hostname(&lower)
    };
    if ok {
        Ok(lower)
    } else {
        Err(format!(
            "invalid host `{text}`: expected a domain (api.example.com), `*`, `*.example.com` or `api.*`"
        ))
    }
}

/// A CORS origin: `*` or `scheme://host[:port]` exactly as browsers send it.
pub(crate) fn origin(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_owned());
    }
    let invalid = |why: &str| {
        format!(
            "invalid origin `{text}`: {why}; write scheme://host[:port], e.g. https://app.example.com, or `*`"
        )
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(|| invalid("no scheme"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if rest.contains('/') {
        return Err(invalid("an origin has no path (not even a trailing `/`)"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed `[`"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("invalid IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("invalid port"))?,
            ),
        };
        (None, port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(rest), None),
        }
    };
    if let Some(host) = host
        && !is_hostname(host)
    {
        return Err(invalid("invalid host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(invalid("invalid port"));
    }
    Ok(text.to_ascii_lowercase())
}

/// An HTTP method token, upper-cased.
pub(crate) fn method(text: &str) -> Result<Method, String> {
    if HeaderName::new(text).is_ok() {
        Ok(Method(text.to_ascii_uppercase()))
    } else {
        Err(format!(
            "invalid method `{text}`: expected a token such as GET or POST"
        ))
    }
}

/// A header name (lower-cased).
pub(crate) fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::new(text).map_err(|_| {
        if text.starts_with(':') {
            format!("invalid header name `{text}`: pseudo-headers cannot be used here")
        } else {
            format!("invalid header name `{text}`: use letters, digits and !#$%&'*+-.^_`|~")
        }
    })
}

/// A header name that header rules may set or remove: not a pseudo-header, not `host`
/// (Envoy refuses to change those through header rules).
pub(crate) fn mutable_header_name(text: &str) -> Result<HeaderName, String> {
    if text.starts_with(':') {
        return Err(format!("pseudo-header `{text}` cannot be set or removed"));
    }
    let name = header_name(text)?;
    if name.as_str() == "host" {
        return Err(
            "`host` cannot be set or removed by header rules (Envoy forbids it); use `redirect: {host}` to send clients elsewhere"
                .to_owned(),
        );
    }
    Ok(name)
}

/// A header value: no line breaks or NUL (Envoy rejects them).
pub(crate) fn header_value(text: &str) -> Result<String, String> {
    if text.contains(['\r', '\n', '\0']) {
        Err("a header value cannot contain line breaks or NUL characters".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// A URL path for matching or redirecting: starts with `/`, no query, fragment or whitespace.
pub(crate) fn path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("path `{text}` must start with `/`"));
    }
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("path `{text}` cannot contain {c:?}"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert_eq!(
            socket_addr("0.0.0.0:8080").map(|a| a.to_string()),
            Ok("0.0.0.0:8080".into())
        );
        assert_eq!(
            socket_addr("[::]:8080").map(|a| a.to_string()),
            Ok("[::]:8080".into())
        );
        assert_eq!(
            socket_addr("localhost:80"),
            Err(
                "invalid address `localhost:80`: expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080"
                    .into()
            )
        );
        assert_eq!(
            socket_addr("::1:80"),
            Err(
                "invalid address `::1:80`: expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080".into()
            )
        );
        assert_eq!(
            socket_addr("1.2.3.4:0"),
            Err("invalid address `1.2.3.4:0`: port 0 is not allowed".into())
        );
    }

    #[test]
    fn dns_targets() {
        assert_eq!(
            dns_target("Orders.internal:8080"),
            Ok(("orders.internal".into(), 8080))
        );
        assert!(dns_target("orders.internal").is_err());
        assert!(dns_target("bad_host-:80").is_err());
        assert!(dns_target("a..b:80").is_err());
        assert!(dns_target("x:0").is_err());
    }

    #[test]
    fn virtual_hosts() {
        for ok in [
            "*",
            "api.example.com",
            "*.example.com",
            "api.*",
            "api-*",
            "localhost",
        ] {
            assert!(virtual_host(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            virtual_host("API.Example.com"),
            Ok("api.example.com".into())
        );
        for bad in [
            "",
            "a*b.com",
            "*.",
            "**",
            "api.example.com:8080",
            "exa mple.com",
            "*.*.com",
        ] {
            assert!(virtual_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins() {
        for ok in [
            "*",
            "https://app.example.com",
            "http://localhost:3000",
            "https://[::1]:8443",
            "http://10.0.0.1",
        ] {
            assert!(origin(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            origin("https://app.example.com/"),
            Err("invalid origin `https://app.example.com/`: an origin has no path (not even a trailing `/`); write scheme://host[:port], e.g. https://app.example.com, or `*`".into())
        );
        for bad in [
            "app.example.com",
            "ftp://x.com",
            "https://x.com:99999",
            "https://",
            "https://*.x.com",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_and_headers() {
        assert_eq!(method("get"), Ok(Method("GET".into())));
        assert!(method("GE T").is_err());
        assert_eq!(
            header_name("X-Api").map(|h| h.to_string()),
            Ok("x-api".into())
        );
        assert!(header_name("x api").is_err());
        assert_eq!(
            mutable_header_name(":path"),
            Err("pseudo-header `:path` cannot be set or removed".into())
        );
        assert!(mutable_header_name("Host").is_err());
        assert!(mutable_header_name("cookie").is_ok());
        assert!(header_value("a\r\nb: c").is_err());
        assert!(header_value("ok value").is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(path("/api"), Ok("/api".into()));
        assert_eq!(path("api"), Err("path `api` must start with `/`".into()));
        assert_eq!(path("/a?b"), Err("path `/a?b` cannot contain '?'".into()));
        assert_eq!(path("/a b"), Err("path `/a b` cannot contain ' '".into()));
    }
}
