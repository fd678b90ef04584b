//! The policy model: what phase-2's xDS conversion hands in ([`PolicySpec`], plain data), and
//! what the hot path reads ([`Policies`], compiled once per config version: header names parsed,
//! claim paths split, requirements de-duplicated, the set of headers to strip precomputed).
//!
//! # The context-extension contract
//!
//! Envoy's ext_authz filter passes per-route `check_settings.context_extensions`. The route is
//! identified by the key [`ROUTE_CONTEXT_KEY`] (`vrata_route`) whose value is the route's
//! `routes[].name`, exactly as it appears in [`RouteSpec::name`]. A Check without that key, or
//! naming a route this policy version does not know, is refused (fail closed).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use http::HeaderName;

/// The `context_extensions` key naming the route (value: `routes[].name`).
pub const ROUTE_CONTEXT_KEY: &str = "vrata_route";

/// Headers no policy may set or strip: forwarding a claim into them would let a token steer
/// routing, framing or the gateway's own identity headers.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
];

/// Signature algorithms a provider may allow. HMAC and `none` are not representable: a gateway
/// validating third-party tokens only ever holds public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (`alg` header value).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported signature algorithm {0:?}")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;
    /// Exact JOSE spelling: `alg` values are case-sensitive (RFC 7515 §4.1.1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// A set of algorithms as a bit set: membership is one AND on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgorithmSet(u16);

impl AlgorithmSet {
    pub fn contains(self, a: Algorithm) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        AlgorithmSet(iter.into_iter().fold(0, |acc, a| acc | a.bit()))
    }
}

/// A dot-separated claim path (`realm_access.roles`, `resource_access.api-gateway.roles`).
///
/// Keycloak client ids may themselves contain dots; when an object has no member named by the
/// next segment, lookup retries with that segment joined to the following ones, so
/// `resource_access.my.app.roles` finds the client `my.app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimPath {
    text: String,
    segments: Vec<String>,
}

impl ClaimPath {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if text.is_empty() || segments.iter().any(String::is_empty) {
            return Err(PolicyError::ClaimPath(text.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The value at this path in `claims`, if any.
    pub fn lookup<'a>(
        &self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a serde_json::Value> {
        lookup_in(claims, &self.segments)
    }
}

fn lookup_in<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    segments: &[String],
) -> Option<&'a serde_json::Value> {
    // Longest-first would be ambiguous-free but slower for the common case; the plain
    // segment is tried first, joined segments only when it is absent.
    for take in 1..=segments.len() {
        let key = if take == 1 {
            std::borrow::Cow::Borrowed(segments[0].as_str())
        } else {
            std::borrow::Cow::Owned(segments[..take].join("."))
        };
        if let Some(v) = obj.get(key.as_ref()) {
            let rest = &segments[take..];
            if rest.is_empty() {
                return Some(v);
            }
            if let serde_json::Value::Object(inner) = v
                && let Some(found) = lookup_in(inner, rest)
            {
                return Some(found);
            }
        }
    }
    None
}

/// One OIDC provider as configured (`auth.providers.<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    /// Compared byte for byte with the token's `iss`; discovery reads
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// Skips discovery when set.
    pub jwks_url: Option<String>,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    /// Dot paths whose string arrays (or strings) are the caller's roles.
    pub roles_claims: Vec<String>,
    pub jwks_refresh: Duration,
    /// An unknown `kid` refetches the JWKS at most this often.
    pub jwks_min_refetch: Duration,
}

/// `any_of` / `all_of` over a set of names; empty lists constrain nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequirementSpec {
    pub any_of: Vec<String>,
    pub all_of: Vec<String>,
}

/// `routes[].auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuthSpec {
    pub provider: String,
    pub roles: RequirementSpec,
    pub scopes: RequirementSpec,
    /// Anonymous requests pass; a token, when present, must still be valid.
    pub optional: bool,
    /// Upstream header name → claim path, in config order.
    pub forward_claims: Vec<(String, String)>,
    /// Claim paths returned to Envoy as dynamic metadata (rate-limit keys, access logs).
    pub metadata_claims: Vec<String>,
}

/// A route Envoy may ask about. `auth: None` (a route without `routes[].auth`) is allowed with
/// only the forwarded-claim headers stripped, should Envoy call for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: String,
    pub auth: Option<RouteAuthSpec>,
}

/// Everything ext-authz needs from one config version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySpec {
    /// The xDS version this came from; only reported (logs, metrics, status).
    pub version: String,
    pub providers: Vec<ProviderSpec>,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("provider {0:?} is defined twice")]
    DuplicateProvider(String),
    #[error("route {0:?} is defined twice")]
    DuplicateRoute(String),
    #[error("route {route:?} names unknown provider {provider:?}")]
    UnknownProvider { route: String, provider: String },
    #[error("provider {0:?}: issuer must be an http(s) URL")]
    Issuer(String),
    #[error("provider {0:?}: jwks_url must be an http(s) URL")]
    JwksUrl(String),
    #[error("provider {0:?}: audiences must not be empty (every token must be for this gateway)")]
    NoAudiences(String),
    #[error("provider {0:?}: algorithms must not be empty")]
    NoAlgorithms(String),
    #[error("provider {0:?}: jwks_refresh and jwks_min_refetch must be positive")]
    Intervals(String),
    #[error("invalid claim path {0:?}")]
    ClaimPath(String),
    #[error("route {route:?}: invalid forward header name {header:?}")]
    HeaderName { route: String, header: String },
    #[error("route {route:?}: header {header:?} is reserved and cannot carry a claim")]
    ReservedHeader { route: String, header: String },
}

/// A provider compiled for the hot path.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub issuer: String,
    pub jwks_url: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: AlgorithmSet,
    pub leeway_secs: u64,
    pub roles_claims: Vec<ClaimPath>,
    pub jwks_refresh: Duration,
    pub jwks_min_refetch: Duration,
    /// Digest of every setting that changes the outcome of validating a token (not of
    /// authorizing it): part of the token-cache key, so a provider change misses the cache.
    pub fingerprint: [u8; 32],
}

impl Provider {
    fn compile(spec: &ProviderSpec) -> Result<Self, PolicyError> {
        let name = spec.name.clone();
        if !is_http_url(&spec.issuer) {
            return Err(PolicyError::Issuer(name));
        }
        if let Some(u) = &spec.jwks_url
            && !is_http_url(u)
        {
            return Err(PolicyError::JwksUrl(name));
        }
        if spec.audiences.is_empty() {
            return Err(PolicyError::NoAudiences(name));
        }
        if spec.algorithms.is_empty() {
            return Err(PolicyError::NoAlgorithms(name));
        }
        if spec.jwks_refresh.is_zero() || spec.jwks_min_refetch.is_zero() {
            return Err(PolicyError::Intervals(name));
        }
        let roles_claims = spec
            .roles_claims
            .iter()
            .map(|p| ClaimPath::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let algorithms: AlgorithmSet = spec.algorithms.iter().copied().collect();
        let leeway_secs = spec.leeway.as_secs();

        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in [spec.name.as_str(), spec.issuer.as_str()]
            .into_iter()
            .chain(spec.audiences.iter().map(String::as_str))
            .chain(["|"])
            .chain(spec.roles_claims.iter().map(String::as_str))
        {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        ctx.update(&algorithms.0.to_le_bytes());
        ctx.update(&leeway_secs.to_le_bytes());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ctx.finish().as_ref());

        Ok(Self {
            name: Arc::from(spec.name.as_str()),
            issuer: spec.issuer.clone(),
            jwks_url: spec.jwks_url.clone(),
            audiences: spec.audiences.clone(),
            algorithms,
            leeway_secs,
            roles_claims,
            jwks_refresh: spec.jwks_refresh,
            jwks_min_refetch: spec.jwks_min_refetch,
            fingerprint,
        })
    }
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "https://".len()
}

/// `any_of` / `all_of` compiled: de-duplicated, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub any_of: Vec<String>,
    pub all_of: Vec<String>,
}

impl Requirement {
    fn compile(spec: &RequirementSpec) -> Self {
        let dedup = |v: &[String]| -> Vec<String> {
            v.iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        Self {
            any_of: dedup(&spec.any_of),
            all_of: dedup(&spec.all_of),
        }
    }

    /// Whether `have` satisfies both lists.
    pub fn is_met_by(&self, have: &HashSet<String>) -> bool {
        (self.any_of.is_empty() || self.any_of.iter().any(|r| have.contains(r)))
            && self.all_of.iter().all(|r| have.contains(r))
    }
}

/// `routes[].auth` compiled.
#[derive(Debug)]
pub struct RouteAuth {
    pub provider: Arc<Provider>,
    pub roles: Requirement,
    pub scopes: Requirement,
    pub optional: bool,
    pub forward_claims: Vec<(HeaderName, ClaimPath)>,
    pub metadata_claims: Vec<ClaimPath>,
}

#[derive(Debug)]
pub struct RoutePolicy {
    pub name: Arc<str>,
    pub auth: Option<RouteAuth>,
}

/// One config version, compiled. Immutable; replaced whole on the next version.
#[derive(Debug, Default)]
pub struct Policies {
    pub version: String,
    pub providers: HashMap<String, Arc<Provider>>,
    pub routes: HashMap<String, RoutePolicy>,
    /// Every header any route forwards a claim into: stripped from every allowed request
    /// (minus those set by that response), so a client can never pose as an upstream-trusted
    /// identity on any route.
    pub strip_headers: Vec<HeaderName>,
}

impl Policies {
    /// Compiles a config version. Every problem is a [`PolicyError`]; the first one found is
    /// returned (xds-server validates the file with positions before anything reaches here).
    pub fn compile(spec: &PolicySpec) -> Result<Self, PolicyError> {
        let mut providers = HashMap::new();
        for p in &spec.providers {
            let compiled = Arc::new(Provider::compile(p)?);
            if providers.insert(p.name.clone(), compiled).is_some() {
                return Err(PolicyError::DuplicateProvider(p.name.clone()));
            }
        }
        let mut routes = HashMap::new();
        let mut strip = BTreeSet::new();
        for r in &spec.routes {
            let auth = match &r.auth {
                None => None,
                Some(a) => {
                    let provider = providers.get(&a.provider).cloned().ok_or_else(|| {
                        PolicyError::UnknownProvider {
                            route: r.name.clone(),
                            provider: a.provider.clone(),
                        }
                    })?;
                    let mut forward_claims = Vec::with_capacity(a.forward_claims.len());
                    for (header, path) in &a.forward_claims {
                        let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                            PolicyError::HeaderName {
                                route: r.name.clone(),
                                header: header.clone(),
                            }
                        })?;
                        if RESERVED_HEADERS.contains(&name.as_str()) {
                            return Err(PolicyError::ReservedHeader {
                                route: r.name.clone(),
                                header: header.clone(),
                            });
                        }
                        strip.insert(name.as_str().to_owned());
                        forward_claims.push((name, ClaimPath::parse(path)?));
                    }
                    let metadata_claims = a
                        .metadata_claims
                        .iter()
                        .map(|p| ClaimPath::parse(p))
                        .collect::<Result<_, _>>()?;
                    Some(RouteAuth {
                        provider,
                        roles: Requirement::compile(&a.roles),
                        scopes: Requirement::compile(&a.scopes),
                        optional: a.optional,
                        forward_claims,
                        metadata_claims,
                    })
                }
            };
            let policy = RoutePolicy {
                name: Arc::from(r.name.as_str()),
                auth,
            };
            if routes.insert(r.name.clone(), policy).is_some() {
                return Err(PolicyError::DuplicateRoute(r.name.clone()));
            }
        }
        let strip_headers = strip
            .into_iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Ok(Self {
            version: spec.version.clone(),
            providers,
            routes,
            strip_headers,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn provider(name: &str, issuer: &str) -> ProviderSpec {
        ProviderSpec {
            name: name.into(),
            issuer: issuer.into(),
            jwks_url: None,
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            leeway: Duration::from_secs(30),
            roles_claims: vec!["realm_access.roles".into()],
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
        }
    }

    fn route(name: &str, forward: &[(&str, &str)]) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            auth: Some(RouteAuthSpec {
                provider: "kc".into(),
                roles: RequirementSpec::default(),
                scopes: RequirementSpec::default(),
                optional: false,
                forward_claims: forward
                    .iter()
                    .map(|(h, c)| ((*h).into(), (*c).into()))
                    .collect(),
                metadata_claims: vec!["sub".into()],
            }),
        }
    }

    #[test]
    fn algorithms_parse_exactly_and_never_hmac_or_none() {
        assert_eq!("ES384".parse::<Algorithm>(), Ok(Algorithm::ES384));
        for bad in ["none", "HS256", "rs256", "ES512", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad}");
        }
        let set: AlgorithmSet = [Algorithm::RS256, Algorithm::EdDSA].into_iter().collect();
        assert!(set.contains(Algorithm::EdDSA));
        assert!(!set.contains(Algorithm::PS256));
    }

    #[test]
    fn claim_paths_find_nested_and_dotted_keys() {
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"realm_access":{"roles":["a"]},"resource_access":{"my.app":{"roles":["b"]}},"sub":"u"}"#,
        )
        .unwrap();
        let get = |p: &str| ClaimPath::parse(p).unwrap().lookup(&claims).cloned();
        assert_eq!(get("realm_access.roles"), Some(serde_json::json!(["a"])));
        assert_eq!(
            get("resource_access.my.app.roles"),
            Some(serde_json::json!(["b"]))
        );
        assert_eq!(get("sub"), Some(serde_json::json!("u")));
        assert_eq!(get("realm_access.nope"), None);
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse("").is_err());
    }

    #[test]
    fn compile_collects_strip_headers_and_rejects_bad_input() {
        let spec = PolicySpec {
            version: "1".into(),
            providers: vec![provider("kc", "https://sso/realms/demo")],
            routes: vec![
                route("a", &[("X-User-Id", "sub")]),
                route("b", &[("x-user-roles", "realm_access.roles")]),
                RouteSpec {
                    name: "open".into(),
                    auth: None,
                },
            ],
        };
        let p = Policies::compile(&spec).unwrap();
        let strip: Vec<&str> = p.strip_headers.iter().map(|h| h.as_str()).collect();
        assert_eq!(strip, ["x-user-id", "x-user-roles"]);
        assert!(p.routes["open"].auth.is_none());

        let mut bad = spec.clone();
        bad.routes.push(route("c", &[("authorization", "sub")]));
        assert!(matches!(
            Policies::compile(&bad),
            Err(PolicyError::ReservedHeader { .. })
        ));
        let mut bad = spec.clone();
        bad.routes[0].auth.as_mut().unwrap().provider = "nope".into();
        assert!(matches!(
            Policies::compile(&bad),
            Err(PolicyError::UnknownProvider { .. })
        ));
        let mut bad = spec.clone();
        bad.providers[0].audiences.clear();
        assert_eq!(
            Policies::compile(&bad).unwrap_err(),
            PolicyError::NoAudiences("kc".into())
        );
        let mut bad = spec;
        bad.routes.push(route("a", &[]));
        assert_eq!(
            Policies::compile(&bad).unwrap_err(),
            PolicyError::DuplicateRoute("a".into())
        );
    }

    #[test]
    fn fingerprint_changes_with_validation_settings_only() {
        let a = Provider::compile(&provider("kc", "https://sso/realms/demo")).unwrap();
        let mut spec = provider("kc", "https://sso/realms/demo");
        spec.jwks_refresh = Duration::from_secs(1);
        let same = Provider::compile(&spec).unwrap();
        assert_eq!(a.fingerprint, same.fingerprint);
        spec.audiences.push("other".into());
        let changed = Provider::compile(&spec).unwrap();
        assert_ne!(a.fingerprint, changed.fingerprint);
    }

    #[test]
    fn requirements_any_and_all() {
        let r = Requirement::compile(&RequirementSpec {
            any_of: vec!["a".into(), "b".into()],
            all_of: vec!["c".into()],
        });
        let have = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert!(r.is_met_by(&have(&["b", "c"])));
        assert!(!r.is_met_by(&have(&["a"])));
        assert!(!r.is_met_by(&have(&["c"])));
        assert!(Requirement::default().is_met_by(&have(&[])));
    }
}
