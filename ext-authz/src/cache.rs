//! The bounded cache of validated tokens, so the hot path skips the signature check for a
//! token it has seen.
//!
//! Keyed by the provider's fingerprint and the whole token, compared byte for byte: a provider
//! setting that changes validation (issuer, audiences, algorithms, leeway, roles claims) changes
//! every key, and no other token can ever match an entry. (Keys used to be a SHA-256 of the two,
//! which kept the token out of memory but cost a third of a cached Check: the token lives in
//! Envoy's and this process's request buffers anyway, and only for as long as it is valid
//! here.) The map hashes keys with a per-process random seed; a collision costs a comparison,
//! never a wrong answer. An entry is never served at or past the token's `exp`, nor once its
//! verifying key left the JWKS.
//! Authorization (roles, scopes) is not cached: it is cheap and may change with the route
//! policy at any version.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::validate::Identity;

/// Default number of cached identities: at a few KiB of claims each, tens of MiB at most.
pub const DEFAULT_ENTRIES: usize = 10_000;

/// An owned key: the provider's fingerprint and the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    provider: [u8; 32],
    token: Box<str>,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef {
            provider: &self.provider,
            token: &self.token,
        }
        .hash(state);
    }
}

/// A borrowed key, to look up without copying the token.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    provider: &'a [u8; 32],
    token: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.provider);
        state.write(self.token.as_bytes());
    }
}

impl quick_cache::Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *self.provider == key.provider && self.token == &*key.token
    }
}

impl KeyRef<'_> {
    pub fn owned(self) -> CacheKey {
        CacheKey {
            provider: *self.provider,
            token: self.token.into(),
        }
    }
}

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

    pub fn key<'a>(provider_fingerprint: &'a [u8; 32], token: &'a str) -> KeyRef<'a> {
        KeyRef {
            provider: provider_fingerprint,
            token,
        }
    }

    /// The cached identity, unless expired at `now_secs` or its key is gone (`key_present`).
    pub fn get(
        &self,
        key: KeyRef<'_>,
        now_secs: u64,
        key_present: impl FnOnce(&str) -> bool,
    ) -> Option<Arc<Cached>> {
        let hit = self.inner.get(&key)?;
        if now_secs >= hit.identity.exp || !key_present(&hit.identity.key_id) {
            self.inner.remove(&key);
            return None;
        }
        Some(hit)
    }

    pub fn insert(&self, key: KeyRef<'_>, value: Arc<Cached>) {
        self.inner.insert(key.owned(), value);
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
        c.insert(k, entry(100, "k1"));
        assert!(c.get(k, 99, |_| true).is_some());
        assert!(
            c.get(TokenCache::key(&[2; 32], "tok"), 99, |_| true)
                .is_none(),
            "provider is part of the key"
        );
        assert!(
            c.get(TokenCache::key(&[1; 32], "tok2"), 99, |_| true)
                .is_none(),
            "only the same token matches"
        );
        assert!(
            c.get(TokenCache::key(&[1; 32], "to"), 99, |_| true)
                .is_none(),
            "not a prefix of it"
        );
        assert!(c.get(k, 99, |id| id != "k1").is_none(), "key rotated out");
        assert!(
            c.get(k, 50, |_| true).is_none(),
            "removed on the previous miss"
        );
        c.insert(k, entry(100, "k1"));
        assert!(c.get(k, 100, |_| true).is_none(), "never at or past exp");
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
