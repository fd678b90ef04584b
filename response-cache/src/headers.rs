//! Header lists as Envoy's ext_proc API carries them, and the few header grammars the cache
//! reads (`Cache-Control`, HTTP dates, entity tags, `Vary`).
//!
//! Envoy 1.40 sends each header value in `HeaderValue.raw_value` (bytes) with `value` empty;
//! older versions used `value`. Both are read. Names arrive lower-case (HTTP/2 and Envoy's
//! header map both normalise them); they are lower-cased again anyway, since the cache compares
//! names. A name may repeat: every occurrence is kept, in order.

use std::time::{Duration, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};

/// An ordered header list; names lower-case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads Envoy's header map (`raw_value`, else `value`).
    pub fn from_proto(map: Option<&HeaderMap>) -> Self {
        let Some(map) = map else {
            return Self::default();
        };
        Self(
            map.headers
                .iter()
                .map(|h: &HeaderValue| {
                    let value = if h.raw_value.is_empty() {
                        h.value.as_bytes().to_vec()
                    } else {
                        h.raw_value.clone()
                    };
                    (h.key.to_ascii_lowercase(), value)
                })
                .collect(),
        )
    }

    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Every value of `name`, in order.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.all(name).next()
    }

    /// The first value of `name` as text (`None` when absent or not UTF-8).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every value of `name` joined with `", "` (how a list-valued field sent on several lines
    /// reads as one), trimmed; `None` when absent. Invalid UTF-8 is replaced, which only makes
    /// two such values compare equal when their bytes were already alike.
    pub fn joined(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for v in self.all(name) {
            let text = String::from_utf8_lossy(v);
            let text = text.trim();
            match &mut out {
                None => out = Some(text.to_owned()),
                Some(s) => {
                    s.push_str(", ");
                    s.push_str(text);
                }
            }
        }
        out
    }
}

/// The comma-separated elements of a list-valued header (every line of it), trimmed, empty ones
/// dropped; commas inside double quotes do not split.
pub fn list_items<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut items = Vec::new();
    for v in values {
        let text = String::from_utf8_lossy(v);
        let mut current = String::new();
        let mut quoted = false;
        for c in text.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    current.push(c);
                }
                ',' if !quoted => {
                    let t = current.trim();
                    if !t.is_empty() {
                        items.push(t.to_owned());
                    }
                    current.clear();
                }
                _ => current.push(c),
            }
        }
        let t = current.trim();
        if !t.is_empty() {
            items.push(t.to_owned());
        }
    }
    items
}

/// The `Cache-Control` directives the cache acts on (RFC 9111 §5.2), request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// `no-cache`, with or without field names (both are treated alike: see
    /// [`crate::freshness`]).
    pub no_cache: bool,
    pub private: bool,
    /// Seconds. An unparsable value reads as 0 (RFC 9111 §1.2.2: treat as stale).
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers`. A directive given twice keeps the most
    /// restrictive (smallest) age, as RFC 9111 §4.2.1 suggests for conflicting directives.
    pub fn parse(headers: &Headers) -> Self {
        let mut cc = CacheControl::default();
        for item in list_items(headers.all("cache-control")) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"')),
                ),
                None => (item.trim().to_ascii_lowercase(), None),
            };
            let seconds = || value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match name.as_str() {
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "max-age" => cc.max_age = Some(cc.max_age.map_or(seconds(), |m| m.min(seconds()))),
                "s-maxage" => {
                    cc.s_maxage = Some(cc.s_maxage.map_or(seconds(), |m| m.min(seconds())))
                }
                _ => {}
            }
        }
        cc
    }
}

/// An HTTP date (IMF-fixdate, RFC 850 or asctime) as Unix milliseconds.
pub fn parse_http_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let t = httpdate::parse_http_date(text.trim()).ok()?;
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// Unix milliseconds as an IMF-fixdate.
pub fn format_http_date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The opaque part of an entity tag (`W/"x"` and `"x"` both give `"x"`), for the weak
/// comparison `If-None-Match` uses (RFC 9110 §8.8.3.2).
fn opaque_tag(tag: &str) -> &str {
    let t = tag.trim();
    t.strip_prefix("W/").unwrap_or(t)
}

/// Whether an `If-None-Match` list matches `etag` by weak comparison; `*` matches any
/// entry that has a current representation, which a cache entry always is.
pub fn if_none_match_matches(if_none_match: &[String], etag: Option<&str>) -> bool {
    if_none_match.iter().any(|candidate| {
        candidate.trim() == "*" || etag.is_some_and(|e| opaque_tag(candidate) == opaque_tag(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.push(n, v.as_bytes());
        }
        h
    }

    #[test]
    fn raw_value_wins_over_value_and_names_are_lower_cased() {
        let map = HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "X-A".into(),
                    value: String::new(),
                    raw_value: b"raw".to_vec(),
                },
                HeaderValue {
                    key: "x-b".into(),
                    value: "text".into(),
                    raw_value: Vec::new(),
                },
            ],
        };
        let h = Headers::from_proto(Some(&map));
        assert_eq!(h.get_str("x-a"), Some("raw"));
        assert_eq!(h.get_str("x-b"), Some("text"));
        assert_eq!(h.get("x-c"), None);
    }

    #[test]
    fn cache_control_directives_from_several_lines() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "public, max-age=60"),
            (
                "cache-control",
                "S-MAXAGE=\"30\", no-cache=\"set-cookie, x\"",
            ),
        ]));
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(30));
        assert!(cc.no_cache);
        assert!(!cc.no_store && !cc.private);

        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "max-age=60, max-age=10, private, no-store",
        )]));
        assert_eq!(cc.max_age, Some(10));
        assert!(cc.private && cc.no_store);

        // An unparsable age is stale, not absent.
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-age=soon")]));
        assert_eq!(cc.max_age, Some(0));
    }

    #[test]
    fn dates_round_trip_and_all_three_formats_parse() {
        let ms = 784_111_777_000;
        assert_eq!(format_http_date(ms), "Sun, 06 Nov 1994 08:49:37 GMT");
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(text.as_bytes()), Some(ms), "{text}");
        }
        assert_eq!(parse_http_date(b"0"), None);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let list = list_items([b"\"a\", W/\"b\"".as_slice()].into_iter());
        assert!(if_none_match_matches(&list, Some("W/\"a\"")));
        assert!(if_none_match_matches(&list, Some("\"b\"")));
        assert!(!if_none_match_matches(&list, Some("\"c\"")));
        assert!(!if_none_match_matches(&list, None));
        assert!(if_none_match_matches(&["*".into()], None));
    }
}
