//! The aggregator as a child process (like [`crate::ExtAuthz`]), and what its admin endpoint
//! says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::admin::Admin;
use crate::ports::free_port;
use crate::process::Proc;
use crate::xds::binary;

pub struct Aggregator {
    pub port: u16,
    pub admin_port: u16,
    pub node_id: String,
    pub proc: Proc,
    pub admin: Admin,
}

impl Aggregator {
    /// Starts `aggregator --xds` against xds-server's gRPC port, listening on `port` (the
    /// gateway config's `services.aggregator` must name it), and waits until it is ready: its
    /// first definitions arrived and its HTTP port is open. `extra`: more flags.
    pub async fn start(
        name: &str,
        xds_port: u16,
        port: u16,
        logs: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let admin_port = free_port();
        let node_id = format!("aggregator-{name}");
        let mut cmd = Command::new(binary("aggregator"));
        cmd.args(["--xds", &format!("http://127.0.0.1:{xds_port}")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--node-id", &node_id])
            .args(extra)
            .env("RUST_LOG", "info,vrata_aggregator=debug");
        let proc = Proc::spawn(name, cmd, logs)?;
        let admin = Admin::new(admin_port);
        admin
            .wait_ok("/readyz", Duration::from_secs(60), &proc)
            .await?;
        Ok(Self {
            port,
            admin_port,
            node_id,
            proc,
            admin,
        })
    }

    /// The value of a metric line with exactly these labels (`name{a="x",b="y"}`), 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = self.admin.get("/metrics").await?.text().await?;
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{labels}}}")
        };
        Ok(text
            .lines()
            .find_map(|l| {
                let (n, v) = l.rsplit_once(' ')?;
                (n == key).then(|| v.trim().parse::<f64>().ok()).flatten()
            })
            .unwrap_or(0.0))
    }
}
