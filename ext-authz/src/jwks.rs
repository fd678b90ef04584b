//! One JWKS cache per provider: OIDC discovery, the key set, background refresh, and the
//! bounded refetch on an unknown `kid`.
//!
//! - Keys live in an `ArcSwapOption`: the hot path reads them without locking. `None` means
//!   the provider was never reached (decisions answer 503, readiness is false).
//! - Every fetch happens under one async mutex per provider (single flight). A caller that
//!   waited on it re-reads the key set first: if someone else fetched meanwhile it does not
//!   fetch again. An unknown `kid` fetches at most once per `jwks_min_refetch`, so random
//!   `kid`s cannot turn the gateway into a load generator against the IdP.
//! - A failed fetch keeps the previous key set: an unreachable IdP leaves known keys working.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::clock::Clock;
use crate::metrics::{FetchKind, Metrics};
use crate::policy::Algorithm;

/// Discovery documents and key sets larger than this are refused: real ones are a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// A JWKS with more keys than this is refused: each kid-less token may try every compatible
/// key, so the count bounds the work per token.
pub const MAX_KEYS: usize = 64;
/// Timeout of one HTTP request to the IdP. Longer than Envoy's per-check timeout on purpose:
/// a slow IdP delays only requests with a new `kid`, and the fetch finishes for the next ones.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: invalid JSON: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("discovery at {url} names issuer {found:?}, configured {expected:?}")]
    IssuerMismatch {
        url: String,
        expected: String,
        found: String,
    },
    #[error("{url}: no usable signing key ({skipped} skipped)")]
    NoUsableKeys { url: String, skipped: usize },
    #[error("{url}: more than {MAX_KEYS} keys")]
    TooManyKeys { url: String },
}

/// Why no key could be returned for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the provider's JWKS has never been fetched")]
    NeverReached,
    #[error("no key with this kid (or none compatible with the algorithm)")]
    UnknownKid,
}

/// Key families, with the curve where the family has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One signing key from a JWKS, ready for verification.
pub struct VerifyingKey {
    /// `kid`, or for a key without one a synthetic id that no `kid` can equal.
    pub id: Arc<str>,
    pub kid: Option<String>,
    pub kty: KeyType,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    pub alg: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("id", &self.id)
            .field("kty", &self.kty)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Whether a token signed with `alg` may be verified by this key: the key type (and
    /// curve) must be the algorithm's, and a key pinned to an `alg` serves only that one.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        let family_ok = matches!(
            (alg, self.kty),
            (RS256 | RS384 | RS512 | PS256 | PS384 | PS512, KeyType::Rsa)
                | (ES256, KeyType::EcP256)
                | (ES384, KeyType::EcP384)
                | (EdDSA, KeyType::Ed25519)
        );
        family_ok && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Debug, Deserialize)]
struct JwkDoc {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwksDoc {
    keys: Vec<serde_json::Value>,
}

/// Why a JWK was left out of the key set (logged at debug level; not an error: JWKS
/// endpoints legitimately publish encryption keys next to signing keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    NotForSignatures,
    UnsupportedType(String),
    UnsupportedAlg(String),
    Invalid(&'static str),
    DuplicateKid(String),
}

/// A provider's usable keys, by id.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<Arc<str>, Arc<VerifyingKey>>,
    pub generation: u64,
}

impl KeySet {
    /// Parses a JWKS document; keys that cannot sign-verify are skipped and reported.
    pub fn parse(body: &[u8], generation: u64) -> Result<(Self, Vec<Skipped>), serde_json::Error> {
        let doc: JwksDoc = serde_json::from_slice(body)?;
        let mut keys = HashMap::new();
        let mut ambiguous = std::collections::HashSet::new();
        let mut skipped = Vec::new();
        for (index, raw) in doc.keys.into_iter().enumerate() {
            let jwk: JwkDoc = match serde_json::from_value(raw) {
                Ok(j) => j,
                Err(_) => {
                    skipped.push(Skipped::Invalid("member types"));
                    continue;
                }
            };
            match Self::key(jwk, index) {
                Ok(k) => {
                    let id = k.id.clone();
                    if ambiguous.contains(&id) {
                        skipped.push(Skipped::DuplicateKid(id.to_string()));
                    } else if keys.insert(id.clone(), Arc::new(k)).is_some() {
                        // Two keys under one kid: which one a token means is ambiguous, so
                        // neither is trusted.
                        keys.remove(&id);
                        ambiguous.insert(id.clone());
                        skipped.push(Skipped::DuplicateKid(id.to_string()));
                    }
                }
                Err(s) => skipped.push(s),
            }
        }
        Ok((Self { keys, generation }, skipped))
    }

    fn key(jwk: JwkDoc, index: usize) -> Result<VerifyingKey, Skipped> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(Skipped::NotForSignatures);
        }
        if let Some(ops) = &jwk.key_ops
            && !ops.iter().any(|o| o == "verify")
        {
            return Err(Skipped::NotForSignatures);
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some(a) => Some(
                a.parse::<Algorithm>()
                    .map_err(|_| Skipped::UnsupportedAlg(a.to_owned()))?,
            ),
        };
        fn need<'a>(v: &'a Option<String>, what: &'static str) -> Result<&'a str, Skipped> {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .ok_or(Skipped::Invalid(what))
        }
        let (kty, decoding) = match (jwk.kty.as_deref(), jwk.crv.as_deref()) {
            (Some("RSA"), _) => (
                KeyType::Rsa,
                DecodingKey::from_rsa_components(need(&jwk.n, "n")?, need(&jwk.e, "e")?)
                    .map_err(|_| Skipped::Invalid("n/e"))?,
            ),
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                let (kty, len): (KeyType, usize) = if crv == "P-256" {
                    (KeyType::EcP256, 32)
                } else {
                    (KeyType::EcP384, 48)
                };
                let (x, y) = (need(&jwk.x, "x")?, need(&jwk.y, "y")?);
                // Coordinates of the wrong length would be another curve's point.
                let b64_len = (len * 4).div_ceil(3);
                if x.len() != b64_len || y.len() != b64_len {
                    return Err(Skipped::Invalid("x/y length"));
                }
                (
                    kty,
                    DecodingKey::from_ec_components(x, y).map_err(|_| Skipped::Invalid("x/y"))?,
                )
            }
            (Some("OKP"), Some("Ed25519")) => (
                KeyType::Ed25519,
                DecodingKey::from_ed_components(need(&jwk.x, "x")?)
                    .map_err(|_| Skipped::Invalid("x"))?,
            ),
            (kty, crv) => {
                return Err(Skipped::UnsupportedType(format!(
                    "{}/{}",
                    kty.unwrap_or("-"),
                    crv.unwrap_or("-")
                )));
            }
        };
        let id: Arc<str> = match &jwk.kid {
            Some(k) => Arc::from(k.as_str()),
            // Never matched against a token's kid: `find` serves only keys that have a kid
            // to kid lookups.
            None => Arc::from(format!("\0#{index}")),
        };
        Ok(VerifyingKey {
            id,
            kid: jwk.kid,
            kty,
            alg,
            decoding,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// The keys a token may be verified with: the one with its `kid`, or (no `kid`) every
    /// kid-less key compatible with `alg`. A keyed JWK is never used for a kid-less token and
    /// vice versa, so a token cannot pick a key by omission.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyingKey>> {
        match kid {
            Some(k) => self
                .keys
                .get(k)
                .filter(|key| key.kid.is_some())
                .cloned()
                .into_iter()
                .collect(),
            None => self
                .keys
                .values()
                .filter(|key| key.kid.is_none() && key.accepts(alg))
                .cloned()
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct FetchState {
    /// From discovery; `None` until discovered (or after the URL stopped answering).
    jwks_uri: Option<String>,
    last_attempt: Option<Duration>,
    last_success: Option<Duration>,
}

/// The JWKS of one provider.
pub struct JwksCache {
    provider: Arc<str>,
    issuer: String,
    jwks_url: Option<String>,
    refresh_ms: AtomicU64,
    min_refetch_ms: AtomicU64,
    keys: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    state: tokio::sync::Mutex<FetchState>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("provider", &self.provider)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.load().as_ref().map(|k| k.len()))
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl JwksCache {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        provider: Arc<str>,
        issuer: String,
        jwks_url: Option<String>,
        refresh: Duration,
        min_refetch: Duration,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        Self {
            provider,
            issuer,
            jwks_url,
            refresh_ms: AtomicU64::new(ms(refresh)),
            min_refetch_ms: AtomicU64::new(ms(min_refetch)),
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(FetchState::default()),
            http,
            clock,
            metrics,
        }
    }

    /// New intervals from a config version that kept this provider's issuer and URL.
    pub fn set_intervals(&self, refresh: Duration, min_refetch: Duration) {
        self.refresh_ms.store(ms(refresh), Ordering::Relaxed);
        self.min_refetch_ms
            .store(ms(min_refetch), Ordering::Relaxed);
    }

    fn min_refetch(&self) -> Duration {
        Duration::from_millis(self.min_refetch_ms.load(Ordering::Relaxed))
    }

    fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.load(Ordering::Relaxed))
    }

    /// Whether keys were ever fetched.
    pub fn is_reached(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Whether the current key set still holds the key with this id.
    pub fn contains(&self, id: &str) -> bool {
        self.keys.load().as_ref().is_some_and(|k| k.contains(id))
    }

    /// The keys for a token's `kid`/`alg`, refetching (bounded) when none match.
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<VerifyingKey>>, KeyError> {
        let before = self.keys.load_full();
        if let Some(ks) = &before {
            let found = ks.find(kid, alg);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        self.refetch(before.as_ref().map(|k| k.generation)).await;
        match self.keys.load_full() {
            None => Err(KeyError::NeverReached),
            Some(ks) => {
                let found = ks.find(kid, alg);
                if found.is_empty() {
                    Err(KeyError::UnknownKid)
                } else {
                    Ok(found)
                }
            }
        }
    }

    /// Fetches unless someone fetched since the caller looked (`seen` generation) or the last
    /// attempt is more recent than `jwks_min_refetch`.
    async fn refetch(&self, seen: Option<u64>) {
        let mut st = self.state.lock().await;
        let current = self.keys.load().as_ref().map(|k| k.generation);
        if current != seen {
            return;
        }
        let now = self.clock.now();
        if st
            .last_attempt
            .is_some_and(|t| now.saturating_sub(t) < self.min_refetch())
        {
            self.metrics.refetch_suppressed(&self.provider);
            return;
        }
        st.last_attempt = Some(now);
        // The outcome is logged and counted inside; the caller re-reads the key set.
        let _outcome = self.fetch(&mut st, false).await;
    }

    /// The background refresh: fetches when `jwks_refresh` has passed since the last success
    /// (or, never reached, when `jwks_min_refetch` has passed since the last attempt).
    /// Returns whether the provider has keys.
    pub async fn refresh_if_due(&self) -> bool {
        let mut st = self.state.lock().await;
        let now = self.clock.now();
        let since = |t: Option<Duration>| t.map(|t| now.saturating_sub(t));
        let retry_ok = since(st.last_attempt).is_none_or(|d| d >= self.min_refetch());
        let due = match since(st.last_success) {
            None => retry_ok,
            Some(d) => d >= self.refresh() && retry_ok,
        };
        if due {
            st.last_attempt = Some(now);
            let _outcome = self.fetch(&mut st, true).await;
        }
        self.is_reached()
    }

    /// One discovery (when needed) and one JWKS download. On success the key set is replaced
    /// whole, so keys the IdP dropped stop verifying; on failure the old set stays.
    async fn fetch(&self, st: &mut FetchState, rediscover: bool) -> Result<(), JwksError> {
        let result = self.fetch_inner(st, rediscover).await;
        match &result {
            Ok(()) => st.last_success = Some(self.clock.now()),
            Err(e) => tracing::warn!(
                provider = %self.provider,
                error = %e,
                keeps_known_keys = self.is_reached(),
                "JWKS fetch failed"
            ),
        }
        result
    }

    async fn fetch_inner(&self, st: &mut FetchState, rediscover: bool) -> Result<(), JwksError> {
        let (uri, discovered) = match (&self.jwks_url, &st.jwks_uri) {
            (Some(u), _) => (u.clone(), false),
            (None, Some(u)) if !rediscover => (u.clone(), true),
            (None, _) => {
                let u = self.discover().await?;
                st.jwks_uri = Some(u.clone());
                (u, true)
            }
        };
        let body = match self.get(&uri, FetchKind::Jwks).await {
            Ok(b) => b,
            Err(e) => {
                if discovered {
                    // The discovered URL may have moved: discover again next time.
                    st.jwks_uri = None;
                }
                return Err(e);
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (set, skipped) = KeySet::parse(&body, generation).map_err(|source| {
            self.metrics.fetch_error(&self.provider, FetchKind::Jwks);
            JwksError::Json {
                url: uri.clone(),
                source,
            }
        })?;
        if set.len() > MAX_KEYS {
            self.metrics.fetch_error(&self.provider, FetchKind::Jwks);
            return Err(JwksError::TooManyKeys { url: uri });
        }
        if set.is_empty() {
            self.metrics.fetch_error(&self.provider, FetchKind::Jwks);
            return Err(JwksError::NoUsableKeys {
                url: uri,
                skipped: skipped.len(),
            });
        }
        for s in &skipped {
            tracing::debug!(provider = %self.provider, skipped = ?s, "JWK not used");
        }
        tracing::info!(provider = %self.provider, keys = set.len(), generation, "JWKS loaded");
        self.keys.store(Some(Arc::new(set)));
        self.metrics.keys_loaded(
            &self.provider,
            self.keys.load().as_ref().map_or(0, |k| k.len()),
        );
        Ok(())
    }

    async fn discover(&self) -> Result<String, JwksError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.get(&url, FetchKind::Discovery).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|source| {
            self.metrics
                .fetch_error(&self.provider, FetchKind::Discovery);
            JwksError::Json {
                url: url.clone(),
                source,
            }
        })?;
        // OpenID Connect Discovery §4.3: the document's issuer must be the one asked for.
        if doc.issuer != self.issuer {
            self.metrics
                .fetch_error(&self.provider, FetchKind::Discovery);
            return Err(JwksError::IssuerMismatch {
                url,
                expected: self.issuer.clone(),
                found: doc.issuer,
            });
        }
        Ok(doc.jwks_uri)
    }

    /// GET with a size bound; counts the attempt and its failure.
    async fn get(&self, url: &str, kind: FetchKind) -> Result<Vec<u8>, JwksError> {
        self.metrics.fetch(&self.provider, kind);
        let result = async {
            let mut resp = self
                .http
                .get(url)
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|source| JwksError::Http {
                    url: url.to_owned(),
                    source,
                })?;
            if !resp.status().is_success() {
                return Err(JwksError::Status {
                    url: url.to_owned(),
                    status: resp.status().as_u16(),
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|source| JwksError::Http {
                url: url.to_owned(),
                source,
            })? {
                if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                    return Err(JwksError::TooLarge {
                        url: url.to_owned(),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
        .await;
        if result.is_err() {
            self.metrics.fetch_error(&self.provider, kind);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_not_for_signing_or_malformed_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ok", "use": "sig", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"}
        ]});
        let (set, skipped) = KeySet::parse(&serde_json::to_vec(&doc).unwrap(), 1).unwrap();
        assert_eq!(set.len(), 3, "{skipped:?}");
        assert_eq!(skipped.len(), 6);
        assert!(set.contains("ok") && set.contains("ed"));
        assert!(!set.contains("enc"));
        // A kid-less token finds only kid-less keys of its family.
        assert_eq!(set.find(None, Algorithm::RS256).len(), 1);
        assert!(set.find(None, Algorithm::ES256).is_empty());
        // A kid finds exactly its key, whatever the algorithm; `accepts` then decides.
        let ok = set.find(Some("ok"), Algorithm::ES256);
        assert_eq!(ok.len(), 1);
        assert!(!ok[0].accepts(Algorithm::ES256));
        assert!(!ok[0].accepts(Algorithm::PS256), "pinned to RS256");
        assert!(ok[0].accepts(Algorithm::RS256));
        // The synthetic id of a kid-less key is not reachable as a kid.
        assert!(set.find(Some("\0#8"), Algorithm::RS256).is_empty());
    }

    #[test]
    fn duplicate_kids_are_both_dropped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "k", "n": "AQAC", "e": "AQAB"}
        ]});
        let (set, skipped) = KeySet::parse(&serde_json::to_vec(&doc).unwrap(), 1).unwrap();
        assert!(set.is_empty());
        assert_eq!(skipped, [Skipped::DuplicateKid("k".into())]);
    }
}
