//! ext-authz as a child process (like [`crate::RateLimitService`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::admin::Admin;
use crate::ports::free_port;
use crate::process::Proc;
use crate::xds::binary;

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
        let admin_port = free_port();
        let node_id = format!("ext-authz-{name}");
        let mut cmd = Command::new(binary("ext-authz"));
        cmd.args(["--xds", &format!("http://127.0.0.1:{xds_port}")])
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--node-id", &node_id])
            .args(extra)
            .env("RUST_LOG", "info,vrata_ext_authz=debug");
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
}
