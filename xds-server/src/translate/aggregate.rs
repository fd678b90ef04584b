//! `routes[].aggregate` and `routes[].response.json` -> the aggregator.
//!
//! The contract with the aggregator (`docs/aggregation.md`, "How it runs"):
//! - routes served by the aggregator (aggregates, and upstream routes with `response.json`) are
//!   ordinary Envoy routes — CORS, ext_authz, rate limits, timeouts apply — whose cluster is
//!   [`AGGREGATOR_CLUSTER`] (`services.aggregator`, HTTP/1.1) and which set
//!   [`AGGREGATE_HEADER`] to the route's name, overwriting any copy a client sent;
//! - the aggregator's backend calls come back into Envoy through a generated listener,
//!   [`LOOPBACK_LISTENER`] on `services.aggregator_loopback`, whose routes pick the upstream's
//!   cluster by [`UPSTREAM_HEADER`] (removed before the upstream sees it). So a backend call gets
//!   the upstream's load balancing, health checks, outlier detection, circuit breakers, TLS and
//!   stats, exactly like a proxied request;
//! - the aggregator's definitions are one `vrata.config.v1.AggregatorConfig` resource.
//!
//! Nothing of this exists in Envoy's config unless some route uses it.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    header_matcher, route, route_action, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use vrata_proto::vrata::config::v1 as pbv;

use super::{cluster, listener, pb};
use crate::model::{
    self, Action, Endpoint, Endpoints, Gateway, JsonShape, Name, PathMatch, Services, Upstream,
};

/// The Envoy cluster of the aggregator (upstream names starting with `vrata_` are reserved).
pub const AGGREGATOR_CLUSTER: &str = "vrata_aggregator";
/// The request header naming the route on requests Envoy sends to the aggregator; the
/// aggregator's `AGGREGATE_HEADER` (not imported: xds-server does not depend on the service;
/// the end-to-end tests hold both to it).
pub const AGGREGATE_HEADER: &str = "x-vrata-aggregate";
/// The request header that picks the upstream on the loopback listener.
pub const UPSTREAM_HEADER: &str = "x-vrata-upstream";
/// The generated listener (and its RouteConfiguration) taking the aggregator's backend calls.
pub const LOOPBACK_LISTENER: &str = "vrata_aggregator_loopback";
/// The name of the one `AggregatorConfig` resource.
pub const AGGREGATOR_CONFIG_NAME: &str = "vrata";
/// Envoy waits this much longer than an aggregate's own budget for the aggregator's answer, so
/// that the aggregator's 504 naming the slow backend reaches the client rather than Envoy's.
pub const AGGREGATE_GRACE: Duration = Duration::from_millis(500);
/// A passthrough route without `timeout` gives its backend call Envoy's default route timeout.
const PASSTHROUGH_TIMEOUT: Duration = Duration::from_secs(15);
/// Loopback routes retry once when a connection could not be made or was refused before any
/// byte was sent: safe for every method, and what a proxied request gets from Envoy's pool.
const LOOPBACK_RETRY_ON: &str = "connect-failure,refused-stream,reset-before-request";

/// Whether some route is served by the aggregator.
pub(super) fn in_use(gw: &Gateway) -> bool {
    gw.routes.iter().any(model::Route::via_aggregator)
}

/// The aggregator's cluster and endpoint (HTTP/1.1).
pub(super) fn cluster(services: &Services) -> (Cluster, ClusterLoadAssignment) {
    let upstream = Upstream::new(
        Name::builtin(AGGREGATOR_CLUSTER),
        Endpoints::Static(vec![Endpoint {
            address: services.aggregator,
            weight: model::defaults::WEIGHT,
        }]),
    );
    let cla = cluster::load_assignment(&upstream);
    // Static endpoints always have a load assignment.
    (cluster::cluster(&upstream), cla.unwrap_or_default())
}

/// The loopback listener's model: plaintext, one trusted hop (the aggregator forwards the
/// client's `x-forwarded-for`, so upstreams see the client's address), access-logged like any
/// listener so backend calls appear in the logs with the client's request id.
fn loopback_model(services: &Services) -> model::Listener {
    model::Listener {
        name: Name::builtin(LOOPBACK_LISTENER),
        address: services.aggregator_loopback,
        trusted_hops: 1,
        http2: false,
        redirect_https: false,
        access_log: true,
        tls: None,
    }
}

/// The loopback listener: the same hardened HCM as the public listeners, no optional filters
/// (the public route has already applied auth, limits and CORS).
pub(super) fn loopback_listener(services: &Services) -> Listener {
    listener::listener(&loopback_model(services), &listener::HttpFilters::default())
}

/// One route per upstream some backend calls: `x-vrata-upstream: <name>` -> cluster `<name>`.
pub(super) fn loopback_routes(gw: &Gateway) -> RouteConfiguration {
    let mut used: Vec<&Name> = gw
        .routes
        .iter()
        .flat_map(|r| match &r.action {
            Action::Aggregate(a) => a.backends.iter().map(|b| &b.upstream).collect(),
            Action::Upstream(u) if r.response_json.is_some() => vec![u],
            _ => Vec::new(),
        })
        .collect();
    used.sort();
    used.dedup();
    let routes = used
        .into_iter()
        .map(|name| {
            let balance = gw.upstreams.get(name).map(|u| &u.balance);
            Route {
                name: format!("{LOOPBACK_LISTENER}:{name}"),
                stat_prefix: format!("{LOOPBACK_LISTENER}.{name}"),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                    headers: vec![HeaderMatcher {
                        name: UPSTREAM_HEADER.to_owned(),
                        header_match_specifier: Some(
                            header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                                match_pattern: Some(string_matcher::MatchPattern::Exact(
                                    name.as_str().to_owned(),
                                )),
                                ..Default::default()
                            }),
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_headers_to_remove: vec![UPSTREAM_HEADER.to_owned()],
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        name.as_str().to_owned(),
                    )),
                    // The aggregator bounds every call itself (backend and aggregate budgets).
                    timeout: Some(pb::duration(Duration::ZERO)),
                    hash_policy: balance.map(super::route::hash_policy).unwrap_or_default(),
                    retry_policy: Some(RetryPolicy {
                        retry_on: LOOPBACK_RETRY_ON.to_owned(),
                        num_retries: Some(pb::u32_value(1)),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    RouteConfiguration {
        name: LOOPBACK_LISTENER.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: LOOPBACK_LISTENER.to_owned(),
            domains: vec!["*".to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The Envoy route timeout of a route served by the aggregator: the route's own, else (for an
/// aggregate) its budget plus [`AGGREGATE_GRACE`].
pub(super) fn envoy_timeout(route: &model::Route) -> Option<Duration> {
    match (&route.action, route.timeout) {
        (_, Some(t)) => Some(t),
        (Action::Aggregate(a), None) => Some(a.timeout + AGGREGATE_GRACE),
        _ => None,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn shape(s: &JsonShape) -> pbv::JsonShape {
    pbv::JsonShape {
        target: s
            .target
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        allow: s.allow.iter().map(|p| p.as_str().to_owned()).collect(),
        deny: s.deny.iter().map(|p| p.as_str().to_owned()).collect(),
        rename: s
            .rename
            .iter()
            .map(|(from, to)| pbv::Rename {
                from: from.as_str().to_owned(),
                to: to.clone(),
            })
            .collect(),
    }
}

/// The aggregator's config: every route it serves, sorted by name. Always served (empty when
/// no route uses it) so an aggregator always gets a first config and can report ready.
pub(super) fn service_config(gw: &Gateway) -> pbv::AggregatorConfig {
    let mut aggregates: Vec<pbv::Aggregate> = gw
        .routes
        .iter()
        .filter_map(|r| {
            let path_template = match &r.matcher.path {
                PathMatch::Template(t) => t.source.clone(),
                _ => String::new(),
            };
            // The headers ext-authz sets on this route (stripped from clients on all others).
            let mut route_forward: Vec<String> = r
                .auth
                .iter()
                .flat_map(|a| a.forward_claims.iter().map(|(h, _)| h.as_str().to_owned()))
                .collect();
            route_forward.sort();
            route_forward.dedup();
            let base = pbv::Aggregate {
                route: r.name.as_str().to_owned(),
                path_template,
                shape: r.response_json.as_ref().map(shape),
                forward_headers: route_forward,
                ..Default::default()
            };
            match &r.action {
                Action::Aggregate(a) => Some(pbv::Aggregate {
                    timeout_ms: ms(a.timeout),
                    forward_authorization: a.forward_authorization,
                    backends: a
                        .backends
                        .iter()
                        .map(|b| pbv::Backend {
                            name: b.name.as_str().to_owned(),
                            upstream: b.upstream.as_str().to_owned(),
                            path: b.path.clone(),
                            group: b.group.clone().unwrap_or_default(),
                            optional: b.optional,
                            timeout_ms: b.timeout.map(ms).unwrap_or_default(),
                        })
                        .collect(),
                    ..base
                }),
                Action::Upstream(u) if r.response_json.is_some() => Some(pbv::Aggregate {
                    timeout_ms: ms(r.timeout.unwrap_or(PASSTHROUGH_TIMEOUT)),
                    passthrough: true,
                    // The client's request goes on as it came, Authorization included, like
                    // on any proxied route.
                    forward_authorization: true,
                    backends: vec![pbv::Backend {
                        name: u.as_str().to_owned(),
                        upstream: u.as_str().to_owned(),
                        ..Default::default()
                    }],
                    ..base
                }),
                _ => None,
            }
        })
        .collect();
    aggregates.sort_by(|a, b| a.route.cmp(&b.route));
    let used = !aggregates.is_empty();
    pbv::AggregatorConfig {
        loopback: if used {
            gw.services.aggregator_loopback.to_string()
        } else {
            String::new()
        },
        upstream_header: if used {
            UPSTREAM_HEADER.to_owned()
        } else {
            String::new()
        },
        aggregates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_valid_names() {
        for n in [AGGREGATOR_CLUSTER, LOOPBACK_LISTENER] {
            assert_eq!(Name::new(n).expect("valid"), Name::builtin(n));
        }
    }
}
