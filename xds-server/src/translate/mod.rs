//! PURE translation: `model::Gateway` -> Envoy resources. No I/O, no clock, no randomness:
//! the same model always gives the same resources (every list sorted by resource name), so
//! snapshots can be compared and golden files hold.
//!
//! Names follow SPEC §3 so Envoy's admin stats read naturally: cluster and ClusterLoadAssignment
//! = upstream name (`cluster.orders.*`), listener and HCM stat prefix = listener name
//! (`http.public.*`), one RouteConfiguration per listener named after it, virtual hosts named
//! after their domain, Envoy route names = route names.
//!
//! One module per resource kind; `local_reply` and `access_log` hold the two formats that are
//! public contracts (problem+json bodies, JSON log lines); `render` prints resources.

mod access_log;
mod aggregate;
mod authz;
mod cache;
mod cluster;
mod listener;
mod local_reply;
mod observability;
mod pb;
mod rate_limit;
mod render;
mod route;
mod tls;

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route as envoy_route, route_action,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use vrata_proto::vrata::config::v1::{AggregatorConfig, AuthzPolicy, CacheConfig, RateLimitConfig};

pub use access_log::FIELDS as ACCESS_LOG_FIELDS;
pub use aggregate::{
    AGGREGATE_GRACE, AGGREGATE_HEADER, AGGREGATOR_CLUSTER, AGGREGATOR_CONFIG_NAME,
    LOOPBACK_LISTENER, UPSTREAM_HEADER,
};
pub use authz::{
    AUTHZ_POLICY_NAME, CHECKED_HEADERS, EXT_AUTHZ_CLUSTER, EXT_AUTHZ_FILTER, ROUTE_CONTEXT_KEY,
};
pub use cache::{CACHE_CONFIG_NAME, CACHE_FILTER, RESPONSE_CACHE_CLUSTER, ROUTE_METADATA};
pub use cluster::HTTP_PROTOCOL_OPTIONS;
pub use listener::{CORS_FILTER, HTTP_CONNECTION_MANAGER, ROUTER_FILTER};
pub use local_reply::{METHOD_NOT_ALLOWED, PROBLEM_JSON, PROBLEMS, Problem};
pub use observability::{
    ENVOY_ADMIN_CLUSTER, OPENTELEMETRY_TRACER, OTLP_CLUSTER, PROMETHEUS_PATH, STATS_LISTENER,
};
pub use rate_limit::{
    AUTHZ_METADATA_NAMESPACE, RATELIMIT_CLUSTER, RATELIMIT_DOMAIN, RATELIMIT_FILTER,
};
pub use render::{RenderError, render_yaml, static_bootstrap, to_yaml};
pub use route::{ANY_HOST, IDEMPOTENT_METHODS};
pub use tls::TLS_TRANSPORT_SOCKET;

use crate::model::Gateway;

/// The Envoy resources for one gateway configuration. Each list is sorted by resource name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    pub clusters: Vec<Cluster>,
    /// Only for static-endpoint (EDS) upstreams; DNS upstreams carry theirs inline.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// SDS secrets: certificates with their keys, and trusted CAs.
    pub secrets: Vec<Secret>,
    pub listeners: Vec<Listener>,
    pub route_configs: Vec<RouteConfiguration>,
    /// ratelimit-service's config (one resource, named [`RATELIMIT_DOMAIN`]); never sent to
    /// Envoy. Always present, empty when no route is limited, so a service always gets a first
    /// config and can report ready.
    pub rate_limit_config: RateLimitConfig,
    /// ext-authz's config (served to ext-authz over ADS).
    pub authz_policy: AuthzPolicy,
    /// The aggregator's config (served to the aggregator over ADS); always present.
    pub aggregator_config: AggregatorConfig,
    /// response-cache's config (served to response-cache over ADS); always present. Its
    /// `purges` are empty here: the control plane adds them.
    pub cache_config: CacheConfig,
}

impl Resources {
    /// Every cluster a route sends traffic to, for consistency checks before publishing
    /// (Envoy accepts routes to unknown clusters and then answers 503).
    pub fn referenced_clusters(&self) -> BTreeSet<&str> {
        self.route_configs
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .flat_map(|vh| &vh.routes)
            .filter_map(|r| match &r.action {
                Some(envoy_route::Action::Route(action)) => match &action.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(name)) => Some(name.as_str()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

/// Translates a validated gateway. Never fails: the model guarantees what Envoy needs
/// (references resolve, regexes compile, names are valid resource names).
pub fn translate(gw: &Gateway) -> Resources {
    let mut clusters: Vec<Cluster> = gw.upstreams.values().map(cluster::cluster).collect();
    let mut endpoints: Vec<ClusterLoadAssignment> = gw
        .upstreams
        .values()
        .filter_map(cluster::load_assignment)
        .collect();
    let filters = listener::HttpFilters {
        // The CORS filter costs a little on every request: only when some route uses it.
        cors: gw.routes.iter().any(|r| r.cors.is_some()),
        // Likewise ext_authz and the ratelimit filter, with their clusters.
        ext_authz: gw.uses_auth().then_some(&gw.services),
        rate_limit: rate_limit::in_use(gw).then_some(&gw.services),
        cache: gw.uses_cache().then_some(&gw.services),
        tracing: gw.observability.tracing.as_ref(),
    };
    if let Some(t) = &gw.observability.tracing {
        let (cluster, cla) = observability::otlp_cluster(t);
        clusters.push(cluster);
        endpoints.extend(cla);
    }
    if let Some(services) = filters.ext_authz {
        let (cluster, cla) = authz::cluster(services);
        clusters.push(cluster);
        endpoints.extend(cla);
    }
    if let Some(services) = filters.rate_limit {
        let (cluster, cla) = rate_limit::cluster(services);
        clusters.push(cluster);
        endpoints.extend(cla);
    }
    if let Some(services) = filters.cache {
        let (cluster, cla) = cache::cluster(services);
        clusters.push(cluster);
        endpoints.extend(cla);
    }
    let mut listeners: Vec<Listener> = gw
        .listeners
        .iter()
        .map(|l| listener::listener(l, &filters))
        .collect();
    listeners.extend(
        gw.observability
            .prometheus
            .map(observability::stats_listener),
    );
    let mut route_configs: Vec<RouteConfiguration> = gw
        .listeners
        .iter()
        .map(|l| route::route_configuration(gw, l))
        .collect();
    if aggregate::in_use(gw) {
        let (cluster, cla) = aggregate::cluster(&gw.services);
        clusters.push(cluster);
        endpoints.push(cla);
        listeners.push(aggregate::loopback_listener(&gw.services));
        route_configs.push(aggregate::loopback_routes(gw));
    }

    let secrets = tls::secrets(gw);

    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    endpoints.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    route_configs.sort_by(|a, b| a.name.cmp(&b.name));
    Resources {
        clusters,
        endpoints,
        secrets,
        listeners,
        route_configs,
        rate_limit_config: rate_limit::service_config(gw),
        authz_policy: authz::service_policy(gw),
        aggregator_config: aggregate::service_config(gw),
        cache_config: cache::service_config(gw),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{
        Endpoint, Endpoints, FailureMode, Listener as ModelListener, Name, Route, Services,
        Upstream, defaults,
    };

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid name")
    }

    fn upstream(n: &str, endpoints: Endpoints) -> (Name, Upstream) {
        (name(n), Upstream::new(name(n), endpoints))
    }

    fn route(n: &str, to: &str) -> Route {
        Route::to_upstream(name(n), &format!("/{n}"), name(to))
    }

    fn listener(n: &str, port: u16) -> ModelListener {
        ModelListener {
            name: name(n),
            address: format!("0.0.0.0:{port}").parse().expect("addr"),
            trusted_hops: 0,
            http2: false,
            redirect_https: false,
            access_log: false,
            tls: None,
        }
    }

    fn gateway() -> Gateway {
        let one = |port| {
            Endpoints::Static(vec![Endpoint {
                address: format!("10.0.0.1:{port}").parse().expect("addr"),
                weight: 1,
            }])
        };
        Gateway {
            listeners: vec![listener("zeta", 8081), listener("alpha", 8080)],
            upstreams: BTreeMap::from([
                upstream("orders", one(1)),
                upstream("users", one(2)),
                upstream(
                    "dns",
                    Endpoints::Dns {
                        host: "dns.internal".into(),
                        port: 80,
                    },
                ),
            ]),
            routes: vec![route("b", "users"), route("a", "orders"), route("c", "dns")],
            services: Services {
                ext_authz: defaults::EXT_AUTHZ,
                ratelimit: defaults::RATELIMIT,
                timeout: defaults::SERVICE_TIMEOUT,
                ext_authz_failure: FailureMode::Deny,
                ratelimit_failure: FailureMode::Allow,
                aggregator: defaults::AGGREGATOR,
                aggregator_loopback: defaults::AGGREGATOR_LOOPBACK,
                response_cache: defaults::RESPONSE_CACHE,
            },
            auth_providers: BTreeMap::new(),
            rate_limits: Default::default(),
            observability: Default::default(),
            cache_redis: Vec::new(),
        }
    }

    #[test]
    fn resources_are_named_after_the_model_and_sorted() {
        let r = translate(&gateway());
        let clusters: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(clusters, ["dns", "orders", "users"]);
        // Only static-endpoint upstreams have a ClusterLoadAssignment, named after the cluster.
        let endpoints: Vec<&str> = r
            .endpoints
            .iter()
            .map(|e| e.cluster_name.as_str())
            .collect();
        assert_eq!(endpoints, ["orders", "users"]);
        let listeners: Vec<&str> = r.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(listeners, ["alpha", "zeta"]);
        let route_configs: Vec<&str> = r.route_configs.iter().map(|rc| rc.name.as_str()).collect();
        assert_eq!(route_configs, ["alpha", "zeta"]);
    }

    #[test]
    fn every_referenced_cluster_exists() {
        let r = translate(&gateway());
        let clusters: BTreeSet<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
        let referenced = r.referenced_clusters();
        assert_eq!(referenced, BTreeSet::from(["dns", "orders", "users"]));
        assert!(referenced.is_subset(&clusters));
    }

    #[test]
    fn cors_filter_only_when_a_route_uses_it() {
        let without = translate(&gateway());
        let mut gw = gateway();
        gw.routes[1].cors = Some(crate::model::Cors {
            allow_origins: vec!["*".into()],
            allow_methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        });
        let with = translate(&gw);
        let filter_count = |r: &Resources| r.listeners[0].filter_chains[0].filters.len();
        assert_eq!(filter_count(&without), 1);
        let hcm_of = |r: &Resources| -> Vec<String> {
            let Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any),
            ) = &r.listeners[0].filter_chains[0].filters[0].config_type
            else {
                panic!("typed config expected");
            };
            let hcm: envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager =
                prost::Message::decode(any.value.as_slice()).expect("an HCM");
            hcm.http_filters.into_iter().map(|f| f.name).collect()
        };
        assert_eq!(hcm_of(&without), [ROUTER_FILTER]);
        assert_eq!(hcm_of(&with), [CORS_FILTER, ROUTER_FILTER]);
    }

    fn hcm_filters(r: &Resources) -> Vec<String> {
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &r.listeners[0].filter_chains[0].filters[0].config_type
        else {
            panic!("typed config expected");
        };
        let hcm: envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager =
            prost::Message::decode(any.value.as_slice()).expect("an HCM");
        hcm.http_filters.into_iter().map(|f| f.name).collect()
    }

    fn with_auth() -> Gateway {
        use crate::model::{ClaimPath, HeaderName, Requirement, RouteAuth};
        let mut gw = gateway();
        gw.routes[1].auth = Some(RouteAuth {
            provider: name("kc"),
            roles: Requirement::default(),
            scopes: Requirement::default(),
            optional: false,
            forward_claims: vec![(
                HeaderName::new("x-user-id").expect("header"),
                ClaimPath::new("sub").expect("path"),
            )],
        });
        gw
    }

    #[test]
    fn ext_authz_only_when_a_route_has_auth_and_after_cors() {
        let without = translate(&gateway());
        assert!(!hcm_filters(&without).contains(&EXT_AUTHZ_FILTER.to_owned()));
        assert!(without.clusters.iter().all(|c| c.name != EXT_AUTHZ_CLUSTER));

        let mut gw = with_auth();
        let r = translate(&gw);
        assert_eq!(hcm_filters(&r), [EXT_AUTHZ_FILTER, ROUTER_FILTER]);
        let cluster = r
            .clusters
            .iter()
            .find(|c| c.name == EXT_AUTHZ_CLUSTER)
            .expect("ext-authz cluster");
        assert!(
            cluster
                .typed_extension_protocol_options
                .contains_key(HTTP_PROTOCOL_OPTIONS),
            "gRPC needs HTTP/2"
        );
        assert!(
            r.endpoints
                .iter()
                .any(|e| e.cluster_name == EXT_AUTHZ_CLUSTER)
        );
        assert!(
            r.referenced_clusters()
                .is_subset(&r.clusters.iter().map(|c| c.name.as_str()).collect())
        );

        // Preflights are answered by CORS before ext_authz could ask for a token.
        gw.routes[0].cors = Some(crate::model::Cors {
            allow_origins: vec!["*".into()],
            allow_methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        });
        assert_eq!(
            hcm_filters(&translate(&gw)),
            [CORS_FILTER, EXT_AUTHZ_FILTER, ROUTER_FILTER]
        );
    }

    #[test]
    fn per_route_ext_authz_settings_and_claim_header_stripping() {
        use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
            ExtAuthzPerRoute, ext_authz_per_route::Override,
        };
        let r = translate(&with_auth());
        let vh = &r.route_configs[0].virtual_hosts[0];
        let decode = |any: &envoy_types::pb::google::protobuf::Any| -> Override {
            let per: ExtAuthzPerRoute =
                prost::Message::decode(any.value.as_slice()).expect("per-route");
            per.r#override.expect("override")
        };
        // Off by default (Envoy's own routes: 405, ambiguous Host).
        assert_eq!(
            decode(&vh.typed_per_filter_config[EXT_AUTHZ_FILTER]),
            Override::Disabled(true)
        );
        let route = |n: &str| vh.routes.iter().find(|r| r.name == n).expect("route");
        let Override::CheckSettings(settings) =
            decode(&route("a").typed_per_filter_config[EXT_AUTHZ_FILTER])
        else {
            panic!("route a checks");
        };
        assert_eq!(settings.context_extensions[ROUTE_CONTEXT_KEY], "a");
        assert!(route("a").request_headers_to_remove.is_empty());
        for public in ["b", "c"] {
            assert_eq!(
                decode(&route(public).typed_per_filter_config[EXT_AUTHZ_FILTER]),
                Override::Disabled(true)
            );
            assert_eq!(route(public).request_headers_to_remove, ["x-user-id"]);
        }
    }

    #[test]
    fn ratelimit_filter_and_cluster_only_when_a_route_is_limited() {
        let without = translate(&gateway());
        assert!(!without.clusters.iter().any(|c| c.name == RATELIMIT_CLUSTER));
        assert!(without.rate_limit_config.routes.is_empty());

        let mut gw = gateway();
        gw.routes[1].cors = Some(crate::model::Cors {
            allow_origins: vec!["*".into()],
            allow_methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        });
        gw.routes[1].rate_limit = vec![crate::model::RateLimit {
            name: "per-client".into(),
            limit: 5,
            per: std::time::Duration::from_secs(60),
            key: crate::model::LimitKey::Ip,
        }];
        let with = translate(&gw);
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &with.listeners[0].filter_chains[0].filters[0].config_type
        else {
            panic!("typed config expected");
        };
        let hcm: envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager =
            prost::Message::decode(any.value.as_slice()).expect("an HCM");
        let names: Vec<String> = hcm.http_filters.into_iter().map(|f| f.name).collect();
        // After CORS (preflights spend no quota), before the router.
        assert_eq!(names, [CORS_FILTER, RATELIMIT_FILTER, ROUTER_FILTER]);
        assert!(with.clusters.iter().any(|c| c.name == RATELIMIT_CLUSTER));
        assert!(
            with.endpoints
                .iter()
                .any(|e| e.cluster_name == RATELIMIT_CLUSTER)
        );
        assert_eq!(with.rate_limit_config.routes.len(), 1);
        assert_eq!(with.rate_limit_config.routes[0].route, "a");
        // Every Envoy route made from the limited route carries its descriptor actions.
        let limited: Vec<_> = with.route_configs[0]
            .virtual_hosts
            .iter()
            .flat_map(|vh| &vh.routes)
            .filter(|r| r.name == "a")
            .collect();
        assert!(!limited.is_empty());
        for r in limited {
            let Some(envoy_route::Action::Route(action)) = &r.action else {
                panic!("a route action");
            };
            assert_eq!(action.rate_limits.len(), 1);
            assert_eq!(action.rate_limits[0].actions.len(), 3);
        }
    }

    #[test]
    fn translation_is_deterministic() {
        let gw = gateway();
        assert_eq!(translate(&gw), translate(&gw.clone()));
    }
}
