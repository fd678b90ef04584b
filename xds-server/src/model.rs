//! The typed gateway model: the one representation between the file format (`config`) and the
//! translation to Envoy (`translate`).
//!
//! Everything here is already validated: names are unique, every referenced upstream exists,
//! regexes compile, durations are positive. `translate` may rely on that and never fails.
//! Collections keep the order of the files (routes: match precedence) or are sorted by name
//! (upstreams), so that translating the same model twice gives byte-identical resources.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole, validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub listeners: Vec<Listener>,
    /// Sorted by name: translation output must not depend on file order for upstreams.
    pub upstreams: BTreeMap<Name, Upstream>,
    /// In file order (files of a directory in name order): the order is match precedence.
    pub routes: Vec<Route>,
    pub services: Services,
    /// Token providers by name; empty when the file has no `auth`.
    pub auth_providers: BTreeMap<Name, AuthProvider>,
    /// Settings of ratelimit-service (served to it over ADS, not to Envoy).
    pub rate_limits: RateLimits,
    /// Stats listener and tracing.
    pub observability: Observability,
    /// Redis URLs of the shared response cache (`cache_store.redis`, else
    /// `rate_limits.store.redis`); empty when no route uses `store: redis`.
    pub cache_redis: Vec<String>,
}

impl Gateway {
    /// Whether Envoy needs the ext_proc filter calling response-cache (and its cluster).
    pub fn uses_cache(&self) -> bool {
        self.routes.iter().any(|r| r.cache.is_some())
    }

    /// Whether Envoy needs the ext_authz filter (and the ext-authz cluster).
    pub fn uses_auth(&self) -> bool {
        self.routes.iter().any(|r| r.auth.is_some())
    }

    /// Every header some route's `auth.forward_claims` sets, sorted and deduplicated: a client
    /// may send none of them upstream, on any route.
    pub fn forwarded_claim_headers(&self) -> Vec<&HeaderName> {
        let set: std::collections::BTreeSet<&HeaderName> = self
            .routes
            .iter()
            .filter_map(|r| r.auth.as_ref())
            .flat_map(|a| a.forward_claims.iter().map(|(h, _)| h))
            .collect();
        set.into_iter().collect()
    }
}

/// A resource name from the config (listener, upstream, route). Non-empty, `[A-Za-z0-9_.-]`,
/// so it can be used verbatim as an Envoy resource name and stats prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Checks the name's alphabet; the config layer reports the error with a position.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok { Ok(Self(s)) } else { Err(InvalidName(s)) }
    }

    /// A name vrata itself defines (its services' clusters). Not checked at run time: every
    /// such constant is checked by a unit test.
    pub(crate) fn builtin(s: &'static str) -> Self {
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {0:?}: use 1 to 128 characters of A-Z a-z 0-9 - _ .")]
pub struct InvalidName(pub String);

/// A lower-cased HTTP header name, checked against RFC 9110 token characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderName(String);

impl HeaderName {
    pub fn new(s: &str) -> Result<Self, InvalidHeaderName> {
        let ok = !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#'
                            | b'$'
                            | b'%'
                            | b'&'
                            | b'\''
                            | b'*'
                            | b'+'
                            | b'-'
                            | b'.'
                            | b'^'
                            | b'_'
                            | b'`'
                            | b'|'
                            | b'~'
                    )
            });
        if ok {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(InvalidHeaderName(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid header name {0:?}")]
pub struct InvalidHeaderName(pub String);

// ---------------------------------------------------------------------------------------------
// Listeners

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: Name,
    pub address: SocketAddr,
    /// How many proxies in front of the gateway are trusted to append `x-forwarded-for`
    /// (Envoy's `xff_num_trusted_hops`). 0: the client address is the TCP peer.
    pub trusted_hops: u32,
    /// Accept HTTP/2 (prior knowledge h2c on plaintext listeners) as well as HTTP/1.1.
    pub http2: bool,
    /// Answer every request with 308 to the same URL on https.
    pub redirect_https: bool,
    /// Write a JSON access log line per request to stdout.
    pub access_log: bool,
    /// TLS termination; `None`: plaintext.
    pub tls: Option<ListenerTls>,
}

// ---------------------------------------------------------------------------------------------
// Upstreams

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: Name,
    pub endpoints: Endpoints,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// Speak HTTP/2 to the upstream (gRPC services).
    pub http2: bool,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Speak TLS to the endpoints; `None`: plaintext.
    pub tls: Option<UpstreamTls>,
}

impl Upstream {
    /// An upstream with the defaults for everything but its endpoints (round robin, default
    /// connect timeout, HTTP/1.1, no health check, outlier detection or circuit breaker).
    pub fn new(name: Name, endpoints: Endpoints) -> Self {
        Self {
            name,
            endpoints,
            balance: Balance::RoundRobin,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            http2: false,
            health_check: None,
            outlier_detection: None,
            circuit_breaker: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Endpoints {
    /// Fixed IP endpoints, delivered to Envoy over EDS.
    Static(Vec<Endpoint>),
    /// A DNS name resolved by Envoy (STRICT_DNS): every address it resolves to is an endpoint.
    Dns { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Relative load-balancing weight, 1..=128 (Envoy's limit for endpoint weights is higher,
    /// but ratios beyond 128:1 are a config mistake more often than not).
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash(HashOn),
    Maglev(HashOn),
}

/// What a consistent-hash balancer hashes (applied to every route sending to the upstream).
#[derive(Debug, Clone, PartialEq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
    /// The trusted client address (after `trusted_hops`).
    Ip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// HTTP GET path; a 2xx answer is healthy.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub eject_for: Duration,
}

/// Envoy circuit-breaker thresholds (default priority). `None` keeps Envoy's default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CircuitBreaker {
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// TLS
//
// Certificate material is loaded and checked by the config layer (it reads files); the model
// holds the PEM text so that translation stays pure and Envoy gets the bytes inline over SDS.

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// Non-empty. Envoy picks one by SNI among their SANs; the first is the default.
    pub certificates: Vec<TlsCertificate>,
    pub min_version: TlsVersion,
    /// Client certificates (mTLS).
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    /// The CAs a client certificate must chain to.
    pub ca: TrustedCa,
    /// Refuse the handshake without a client certificate; `false` also accepts clients without
    /// one (a certificate that is sent must still verify).
    pub required: bool,
}

/// A certificate chain and its private key, served to Envoy as one SDS secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsCertificate {
    /// The SDS secret name: unique per certificate file, stable across reloads.
    pub secret: SecretName,
    /// PEM, leaf first.
    pub chain_pem: String,
    pub key_pem: PrivateKey,
    /// The leaf's DNS names (what SNI selects on), for the admin and the docs.
    pub dns_names: Vec<String>,
}

/// Trusted CA certificates (PEM), served as a validation-context SDS secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedCa {
    pub secret: SecretName,
    pub pem: String,
}

/// Upstream TLS origination.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Sent as SNI and required among the upstream certificate's SANs.
    pub sni: String,
    /// What the upstream certificate must chain to: the file's CAs, or the system bundle of the
    /// machine xds-server runs on.
    pub ca: TrustedCa,
    /// Presented to upstreams that ask for a client certificate.
    pub client_certificate: Option<TlsCertificate>,
}

/// An SDS secret name (`[A-Za-z0-9_.-]`, derived from file names by the config layer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(pub String);

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PEM private key. Never printed: `Debug` is redacted, and translation is the only reader.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(String);

impl PrivateKey {
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text, for the SDS secret only.
    pub fn expose_pem(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

// ---------------------------------------------------------------------------------------------
// Routes

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: Name,
    pub matcher: RouteMatch,
    pub action: Action,
    pub rewrite: Option<Rewrite>,
    pub request_headers: HeaderMutation,
    pub response_headers: HeaderMutation,
    /// Whole-request timeout (Envoy route timeout). `None`: Envoy's default of 15 s.
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    pub cors: Option<Cors>,
    /// Checked by ext-authz; `None`: the route is public.
    pub auth: Option<RouteAuth>,
    /// Limits a request must all pass (ratelimit-service decides); empty: not rate limited.
    /// Only on routes to an upstream. Names are unique within the route.
    pub rate_limit: Vec<RateLimit>,
    /// `response.json`: the JSON answer reshaped by the aggregator. Only on routes to an
    /// upstream (served through the aggregator as a passthrough) and aggregate routes.
    pub response_json: Option<JsonShape>,
    /// GET/HEAD answers kept by response-cache; `None`: never cached.
    pub cache: Option<RouteCache>,
}

impl Route {
    /// Whether Envoy sends this route's requests to the aggregator rather than to an upstream.
    pub fn via_aggregator(&self) -> bool {
        match &self.action {
            Action::Aggregate(_) => true,
            Action::Upstream(_) => self.response_json.is_some(),
            Action::Respond(_) | Action::Redirect(_) => false,
        }
    }
}

impl Route {
    /// A route sending every request under `path_prefix`, on any host, to `upstream`, with
    /// nothing else set.
    pub fn to_upstream(name: Name, path_prefix: &str, upstream: Name) -> Self {
        Self {
            name,
            matcher: RouteMatch {
                hosts: vec!["*".to_owned()],
                path: PathMatch::Prefix(path_prefix.to_owned()),
                methods: Vec::new(),
                headers: Vec::new(),
            },
            action: Action::Upstream(upstream),
            rewrite: None,
            request_headers: HeaderMutation::default(),
            response_headers: HeaderMutation::default(),
            timeout: None,
            retries: None,
            cors: None,
            auth: None,
            rate_limit: Vec::new(),
            response_json: None,
            cache: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// Virtual-host domains (`api.example.com`, `*.example.com`, `*`). Never empty: the config
    /// layer fills in `*` when the file names none.
    pub hosts: Vec<String>,
    pub path: PathMatch,
    /// Empty: any method. Upper-case, deduplicated, in file order.
    pub methods: Vec<Method>,
    /// Exact header value matches; all must hold.
    pub headers: Vec<(HeaderName, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    /// Path starts with this (segment-agnostic, like Envoy's `prefix`). Default `/`.
    Prefix(String),
    /// The path (without query) equals this.
    Exact(String),
    /// `/api/orders/{id}` style; `{name}` matches one segment, `{name=**}` the rest of the path.
    Template(PathTemplate),
    /// RE2 syntax, matched against the whole path (without query).
    Regex(String),
}

/// A parsed path template. Kept as its source text plus the variable names, which rewrites
/// may refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct PathTemplate {
    pub source: String,
    pub variables: Vec<String>,
}

/// An HTTP method token, upper-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Method(pub String);

impl Method {
    /// RFC 9110 §9.2.2: methods whose repetition has the same effect; retries default to these.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.0.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Upstream(Name),
    Respond(Respond),
    Redirect(Redirect),
    /// Fan out to several upstreams through the aggregator and merge their JSON answers.
    Aggregate(Aggregate),
}

/// `routes[].aggregate`. Validated: backend names unique, every upstream exists, every
/// placeholder names a route variable or another backend, no cycles, groups unique.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The whole answer's budget.
    pub timeout: Duration,
    /// In file order: the merge order (a later backend wins a key collision).
    pub backends: Vec<Backend>,
    /// Send the client's `Authorization` header to the backends.
    pub forward_authorization: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: Name,
    pub upstream: Name,
    /// Path and query with `{var}` (route variable) and `{backend.field}` placeholders.
    pub path: String,
    /// The backends whose answers `path` uses, deduplicated, in order of appearance.
    pub depends_on: Vec<Name>,
    /// Nest the answer under this key; `None`: merge its keys into the top level.
    pub group: Option<String>,
    pub optional: bool,
    /// Its own budget from the moment it is called; `None`: only the aggregate's.
    pub timeout: Option<Duration>,
}

/// `response.json`: applied in the order target, allow, deny, rename.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonShape {
    pub target: Option<JsonPath>,
    /// Empty: keep everything.
    pub allow: Vec<JsonPath>,
    pub deny: Vec<JsonPath>,
    /// The last key of the path renamed to the new key, in file order.
    pub rename: Vec<(JsonPath, String)>,
}

/// A dot path of object keys (`user.address.city`): non-empty segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonPath(String);

impl JsonPath {
    pub fn new(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.split('.').any(str::is_empty) {
            return Err(format!(
                "invalid JSON path `{s}`: use dot-separated keys such as `user.address.city`"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Respond {
    pub status: u16,
    pub body: Option<String>,
    pub headers: Vec<(HeaderName, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub path: Option<String>,
    pub host: Option<String>,
    pub scheme: Option<Scheme>,
    pub status: RedirectStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectStatus {
    MovedPermanently301,
    Found302,
    TemporaryRedirect307,
    PermanentRedirect308,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// Replace the matched `path_prefix` with this.
    PathPrefix(String),
    /// Rebuild the path from the matched template's variables (`/v2/orders/{id}`).
    PathTemplate(String),
    /// RE2 regex over the path, replaced with `substitution` (`\1` back-references).
    Regex { regex: String, substitution: String },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderMutation {
    /// Overwrite (or add) these headers.
    pub set: Vec<(HeaderName, String)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderMutation {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Retries after the first try (Envoy `num_retries`).
    pub attempts: u32,
    pub retry_on: Vec<RetryOn>,
    pub per_try_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    /// Any 5xx answer.
    ServerError,
    GatewayError,
    RetriableStatus(u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    /// Exact origins, or `*`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<Method>,
    pub allow_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub allow_credentials: bool,
    pub max_age: Option<Duration>,
}

// ---------------------------------------------------------------------------------------------
// Authentication (checked by ext-authz; the model only carries what it is told)

/// An OIDC provider (`auth.providers.<name>`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthProvider {
    pub name: Name,
    /// An http(s) URL, compared byte for byte with tokens' `iss`.
    pub issuer: String,
    /// Skips OIDC discovery.
    pub jwks_url: Option<String>,
    /// Non-empty, deduplicated.
    pub audiences: Vec<String>,
    /// Non-empty, deduplicated, in file order.
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub roles_claims: Vec<ClaimPath>,
    pub jwks_refresh: Duration,
    /// At most `jwks_refresh`.
    pub jwks_min_refetch: Duration,
}

/// JWS algorithms a provider may use (RFC 7518 / RFC 8037 names). No HMAC, no `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
}

/// A dot path into a token's claims (`realm_access.roles`): non-empty segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimPath(String);

impl ClaimPath {
    pub fn new(s: &str) -> Result<Self, InvalidClaimPath> {
        if s.is_empty() || s.split('.').any(str::is_empty) {
            Err(InvalidClaimPath(s.to_owned()))
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid claim path {0:?}: use dot-separated names such as realm_access.roles")]
pub struct InvalidClaimPath(pub String);

/// `routes[].auth`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteAuth {
    /// A key of `Gateway::auth_providers`.
    pub provider: Name,
    pub roles: Requirement,
    pub scopes: Requirement,
    /// Anonymous requests pass; a token that is sent must be valid.
    pub optional: bool,
    /// Upstream header <- claim, in file order; header names unique within the route.
    pub forward_claims: Vec<(HeaderName, ClaimPath)>,
}

/// `any_of` (one of, when non-empty) and `all_of` (each).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Requirement {
    pub any_of: Vec<String>,
    pub all_of: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Rate limits

/// One entry of a route's `rate_limit`: at most `limit` requests in any window of `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// 1-64 characters of `A-Za-z0-9._-` (it is shown to clients in `RateLimit-Policy`).
    pub name: String,
    /// 1 to 2^53 (ratelimit-service's Redis script counts in doubles).
    pub limit: u64,
    /// Whole seconds, at least 1.
    pub per: Duration,
    pub key: LimitKey,
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// All requests of the route together.
    Route,
    /// The trusted client address.
    Ip,
    /// A request header's value.
    Header(HeaderName),
    /// A string claim from ext-authz's `vrata.authz` metadata: the dotted path's segments.
    Claim(Vec<String>),
}

/// `rate_limits`: ratelimit-service's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Redis URLs: none = in-memory counters, one = standalone, several = Cluster seeds.
    pub redis: Vec<String>,
    pub on_error: OnError,
}

/// `rate_limits.store.on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Keep enforcing with per-instance counters (limits stay limits).
    #[default]
    Local,
    Allow,
    Deny,
}

// ---------------------------------------------------------------------------------------------
// vrata's own services

/// Where Envoy reaches vrata's gRPC services. Used by later features (ext_authz, ratelimit);
/// kept in the model now so the file format is complete and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Services {
    pub ext_authz: ServiceAddress,
    pub ratelimit: ServiceAddress,
    pub timeout: Duration,
    pub ext_authz_failure: FailureMode,
    pub ratelimit_failure: FailureMode,
    /// The aggregator's HTTP address (Envoy cluster `vrata_aggregator`).
    pub aggregator: SocketAddr,
    /// Where Envoy listens for the aggregator's backend calls (generated loopback listener).
    pub aggregator_loopback: SocketAddr,
    /// response-cache's gRPC address (Envoy cluster `vrata_response_cache`). Unreachable, it is
    /// skipped: requests go to the upstream uncached.
    pub response_cache: ServiceAddress,
}

/// Where Envoy reaches one of vrata's services: an IP address, or a DNS name Envoy resolves
/// (every address it resolves to is an endpoint: several replicas behind one name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAddress {
    Ip(SocketAddr),
    Dns { host: String, port: u16 },
}

impl ServiceAddress {
    pub fn endpoints(&self) -> Endpoints {
        match self {
            ServiceAddress::Ip(address) => Endpoints::Static(vec![Endpoint {
                address: *address,
                weight: defaults::WEIGHT,
            }]),
            ServiceAddress::Dns { host, port } => Endpoints::Dns {
                host: host.clone(),
                port: *port,
            },
        }
    }
}

impl From<SocketAddr> for ServiceAddress {
    fn from(a: SocketAddr) -> Self {
        ServiceAddress::Ip(a)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    Allow,
    Deny,
}

// ---------------------------------------------------------------------------------------------
// Caching

/// `routes[].cache`: GET and HEAD answers kept by response-cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    pub store: CacheStore,
    /// Freshness when the upstream gives none of its own.
    pub ttl: Duration,
    /// Request headers whose values are part of the key (on top of the upstream's `Vary`),
    /// deduplicated, in file order.
    pub vary: Vec<HeaderName>,
    /// Extra key parts (per-user entries); deduplicated, in file order.
    pub key_extra: Vec<CacheKeyPart>,
    /// Largest body stored, bytes.
    pub max_body: u64,
    /// How long past freshness an entry may still answer when the upstream fails.
    pub stale_if_error: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStore {
    /// In each response-cache instance's memory (one per gateway instance).
    Local,
    /// In Redis, shared by the fleet.
    Redis,
}

/// One `key_extra` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyPart {
    /// `claim:PATH`: from ext-authz's metadata (the route needs `auth`).
    Claim(ClaimPath),
    /// `header:NAME`: a request header's value.
    Header(HeaderName),
}

// ---------------------------------------------------------------------------------------------
// Observability

/// `observability`: both parts optional.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observability {
    /// Address of the stats listener serving `/stats/prometheus`; `None`: no such listener.
    pub prometheus: Option<SocketAddr>,
    pub tracing: Option<Tracing>,
}

/// Envoy's OpenTelemetry tracer, exporting over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// Where the collector is: an IP or a DNS name (resolved by Envoy), and a port.
    pub collector: Endpoints,
    /// `Host` header and path of the export request (`/v1/traces` under the base URL).
    pub authority: String,
    pub path: String,
    pub service_name: String,
    /// 0.0..=1.0.
    pub sample_ratio: f64,
}

/// Defaults named once, each with its reason.
pub mod defaults {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// Envoy's own default; long enough for a remote data centre, short enough to fail over.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// ext-authz's default listen address (SPEC §1).
    pub const EXT_AUTHZ: super::ServiceAddress =
        super::ServiceAddress::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18001));
    /// ratelimit-service's default listen address (SPEC §1).
    /// (The Envoy cluster reaching it is named [`crate::translate::RATELIMIT_CLUSTER`].)
    pub const RATELIMIT: super::ServiceAddress =
        super::ServiceAddress::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18002));
    /// The aggregator's default listen address (next to ext-authz's and ratelimit-service's).
    pub const AGGREGATOR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18003);
    /// Envoy's loopback listener for the aggregator's backend calls: loopback only, so that
    /// nothing off the host can use it to bypass the public routes' policies.
    pub const AGGREGATOR_LOOPBACK: SocketAddr =
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18004);
    /// response-cache's default listen address (18004 is the aggregator's loopback listener).
    pub const RESPONSE_CACHE: super::ServiceAddress =
        super::ServiceAddress::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18005));
    /// `routes[].cache.ttl`: a minute of freshness when the upstream says nothing; short enough
    /// that reference data edited upstream shows within a minute.
    pub const CACHE_TTL: Duration = Duration::from_secs(60);
    /// `routes[].cache.max_body`: 1 MiB; larger answers pass through uncached.
    pub const CACHE_MAX_BODY: u64 = 1024 * 1024;
    /// An aggregate answers within 3 s unless told otherwise: a page-assembling call that is
    /// slower is better failed and retried by the client.
    pub const AGGREGATE_TIMEOUT: Duration = Duration::from_secs(3);
    /// A decision service on loopback answers in well under a millisecond; 250 ms bounds the
    /// damage of a stuck one without failing healthy slow starts.
    pub const SERVICE_TIMEOUT: Duration = Duration::from_millis(250);
    /// Health checks: Envoy Gateway's defaults.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(3);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTHY_AFTER: u32 = 1;
    pub const UNHEALTHY_AFTER: u32 = 3;
    /// Outlier ejection: Envoy's defaults.
    pub const CONSECUTIVE_5XX: u32 = 5;
    pub const EJECT_FOR: Duration = Duration::from_secs(30);
    /// Retries: one retry is the common production choice (Envoy Gateway, Istio use 1-2).
    pub const RETRY_ATTEMPTS: u32 = 1;
    /// Endpoint weight when none is given.
    pub const WEIGHT: u32 = 1;
    /// Auth providers: 30 s of clock skew covers ordinary NTP drift (Envoy's jwt_authn allows
    /// 60 s; less is stricter on replay of expired tokens).
    pub const LEEWAY: Duration = Duration::from_secs(30);
    /// Keys withdrawn by the IdP stop working within 10 minutes (Envoy's jwt_authn cache time).
    pub const JWKS_REFRESH: Duration = Duration::from_secs(600);
    /// Bounds the IdP load that tokens with made-up key ids can cause.
    pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
    /// A leeway beyond this would keep expired tokens alive noticeably: refused.
    pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
    /// Keycloak's default signing algorithm.
    pub const ALGORITHM: super::Algorithm = super::Algorithm::RS256;
    /// Keycloak puts realm roles here.
    pub const ROLES_CLAIM: &str = "realm_access.roles";
    /// Envoy's spans are named after the gateway, not after each Envoy.
    pub const TRACE_SERVICE_NAME: &str = "vrata-gateway";
    /// OpenTelemetry's own default (always sample); lower it for busy gateways.
    pub const SAMPLE_RATIO: f64 = 1.0;
}
