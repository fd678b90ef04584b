//! Whether a response may be stored, and for how long it is fresh: RFC 9111 for a shared cache,
//! reduced to what vrata promises (issue 7, `docs/caching.md`).
//!
//! Stored only when every one of these holds:
//! - the status is one RFC 9110 §15.1 calls heuristically cacheable ([`CACHEABLE_STATUSES`]);
//!   other statuses are passed through even with explicit freshness, the smallest set that is
//!   always right;
//! - no `Set-Cookie` (a cookie set for one client must never reach another);
//! - no `no-store`, no `private` (a shared cache must not store either, §5.2.2.5 and §5.2.2.7);
//! - no `no-cache`: it would allow storing but demands revalidation before every use, and this
//!   cache does not revalidate; not storing is the simplest behaviour that is correct. A
//!   `no-cache="field"` is treated the same (it could be honoured by dropping the field, but
//!   nobody relies on that);
//! - not `Vary: *` (no request can ever match it, §4.1);
//! - a freshness lifetime above the response's `Age`: `s-maxage`, else `max-age`, else
//!   `Expires - Date`, else the route's `ttl`. An invalid `Expires` is in the past (§5.3);
//! - `Content-Length`, when given, not above the route's `max_body` (the streamed body is
//!   checked again as it arrives).

use crate::headers::{CacheControl, Headers, list_items, parse_http_date};

/// RFC 9110 §15.1: the statuses cacheable by default.
pub const CACHEABLE_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Why a response was not stored (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotStored {
    Status,
    SetCookie,
    NoStore,
    Private,
    NoCache,
    VaryStar,
    /// No freshness, or already stale when it arrived.
    NotFresh,
    TooLarge,
    /// A HEAD response has no body to store.
    Head,
}

impl NotStored {
    pub fn label(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::SetCookie => "set_cookie",
            NotStored::NoStore => "no_store",
            NotStored::Private => "private",
            NotStored::NoCache => "no_cache",
            NotStored::VaryStar => "vary_star",
            NotStored::NotFresh => "not_fresh",
            NotStored::TooLarge => "too_large",
            NotStored::Head => "head",
        }
    }
}

/// A storable response's timing and the request headers its upstream varies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storable {
    /// How long from now the entry stays fresh, milliseconds (lifetime minus the `Age` it
    /// arrived with; always above 0).
    pub fresh_for_ms: u64,
    /// The response's `Age`, seconds (0 when absent or invalid).
    pub age_s: u64,
    /// The upstream's `Vary` names, lower-case, sorted, without duplicates.
    pub vary: Vec<String>,
}

/// The decision for a response with `status` and `headers`, received at `now_ms`.
pub fn decide(
    status: u16,
    headers: &Headers,
    now_ms: u64,
    default_ttl_ms: u64,
    max_body: u64,
) -> Result<Storable, NotStored> {
    if !CACHEABLE_STATUSES.contains(&status) {
        return Err(NotStored::Status);
    }
    if headers.contains("set-cookie") {
        return Err(NotStored::SetCookie);
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    let vary = vary_names(headers)?;
    if let Some(length) = headers
        .get_str("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        && length > max_body
    {
        return Err(NotStored::TooLarge);
    }
    let lifetime_ms = lifetime_ms(&cc, headers, now_ms, default_ttl_ms);
    let age_s = headers
        .get_str("age")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fresh_for_ms = lifetime_ms.saturating_sub(age_s.saturating_mul(1_000));
    if fresh_for_ms == 0 {
        return Err(NotStored::NotFresh);
    }
    Ok(Storable {
        fresh_for_ms,
        age_s,
        vary,
    })
}

/// `s-maxage` > `max-age` > `Expires - Date` > the route's ttl (RFC 9111 §4.2.1).
fn lifetime_ms(cc: &CacheControl, headers: &Headers, now_ms: u64, default_ttl_ms: u64) -> u64 {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return s.saturating_mul(1_000);
    }
    if let Some(expires) = headers.get("expires") {
        // An invalid Expires means "already expired" (§5.3); a missing Date is the time the
        // response arrived (§4.2.1).
        let Some(expires) = parse_http_date(expires) else {
            return 0;
        };
        let date = headers
            .get("date")
            .and_then(parse_http_date)
            .unwrap_or(now_ms);
        return expires.saturating_sub(date);
    }
    default_ttl_ms
}

/// The names in the upstream's `Vary`, or [`NotStored::VaryStar`].
pub fn vary_names(headers: &Headers) -> Result<Vec<String>, NotStored> {
    let mut names: Vec<String> = list_items(headers.all("vary"))
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if names.iter().any(|n| n == "*") {
        return Err(NotStored::VaryStar);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::format_http_date;

    const NOW: u64 = 1_700_000_000_000;
    const MB: u64 = 1 << 20;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.push(n, v.as_bytes());
        }
        h
    }

    fn fresh_for(status: u16, pairs: &[(&str, &str)], ttl: u64) -> Result<u64, NotStored> {
        decide(status, &h(pairs), NOW, ttl, MB).map(|s| s.fresh_for_ms)
    }

    #[test]
    fn freshness_sources_in_order_of_precedence() {
        let date = format_http_date(NOW);
        let expires = format_http_date(NOW + 120_000);
        let all = [
            ("cache-control", "max-age=60, s-maxage=30"),
            ("expires", expires.as_str()),
            ("date", date.as_str()),
        ];
        assert_eq!(fresh_for(200, &all, 5_000), Ok(30_000));
        assert_eq!(fresh_for(200, &all[..1], 5_000), Ok(30_000));
        let no_s = [("cache-control", "max-age=60"), all[1], all[2]];
        assert_eq!(fresh_for(200, &no_s, 5_000), Ok(60_000));
        assert_eq!(fresh_for(200, &all[1..], 5_000), Ok(120_000));
        // Without Date, Expires counts from now.
        assert_eq!(fresh_for(200, &all[1..2], 5_000), Ok(120_000));
        assert_eq!(fresh_for(200, &[], 5_000), Ok(5_000));
    }

    #[test]
    fn no_freshness_or_none_left_is_not_stored() {
        assert_eq!(fresh_for(200, &[], 0), Err(NotStored::NotFresh));
        assert_eq!(
            fresh_for(200, &[("cache-control", "max-age=0")], 5_000),
            Err(NotStored::NotFresh)
        );
        // An invalid Expires is in the past, even with a route ttl.
        assert_eq!(
            fresh_for(200, &[("expires", "0")], 5_000),
            Err(NotStored::NotFresh)
        );
        // Age uses up freshness.
        assert_eq!(
            fresh_for(200, &[("cache-control", "max-age=60"), ("age", "50")], 0),
            Ok(10_000)
        );
        assert_eq!(
            fresh_for(200, &[("cache-control", "max-age=60"), ("age", "60")], 0),
            Err(NotStored::NotFresh)
        );
    }

    #[test]
    fn only_heuristically_cacheable_statuses() {
        for status in CACHEABLE_STATUSES {
            assert!(fresh_for(status, &[], 1_000).is_ok(), "{status}");
        }
        for status in [201, 206, 302, 304, 307, 400, 403, 500, 502, 503, 504] {
            assert_eq!(
                fresh_for(status, &[("cache-control", "max-age=60")], 1_000),
                Err(NotStored::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn directives_and_headers_that_forbid_storing() {
        let cases: [(&[(&str, &str)], NotStored); 7] = [
            (&[("set-cookie", "a=b")], NotStored::SetCookie),
            (
                &[("cache-control", "max-age=60, no-store")],
                NotStored::NoStore,
            ),
            (
                &[("cache-control", "private, max-age=60")],
                NotStored::Private,
            ),
            (
                &[("cache-control", "s-maxage=60, no-cache")],
                NotStored::NoCache,
            ),
            (&[("cache-control", "no-cache=\"x-a\"")], NotStored::NoCache),
            (&[("vary", "accept, *")], NotStored::VaryStar),
            (&[("content-length", "2000000")], NotStored::TooLarge),
        ];
        for (headers, why) in cases {
            assert_eq!(fresh_for(200, headers, 60_000), Err(why), "{headers:?}");
        }
        // public changes nothing; a Content-Length within bounds is fine.
        assert!(
            fresh_for(
                200,
                &[("cache-control", "public"), ("content-length", "10")],
                1
            )
            .is_ok()
        );
    }

    #[test]
    fn vary_names_are_normalised() {
        let s = decide(
            200,
            &h(&[("vary", "Accept-Language, accept"), ("vary", "ACCEPT")]),
            NOW,
            1_000,
            MB,
        )
        .expect("storable");
        assert_eq!(s.vary, ["accept", "accept-language"]);
    }
}
