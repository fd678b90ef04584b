//! Rate limits: ratelimit-service's config resource, and Envoy's side of the descriptor
//! contract (`vrata_ratelimit::limits` module docs) — the HCM's ratelimit filter, the
//! `vrata_ratelimit` cluster that reaches the service, and each route's descriptor actions.
//!
//! Descriptors, per `rate_limit` entry, in this order: `("route", <route>)`,
//! `("limit", <limit>)`, then by key: nothing (`route`), `remote_address` (`ip`: the client
//! address the HCM trusts, so a spoofed `x-forwarded-for` from an untrusted peer changes
//! nothing), `("header", <value>)` or `("claim", <value>)` from the `vrata.authz` dynamic
//! metadata. Header and claim entries are skipped when absent (`skip_if_absent`), so such
//! requests share one counter instead of escaping the limit.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::RateLimit as RouteRateLimit;
use envoy_types::pb::envoy::config::route::v3::rate_limit::{Action, action};
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit as RateLimitFilter;
use envoy_types::pb::envoy::r#type::metadata::v3::{MetadataKey, metadata_key};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use vrata_proto::vrata::config::v1 as pbv;

use super::{cluster, pb};
use crate::model::{self, FailureMode, Gateway, LimitKey, Name, OnError, Services, Upstream};

pub const RATELIMIT_FILTER: &str = "envoy.filters.http.ratelimit";
/// The Envoy cluster reaching ratelimit-service (`services.ratelimit`). The `vrata_` prefix is
/// reserved: no upstream may take it.
pub const RATELIMIT_CLUSTER: &str = "vrata_ratelimit";
/// The rate-limit domain Envoy sends and ratelimit-service answers; also the name of the one
/// `RateLimitConfig` resource.
pub const RATELIMIT_DOMAIN: &str = "vrata";
/// The dynamic metadata namespace ext-authz's answers land in: Envoy's ext_authz filter files
/// them under its canonical name, whatever the service says (docs/auth.md).
pub const AUTHZ_METADATA_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// The field of that namespace holding the validated token's claims (SPEC §4's `vrata.authz`).
pub const AUTHZ_CLAIMS_FIELD: &str = "vrata.authz";
/// When ratelimit-service fails and `ratelimit_failure: deny`: 503, the service is unavailable
/// (Envoy's default, 500, would blame the gateway itself).
const STATUS_ON_ERROR: u32 = 503;

/// Whether Envoy needs the filter and the cluster: only when a route is rate limited (the
/// filter costs a little on every request).
pub(super) fn in_use(gw: &Gateway) -> bool {
    gw.routes.iter().any(|r| !r.rate_limit.is_empty())
}

/// ratelimit-service's config resource: the store and every rate-limited route's limits, in
/// route order of the files (sorted by route name for stable output).
pub(super) fn service_config(gw: &Gateway) -> pbv::RateLimitConfig {
    let mut routes: Vec<pbv::RouteRateLimits> = gw
        .routes
        .iter()
        .filter(|r| !r.rate_limit.is_empty())
        .map(|r| pbv::RouteRateLimits {
            route: r.name.as_str().to_owned(),
            limits: r.rate_limit.iter().map(service_limit).collect(),
        })
        .collect();
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    pbv::RateLimitConfig {
        store: Some(pbv::RateLimitStore {
            redis: gw.rate_limits.redis.clone(),
            on_error: match gw.rate_limits.on_error {
                OnError::Local => pbv::OnError::Local,
                OnError::Allow => pbv::OnError::Allow,
                OnError::Deny => pbv::OnError::Deny,
            } as i32,
        }),
        routes,
    }
}

fn service_limit(l: &model::RateLimit) -> pbv::RateLimit {
    use pbv::rate_limit::Key;
    pbv::RateLimit {
        name: l.name.clone(),
        limit: l.limit,
        per_seconds: l.per.as_secs(),
        key: Some(match &l.key {
            LimitKey::Route => Key::Route(pbv::WholeRoute {}),
            LimitKey::Ip => Key::Ip(pbv::ClientIp {}),
            LimitKey::Header(h) => Key::Header(h.as_str().to_owned()),
            LimitKey::Claim(path) => Key::Claim(path.join(".")),
        }),
    }
}

/// The HCM's ratelimit filter. Always on when present; routes without `rate_limits` send
/// nothing to the service.
pub(super) fn filter(services: &Services) -> RateLimitFilter {
    RateLimitFilter {
        domain: RATELIMIT_DOMAIN.to_owned(),
        timeout: Some(pb::duration(services.timeout)),
        failure_mode_deny: services.ratelimit_failure == FailureMode::Deny,
        status_on_error: Some(HttpStatus {
            code: STATUS_ON_ERROR as i32,
        }),
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: RATELIMIT_CLUSTER.to_owned(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
        }),
        // The service returns the IETF `RateLimit`/`RateLimit-Policy`/`Retry-After` headers
        // itself; Envoy's draft-03 `X-RateLimit-*` would duplicate them with other semantics.
        enable_x_ratelimit_headers: 0,
        // `x-envoy-*` response headers are suppressed everywhere (they advertise Envoy).
        disable_x_envoy_ratelimited_header: true,
        ..Default::default()
    }
}

/// The cluster and endpoints reaching ratelimit-service over gRPC (HTTP/2).
pub(super) fn cluster(services: &Services) -> (Cluster, Option<ClusterLoadAssignment>) {
    let upstream = service_upstream(services);
    // A DNS address carries its endpoints in the cluster itself.
    (
        cluster::cluster(&upstream),
        cluster::load_assignment(&upstream),
    )
}

fn service_upstream(services: &Services) -> Upstream {
    let name = Name::new(RATELIMIT_CLUSTER).expect("the constant is a valid name");
    let mut upstream = Upstream::new(name, services.ratelimit.endpoints());
    upstream.http2 = true;
    upstream
}

/// A route's descriptor actions, one Envoy `RateLimit` per limit.
pub(super) fn route_rate_limits(route: &model::Route) -> Vec<RouteRateLimit> {
    route
        .rate_limit
        .iter()
        .map(|l| {
            let mut actions = vec![
                generic_key(vrata_ratelimit_entries::ROUTE, route.name.as_str()),
                generic_key(vrata_ratelimit_entries::LIMIT, &l.name),
            ];
            let key = match &l.key {
                LimitKey::Route => None,
                LimitKey::Ip => Some(action::ActionSpecifier::RemoteAddress(
                    action::RemoteAddress {},
                )),
                LimitKey::Header(h) => Some(action::ActionSpecifier::RequestHeaders(
                    action::RequestHeaders {
                        header_name: h.as_str().to_owned(),
                        descriptor_key: vrata_ratelimit_entries::HEADER.to_owned(),
                        skip_if_absent: true,
                    },
                )),
                LimitKey::Claim(path) => {
                    Some(action::ActionSpecifier::Metadata(action::MetaData {
                        descriptor_key: vrata_ratelimit_entries::CLAIM.to_owned(),
                        metadata_key: Some(MetadataKey {
                            key: AUTHZ_METADATA_NAMESPACE.to_owned(),
                            path: std::iter::once(AUTHZ_CLAIMS_FIELD)
                                .chain(path.iter().map(String::as_str))
                                .map(|segment| metadata_key::PathSegment {
                                    segment: Some(metadata_key::path_segment::Segment::Key(
                                        segment.to_owned(),
                                    )),
                                })
                                .collect(),
                        }),
                        source: action::meta_data::Source::Dynamic as i32,
                        skip_if_absent: true,
                        ..Default::default()
                    }))
                }
            };
            actions.extend(key.map(|k| Action {
                action_specifier: Some(k),
            }));
            RouteRateLimit {
                actions,
                ..Default::default()
            }
        })
        .collect()
}

fn generic_key(key: &str, value: &str) -> Action {
    Action {
        action_specifier: Some(action::ActionSpecifier::GenericKey(action::GenericKey {
            descriptor_key: key.to_owned(),
            descriptor_value: value.to_owned(),
            ..Default::default()
        })),
    }
}

/// Descriptor entry keys of the contract (the service's `limits::*_ENTRY` constants; the
/// remote address entry's key is Envoy's own, `remote_address`).
mod vrata_ratelimit_entries {
    pub const ROUTE: &str = "route";
    pub const LIMIT: &str = "limit";
    pub const HEADER: &str = "header";
    pub const CLAIM: &str = "claim";
}
