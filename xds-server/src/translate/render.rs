//! Printing resources: the YAML of `xds-server render`, and a static Envoy bootstrap holding
//! them (for `envoy --mode validate` and tests that run Envoy without a control plane).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::overload::v3::{
    OverloadManager, ResourceMonitor, resource_monitor,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::resource_monitors::downstream_connections::v3::DownstreamConnectionsConfig;
use prost::Message;
use saphyr::{Mapping, Scalar, ScalarStyle, Yaml, YamlEmitter};
use serde_json::Value;

use super::{Resources, listener::HTTP_CONNECTION_MANAGER, pb, tls};

/// Downstream connections a static bootstrap's Envoy accepts; far above what a test or a
/// single local Envoy needs, and it silences Envoy's "no connection limit" start-up warning.
pub const MAX_DOWNSTREAM_CONNECTIONS: i64 = 50_000;

const GLOBAL_CONNECTION_LIMIT: &str = "envoy.resource_monitors.global_downstream_max_connections";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A resource holds a type outside the compiled descriptors, or does not convert.
    #[error(transparent)]
    Proto(#[from] vrata_proto::Error),
    #[error("writing YAML: {0}")]
    Yaml(#[from] saphyr::EmitError),
    #[error("listener {listener}: its HTTP connection manager does not decode: {source}")]
    Hcm {
        listener: String,
        source: prost::DecodeError,
    },
    #[error("{resource}: its TLS transport socket does not decode: {source}")]
    TransportSocket {
        resource: String,
        source: prost::DecodeError,
    },
    #[error("listener {listener} uses route configuration {route_config}, which is missing")]
    MissingRouteConfig {
        listener: String,
        route_config: String,
    },
}

/// The resources as one YAML document with `clusters`, `endpoints`, `secrets`, `listeners`,
/// `route_configs`, `ratelimit_service`, `ext_authz`, `aggregator` and `response_cache` (the configs those services get), each in Envoy's proto3 JSON form (field names as in Envoy's docs, `@type`
/// on packed extensions). Deterministic: resources sorted by name, map keys sorted.
pub fn render_yaml(resources: &Resources) -> Result<String, RenderError> {
    let document = serde_json::json!({
        "clusters": json_list(&resources.clusters)?,
        "endpoints": json_list(&resources.endpoints)?,
        "secrets": json_list(&resources.secrets.iter().map(tls::redacted).collect::<Vec<_>>())?,
        "listeners": json_list(&resources.listeners)?,
        "route_configs": json_list(&resources.route_configs)?,
        // Served to ratelimit-service, not to Envoy.
        "ratelimit_service": vrata_proto::to_json(&resources.rate_limit_config)?,
        // Served to ext-authz, not to Envoy.
        "ext_authz": vrata_proto::to_json(&resources.authz_policy)?,
        // Served to the aggregator, not to Envoy.
        "aggregator": vrata_proto::to_json(&resources.aggregator_config)?,
        "response_cache": vrata_proto::to_json(&resources.cache_config)?,
    });
    to_yaml(&document)
}

/// A YAML document for a JSON value, mapping keys sorted.
pub fn to_yaml(value: &Value) -> Result<String, RenderError> {
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&yaml_node(value))?;
    out.push('\n');
    Ok(out)
}

fn json_list<M: prost::Name>(messages: &[M]) -> Result<Value, RenderError> {
    Ok(Value::Array(
        messages
            .iter()
            .map(vrata_proto::to_json)
            .collect::<Result<_, _>>()?,
    ))
}

fn yaml_node(value: &Value) -> Yaml<'static> {
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Yaml::Value(Scalar::Integer(i)),
            // Whole doubles (`status: 405` in a JSON format dictionary) read better as integers;
            // below 2^53 the conversion is exact.
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Yaml::Value(Scalar::Integer(f as i64))
            }
            // Larger u64s and fractions: as JSON writes them, a valid YAML number.
            _ => Yaml::Representation(Cow::Owned(n.to_string()), ScalarStyle::Plain, None),
        },
        Value::String(s) => Yaml::Value(Scalar::String(Cow::Owned(s.clone()))),
        Value::Array(items) => Yaml::Sequence(items.iter().map(yaml_node).collect()),
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            let mut mapping = Mapping::new();
            for key in keys {
                if let Some(v) = fields.get(key) {
                    mapping.insert(
                        Yaml::Value(Scalar::String(Cow::Owned(key.clone()))),
                        yaml_node(v),
                    );
                }
            }
            Yaml::Mapping(mapping)
        }
    }
}

/// A self-contained Envoy bootstrap serving `resources` without a control plane: EDS clusters
/// become STATIC with their endpoints inline, listeners carry their route configuration inline,
/// admin listens on 127.0.0.1:`admin_port`.
pub fn static_bootstrap(resources: &Resources, admin_port: u16) -> Result<Value, RenderError> {
    let clusters = resources
        .clusters
        .iter()
        .map(|c| static_cluster(c, &resources.endpoints))
        .collect::<Result<_, _>>()?;
    let listeners = resources
        .listeners
        .iter()
        .map(|l| inline_routes(l, resources))
        .collect::<Result<_, _>>()?;
    let bootstrap = Bootstrap {
        admin: Some(Admin {
            address: Some(pb::ip_address(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                admin_port,
            ))),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners,
            clusters,
            secrets: resources.secrets.clone(),
        }),
        overload_manager: Some(overload_manager()),
        ..Default::default()
    };
    Ok(vrata_proto::to_json(&bootstrap)?)
}

fn static_cluster(
    cluster: &Cluster,
    endpoints: &[ClusterLoadAssignment],
) -> Result<Cluster, RenderError> {
    let mut cluster = cluster.clone();
    if let Some(ts) = &mut cluster.transport_socket {
        tls::use_static_secrets(ts).map_err(|source| RenderError::TransportSocket {
            resource: format!("cluster {}", cluster.name),
            source,
        })?;
    }
    if cluster.eds_cluster_config.take().is_some() {
        cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        ));
        cluster.load_assignment = Some(
            endpoints
                .iter()
                .find(|e| e.cluster_name == cluster.name)
                .cloned()
                .unwrap_or_else(|| ClusterLoadAssignment {
                    cluster_name: cluster.name.clone(),
                    ..Default::default()
                }),
        );
    }
    Ok(cluster)
}

fn inline_routes(listener: &Listener, resources: &Resources) -> Result<Listener, RenderError> {
    let mut listener = listener.clone();
    for chain in &mut listener.filter_chains {
        if let Some(ts) = &mut chain.transport_socket {
            tls::use_static_secrets(ts).map_err(|source| RenderError::TransportSocket {
                resource: format!("listener {}", listener.name),
                source,
            })?;
        }
        for f in &mut chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                continue;
            };
            if f.name != HTTP_CONNECTION_MANAGER {
                continue;
            }
            let mut hcm =
                HttpConnectionManager::decode(any.value.as_slice()).map_err(|source| {
                    RenderError::Hcm {
                        listener: listener.name.clone(),
                        source,
                    }
                })?;
            if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let route_config = resources
                    .route_configs
                    .iter()
                    .find(|rc| rc.name == rds.route_config_name)
                    .ok_or_else(|| RenderError::MissingRouteConfig {
                        listener: listener.name.clone(),
                        route_config: rds.route_config_name.clone(),
                    })?;
                hcm.route_specifier = Some(http_connection_manager::RouteSpecifier::RouteConfig(
                    route_config.clone(),
                ));
                *any = pb::any(hcm);
            }
        }
    }
    Ok(listener)
}

fn overload_manager() -> OverloadManager {
    OverloadManager {
        resource_monitors: vec![ResourceMonitor {
            name: GLOBAL_CONNECTION_LIMIT.to_owned(),
            config_type: Some(resource_monitor::ConfigType::TypedConfig(pb::any(
                DownstreamConnectionsConfig {
                    max_active_downstream_connections: MAX_DOWNSTREAM_CONNECTIONS,
                },
            ))),
        }],
        ..Default::default()
    }
}
