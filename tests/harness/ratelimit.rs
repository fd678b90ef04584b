//! ratelimit-service as a child process, and what its admin endpoint says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::admin::Admin;
use crate::ports::free_port;
use crate::process::Proc;
use crate::xds::binary;

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
        let admin_port = free_port();
        let node_id = format!("ratelimit-{name}");
        let mut cmd = Command::new(binary("ratelimit-service"));
        cmd.args(["--xds", &format!("http://127.0.0.1:{xds_port}")])
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--node-id", &node_id])
            .args(extra)
            .env("RUST_LOG", "info,vrata_ratelimit=debug");
        let proc = Proc::spawn(name, cmd, logs)?;
        let admin = Admin::new(admin_port);
        admin
            .wait_ok("/readyz", Duration::from_secs(60), &proc)
            .await?;
        Ok(Self {
            grpc_port,
            admin_port,
            node_id,
            proc,
            admin,
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
