//! A real Envoy process with a generated bootstrap pointing at an xds-server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::Admin;
use crate::paths::envoy_bin;
use crate::ports::free_port;
use crate::process::Proc;

/// Which ADS flavour the Envoy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ads {
    StateOfTheWorld,
    Delta,
}

pub struct Envoy {
    pub node_id: String,
    pub admin_port: u16,
    pub proc: Proc,
    admin: Admin,
}

/// How often the harness's Envoys flush stats to xds-server's metrics sink (the shipped
/// bootstraps use Envoy's default, 5 s): the fleet view's tests wait for it.
pub const STATS_FLUSH: &str = "1s";

/// The bootstrap the harness gives every Envoy, as `envoy/bootstrap.yaml` has it: ADS to
/// xds-server, admin on loopback, the `vrata_envoy_admin` cluster the stats listener routes
/// to, and stats streamed to xds-server's metrics sink.
pub fn bootstrap(node_id: &str, xds_port: u16, admin_port: u16, ads: Ads) -> Value {
    let api_type = match ads {
        Ads::StateOfTheWorld => "GRPC",
        Ads::Delta => "DELTA_GRPC",
    };
    json!({
        "node": {"id": node_id, "cluster": "vrata-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "stats_flush_interval": STATS_FLUSH,
        "stats_sinks": [{
            "name": "envoy.stat_sinks.metrics_service",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
                "transport_api_version": "V3",
                "histogram_emit_mode": "SUMMARY",
                "grpc_service": {"envoy_grpc": {"cluster_name": "xds_cluster"}}
            }
        }],
        "static_resources": {"clusters": [{
            "name": "vrata_envoy_admin",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "vrata_envoy_admin", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
            }}]}]}
        }, {
            "name": "xds_cluster",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": xds_port}}
            }}]}]}
        }]},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "overload.global_downstream_max_connections": 10000
        }}]}
    })
}

impl Envoy {
    pub async fn start(
        node_id: &str,
        xds_port: u16,
        logs: &Path,
        ads: Ads,
    ) -> anyhow::Result<Self> {
        let admin_port = free_port();
        let file = logs.join(format!("{node_id}.bootstrap.json"));
        std::fs::write(
            &file,
            serde_json::to_vec_pretty(&bootstrap(node_id, xds_port, admin_port, ads))?,
        )?;
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&file)
            .args(["--concurrency", "1"])
            // Several Envoys share this machine: each needs its own shared-memory id.
            .args(["--base-id", &admin_port.to_string()])
            .args(["--log-level", "warn"])
            .args(["--drain-time-s", "1"]);
        let proc = Proc::spawn(node_id, cmd, logs)?;
        let admin = Admin::new(admin_port);
        admin
            .wait_ok("/ready", Duration::from_secs(30), &proc)
            .await?;
        Ok(Self {
            node_id: node_id.to_owned(),
            admin_port,
            proc,
            admin,
        })
    }

    pub async fn admin(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.admin.get(path).await
    }

    /// A counter or gauge by exact name; 0 when Envoy has not created it yet.
    pub async fn stat(&self, name: &str) -> anyhow::Result<u64> {
        let path = format!(
            "/stats?format=json&usedonly&filter=^{}$",
            regex_escape(name)
        );
        let v: Value = self.admin(&path).await?.error_for_status()?.json().await?;
        Ok(v["stats"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0))
    }

    /// The JSON access log lines Envoy wrote to stdout so far (other lines are skipped).
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.proc.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    pub async fn config_dump(&self) -> anyhow::Result<Value> {
        Ok(self
            .admin("/config_dump")
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits until Envoy has an active listener named `name`.
    pub async fn wait_listener(&self, name: &str) -> anyhow::Result<()> {
        crate::eventually(
            &format!("listener {name} on {}", self.node_id),
            Duration::from_secs(20),
            || async {
                let v: Value = self.admin("/listeners?format=json").await?.json().await?;
                let found = v["listener_statuses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|l| l["name"] == name));
                anyhow::ensure!(found, "not yet");
                Ok(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.proc.logs()))
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".^$*+?()[]{}|\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}
