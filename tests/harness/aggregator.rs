//! The aggregator as a child process (like [`crate::ExtAuthz`]), and what its admin endpoint
//! says.

use std::path::Path;

use crate::admin::Admin;
use crate::process::Proc;
use crate::service::Kind;

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
        let started = crate::service::start(
            Kind {
                binary: "aggregator",
                crate_name: "vrata_aggregator",
                node_prefix: "aggregator",
            },
            name,
            xds_port,
            port,
            logs,
            extra,
        )
        .await?;
        Ok(Self {
            port,
            admin_port: started.admin_port,
            node_id: started.node_id,
            proc: started.proc,
            admin: started.admin,
        })
    }

    /// The value of a metric line with exactly these labels (`name{a="x",b="y"}`), 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        self.admin.metric(name, labels).await
    }
}
