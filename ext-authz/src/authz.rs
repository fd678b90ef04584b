//! The decision engine: the current compiled policy (hot-swapped), the JWKS caches, the token
//! cache, and `check`, which turns one request into a CheckResponse.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;

use crate::cache::{Cached, TokenCache};
use crate::clock::{Clock, SystemClock};
use crate::jwks::{FETCH_TIMEOUT, JwksCache, KeyError};
use crate::metrics::{CacheResult, Metrics, Outcome};
use crate::policy::{Policies, PolicyError, PolicySpec, Provider, RouteAuth};
use crate::response;
use crate::validate::{self, Reason};

/// What the engine needs from one Check: the route, the `Authorization` header and the
/// request id, already taken out of the transport's request.
#[derive(Clone, Copy, Default)]
pub struct CheckInput<'a> {
    pub route: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Never prints the credential: a stray `?input` in a log line must not leak a token.
impl std::fmt::Debug for CheckInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckInput")
            .field("route", &self.route)
            .field("authorization", &self.authorization.map(|_| "<redacted>"))
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// Construction options; the defaults are the production ones.
#[derive(Debug, Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
    pub token_cache_entries: usize,
    /// HTTP client for discovery and JWKS; `None` builds one with [`FETCH_TIMEOUT`].
    pub http: Option<reqwest::Client>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            token_cache_entries: crate::cache::DEFAULT_ENTRIES,
            http: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("cannot build the HTTP client for identity providers: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// A policy version with the JWKS cache of each of its providers.
#[derive(Debug, Default)]
struct Current {
    policies: Policies,
    jwks: HashMap<String, Arc<JwksCache>>,
}

/// The ext-authz engine. Cheap to share (`Arc`); all methods take `&self`.
#[derive(Debug)]
pub struct Authz {
    current: ArcSwap<Current>,
    /// Serializes `apply` (config versions arrive one at a time anyway) so JWKS caches are
    /// reconciled against one previous version.
    apply_lock: std::sync::Mutex<()>,
    applied: AtomicBool,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    metrics: Metrics,
}

impl Authz {
    pub fn new(options: Options, metrics: Metrics) -> Result<Self, AuthzError> {
        let http = match options.http {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(FETCH_TIMEOUT)
                .build()
                .map_err(AuthzError::HttpClient)?,
        };
        Ok(Self {
            current: ArcSwap::from_pointee(Current::default()),
            apply_lock: std::sync::Mutex::new(()),
            applied: AtomicBool::new(false),
            cache: TokenCache::new(options.token_cache_entries),
            clock: options.clock,
            http,
            metrics,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Compiles and installs a config version. A provider whose issuer and `jwks_url` are
    /// unchanged keeps its JWKS cache (keys survive the reload); others start empty and fetch
    /// on first use or on the next [`Authz::refresh_due`]. An invalid spec changes nothing.
    pub fn apply(&self, spec: &PolicySpec) -> Result<(), PolicyError> {
        let policies = Policies::compile(spec)?;
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.current.load();
        let mut jwks = HashMap::new();
        for (name, p) in &policies.providers {
            let reuse = previous.policies.providers.get(name).and_then(|old| {
                (old.issuer == p.issuer && old.jwks_url == p.jwks_url)
                    .then(|| previous.jwks.get(name).cloned())
                    .flatten()
            });
            let cache = match reuse {
                Some(c) => {
                    c.set_intervals(p.jwks_refresh, p.jwks_min_refetch);
                    c
                }
                None => Arc::new(JwksCache::new(
                    p.name.clone(),
                    p.issuer.clone(),
                    p.jwks_url.clone(),
                    p.jwks_refresh,
                    p.jwks_min_refetch,
                    self.http.clone(),
                    self.clock.clone(),
                    self.metrics.clone(),
                )),
            };
            jwks.insert(name.clone(), cache);
        }
        tracing::info!(
            version = %policies.version,
            providers = policies.providers.len(),
            routes = policies.routes.len(),
            "policy version applied"
        );
        self.current.store(Arc::new(Current { policies, jwks }));
        self.applied.store(true, Ordering::Release);
        self.metrics.policy_version_loads.inc();
        Ok(())
    }

    /// The version last applied (`None` before the first).
    pub fn version(&self) -> Option<String> {
        self.applied
            .load(Ordering::Acquire)
            .then(|| self.current.load().policies.version.clone())
    }

    /// Ready: a policy version was applied and every provider's keys were fetched at least
    /// once.
    pub fn is_ready(&self) -> bool {
        self.applied.load(Ordering::Acquire) && self.unreached_providers().is_empty()
    }

    /// Providers whose JWKS was never fetched (their routes answer 503).
    pub fn unreached_providers(&self) -> Vec<String> {
        let cur = self.current.load();
        let mut v: Vec<String> = cur
            .jwks
            .iter()
            .filter(|(_, c)| !c.is_reached())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Runs every provider's due refresh (see [`JwksCache::refresh_if_due`]); returns
    /// [`Authz::is_ready`]. The binary calls this on a timer; tests call it after moving
    /// their clock.
    pub async fn refresh_due(&self) -> bool {
        let caches: Vec<Arc<JwksCache>> = self.current.load().jwks.values().cloned().collect();
        for c in caches {
            c.refresh_if_due().await;
        }
        self.is_ready()
    }

    /// Calls [`Authz::refresh_due`] every `tick` forever, reporting readiness after each.
    pub async fn run_refresher(self: Arc<Self>, tick: Duration, on_ready: impl Fn(bool)) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            on_ready(self.refresh_due().await);
        }
    }

    /// One authorization decision.
    pub async fn check(&self, input: CheckInput<'_>) -> CheckResponse {
        let started = Instant::now();
        let cur = self.current.load_full();
        let route_label = input
            .route
            .filter(|r| cur.policies.routes.contains_key(*r))
            .unwrap_or("");
        let (outcome, response) = self.decide(&cur, input).await;
        self.metrics.decision(route_label, outcome);
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn decide(&self, cur: &Current, input: CheckInput<'_>) -> (Outcome, CheckResponse) {
        let Some(route) = input.route.and_then(|r| cur.policies.routes.get(r)) else {
            // Envoy and the policy disagree (a route without context extension, or one this
            // version does not have): a config problem, refused loudly.
            tracing::error!(
                route = input.route.unwrap_or("<none>"),
                key = crate::policy::ROUTE_CONTEXT_KEY,
                version = %cur.policies.version,
                request_id = input.request_id.unwrap_or(""),
                "Check for an unknown route refused"
            );
            return self.refuse(Reason::UnknownRoute, &input, None);
        };
        let strip = |set: &[(http::HeaderName, String)]| -> Vec<String> {
            cur.policies
                .strip_headers
                .iter()
                .filter(|h| !set.iter().any(|(s, _)| s == *h))
                .map(|h| h.as_str().to_owned())
                .collect()
        };
        let Some(auth) = &route.auth else {
            return (
                Outcome::Anonymous,
                response::allow("no_auth", Vec::new(), strip(&[]), None),
            );
        };
        let token = match bearer(input.authorization) {
            Bearer::Token(t) => t,
            Bearer::Empty => return self.refuse(Reason::Malformed, &input, Some(&route.name)),
            Bearer::Absent if auth.optional => {
                return (
                    Outcome::Anonymous,
                    response::allow("anonymous", Vec::new(), strip(&[]), None),
                );
            }
            Bearer::Absent => return self.refuse(Reason::MissingToken, &input, Some(&route.name)),
        };
        let Some(jwks) = cur.jwks.get(auth.provider.name.as_ref()) else {
            // Policies::compile guarantees a provider per route and apply a cache per provider.
            return self.refuse(Reason::UnknownRoute, &input, Some(&route.name));
        };
        let cached = match self.identity(token, &auth.provider, jwks).await {
            Ok(c) => c,
            Err(reason) => return self.refuse(reason, &input, Some(&route.name)),
        };
        if let Err(reason) = validate::authorize(&cached.identity, auth) {
            tracing::info!(
                route = %route.name,
                reason = %reason,
                sub = cached.identity.subject().unwrap_or(""),
                request_id = input.request_id.unwrap_or(""),
                "request refused"
            );
            self.metrics.failure(reason);
            let outcome = Outcome::Forbidden;
            return (outcome, response::deny(reason, input.request_id));
        }
        let set = forward_headers(&cached, auth, &route.name);
        let remove = strip(&set);
        tracing::debug!(
            route = %route.name,
            sub = cached.identity.subject().unwrap_or(""),
            request_id = input.request_id.unwrap_or(""),
            "request allowed"
        );
        (
            Outcome::Allowed,
            response::allow(
                "allowed",
                set,
                remove,
                // No `vrata.authz` at all when nothing reads a claim: every metadata value
                // costs Envoy a decode and a copy per request.
                (!auth.metadata_claims.is_empty()).then(|| {
                    response::claims_subset(&cached.identity.claims, &auth.metadata_claims)
                }),
            ),
        )
    }

    fn refuse(
        &self,
        reason: Reason,
        input: &CheckInput<'_>,
        route: Option<&str>,
    ) -> (Outcome, CheckResponse) {
        if reason != Reason::UnknownRoute {
            tracing::info!(
                route = route.unwrap_or(""),
                reason = %reason,
                request_id = input.request_id.unwrap_or(""),
                "request refused"
            );
        }
        self.metrics.failure(reason);
        let outcome = match response::Refusal::for_reason(reason).status {
            401 => Outcome::Unauthenticated,
            403 => Outcome::Forbidden,
            503 => Outcome::Unavailable,
            _ => Outcome::Error,
        };
        (outcome, response::deny(reason, input.request_id))
    }

    /// The validated identity for a token: from the cache, or parsed, key-resolved, verified
    /// and cached.
    async fn identity(
        &self,
        token: &str,
        provider: &Provider,
        jwks: &JwksCache,
    ) -> Result<Arc<Cached>, Reason> {
        let key = TokenCache::key(&provider.fingerprint, token);
        let now = self.clock.now_secs();
        if let Some(hit) = self.cache.get(&key, now, |id| jwks.contains(id)) {
            self.metrics.cache(CacheResult::Hit);
            return Ok(hit);
        }
        self.metrics.cache(CacheResult::Miss);
        let parsed = validate::parse(token, provider.algorithms)?;
        let keys = jwks
            .keys_for(parsed.kid.as_deref(), parsed.alg)
            .await
            .map_err(|e| match e {
                KeyError::NeverReached => Reason::ProviderUnavailable,
                KeyError::UnknownKid => Reason::UnknownKid,
            })?;
        // The clock is read again: a refetch may have taken a while.
        let now = self.clock.now_secs();
        let mut last = Reason::BadSignature;
        for k in keys {
            match validate::verify(&parsed, &k, provider, now) {
                Ok(identity) => {
                    let cached = Arc::new(Cached { identity });
                    self.cache.insert(key, cached.clone());
                    return Ok(cached);
                }
                // Several candidates only for kid-less tokens: try the next key.
                Err(r @ (Reason::BadSignature | Reason::KeyMismatch)) => last = r,
                Err(r) => return Err(r),
            }
        }
        Err(last)
    }
}

enum Bearer<'a> {
    Absent,
    Empty,
    Token(&'a str),
}

/// RFC 6750 §2.1: `Bearer` (scheme case-insensitive) and the token. Another scheme is not a
/// bearer token at all (treated as absent).
fn bearer(header: Option<&str>) -> Bearer<'_> {
    let Some(h) = header.map(str::trim) else {
        return Bearer::Absent;
    };
    let Some((scheme, rest)) = h.split_once(' ').or(Some((h, ""))) else {
        return Bearer::Absent;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Absent;
    }
    let t = rest.trim();
    if t.is_empty() {
        Bearer::Empty
    } else {
        Bearer::Token(t)
    }
}

/// `forward_claims` values for this identity. A claim whose value cannot be a header value
/// (control characters) is not forwarded, and that is logged: the upstream sees no header
/// rather than a forged or broken one.
fn forward_headers(
    cached: &Cached,
    auth: &RouteAuth,
    route: &str,
) -> Vec<(http::HeaderName, String)> {
    let mut out = Vec::with_capacity(auth.forward_claims.len());
    for (name, path) in &auth.forward_claims {
        let Some(value) = path
            .lookup(&cached.identity.claims)
            .and_then(validate::claim_header_value)
        else {
            continue;
        };
        if http::HeaderValue::from_str(&value).is_err() {
            tracing::warn!(
                route,
                header = %name,
                claim = path.as_str(),
                "claim value is not a valid header value; header not forwarded"
            );
            continue;
        }
        out.push((name.clone(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_token() {
        let input = CheckInput {
            route: Some("r"),
            authorization: Some("Bearer secret.token.here"),
            request_id: None,
        };
        let text = format!("{input:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn bearer_parsing() {
        assert!(matches!(bearer(None), Bearer::Absent));
        assert!(matches!(bearer(Some("Basic abc")), Bearer::Absent));
        assert!(matches!(bearer(Some("Bearer")), Bearer::Empty));
        assert!(matches!(bearer(Some("bearer   ")), Bearer::Empty));
        assert!(matches!(
            bearer(Some("BEARER a.b.c")),
            Bearer::Token("a.b.c")
        ));
        assert!(matches!(
            bearer(Some("Bearer  a.b.c ")),
            Bearer::Token("a.b.c")
        ));
    }
}
