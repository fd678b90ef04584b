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

/// The bootstrap the harness gives every Envoy: ADS to xds-server, admin on loopback.
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
        "static_resources": {"clusters": [{
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
