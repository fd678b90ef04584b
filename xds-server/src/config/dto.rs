//! The file format as serde types: what a gateway file may contain, before semantic checks.
//!
//! These types are the single source of the key names and of the JSON Schema
//! (`docs/gateway.schema.json`); their doc comments become the schema's descriptions. Every
//! field is a [`Spanned`] so that checks can point at it and a bad value stops only itself.
//! Everything that needs more than a type (ranges, cross-references, exclusive keys) is checked
//! in `convert`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::de::KeyHint;
use super::duration;
use super::spanned::Spanned;

/// Optional field.
pub(crate) type Opt<T> = Option<Spanned<T>>;
/// A list whose items are checked (and reported) one by one.
pub(crate) type List<T> = Spanned<Vec<Spanned<T>>>;

/// Well-known slips (and, when a release has them, keys of later releases), by struct (serde
/// name) and key.
pub(crate) fn key_hint(container: &str, key: &str) -> Option<KeyHint> {
    if container == "Retries" && matches!(key, "on" | "true") {
        return Some(KeyHint {
            message: format!(
                "unknown key `{key}`: use `retry_on:` (YAML 1.1 tools read `on:` as `true:`)"
            ),
            stands_for: Some("retry_on"),
        });
    }
    None
}

/// A vrata gateway configuration: one file, or one of a directory's files, which are merged
/// (`listeners` and `routes` in file-name order, `upstreams` by name, `services` and
/// `rate_limits` from one file each).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename = "Gateway", deny_unknown_fields)]
#[schemars(title = "vrata gateway configuration")]
pub(crate) struct GatewayDto {
    /// Where Envoy accepts traffic.
    pub listeners: Opt<Vec<Spanned<ListenerDto>>>,
    /// Backend services by name (Envoy clusters named after them).
    pub upstreams: Opt<NamedMap<UpstreamDto>>,
    /// Routing rules; their order is the match precedence within a host.
    // Boxed: a route's DTO is ~3 KiB (every optional section inline), and a list of 10,000 of
    // them grown in place cost more in copies and page faults than decoding them.
    #[allow(
        clippy::vec_box,
        reason = "measured: boxing cut loading 10,000 routes by a quarter"
    )]
    pub routes: Opt<Vec<Box<Spanned<RouteDto>>>>,
    /// Where Envoy reaches vrata's own services.
    pub services: Opt<ServicesDto>,
    /// Token issuers that routes' `auth` refers to (checked by ext-authz).
    pub auth: Opt<AuthDto>,
    /// Settings of ratelimit-service (the limits themselves are on the routes).
    pub rate_limits: Opt<RateLimitsDto>,
    /// Metrics scraping and tracing (access logs are per listener: `listeners[].access_log`).
    pub observability: Opt<ObservabilityDto>,
    /// Where the shared response cache (`routes[].cache.store: redis`) keeps its entries.
    pub cache_store: Opt<CacheStoreDto>,
}

/// An Envoy listener: an address and an HTTP connection manager.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Listener", deny_unknown_fields)]
pub(crate) struct ListenerDto {
    /// Listener name and stats prefix (`http.<name>.*`); unique.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub name: Spanned<String>,
    /// `IP:PORT` to listen on, e.g. `0.0.0.0:8080` or `[::]:8080`; unique.
    pub address: Spanned<String>,
    /// Accept HTTP/2 (h2c with prior knowledge) besides HTTP/1.1. Default `true`.
    pub http2: Opt<bool>,
    /// Answer every request with a redirect to https. Default `false`.
    pub redirect_https: Opt<bool>,
    /// Number of proxies in front of the gateway trusted to append `x-forwarded-for`. Default 0.
    pub trusted_hops: Opt<u32>,
    /// Write a JSON access log line per request to stdout. Default `true`.
    pub access_log: Opt<bool>,
    /// Terminate TLS (HTTPS). Certificates are served to Envoy over SDS and rotated when their
    /// files change.
    pub tls: Opt<ListenerTlsDto>,
}

/// TLS termination on a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "ListenerTls", deny_unknown_fields)]
pub(crate) struct ListenerTlsDto {
    /// Certificate chains and keys; Envoy picks one by SNI among each certificate's SANs (exact
    /// names first, then wildcards); the first is the default.
    #[schemars(length(min = 1))]
    pub certificates: List<CertificatePairDto>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: Opt<TlsVersionDto>,
    /// Ask clients for a certificate (mTLS).
    pub client_auth: Opt<ClientAuthDto>,
}

/// A PEM certificate chain (leaf first) and its PEM private key. Paths are relative to the file
/// that names them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "CertificatePair", deny_unknown_fields)]
pub(crate) struct CertificatePairDto {
    /// Certificate chain file (PEM, leaf first).
    pub cert: Spanned<String>,
    /// Private key file (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename = "TlsVersion")]
pub(crate) enum TlsVersionDto {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

/// Client certificate verification.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "ClientAuth", deny_unknown_fields)]
pub(crate) struct ClientAuthDto {
    /// PEM file of the CAs client certificates must chain to.
    pub ca: Spanned<String>,
    /// Refuse clients without a certificate. Default `true`.
    pub required: Opt<bool>,
}

/// TLS to an upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "UpstreamTls", deny_unknown_fields)]
pub(crate) struct UpstreamTlsDto {
    /// PEM file of the CAs the upstream's certificate must chain to. Default: the system CA
    /// bundle of the machine xds-server runs on.
    pub ca: Opt<String>,
    /// Server name sent as SNI and required among the upstream certificate's SANs. Default: the
    /// `dns` host; required with IP `endpoints`.
    pub sni: Opt<String>,
    /// Client certificate chain file (PEM), for upstreams that require one. Needs `key`.
    pub cert: Opt<String>,
    /// Private key of `cert` (PEM).
    pub key: Opt<String>,
}

/// A named upstream: fixed IP endpoints or a DNS name, and how to balance and protect them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Upstream", deny_unknown_fields)]
pub(crate) struct UpstreamDto {
    /// Fixed endpoints: `"IP:PORT"` or `{address: "IP:PORT", weight: N}`. Exclusive with `dns`.
    pub endpoints: Opt<Vec<Spanned<EndpointDto>>>,
    /// `host:port` resolved by Envoy; every address is an endpoint. Exclusive with `endpoints`.
    pub dns: Opt<String>,
    /// Load-balancing policy. Default `round_robin`.
    pub balance: Opt<BalanceDto>,
    /// What `ring_hash` and `maglev` hash: `header:NAME`, `cookie:NAME` or `ip`.
    #[schemars(regex(pattern = r"^(header:.+|cookie:.+|ip)$"))]
    pub hash_on: Opt<String>,
    /// TCP connect timeout. Default 5s.
    pub connect_timeout: Opt<DurationDto>,
    /// Speak HTTP/2 to the endpoints (gRPC). Default `false`.
    pub http2: Opt<bool>,
    /// Active HTTP health checking.
    pub health_check: Opt<HealthCheckDto>,
    /// Passive ejection of failing endpoints.
    pub outlier_detection: Opt<OutlierDetectionDto>,
    /// Envoy circuit-breaker thresholds.
    pub circuit_breaker: Opt<CircuitBreakerDto>,
    /// Speak TLS to the endpoints.
    pub tls: Opt<UpstreamTlsDto>,
}

/// An endpoint: `"IP:PORT"`, or a mapping with a weight.
#[derive(Debug, JsonSchema)]
#[serde(rename = "Endpoint", untagged)]
pub(crate) enum EndpointDto {
    Address(String),
    Weighted(WeightedEndpointDto),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "WeightedEndpoint", deny_unknown_fields)]
pub(crate) struct WeightedEndpointDto {
    /// `IP:PORT`.
    pub address: Spanned<String>,
    /// Relative weight, 1 to 128. Default 1.
    #[schemars(range(min = 1, max = 128))]
    pub weight: Opt<u32>,
}

impl<'de> Deserialize<'de> for EndpointDto {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = EndpointDto;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"IP:PORT\" or {address, weight}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointDto, E> {
                Ok(EndpointDto::Address(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointDto, A::Error> {
                WeightedEndpointDto::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(EndpointDto::Weighted)
            }
        }
        deserializer.deserialize_struct("WeightedEndpoint", ENDPOINT_FIELDS, EndpointVisitor)
    }
}

const ENDPOINT_FIELDS: &[&str] = &["address", "weight"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename = "Balance", rename_all = "snake_case")]
pub(crate) enum BalanceDto {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "HealthCheck", deny_unknown_fields)]
pub(crate) struct HealthCheckDto {
    /// Path of the HTTP GET; a 2xx answer is healthy.
    pub path: Spanned<String>,
    /// Time between checks. Default 3s.
    pub interval: Opt<DurationDto>,
    /// Time to wait for an answer. Default 1s.
    pub timeout: Opt<DurationDto>,
    /// Successes before an endpoint counts as healthy. Default 1.
    #[schemars(range(min = 1))]
    pub healthy_after: Opt<u32>,
    /// Failures before an endpoint counts as unhealthy. Default 3.
    #[schemars(range(min = 1))]
    pub unhealthy_after: Opt<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "OutlierDetection", deny_unknown_fields)]
pub(crate) struct OutlierDetectionDto {
    /// Consecutive 5xx answers that eject an endpoint. Default 5.
    #[schemars(range(min = 1))]
    pub consecutive_5xx: Opt<u32>,
    /// Base ejection time. Default 30s.
    pub eject_for: Opt<DurationDto>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "CircuitBreaker", deny_unknown_fields)]
pub(crate) struct CircuitBreakerDto {
    /// Envoy's default when unset (1024).
    #[schemars(range(min = 1))]
    pub max_connections: Opt<u32>,
    /// Envoy's default when unset (1024).
    #[schemars(range(min = 1))]
    pub max_pending: Opt<u32>,
    /// Envoy's default when unset (1024).
    #[schemars(range(min = 1))]
    pub max_requests: Opt<u32>,
    /// Envoy's default when unset (3).
    #[schemars(range(min = 1))]
    pub max_retries: Opt<u32>,
}

/// A routing rule: a match and exactly one of `upstream`, `respond`, `redirect`, `aggregate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Route", deny_unknown_fields)]
pub(crate) struct RouteDto {
    /// Route name and Envoy route stat prefix; unique across all files.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub name: Spanned<String>,
    /// What requests the route takes. Default: any host, any path.
    #[serde(rename = "match")]
    pub matcher: Opt<MatchDto>,
    /// Name of the upstream to proxy to.
    pub upstream: Opt<String>,
    /// Answer directly.
    pub respond: Opt<RespondDto>,
    /// Answer with a redirect.
    pub redirect: Opt<RedirectDto>,
    /// Rewrite the path before proxying.
    pub rewrite: Opt<RewriteDto>,
    /// Headers changed on the request to the upstream.
    pub request_headers: Opt<HeaderRulesDto>,
    /// Headers changed on the response to the client.
    pub response_headers: Opt<HeaderRulesDto>,
    /// Whole-request timeout. Default: Envoy's 15s.
    pub timeout: Opt<DurationDto>,
    /// Retry policy.
    pub retries: Opt<RetriesDto>,
    /// CORS policy.
    pub cors: Opt<CorsDto>,
    /// Require (or accept) a bearer JWT, checked by ext-authz.
    pub auth: Opt<RouteAuthDto>,
    /// Rate limits, decided by ratelimit-service; a request must pass every one. Only on routes
    /// to an `upstream`.
    pub rate_limit: Opt<Vec<Spanned<RateLimitDto>>>,
    /// Answer with the merged JSON of several backends, called concurrently by the aggregator.
    pub aggregate: Opt<AggregateDto>,
    /// Reshape the response (served through the aggregator).
    pub response: Opt<ResponseDto>,
    /// Keep GET and HEAD answers in response-cache (in memory or in Redis) and answer later
    /// requests from there.
    pub cache: Opt<RouteCacheDto>,
}

/// `routes[].cache`: RFC 9111 shared-cache semantics (docs/caching.md).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "RouteCache", deny_unknown_fields)]
pub(crate) struct RouteCacheDto {
    /// `local`: in each gateway instance's response-cache memory; `redis`: in Redis, shared by
    /// the fleet. Default `local`.
    pub store: Opt<CacheStoreKindDto>,
    /// Freshness when the upstream gives none (`s-maxage`, `max-age`, `Expires`). Default `60s`.
    pub ttl: Opt<DurationDto>,
    /// Request headers whose values are part of the key, on top of the upstream's `Vary`.
    pub vary: Opt<Vec<Spanned<String>>>,
    /// Extra key parts: `claim:PATH` (a claim of the caller's token; needs `auth`) or
    /// `header:NAME`. Without it, requests with `Authorization` or `Cookie` are never cached.
    pub key_extra: Opt<Vec<Spanned<String>>>,
    /// Largest body stored: bytes, or with `KiB`/`MiB` (e.g. `512KiB`). Default `1MiB`.
    #[schemars(regex(pattern = r"^[0-9]+(B|KiB|MiB)?$"))]
    pub max_body: Opt<String>,
    /// How long past its freshness an entry may still answer when the upstream fails (5xx, no
    /// answer, timeout). Default: never (`0s`).
    pub stale_if_error: Opt<DurationDto>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename = "CacheStoreKind", rename_all = "snake_case")]
pub(crate) enum CacheStoreKindDto {
    Local,
    Redis,
}

/// `cache_store`: the Redis of `routes[].cache.store: redis`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "CacheStore", deny_unknown_fields)]
pub(crate) struct CacheStoreDto {
    /// `redis://HOST:PORT[/DB]`. Default: `rate_limits.store.redis` (when it is one URL). A
    /// response-cache started with `--redis` ignores it.
    pub redis: Opt<String>,
}

/// `routes[].aggregate`: one request fans out to several backends whose JSON answers are
/// merged into one object.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Aggregate", deny_unknown_fields)]
pub(crate) struct AggregateDto {
    /// Budget of the whole answer. Default 3s.
    pub timeout: Opt<DurationDto>,
    /// Called concurrently (a backend whose path names another backend's field waits for that
    /// one); merged in this order, a later backend winning a key collision.
    pub backends: List<BackendDto>,
    /// Send the client's `Authorization` header to the backends. Default `false`.
    pub forward_authorization: Opt<bool>,
}

/// One backend of an aggregate.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Backend", deny_unknown_fields)]
pub(crate) struct BackendDto {
    /// Unique within the aggregate; other backends' paths refer to its answer by it.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub name: Spanned<String>,
    /// The upstream called (through Envoy, with the upstream's policies).
    pub upstream: Spanned<String>,
    /// Path and query, e.g. `/orders?user={id}`: `{id}` is a variable of the route's
    /// `path_template`, `{user.segment}` a field of backend `user`'s answer.
    pub path: Spanned<String>,
    /// Nest the answer under this key. Needed for answers that are not JSON objects.
    pub group: Opt<String>,
    /// A failure leaves the group `null` and sets `X-Vrata-Completed: false` instead of
    /// failing the request. Default `false`.
    pub optional: Opt<bool>,
    /// This backend's own budget, counted from its call. Default: the aggregate's.
    pub timeout: Opt<DurationDto>,
}

/// `routes[].response`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Response", deny_unknown_fields)]
pub(crate) struct ResponseDto {
    /// Reshape a JSON answer: `target`, then `allow`, `deny`, `rename`.
    pub json: Opt<JsonShapeDto>,
}

/// JSON response shaping. Paths are dot-separated keys (`user.address.city`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "JsonShape", deny_unknown_fields)]
pub(crate) struct JsonShapeDto {
    /// Keep only these paths.
    pub allow: Opt<Vec<Spanned<String>>>,
    /// Remove these paths.
    pub deny: Opt<Vec<Spanned<String>>>,
    /// Rename keys in place: `path: new_key`.
    pub rename: Opt<NamedMap<String>>,
    /// Answer with the value at this path instead of the whole document.
    pub target: Opt<String>,
}

/// At most `limit` requests in any window of `per`, counted per `key`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "RateLimit", deny_unknown_fields)]
pub(crate) struct RateLimitDto {
    /// Unique within the route; 1-64 characters of `A-Za-z0-9._-`. Shown to clients in the
    /// `RateLimit-Policy` header.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub name: Spanned<String>,
    /// Requests allowed per window, 1 to 2^53.
    #[schemars(range(min = 1, max = 9007199254740992_u64))]
    pub limit: Spanned<u64>,
    /// Window length: whole seconds, at least `1s` (e.g. `1s`, `2s`, `1m`, `1h`).
    pub per: Spanned<DurationDto>,
    /// What is counted separately: `route` (all requests together), `ip` (the trusted client
    /// address), `header:NAME` (a request header's value) or `claim:PATH` (a string claim of the
    /// caller's token, from ext-authz, dotted path such as `sub` or `org.id`).
    #[schemars(regex(pattern = r"^(route|ip|header:.+|claim:.+)$"))]
    pub key: Spanned<String>,
}

/// `rate_limits`: used by ratelimit-service, which gets them from xds-server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "RateLimits", deny_unknown_fields)]
pub(crate) struct RateLimitsDto {
    /// Where the counters live. Default: in each ratelimit-service's memory.
    pub store: Opt<RateLimitStoreDto>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "RateLimitStore", deny_unknown_fields)]
pub(crate) struct RateLimitStoreDto {
    /// `redis://HOST:PORT[/DB]`, or a list of them: the seed nodes of a Redis Cluster. Shared by
    /// every ratelimit-service (exact limits across the fleet). Without it: in-memory counters,
    /// per instance. A service's `--redis` flag overrides it.
    pub redis: Opt<RedisUrlsDto>,
    /// While Redis fails: `local` (default: count in each instance's memory), `allow` (admit
    /// everything) or `deny` (refuse every rate-limited request).
    pub on_error: Opt<OnErrorDto>,
}

/// One Redis URL, or several (Redis Cluster seeds).
#[derive(Debug, JsonSchema)]
#[serde(rename = "RedisUrls", untagged)]
pub(crate) enum RedisUrlsDto {
    One(String),
    Cluster(#[schemars(length(min = 1))] Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RedisUrlsDto {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlsVisitor;
        impl<'de> Visitor<'de> for UrlsVisitor {
            type Value = RedisUrlsDto;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Redis URL or a list of Redis URLs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RedisUrlsDto, E> {
                Ok(RedisUrlsDto::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RedisUrlsDto, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element()? {
                    urls.push(url);
                }
                Ok(RedisUrlsDto::Cluster(urls))
            }
        }
        deserializer.deserialize_any(UrlsVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename = "OnError", rename_all = "snake_case")]
pub(crate) enum OnErrorDto {
    Local,
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Match", deny_unknown_fields)]
pub(crate) struct MatchDto {
    /// Virtual-host domains: `api.example.com`, `*.example.com`, `api.*` or `*`. Default `["*"]`.
    pub hosts: Opt<Vec<Spanned<String>>>,
    /// Exact path (query excluded). At most one of `path`, `path_prefix`, `path_template`,
    /// `path_regex`; default `path_prefix: /`.
    pub path: Opt<String>,
    /// Path prefix.
    pub path_prefix: Opt<String>,
    /// Envoy URI template, e.g. `/api/orders/{id}`.
    pub path_template: Opt<String>,
    /// RE2 regex matched against the whole path.
    pub path_regex: Opt<String>,
    /// HTTP methods; default any.
    pub methods: Opt<Vec<Spanned<String>>>,
    /// Exact header values that must all be present.
    pub headers: Opt<NamedMap<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Respond", deny_unknown_fields)]
pub(crate) struct RespondDto {
    /// Status code, 200 to 599.
    #[schemars(range(min = 200, max = 599))]
    pub status: Spanned<u16>,
    /// Response body.
    pub body: Opt<String>,
    /// Response headers.
    pub headers: Opt<NamedMap<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Redirect", deny_unknown_fields)]
pub(crate) struct RedirectDto {
    /// New path.
    pub path: Opt<String>,
    /// New host.
    pub host: Opt<String>,
    /// New scheme.
    pub scheme: Opt<SchemeDto>,
    /// 301, 302, 307 or 308. Default 302.
    pub status: Opt<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename = "Scheme", rename_all = "snake_case")]
pub(crate) enum SchemeDto {
    Http,
    Https,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Rewrite", deny_unknown_fields)]
pub(crate) struct RewriteDto {
    /// Replaces the matched `path_prefix`.
    pub path_prefix: Opt<String>,
    /// Rebuilds the path from the `path_template` match's variables, e.g. `/v2/orders/{id}`.
    pub path_template: Opt<String>,
    /// RE2 regex over the path; with `substitution`.
    pub regex: Opt<String>,
    /// Replacement for `regex` matches; `\1` refers to a group.
    pub substitution: Opt<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "HeaderRules", deny_unknown_fields)]
pub(crate) struct HeaderRulesDto {
    /// Headers to set (overwriting).
    pub set: Opt<NamedMap<String>>,
    /// Headers to remove.
    pub remove: Opt<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Retries", deny_unknown_fields)]
pub(crate) struct RetriesDto {
    /// Retries after the first try, 1 to 10. Default 1.
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Opt<u32>,
    /// When to retry: `connect-failure`, `reset`, `5xx`, `gateway-error` or a status code.
    #[schemars(with = "Vec<RetryOnSchema>", length(min = 1))]
    pub retry_on: Spanned<Vec<Spanned<String>>>,
    /// Timeout of each try.
    pub per_try_timeout: Opt<DurationDto>,
}

/// When to retry: a condition, or a status code from 400 to 599 (`503` or `"503"`).
// Only describes the schema: `retry_on` is decoded as text and checked in `convert`.
#[derive(JsonSchema)]
#[serde(rename = "RetryOn", untagged)]
#[allow(dead_code)]
pub(crate) enum RetryOnSchema {
    Condition(RetryCondition),
    Status(#[schemars(range(min = 400, max = 599))] u16),
    StatusText(#[schemars(regex(pattern = r"^[45][0-9][0-9]$"))] String),
}

#[derive(JsonSchema)]
#[serde(rename = "RetryCondition", rename_all = "kebab-case")]
#[allow(dead_code)]
pub(crate) enum RetryCondition {
    ConnectFailure,
    Reset,
    #[serde(rename = "5xx")]
    ServerError,
    GatewayError,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Cors", deny_unknown_fields)]
pub(crate) struct CorsDto {
    /// Exact origins (`https://app.example.com`) or `*`.
    pub allow_origins: List<String>,
    /// Methods allowed in cross-origin requests.
    pub allow_methods: Opt<Vec<Spanned<String>>>,
    /// Request headers allowed.
    pub allow_headers: Opt<Vec<Spanned<String>>>,
    /// Response headers exposed to scripts.
    pub expose_headers: Opt<Vec<Spanned<String>>>,
    /// Allow credentials (not with origin `*`). Default `false`.
    pub allow_credentials: Opt<bool>,
    /// How long browsers may cache the preflight answer (whole seconds).
    pub max_age: Opt<DurationDto>,
}

/// `auth`: the OIDC providers whose tokens the gateway accepts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Auth", deny_unknown_fields)]
pub(crate) struct AuthDto {
    /// Providers by name (`[A-Za-z0-9_.-]`); routes name one in `auth.provider`.
    pub providers: Spanned<NamedMap<ProviderDto>>,
}

/// An OpenID Connect provider (a Keycloak realm, ...).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Provider", deny_unknown_fields)]
pub(crate) struct ProviderDto {
    /// The `iss` of its tokens, compared byte for byte; keys are discovered from
    /// `{issuer}/.well-known/openid-configuration`. An http(s) URL.
    pub issuer: Spanned<String>,
    /// The JWKS URL, skipping discovery. Default: discovered.
    pub jwks_url: Opt<String>,
    /// A token's `aud` must contain one of these.
    #[schemars(length(min = 1))]
    pub audiences: List<String>,
    /// Signature algorithms accepted. Default `[RS256]`.
    #[schemars(length(min = 1))]
    pub algorithms: Opt<Vec<Spanned<AlgorithmDto>>>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, at most 5m. Default 30s.
    pub leeway: Opt<DurationDto>,
    /// Dot paths of the claims holding the caller's roles. Default `["realm_access.roles"]`.
    pub roles_claims: Opt<Vec<Spanned<String>>>,
    /// How often the keys are refetched in the background. Default 10m.
    pub jwks_refresh: Opt<DurationDto>,
    /// A token with an unknown key id refetches the keys at most this often. Default 30s.
    pub jwks_min_refetch: Opt<DurationDto>,
}

/// A JWS algorithm a provider may use. HMAC (`HS*`) and `none` are refused: the gateway holds
/// only public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename = "Algorithm")]
pub(crate) enum AlgorithmDto {
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

impl AlgorithmDto {
    pub const ALL: [AlgorithmDto; 9] = [
        AlgorithmDto::RS256,
        AlgorithmDto::RS384,
        AlgorithmDto::RS512,
        AlgorithmDto::PS256,
        AlgorithmDto::PS384,
        AlgorithmDto::PS512,
        AlgorithmDto::ES256,
        AlgorithmDto::ES384,
        AlgorithmDto::EdDSA,
    ];
    pub const NAMES: [&str; 9] = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];
}

// Decoded by hand: `HS256` and `none` deserve their own message, not "unknown variant".
impl<'de> Deserialize<'de> for AlgorithmDto {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AlgorithmVisitor;
        impl Visitor<'_> for AlgorithmVisitor {
            type Value = AlgorithmDto;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JWS algorithm such as RS256")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AlgorithmDto, E> {
                if let Some(i) = AlgorithmDto::NAMES.iter().position(|n| *n == v) {
                    return Ok(AlgorithmDto::ALL[i]);
                }
                let upper = v.to_ascii_uppercase();
                let why = if upper == "NONE" {
                    "unsigned tokens are never accepted".to_owned()
                } else if upper.starts_with("HS") {
                    "HMAC needs a shared secret, and the gateway only holds the provider's public \
                     keys (accepting it would let anyone sign with the public key)"
                        .to_owned()
                } else if let Some(n) = AlgorithmDto::NAMES
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(v))
                {
                    format!("algorithm names are case-sensitive: write `{n}`")
                } else {
                    format!("expected one of {}", AlgorithmDto::NAMES.join(", "))
                };
                Err(E::custom(format!("algorithm `{v}` is not allowed: {why}")))
            }
        }
        deserializer.deserialize_str(AlgorithmVisitor)
    }
}

/// `routes[].auth`: who may use the route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "RouteAuth", deny_unknown_fields)]
pub(crate) struct RouteAuthDto {
    /// Name of a provider under `auth.providers`.
    pub provider: Spanned<String>,
    /// Roles required, from the provider's `roles_claims`.
    pub roles: Opt<RequirementDto>,
    /// OAuth scopes required, from the token's `scope` (or `scp`).
    pub scopes: Opt<RequirementDto>,
    /// Let requests without a token through anonymously (a token that is sent must still be
    /// valid). Default `false`.
    pub optional: Opt<bool>,
    /// Request headers set from claims for the upstream (`x-user-id: sub`); arrays are
    /// comma-separated. Client-sent copies of these headers are removed on every route.
    pub forward_claims: Opt<NamedMap<String>>,
}

/// Names required: `any_of` (at least one) and/or `all_of` (each).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Requirement", deny_unknown_fields)]
pub(crate) struct RequirementDto {
    /// At least one of these.
    pub any_of: Opt<Vec<Spanned<String>>>,
    /// Every one of these.
    pub all_of: Opt<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Services", deny_unknown_fields)]
pub(crate) struct ServicesDto {
    /// ext-authz's gRPC address, `IP:PORT`. Default `127.0.0.1:18001`.
    pub ext_authz: Opt<String>,
    /// ratelimit-service's gRPC address, `IP:PORT`. Default `127.0.0.1:18002`.
    pub ratelimit: Opt<String>,
    /// Timeout of each call from Envoy to a service. Default 250ms.
    pub timeout: Opt<DurationDto>,
    /// When ext-authz is unreachable: `deny` (default) or `allow`.
    pub ext_authz_failure: Opt<FailureModeDto>,
    /// When ratelimit-service is unreachable: `allow` (default) or `deny`.
    pub ratelimit_failure: Opt<FailureModeDto>,
    /// The aggregator's HTTP address, `IP:PORT`. Default `127.0.0.1:18003`.
    pub aggregator: Opt<String>,
    /// Where Envoy listens for the aggregator's backend calls, `IP:PORT` (keep it on loopback
    /// or a private network: it reaches every upstream without the public routes' policies).
    /// Default `127.0.0.1:18004`.
    pub aggregator_loopback: Opt<String>,
    /// response-cache's gRPC address, `IP:PORT` or `HOST:PORT`. Default `127.0.0.1:18005`.
    /// When it cannot be reached, requests are served by the upstream, uncached.
    pub response_cache: Opt<String>,
}

/// `observability`: how the gateway is watched.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Observability", deny_unknown_fields)]
pub(crate) struct ObservabilityDto {
    /// A listener on every Envoy serving only `GET /stats/prometheus` (Envoy's admin stays on
    /// loopback). Absent: no such listener.
    pub prometheus: Opt<PrometheusDto>,
    /// Distributed tracing with Envoy's OpenTelemetry tracer (W3C trace context). Absent: off.
    pub tracing: Opt<TracingDto>,
}

/// `observability.prometheus`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Prometheus", deny_unknown_fields)]
pub(crate) struct PrometheusDto {
    /// `IP:PORT` of the stats listener, e.g. `0.0.0.0:9902`; must not clash with a listener.
    pub address: Spanned<String>,
}

/// `observability.tracing`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename = "Tracing", deny_unknown_fields)]
pub(crate) struct TracingDto {
    /// OTLP/HTTP collector base URL, `http://HOST:PORT` (spans go to `/v1/traces` under it).
    pub otlp_endpoint: Spanned<String>,
    /// `service.name` of Envoy's spans. Default `vrata-gateway`.
    pub service_name: Opt<String>,
    /// Share of new traces sampled, 0.0 to 1.0. A client's sampled `traceparent` is followed
    /// whatever the ratio. Default 1.0.
    pub sample_ratio: Opt<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename = "FailureMode", rename_all = "snake_case")]
pub(crate) enum FailureModeDto {
    Allow,
    Deny,
}

/// A duration such as `250ms`, `30s`, `5m`, `1h`, `1d` or `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationDto(pub Duration);

impl<'de> Deserialize<'de> for DurationDto {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationDto;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationDto, E> {
                duration::parse(v).map(DurationDto).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

impl JsonSchema for DurationDto {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "An integer and a unit (ms, s, m, h, d), e.g. 250ms, 30s, 5m, 1h, 1d; combined largest unit first, e.g. 1m30s. Greater than 0."
        })
    }
}

/// A mapping from names to values, in file order, with the position of every name.
#[derive(Debug)]
pub(crate) struct NamedMap<T>(pub Vec<(Spanned<String>, Spanned<T>)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamedMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = NamedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NamedMap<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(NamedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for NamedMap<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<T>(),
        })
    }
}
