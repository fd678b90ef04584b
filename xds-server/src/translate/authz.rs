//! `routes[].auth` -> Envoy's ext_authz HTTP filter, calling ext-authz over gRPC.
//!
//! The contract with ext-authz (`docs/auth.md`, "Contract with the xDS translation"):
//! - one filter in every HCM, present only when some route has `auth`, calling the cluster
//!   [`EXT_AUTHZ_CLUSTER`] (`services.ext_authz`, HTTP/2) with `services.timeout`; it only sends
//!   the headers ext-authz reads;
//! - the filter is off by default: every virtual host disables it, and only routes with `auth`
//!   turn it on with `context_extensions {vrata_route: <route name>}` (the most specific
//!   per-filter config wins, and Envoy takes `disabled` from it). Envoy's own routes (405,
//!   ambiguous Host, https redirects) therefore never call ext-authz;
//! - routes without `auth` also disable it explicitly and strip every header some route
//!   forwards a claim into: nobody else removes a client's `x-user-id` there. This is done per
//!   route, not per virtual host, because header rules run after ext_authz and would remove
//!   the values ext-authz set on protected routes.
//!
//! Filter order: CORS, ext_authz, router. CORS first so that a browser's preflight (which never
//! carries a token) is answered by the CORS filter and never reaches ext_authz, and so that
//! ext-authz's 401/403 answers still get CORS headers (a script can only read a refusal that
//! has them).

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    CheckSettings, ExtAuthz, ExtAuthzPerRoute, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListStringMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::protobuf::Any;

use vrata_proto::vrata::config::v1 as pbv;

use super::{cluster, pb};
use crate::model::{self, FailureMode, Gateway, Name, Services, Upstream};

pub const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// The Envoy cluster of ext-authz (upstream names starting with `vrata_` are reserved).
pub const EXT_AUTHZ_CLUSTER: &str = "vrata_ext_authz";
/// The context-extension key naming the route; ext-authz's `ROUTE_CONTEXT_KEY` (not imported:
/// xds-server does not depend on the service; the end-to-end tests hold both to it).
pub const ROUTE_CONTEXT_KEY: &str = "vrata_route";
/// The name of the one `AuthzPolicy` resource.
pub const AUTHZ_POLICY_NAME: &str = "vrata";
/// The only request headers ext-authz reads: the token and the request id for its refusals.
/// Keeps CheckRequests small (Envoy sends every header otherwise).
pub const CHECKED_HEADERS: &[&str] = &["authorization", "x-request-id"];

/// ext-authz's config resource: every provider and every route with `auth`, sorted by name
/// (stable output). Routes without `auth` are left out: Envoy never asks about them.
pub(super) fn service_policy(gw: &Gateway) -> pbv::AuthzPolicy {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let providers = gw
        .auth_providers
        .values()
        .map(|p| pbv::AuthProvider {
            name: p.name.as_str().to_owned(),
            issuer: p.issuer.clone(),
            jwks_url: p.jwks_url.clone().unwrap_or_default(),
            audiences: p.audiences.clone(),
            algorithms: p.algorithms.iter().map(|a| a.as_str().to_owned()).collect(),
            leeway_ms: ms(p.leeway),
            roles_claims: p
                .roles_claims
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            jwks_refresh_ms: ms(p.jwks_refresh),
            jwks_min_refetch_ms: ms(p.jwks_min_refetch),
        })
        .collect();
    let requirement = |r: &model::Requirement| pbv::Requirement {
        any_of: r.any_of.clone(),
        all_of: r.all_of.clone(),
    };
    let mut routes: Vec<pbv::RouteAuth> = gw
        .routes
        .iter()
        .filter_map(|r| {
            let a = r.auth.as_ref()?;
            Some(pbv::RouteAuth {
                route: r.name.as_str().to_owned(),
                provider: a.provider.as_str().to_owned(),
                roles: Some(requirement(&a.roles)),
                scopes: Some(requirement(&a.scopes)),
                optional: a.optional,
                forward_claims: a
                    .forward_claims
                    .iter()
                    .map(|(h, c)| pbv::ForwardClaim {
                        header: h.as_str().to_owned(),
                        claim: c.as_str().to_owned(),
                    })
                    .collect(),
                metadata_claims: metadata_claims(r),
            })
        })
        .collect();
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    pbv::AuthzPolicy { providers, routes }
}

/// The claims ext-authz returns as dynamic metadata for a route: every claim a `claim:`
/// rate-limit key or cache `key_extra` of the route reads, deduplicated, sorted; none when
/// nothing reads one (Envoy decodes and stores every metadata value on every request).
fn metadata_claims(route: &model::Route) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for limit in &route.rate_limit {
        if let model::LimitKey::Claim(path) = &limit.key {
            out.insert(path.join("."));
        }
    }
    out.extend(super::cache::key_claims(route).map(str::to_owned));
    out.into_iter().collect()
}

/// The HCM filter (before the router, after CORS).
pub(super) fn filter(services: &Services) -> ExtAuthz {
    ExtAuthz {
        services: Some(ext_authz::Services::GrpcService(GrpcService {
            timeout: Some(pb::duration(services.timeout)),
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: EXT_AUTHZ_CLUSTER.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })),
        transport_api_version: ApiVersion::V3 as i32,
        failure_mode_allow: services.ext_authz_failure == FailureMode::Allow,
        // ext-authz unreachable or timing out: 503 (Envoy's default, 403, would tell the client
        // it lacks permissions). The body is the `authz-unavailable` problem (local_reply).
        status_on_error: Some(HttpStatus {
            code: StatusCode::ServiceUnavailable as i32,
        }),
        allowed_headers: Some(ListStringMatcher {
            patterns: CHECKED_HEADERS
                .iter()
                .map(|h| StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact((*h).to_owned())),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// The ext-authz cluster and its endpoint, built like an `http2: true` upstream.
pub(super) fn cluster(services: &Services) -> (Cluster, Option<ClusterLoadAssignment>) {
    let upstream = service_upstream(services);
    // A DNS address carries its endpoints in the cluster itself.
    (
        cluster::cluster(&upstream),
        cluster::load_assignment(&upstream),
    )
}

fn service_upstream(services: &Services) -> Upstream {
    let mut upstream = Upstream::new(
        Name::builtin(EXT_AUTHZ_CLUSTER),
        services.ext_authz.endpoints(),
    );
    upstream.http2 = true;
    upstream
}

/// The virtual-host default: off.
pub(super) fn disabled() -> Any {
    pb::any(ExtAuthzPerRoute {
        r#override: Some(ext_authz_per_route::Override::Disabled(true)),
    })
}

fn enabled_for(route: &Name) -> Any {
    pb::any(ExtAuthzPerRoute {
        r#override: Some(ext_authz_per_route::Override::CheckSettings(
            CheckSettings {
                context_extensions: [(ROUTE_CONTEXT_KEY.to_owned(), route.as_str().to_owned())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
        )),
    })
}

/// Adds the per-route ext_authz settings to the Envoy routes made from `route`.
pub(super) fn apply(gw: &Gateway, route: &model::Route, envoy_routes: &mut [Route]) {
    let (config, strip): (Any, Vec<String>) = match &route.auth {
        Some(_) => (enabled_for(&route.name), Vec::new()),
        None => {
            let own = &route.request_headers;
            let strip = gw
                .forwarded_claim_headers()
                .into_iter()
                .filter(|h| !own.remove.contains(h) && !own.set.iter().any(|(s, _)| s == *h))
                .map(|h| h.as_str().to_owned())
                .collect();
            (disabled(), strip)
        }
    };
    for r in envoy_routes {
        r.typed_per_filter_config
            .insert(EXT_AUTHZ_FILTER.to_owned(), config.clone());
        // Only routes that reach an upstream need the strip (direct responses and redirects
        // send nothing on).
        if matches!(
            r.action,
            Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(_))
        ) {
            r.request_headers_to_remove.extend(strip.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_is_a_valid_name() {
        assert_eq!(
            Name::new(EXT_AUTHZ_CLUSTER).expect("valid"),
            Name::builtin(EXT_AUTHZ_CLUSTER)
        );
    }
}
