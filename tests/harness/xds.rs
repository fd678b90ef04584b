//! xds-server as a child process, and what its admin API says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::admin::Admin;
use crate::paths::repo_root;
use crate::ports::free_port;
use crate::process::Proc;

/// Builds the workspace binaries once per test process (so `cargo test` alone is enough) and
/// returns the path of `name`. `VRATA_PROFILE=release` (benchmarks) builds and uses release
/// binaries.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = repo_root();
        let release = std::env::var("VRATA_PROFILE").is_ok_and(|p| p == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "--quiet", "--bins"];
        if release {
            args.push("--release");
        }
        let mut command = Command::new(cargo);
        command.current_dir(&root).args(&args);
        without_package_env(&mut command);
        let status = command
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --bins failed: {status}"));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(target.join(if release { "release" } else { "debug" }))
    });
    match dir {
        Ok(d) => d.join(name),
        Err(e) => panic!("{e}"),
    }
}

/// Removes the variables `cargo test` gives a test process for its own package, so that a
/// `cargo build` run from a test (the harness's, `scripts/up`'s) sees the environment a plain
/// `cargo build` sees. A build script that watches one of them (ring's watches
/// CARGO_MANIFEST_DIR) would otherwise see it change between the two, and each would rebuild
/// everything that depends on it every time.
pub fn without_package_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR";
        if per_package {
            command.env_remove(key.as_ref());
        }
    }
    command
}

pub struct XdsServer {
    pub grpc_port: u16,
    pub admin_port: u16,
    pub config: PathBuf,
    pub proc: Proc,
    admin: Admin,
}

impl XdsServer {
    /// Starts `xds-server --config <config>` on free ports and waits until it is ready.
    pub async fn start(config: &Path, logs: &Path) -> anyhow::Result<Self> {
        Self::start_with(config, logs, &[]).await
    }

    pub async fn start_with(config: &Path, logs: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let grpc_port = free_port();
        let admin_port = free_port();
        let mut cmd = Command::new(binary("xds-server"));
        cmd.arg("--config")
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(extra)
            .env("RUST_LOG", "info,vrata_xds=debug");
        let proc = Proc::spawn("xds-server", cmd, logs)?;
        let admin = Admin::new(admin_port);
        admin
            .wait_ok("/readyz", Duration::from_secs(60), &proc)
            .await?;
        Ok(Self {
            grpc_port,
            admin_port,
            config: config.to_path_buf(),
            proc,
            admin,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.admin.get(path).await
    }

    pub async fn status(&self) -> anyhow::Result<Value> {
        Ok(self
            .get("/admin/status")
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The version being served.
    pub async fn version(&self) -> anyhow::Result<String> {
        let s = self.status().await?;
        s["current"]["version"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no current version in {s}"))
    }

    /// Waits until `nodes` Envoy nodes are connected and every node — Envoys and vrata's
    /// services alike — has ACKed the current version of every type it subscribed to (an Envoy:
    /// CDS and LDS at least). Returns the version.
    pub async fn wait_in_sync(&self, nodes: usize, timeout: Duration) -> anyhow::Result<String> {
        let r = crate::eventually("nodes in sync with xds-server", timeout, || async {
            let s = self.status().await?;
            let current = &s["current"];
            let versions = &current["type_versions"];
            let list = s["nodes"].as_array().cloned().unwrap_or_default();
            // vrata's services report clusters named `vrata-<service>`.
            let is_envoy = |n: &Value| {
                !n["cluster"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("vrata-") && c != "vrata-test")
            };
            let envoys = list.iter().filter(|n| is_envoy(n)).count();
            anyhow::ensure!(envoys >= nodes, "{envoys} of {nodes} Envoy nodes connected");
            for n in &list {
                let types = n["types"].as_object().cloned().unwrap_or_default();
                if is_envoy(n) {
                    for t in ["CDS", "LDS"] {
                        anyhow::ensure!(
                            types.contains_key(t),
                            "node {} has not asked for {t}",
                            n["node_id"]
                        );
                    }
                }
                for (t, st) in &types {
                    anyhow::ensure!(
                        st["acked_version"] == versions[t],
                        "node {} {t}: acked {} but serving {}",
                        n["node_id"],
                        st["acked_version"],
                        versions[t]
                    );
                }
            }
            current["version"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no version"))
        })
        .await;
        r.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.proc.logs()))
    }

    /// Waits until the server has rejected a reload; returns the reported problems.
    pub async fn wait_rejected(&self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        crate::eventually("a rejected reload on /admin/status", timeout, || async {
            let s = self.status().await?;
            let problems: Vec<String> = s["last_error"]["problems"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            anyhow::ensure!(!problems.is_empty(), "no error reported yet");
            Ok(problems)
        })
        .await
    }

    /// Waits until the served version differs from `old`; returns the new one.
    pub async fn wait_version_change(
        &self,
        old: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        crate::eventually("a new config version", timeout, || async {
            let v = self.version().await?;
            anyhow::ensure!(v != old, "still {old}");
            Ok(v)
        })
        .await
    }
}
