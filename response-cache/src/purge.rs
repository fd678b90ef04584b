//! Purges (`POST /admin/cache/purge` on xds-server, delivered in `CacheConfig.purges`).
//!
//! Two mechanisms, because neither alone is enough:
//! - **Epochs** make a purge exact: every entry records the highest purge id its instance knew
//!   when the request started, and an entry is never served while a purge with a higher id
//!   matches it. This covers entries written late by an instance that had not yet seen the
//!   purge, and Redis entries nobody deleted (a failed or lost deletion).
//! - **Deletion** frees the space: in memory at once; in Redis by one instance of the fleet
//!   (whoever wins `SET vrata:cache:purge:<id> NX`), with `SCAN MATCH` + `UNLINK` over the
//!   route's keys.

/// One purge: `route` empty matches every route, `path_prefix` empty every path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRule {
    pub id: u64,
    pub route: String,
    pub path_prefix: String,
}

impl PurgeRule {
    pub fn matches(&self, route: &str, path: &str) -> bool {
        (self.route.is_empty() || self.route == route) && path.starts_with(&self.path_prefix)
    }
}

/// Whether an entry of `route` for `path`, written at `epoch`, is invalidated by one of
/// `purges`.
pub fn invalidated(purges: &[PurgeRule], route: &str, path: &str, epoch: u64) -> bool {
    purges
        .iter()
        .any(|p| p.id > epoch && p.matches(route, path))
}

/// `text` with Redis glob characters escaped, for a literal prefix in `SCAN MATCH`.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: u64, route: &str, prefix: &str) -> PurgeRule {
        PurgeRule {
            id,
            route: route.into(),
            path_prefix: prefix.into(),
        }
    }

    #[test]
    fn matching_by_route_and_prefix() {
        assert!(rule(1, "", "").matches("any", "/x"));
        assert!(rule(1, "r", "").matches("r", "/x"));
        assert!(!rule(1, "r", "").matches("s", "/x"));
        assert!(rule(1, "r", "/api/").matches("r", "/api/orders"));
        assert!(!rule(1, "r", "/api/").matches("r", "/apx"));
        assert!(rule(1, "", "/api").matches("s", "/api"));
    }

    #[test]
    fn only_purges_newer_than_the_entry_invalidate_it() {
        let purges = [rule(10, "r", "/a"), rule(20, "", "/b")];
        assert!(invalidated(&purges, "r", "/a/1", 9));
        assert!(!invalidated(&purges, "r", "/a/1", 10));
        assert!(!invalidated(&purges, "s", "/a/1", 0));
        assert!(invalidated(&purges, "s", "/b", 19));
        assert!(!invalidated(&purges, "s", "/b", 20));
        assert!(!invalidated(&[], "r", "/a", 0));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("/a*b?[c]\\^"), "/a\\*b\\?\\[c\\]\\\\\\^");
        assert_eq!(glob_escape("/plain"), "/plain");
    }
}
