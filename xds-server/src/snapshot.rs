//! Versioned, consistent snapshots of the Envoy resources served over ADS.
//!
//! A snapshot holds every resource of every type with two kinds of version:
//! - a version per type (what state-of-the-world `version_info` carries), which only moves when
//!   something of that type changed, so an unchanged type is never re-pushed;
//! - a version per resource (what delta xDS carries), which only moves when that resource's
//!   content changed. Change detection compares the typed messages (`PartialEq`), never encoded
//!   bytes: prost encodes map fields in random order (ENVOY-NOTES).
//!
//! Versions are `<boot id>.<counter>`: a restarted xds-server never reuses a version an Envoy
//! may still hold from the previous process (delta's `initial_resource_versions`).
//!
//! Before a snapshot is published, [`Snapshot::check_consistency`] verifies that every cluster a
//! route or listener names exists, every RDS name a listener uses exists and every EDS cluster
//! has its endpoints: Envoy accepts a route to an unknown cluster and then serves 503.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use vrata_proto::vrata::config::v1::{AggregatorConfig, AuthzPolicy, CacheConfig, RateLimitConfig};

/// The xDS resource types vrata serves, in the order a push must follow so that no update
/// drops traffic: clusters before the endpoints that fill them, both before the listeners and
/// routes that send traffic to them. vrata's own config resources come last: only vrata's
/// services ask for them (by type URL), Envoy never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TypeKind {
    Cluster,
    Endpoint,
    /// SDS: certificates and trusted CAs, before the listeners and clusters that use them are
    /// warmed.
    Secret,
    Listener,
    Route,
    /// ratelimit-service's `vrata.config.v1.RateLimitConfig`.
    RateLimit,
    /// ext-authz's `vrata.config.v1.AuthzPolicy`.
    Authz,
    /// The aggregator's `vrata.config.v1.AggregatorConfig`.
    Aggregator,
    /// response-cache's `vrata.config.v1.CacheConfig`.
    Cache,
}

/// How many resource types there are.
const TYPE_COUNT: usize = 9;

impl TypeKind {
    pub const PUSH_ORDER: [TypeKind; TYPE_COUNT] = [
        TypeKind::Cluster,
        TypeKind::Endpoint,
        TypeKind::Secret,
        TypeKind::Listener,
        TypeKind::Route,
        TypeKind::RateLimit,
        TypeKind::Authz,
        TypeKind::Aggregator,
        TypeKind::Cache,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            TypeKind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeKind::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeKind::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            TypeKind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeKind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            TypeKind::RateLimit => "type.googleapis.com/vrata.config.v1.RateLimitConfig",
            TypeKind::Authz => "type.googleapis.com/vrata.config.v1.AuthzPolicy",
            TypeKind::Aggregator => "type.googleapis.com/vrata.config.v1.AggregatorConfig",
            TypeKind::Cache => "type.googleapis.com/vrata.config.v1.CacheConfig",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::PUSH_ORDER.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name for logs, metrics labels and the admin API.
    pub fn short(self) -> &'static str {
        match self {
            TypeKind::Cluster => "CDS",
            TypeKind::Endpoint => "EDS",
            TypeKind::Secret => "SDS",
            TypeKind::Listener => "LDS",
            TypeKind::Route => "RDS",
            TypeKind::RateLimit => "RLC",
            TypeKind::Authz => "AZP",
            TypeKind::Aggregator => "AGG",
            TypeKind::Cache => "RCC",
        }
    }

    /// Wildcard types: the client gets every resource, whatever names it asks for.
    /// (A service needs no resource name to get its config.)
    pub fn is_wildcard(self) -> bool {
        matches!(
            self,
            TypeKind::Cluster
                | TypeKind::Listener
                | TypeKind::RateLimit
                | TypeKind::Authz
                | TypeKind::Aggregator
                | TypeKind::Cache
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TypeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// One typed resource. Kept typed so that change detection can compare messages.
// Sizes differ (a Cluster is ~3 KiB) but every Resource lives behind an Arc in a snapshot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Cluster(Cluster),
    Endpoint(ClusterLoadAssignment),
    Secret(Secret),
    Listener(Listener),
    Route(RouteConfiguration),
    /// Named [`crate::translate::RATELIMIT_DOMAIN`].
    RateLimit(RateLimitConfig),
    /// Named [`crate::translate::AUTHZ_POLICY_NAME`].
    Authz(AuthzPolicy),
    /// Named [`crate::translate::AGGREGATOR_CONFIG_NAME`].
    Aggregator(AggregatorConfig),
    /// Named [`crate::translate::CACHE_CONFIG_NAME`].
    Cache(CacheConfig),
}

impl Resource {
    pub fn kind(&self) -> TypeKind {
        match self {
            Resource::Cluster(_) => TypeKind::Cluster,
            Resource::Endpoint(_) => TypeKind::Endpoint,
            Resource::Secret(_) => TypeKind::Secret,
            Resource::Listener(_) => TypeKind::Listener,
            Resource::Route(_) => TypeKind::Route,
            Resource::RateLimit(_) => TypeKind::RateLimit,
            Resource::Authz(_) => TypeKind::Authz,
            Resource::Aggregator(_) => TypeKind::Aggregator,
            Resource::Cache(_) => TypeKind::Cache,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Cluster(c) => &c.name,
            Resource::Endpoint(e) => &e.cluster_name,
            Resource::Secret(s) => &s.name,
            Resource::Listener(l) => &l.name,
            Resource::Route(r) => &r.name,
            Resource::RateLimit(_) => crate::translate::RATELIMIT_DOMAIN,
            Resource::Authz(_) => crate::translate::AUTHZ_POLICY_NAME,
            Resource::Aggregator(_) => crate::translate::AGGREGATOR_CONFIG_NAME,
            Resource::Cache(_) => crate::translate::CACHE_CONFIG_NAME,
        }
    }

    fn to_any(&self) -> Any {
        fn pack<T: Message + Name>(m: &T) -> Any {
            Any {
                type_url: T::type_url(),
                value: m.encode_to_vec(),
            }
        }
        match self {
            Resource::Cluster(m) => pack(m),
            Resource::Endpoint(m) => pack(m),
            Resource::Secret(m) => pack(m),
            Resource::Listener(m) => pack(m),
            Resource::Route(m) => pack(m),
            Resource::RateLimit(m) => pack(m),
            Resource::Authz(m) => pack(m),
            Resource::Aggregator(m) => pack(m),
            Resource::Cache(m) => pack(m),
        }
    }
}

/// A resource ready to send: encoded once per snapshot, shared by every stream.
#[derive(Debug, Clone)]
pub struct Entry {
    pub version: String,
    pub resource: Arc<Resource>,
    pub any: Arc<Any>,
}

/// All resources of one type.
#[derive(Debug, Clone, Default)]
pub struct TypeSet {
    /// Moves only when a resource of this type was added, changed or removed.
    pub version: String,
    pub entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `<boot id>.<counter>`; the counter is the config generation.
    pub version: String,
    pub generation: u64,
    types: [TypeSet; TYPE_COUNT],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error("route configuration `{route_config}` sends traffic to unknown cluster `{cluster}`")]
    UnknownCluster {
        route_config: String,
        cluster: String,
    },
    #[error("listener `{listener}` uses unknown route configuration `{route_config}`")]
    UnknownRouteConfig {
        listener: String,
        route_config: String,
    },
    #[error("{user} `{name}` uses unknown secret `{secret}`")]
    UnknownSecret {
        user: &'static str,
        name: String,
        secret: String,
    },
    #[error("EDS cluster `{cluster}` has no endpoints resource")]
    MissingEndpoints { cluster: String },
    #[error("{kind} resource `{name}` is defined twice")]
    Duplicate { kind: TypeKind, name: String },
}

impl Snapshot {
    /// Builds generation `generation` from `resources`, reusing the versions of `prev` for
    /// everything that did not change.
    pub fn build(
        boot_id: &str,
        generation: u64,
        prev: Option<&Snapshot>,
        resources: impl IntoIterator<Item = Resource>,
    ) -> Result<Self, ConsistencyError> {
        let version = format!("{boot_id}.{generation}");
        let mut types: [TypeSet; TYPE_COUNT] = Default::default();
        for r in resources {
            let kind = r.kind();
            let name = r.name().to_owned();
            let set = &mut types[kind.index()];
            if set.entries.contains_key(&name) {
                return Err(ConsistencyError::Duplicate { kind, name });
            }
            let unchanged = prev
                .and_then(|p| p.types[kind.index()].entries.get(&name))
                .filter(|old| *old.resource == r);
            let entry = match unchanged {
                Some(old) => old.clone(),
                None => Entry {
                    version: version.clone(),
                    any: Arc::new(r.to_any()),
                    resource: Arc::new(r),
                },
            };
            set.entries.insert(name, entry);
        }
        for kind in TypeKind::PUSH_ORDER {
            let set = &mut types[kind.index()];
            set.version =
                match prev.map(|p| &p.types[kind.index()]) {
                    Some(old)
                        if old.entries.len() == set.entries.len()
                            && old.entries.iter().zip(set.entries.iter()).all(
                                |((n1, e1), (n2, e2))| n1 == n2 && e1.version == e2.version,
                            ) =>
                    {
                        old.version.clone()
                    }
                    _ => version.clone(),
                };
        }
        let snapshot = Self {
            version,
            generation,
            types,
        };
        snapshot.check_consistency()?;
        Ok(snapshot)
    }

    pub fn types(&self, kind: TypeKind) -> &TypeSet {
        &self.types[kind.index()]
    }

    /// Every reference between resources resolves.
    pub fn check_consistency(&self) -> Result<(), ConsistencyError> {
        let clusters = &self.types(TypeKind::Cluster).entries;
        let endpoints = &self.types(TypeKind::Endpoint).entries;
        let routes = &self.types(TypeKind::Route).entries;
        for (name, entry) in clusters {
            if let Resource::Cluster(c) = &*entry.resource {
                let is_eds = matches!(
                    c.cluster_discovery_type,
                    Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
                );
                if is_eds && !endpoints.contains_key(name) {
                    return Err(ConsistencyError::MissingEndpoints {
                        cluster: name.clone(),
                    });
                }
            }
        }
        for (name, entry) in routes {
            if let Resource::Route(rc) = &*entry.resource {
                for cluster in referenced_clusters(rc) {
                    if !clusters.contains_key(cluster) {
                        return Err(ConsistencyError::UnknownCluster {
                            route_config: name.clone(),
                            cluster: cluster.to_owned(),
                        });
                    }
                }
            }
        }
        let secrets = &self.types(TypeKind::Secret).entries;
        let check_secrets = |user: &'static str, name: &str, ts: Option<&TransportSocket>| {
            for secret in sds_names(ts) {
                if !secrets.contains_key(&secret) {
                    return Err(ConsistencyError::UnknownSecret {
                        user,
                        name: name.to_owned(),
                        secret,
                    });
                }
            }
            Ok(())
        };
        for (name, entry) in clusters {
            if let Resource::Cluster(c) = &*entry.resource {
                check_secrets("cluster", name, c.transport_socket.as_ref())?;
            }
        }
        for (name, entry) in &self.types(TypeKind::Listener).entries {
            if let Resource::Listener(l) = &*entry.resource {
                for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                    check_secrets("listener", name, chain.transport_socket.as_ref())?;
                }
                for rds in rds_names(l) {
                    if !routes.contains_key(&rds) {
                        return Err(ConsistencyError::UnknownRouteConfig {
                            listener: name.clone(),
                            route_config: rds,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts for the admin API.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        TypeKind::PUSH_ORDER
            .into_iter()
            .map(|k| (k.short(), self.types(k).entries.len()))
            .collect()
    }
}

/// Clusters named by the routes of a route configuration (single and weighted).
fn referenced_clusters(rc: &RouteConfiguration) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for vh in &rc.virtual_hosts {
        for route in &vh.routes {
            if let Some(Action::Route(ra)) = &route.action {
                match &ra.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => {
                        out.insert(c.as_str());
                    }
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        out.extend(w.clusters.iter().map(|c| c.name.as_str()));
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// SDS secret names a TLS transport socket uses (certificates and validation contexts).
fn sds_names(ts: Option<&TransportSocket>) -> Vec<String> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) =
        ts.and_then(|t| t.config_type.as_ref())
    else {
        return Vec::new();
    };
    let common: Option<CommonTlsContext> = if any.type_url == DownstreamTlsContext::type_url() {
        DownstreamTlsContext::decode(any.value.as_slice())
            .ok()
            .and_then(|c| c.common_tls_context)
    } else if any.type_url == UpstreamTlsContext::type_url() {
        UpstreamTlsContext::decode(any.value.as_slice())
            .ok()
            .and_then(|c| c.common_tls_context)
    } else {
        None
    };
    let Some(common) = common else {
        return Vec::new();
    };
    let mut out: Vec<String> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.clone())
        .collect();
    match common.validation_context_type {
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            out.push(s.name)
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            out.extend(c.validation_context_sds_secret_config.map(|s| s.name))
        }
        _ => {}
    }
    out
}

/// RDS route configuration names used by a listener's HTTP connection managers.
fn rds_names(l: &Listener) -> Vec<String> {
    let hcm_url = HttpConnectionManager::type_url();
    let mut out = Vec::new();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for filter in &chain.filters {
            let Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any),
            ) = &filter.config_type
            else {
                continue;
            };
            if any.type_url != hcm_url {
                continue;
            }
            if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                out.push(rds.route_config_name);
            }
        }
    }
    out
}

/// A random-enough id for this process, so versions never repeat across restarts.
pub fn boot_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}",
        (nanos as u64) ^ (u64::from(std::process::id()) << 40)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{
        Route as EnvoyRoute, RouteAction, VirtualHost,
    };

    fn cluster(name: &str, timeout_s: i64) -> Resource {
        Resource::Cluster(Cluster {
            name: name.into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: timeout_s,
                nanos: 0,
            }),
            ..Default::default()
        })
    }

    fn route_config(name: &str, cluster: &str) -> Resource {
        Resource::Route(RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: "*".into(),
                domains: vec!["*".into()],
                routes: vec![EnvoyRoute {
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn unchanged_resources_and_types_keep_their_versions() {
        let s1 = Snapshot::build("b", 1, None, [cluster("a", 1), cluster("b", 1)]).unwrap();
        let s2 = Snapshot::build("b", 2, Some(&s1), [cluster("a", 1), cluster("b", 2)]).unwrap();
        let c2 = s2.types(TypeKind::Cluster);
        assert_eq!(c2.entries["a"].version, "b.1");
        assert_eq!(c2.entries["b"].version, "b.2");
        assert_eq!(c2.version, "b.2");
        assert_eq!(s2.types(TypeKind::Route).version, "b.1");
        let s3 = Snapshot::build("b", 3, Some(&s2), [cluster("a", 1), cluster("b", 2)]).unwrap();
        assert_eq!(s3.types(TypeKind::Cluster).version, "b.2");
        let s4 = Snapshot::build("b", 4, Some(&s3), [cluster("a", 1)]).unwrap();
        assert_eq!(
            s4.types(TypeKind::Cluster).version,
            "b.4",
            "a removal is a change"
        );
    }

    #[test]
    fn a_route_to_an_unknown_cluster_is_refused() {
        let err = Snapshot::build("b", 1, None, [cluster("a", 1), route_config("rc", "nope")])
            .unwrap_err();
        assert_eq!(
            err,
            ConsistencyError::UnknownCluster {
                route_config: "rc".into(),
                cluster: "nope".into()
            }
        );
        assert!(Snapshot::build("b", 1, None, [cluster("a", 1), route_config("rc", "a")]).is_ok());
    }

    #[test]
    fn an_eds_cluster_needs_its_endpoints() {
        let eds = Resource::Cluster(Cluster {
            name: "e".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            ..Default::default()
        });
        let err = Snapshot::build("b", 1, None, [eds.clone()]).unwrap_err();
        assert_eq!(
            err,
            ConsistencyError::MissingEndpoints {
                cluster: "e".into()
            }
        );
        let cla = Resource::Endpoint(ClusterLoadAssignment {
            cluster_name: "e".into(),
            ..Default::default()
        });
        assert!(Snapshot::build("b", 1, None, [eds, cla]).is_ok());
    }

    #[test]
    fn duplicates_are_refused() {
        let err = Snapshot::build("b", 1, None, [cluster("a", 1), cluster("a", 2)]).unwrap_err();
        assert!(matches!(err, ConsistencyError::Duplicate { .. }));
    }
}
