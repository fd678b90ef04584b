//! ratelimit-service as a child process, and what its admin endpoint says.

use std::path::Path;
use std::time::Duration;

use crate::admin::Admin;
use crate::process::Proc;
use crate::service::Kind;

pub struct RateLimitService {
    pub grpc_port: u16,
    pub admin_port: u16,
    pub node_id: String,
    pub proc: Proc,
    admin: Admin,
}

impl RateLimitService {
    /// Starts `ratelimit-service --xds` against xds-server's gRPC port, listening on
    /// `grpc_port` (the gateway config's `services.ratelimit` must name it), and waits until it
    /// is ready: its first config arrived and its gRPC port is open. `extra`: more flags
    /// (`--redis URL`).
    pub async fn start(
        name: &str,
        xds_port: u16,
        grpc_port: u16,
        logs: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let started = crate::service::start(
            Kind {
                binary: "ratelimit-service",
                crate_name: "vrata_ratelimit",
                node_prefix: "ratelimit",
            },
            name,
            xds_port,
            grpc_port,
            logs,
            extra,
        )
        .await?;
        Ok(Self {
            grpc_port,
            admin_port: started.admin_port,
            node_id: started.node_id,
            proc: started.proc,
            admin: started.admin,
        })
    }

    /// The value of an unlabelled metric line (`vrata_ratelimit_fallback 1`).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.admin.get("/metrics").await?.text().await?;
        text.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
            })
            .ok_or_else(|| anyhow::anyhow!("no metric {name} in\n{text}"))
    }

    /// Waits until the service decides with the shared store (`true`) or in fallback.
    pub async fn wait_fallback(&self, fallback: bool, timeout: Duration) -> anyhow::Result<()> {
        let want = if fallback { 1.0 } else { 0.0 };
        let r = crate::eventually(
            &format!("{} fallback = {fallback}", self.proc.name),
            timeout,
            || async {
                let v = self.metric("vrata_ratelimit_fallback").await?;
                anyhow::ensure!(v == want, "fallback is {v}");
                Ok(())
            },
        )
        .await;
        r.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.proc.logs()))
    }
}
