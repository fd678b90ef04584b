//! Cache keys. One string is the key in both stores:
//!
//! ```text
//! vrata:cache:v1:<route>:<path>\x1f<parts>           base key (entry or Vary marker)
//! vrata:cache:v1:<route>:<path>\x1f<parts>\x1fv<parts>  variant for the upstream's Vary
//! ```
//!
//! The route namespaces the keys (two routes never share an entry, a purge can find a route's
//! keys) and the path comes next, unescaped, so that a purge by path prefix is a prefix match
//! on the key (`SCAN MATCH` in Redis). Everything else is a list of length-prefixed parts
//! (`<len>:<bytes>`), so no value can be read as a separator: method class (`G`: GET and HEAD
//! share entries), lower-cased authority, the normalised query, the route's `vary` header
//! values and the `key_extra` values. A header that is absent is written `!`, distinct from
//! any present value (even an empty one, `0:`).
//!
//! A request path never holds a control character (Envoy rejects them), so `\x1f` ends it.

/// Every key starts with this; the version bumps when the layout or the encoding changes, so an
/// old instance never reads a new entry.
pub const KEY_PREFIX: &str = "vrata:cache:v1:";

/// Separates the path from the parts, and the base key from a variant's parts.
const SEP: char = '\x1f';

/// The key prefix of a route: every key of the route starts with it.
pub fn route_prefix(route: &str) -> String {
    format!("{KEY_PREFIX}{route}:")
}

fn part(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => {
            out.push_str(&v.len().to_string());
            out.push(':');
            out.push_str(v);
        }
        None => out.push('!'),
    }
}

/// Splits `:path` into the path and the normalised query: parameters sorted by name, a
/// repeated name keeps its values in their order, empty parameters dropped; `None` when no
/// parameter is left (`/a` and `/a?` are one resource).
pub fn split_path(path_and_query: &str) -> (&str, Option<String>) {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        return (path, None);
    }
    // A stable sort on the name only: `a=2&a=1` stays in its order, which may matter to the
    // upstream.
    params.sort_by_key(|p| p.split_once('=').map_or(*p, |(name, _)| name));
    (path, Some(params.join("&")))
}

/// What the base key of a request is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub route: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The route's `vary` headers with the request's values, in config order.
    pub vary: &'a [(String, Option<String>)],
    /// The `key_extra` values, in config order (a missing one bypasses the cache before a key
    /// is made).
    pub extra: &'a [String],
}

pub fn base_key(input: &KeyInput<'_>) -> String {
    let mut key = route_prefix(input.route);
    key.push_str(input.path);
    key.push(SEP);
    part(&mut key, Some("G"));
    part(&mut key, Some(&input.authority.to_ascii_lowercase()));
    part(&mut key, input.query);
    for (name, value) in input.vary {
        part(&mut key, Some(name));
        part(&mut key, value.as_deref());
    }
    for extra in input.extra {
        part(&mut key, Some(extra));
    }
    key
}

/// The key of the variant for the request header values `values` (name, value) of the
/// upstream's `Vary` names.
pub fn variant_key(base: &str, values: &[(String, Option<String>)]) -> String {
    let mut key = String::with_capacity(base.len() + 32);
    key.push_str(base);
    key.push(SEP);
    key.push('v');
    for (name, value) in values {
        part(&mut key, Some(name));
        part(&mut key, value.as_deref());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(authority: &str, path_and_query: &str) -> String {
        let (path, query) = split_path(path_and_query);
        base_key(&KeyInput {
            route: "r",
            authority,
            path,
            query: query.as_deref(),
            vary: &[],
            extra: &[],
        })
    }

    #[test]
    fn query_is_normalised() {
        assert_eq!(split_path("/a"), ("/a", None));
        assert_eq!(split_path("/a?"), ("/a", None));
        assert_eq!(split_path("/a?&&"), ("/a", None));
        assert_eq!(
            split_path("/a?b=1&a=2&c&a=1"),
            ("/a", Some("a=2&a=1&b=1&c".into()))
        );
        assert_eq!(key("h", "/a?x=1&y=2"), key("h", "/a?y=2&x=1"));
        assert_ne!(key("h", "/a?x=1&x=2"), key("h", "/a?x=2&x=1"));
        assert_eq!(key("h", "/a"), key("h", "/a?"));
        assert_ne!(key("h", "/a"), key("h", "/a?x"));
    }

    #[test]
    fn authority_case_does_not_matter_path_case_does() {
        assert_eq!(key("API.example.com", "/a"), key("api.example.com", "/a"));
        assert_ne!(key("h", "/A"), key("h", "/a"));
        assert_ne!(key("h1", "/a"), key("h2", "/a"));
    }

    #[test]
    fn keys_start_with_route_and_path_for_purges() {
        let k = key("h", "/api/orders?id=1");
        assert!(k.starts_with("vrata:cache:v1:r:/api/orders"), "{k}");
    }

    #[test]
    fn parts_cannot_be_confused() {
        let with = |vary: &[(String, Option<String>)], extra: &[String]| {
            base_key(&KeyInput {
                route: "r",
                authority: "h",
                path: "/",
                query: None,
                vary,
                extra,
            })
        };
        let absent = [("x-a".to_owned(), None)];
        let empty = [("x-a".to_owned(), Some(String::new()))];
        assert_ne!(with(&absent, &[]), with(&empty, &[]));
        // A value holding what looks like a separator stays one part.
        assert_ne!(
            with(&[], &["a".into(), "b".into()]),
            with(&[], &["1:a1:b".into()])
        );
        let base = with(&[], &[]);
        let en = variant_key(&base, &[("accept-language".into(), Some("en".into()))]);
        let de = variant_key(&base, &[("accept-language".into(), Some("de".into()))]);
        assert_ne!(en, de);
        assert!(en.starts_with(&base));
    }
}
