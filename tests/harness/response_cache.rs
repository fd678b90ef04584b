//! response-cache as a child process (like [`crate::Aggregator`]), and what its admin endpoint
//! says.

use std::path::Path;

use crate::admin::Admin;
use crate::process::Proc;
use crate::service::Kind;

pub struct ResponseCache {
    pub grpc_port: u16,
    pub admin_port: u16,
    pub node_id: String,
    pub proc: Proc,
    pub admin: Admin,
}

impl ResponseCache {
    /// Starts `response-cache --xds` against xds-server's gRPC port, listening on `grpc_port`
    /// (the gateway config's `services.response_cache` must name it), and waits until it is
    /// ready: its first config arrived. `extra`: more flags (`--redis URL`).
    pub async fn start(
        name: &str,
        xds_port: u16,
        grpc_port: u16,
        logs: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let started = crate::service::start(
            Kind {
                binary: "response-cache",
                crate_name: "vrata_response_cache",
                node_prefix: "response-cache",
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

    /// The value of a metric line with exactly these labels, 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        self.admin.metric(name, labels).await
    }
}
