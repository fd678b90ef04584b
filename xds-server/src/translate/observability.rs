//! `observability` -> Envoy: the stats listener that exposes Envoy's Prometheus endpoint without
//! exposing its admin, and the OpenTelemetry tracer of every HCM.
//!
//! The stats listener routes exactly `GET /stats/prometheus` to [`ENVOY_ADMIN_CLUSTER`], a
//! static cluster every vrata bootstrap defines (`envoy/*.yaml`, the test harness) pointing at
//! that Envoy's own loopback admin: xds-server cannot know each Envoy's admin port, the
//! bootstrap does. Everything else on that port is a 404, so `/quitquitquit`,
//! `/config_dump` (secrets) and the other admin endpoints stay on loopback.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{HttpService, HttpUri, http_uri};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, header_matcher, route, route_action, route_match,
};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::Percent;

use super::listener::{HTTP_CONNECTION_MANAGER, ROUTER_FILTER};
use super::{cluster, pb};
use crate::model::{Name, Tracing, Upstream};

/// The stats listener's name and stat prefix.
pub const STATS_LISTENER: &str = "vrata_prometheus";
/// The bootstrap cluster reaching the Envoy's own admin (see the module documentation).
pub const ENVOY_ADMIN_CLUSTER: &str = "vrata_envoy_admin";
/// The only path the stats listener serves.
pub const PROMETHEUS_PATH: &str = "/stats/prometheus";
/// The cluster of the OTLP/HTTP collector.
pub const OTLP_CLUSTER: &str = "vrata_otlp";
/// Envoy's OpenTelemetry tracer.
pub const OPENTELEMETRY_TRACER: &str = "envoy.tracers.opentelemetry";

/// A scrape that takes longer than this is abandoned (Prometheus' own default timeout is 10 s).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// An export that takes longer is dropped: spans are lost, requests never wait on them.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn stats_listener(address: std::net::SocketAddr) -> Listener {
    let get_only = HeaderMatcher {
        name: ":method".to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("GET".to_owned())),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let scrape = Route {
        name: "prometheus".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path(PROMETHEUS_PATH.to_owned())),
            headers: vec![get_only],
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                ENVOY_ADMIN_CLUSTER.to_owned(),
            )),
            timeout: Some(pb::duration(SCRAPE_TIMEOUT)),
            ..Default::default()
        })),
        ..Default::default()
    };
    let not_found = Route {
        name: "not_found".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            ..Default::default()
        })),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: STATS_LISTENER.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: STATS_LISTENER.to_owned(),
                virtual_hosts: vec![VirtualHost {
                    name: STATS_LISTENER.to_owned(),
                    domains: vec!["*".to_owned()],
                    routes: vec![scrape, not_found],
                    ..Default::default()
                }],
                // The admin cluster comes from the bootstrap: a bootstrap without it makes
                // scrapes fail with 503, never the whole listener update.
                validate_clusters: Some(pb::bool_value(false)),
                ..Default::default()
            },
        )),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(Router {
                suppress_envoy_headers: true,
                ..Default::default()
            }))),
            ..Default::default()
        }],
        use_remote_address: Some(pb::bool_value(true)),
        ..Default::default()
    };
    Listener {
        name: STATS_LISTENER.to_owned(),
        address: Some(pb::ip_address(address)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pb::any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn collector(t: &Tracing) -> Upstream {
    // A plain HTTP/1.1 cluster; OTLP/HTTP needs nothing else.
    Upstream::new(Name::builtin(OTLP_CLUSTER), t.collector.clone())
}

/// The collector's cluster, and its endpoints when they are IP addresses.
pub(super) fn otlp_cluster(t: &Tracing) -> (Cluster, Option<ClusterLoadAssignment>) {
    let upstream = collector(t);
    (
        cluster::cluster(&upstream),
        cluster::load_assignment(&upstream),
    )
}

/// The HCM's tracing settings: Envoy's OpenTelemetry tracer exporting OTLP/HTTP (protobuf) to
/// [`OTLP_CLUSTER`]; W3C `traceparent` is read from clients and sent to upstreams and to the
/// ext_authz and ratelimit services.
pub(super) fn hcm_tracing(t: &Tracing) -> http_connection_manager::Tracing {
    let otel = OpenTelemetryConfig {
        http_service: Some(HttpService {
            http_uri: Some(HttpUri {
                uri: format!("http://{}{}", t.authority, t.path),
                timeout: Some(pb::duration(EXPORT_TIMEOUT)),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                    OTLP_CLUSTER.to_owned(),
                )),
            }),
            ..Default::default()
        }),
        service_name: t.service_name.clone(),
        ..Default::default()
    };
    http_connection_manager::Tracing {
        random_sampling: Some(Percent {
            value: t.sample_ratio * 100.0,
        }),
        provider: Some(envoy_types::pb::envoy::config::trace::v3::tracing::Http {
            name: OPENTELEMETRY_TRACER.to_owned(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(pb::any(otel))),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Endpoints};

    #[test]
    fn builtin_names_are_valid_and_reserved() {
        for n in [STATS_LISTENER, ENVOY_ADMIN_CLUSTER, OTLP_CLUSTER] {
            assert!(Name::new(n).is_ok(), "{n}");
            assert!(n.starts_with("vrata_"), "{n}");
        }
    }

    #[test]
    fn stats_listener_serves_only_get_stats_prometheus() {
        let l = stats_listener("0.0.0.0:9902".parse().expect("addr"));
        let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!("typed config expected");
        };
        let hcm: HttpConnectionManager =
            prost::Message::decode(any.value.as_slice()).expect("an HCM");
        let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier
        else {
            panic!("inline routes expected");
        };
        let routes = &rc.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 2);
        let m = routes[0].r#match.as_ref().expect("match");
        assert_eq!(
            m.path_specifier,
            Some(route_match::PathSpecifier::Path(PROMETHEUS_PATH.into()))
        );
        assert_eq!(m.headers[0].name, ":method");
        assert!(matches!(
            &routes[1].action,
            Some(route::Action::DirectResponse(d)) if d.status == 404
        ));
        assert!(hcm.access_log.is_empty(), "scrapes are not access-logged");
    }

    #[test]
    fn tracing_samples_by_ratio_and_exports_to_the_collector() {
        let t = Tracing {
            collector: Endpoints::Static(vec![Endpoint {
                address: "127.0.0.1:4318".parse().expect("addr"),
                weight: 1,
            }]),
            authority: "127.0.0.1:4318".into(),
            path: "/v1/traces".into(),
            service_name: "gw".into(),
            sample_ratio: 0.25,
        };
        let tr = hcm_tracing(&t);
        assert_eq!(tr.random_sampling.map(|p| p.value), Some(25.0));
        let (c, cla) = otlp_cluster(&t);
        assert_eq!(c.name, OTLP_CLUSTER);
        assert!(cla.is_some());
    }
}
