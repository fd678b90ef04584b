//! What starting any of vrata's services has in common: `--xds`, `--listen`, `--admin`,
//! `--node-id`, debug logs for the service's crate, and a wait until `/readyz` is 200.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::admin::Admin;
use crate::ports::free_port;
use crate::process::Proc;
use crate::xds::binary;

/// One of vrata's service binaries.
pub(crate) struct Kind {
    /// The binary (`ext-authz`).
    pub binary: &'static str,
    /// Its crate, for `RUST_LOG` (`vrata_ext_authz`).
    pub crate_name: &'static str,
    /// The node id is `<node_prefix>-<name>`.
    pub node_prefix: &'static str,
}

/// A started, ready service.
pub(crate) struct Started {
    pub admin_port: u16,
    /// `<node_prefix>-<name>`.
    pub node_id: String,
    pub proc: Proc,
    pub admin: Admin,
}

/// Starts `kind` against xds-server's gRPC port, listening on `port`, with `extra` flags, and
/// waits (60 s at most) until its `/readyz` answers 200.
pub(crate) async fn start(
    kind: Kind,
    name: &str,
    xds_port: u16,
    port: u16,
    logs: &Path,
    extra: &[&str],
) -> anyhow::Result<Started> {
    let admin_port = free_port();
    let node_id = format!("{}-{name}", kind.node_prefix);
    let mut cmd = Command::new(binary(kind.binary));
    cmd.args(["--xds", &format!("http://127.0.0.1:{xds_port}")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .args(["--node-id", &node_id])
        .args(extra)
        .env("RUST_LOG", format!("info,{}=debug", kind.crate_name));
    let proc = Proc::spawn(name, cmd, logs)?;
    let admin = Admin::new(admin_port);
    admin
        .wait_ok("/readyz", Duration::from_secs(60), &proc)
        .await?;
    Ok(Started {
        admin_port,
        node_id,
        proc,
        admin,
    })
}
