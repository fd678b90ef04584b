//! The bounded cache of validated tokens, so the hot path skips the signature check for a
//! token it has seen.
//!
//! Keyed by SHA-256 over the provider's fingerprint and the token: the token itself is never
//! stored, a provider setting that changes validation (issuer, audiences, algorithms, leeway,
//! roles claims) changes every key, and a collision would need a SHA-256 collision. An entry
//! is never served at or past the token's `exp`, nor once its verifying key left the JWKS.
//! Authorization (roles, scopes) is not cached: it is cheap and may change with the route
//! policy at any version.

use std::sync::Arc;

use aws_lc_rs::digest;

use crate::validate::Identity;

/// Default number of cached identities: at a few KiB of claims each, tens of MiB at most.
pub const DEFAULT_ENTRIES: usize = 10_000;

pub type CacheKey = [u8; 32];

/// A validated token.
#[derive(Debug)]
pub struct Cached {
    pub identity: Identity,
}

pub struct TokenCache {
    inner: quick_cache::sync::Cache<CacheKey, Arc<Cached>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.inner.len())
            .finish()
    }
}

impl TokenCache {
    pub fn new(entries: usize) -> Self {
        Self {
            inner: quick_cache::sync::Cache::new(entries.max(1)),
        }
    }

    pub fn key(provider_fingerprint: &[u8; 32], token: &str) -> CacheKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(provider_fingerprint);
        ctx.update(token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The cached identity, unless expired at `now_secs` or its key is gone (`key_present`).
    pub fn get(
        &self,
        key: &CacheKey,
        now_secs: u64,
        key_present: impl FnOnce(&str) -> bool,
    ) -> Option<Arc<Cached>> {
        let hit = self.inner.get(key)?;
        if now_secs >= hit.identity.exp || !key_present(&hit.identity.key_id) {
            self.inner.remove(key);
            return None;
        }
        Some(hit)
    }

    pub fn insert(&self, key: CacheKey, value: Arc<Cached>) {
        self.inner.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn entry(exp: u64, key_id: &str) -> Arc<Cached> {
        Arc::new(Cached {
            identity: Identity {
                claims: serde_json::Map::new(),
                roles: HashSet::new(),
                scopes: HashSet::new(),
                exp,
                key_id: Arc::from(key_id),
            },
        })
    }

    #[test]
    fn entries_die_at_exp_and_with_their_key() {
        let c = TokenCache::new(8);
        let k = TokenCache::key(&[1; 32], "tok");
        assert_ne!(
            k,
            TokenCache::key(&[2; 32], "tok"),
            "provider is part of the key"
        );
        c.insert(k, entry(100, "k1"));
        assert!(c.get(&k, 99, |_| true).is_some());
        assert!(c.get(&k, 99, |id| id != "k1").is_none(), "key rotated out");
        assert!(
            c.get(&k, 50, |_| true).is_none(),
            "removed on the previous miss"
        );
        c.insert(k, entry(100, "k1"));
        assert!(c.get(&k, 100, |_| true).is_none(), "never at or past exp");
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(16);
        for i in 0..1000 {
            c.insert(
                TokenCache::key(&[0; 32], &i.to_string()),
                entry(u64::MAX, "k"),
            );
        }
        assert!(c.len() <= 16, "{}", c.len());
    }
}
