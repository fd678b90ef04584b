//! ext-authz as a child process (like [`crate::RateLimitService`]).

use std::path::Path;

use crate::admin::Admin;
use crate::process::Proc;
use crate::service::Kind;

pub struct ExtAuthz {
    pub grpc_port: u16,
    pub admin_port: u16,
    pub node_id: String,
    pub proc: Proc,
    pub admin: Admin,
}

impl ExtAuthz {
    /// Starts `ext-authz --xds` against xds-server's gRPC port, listening on `grpc_port` (the
    /// gateway config's `services.ext_authz` must name it), and waits until it is ready: a
    /// policy arrived and every provider's keys were fetched.
    pub async fn start(
        name: &str,
        xds_port: u16,
        grpc_port: u16,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(name, xds_port, grpc_port, logs, &[]).await
    }

    /// [`ExtAuthz::start`] with more flags (`--otlp-endpoint URL`).
    pub async fn start_with(
        name: &str,
        xds_port: u16,
        grpc_port: u16,
        logs: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let started = crate::service::start(
            Kind {
                binary: "ext-authz",
                crate_name: "vrata_ext_authz",
                node_prefix: "ext-authz",
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
}
