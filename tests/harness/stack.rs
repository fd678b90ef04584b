//! A whole gateway for one test: a config file in a temporary folder, xds-server, N Envoys.

use std::path::PathBuf;
use std::time::Duration;

use crate::envoy::{Ads, Envoy};
use crate::ports::free_port;
use crate::xds::XdsServer;

/// Time allowed for start-up and for a pushed config to be ACKed: generous, because a loaded
/// CI machine can be slow; the tests that promise latency measure it separately.
pub const SYNC: Duration = Duration::from_secs(20);

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub listen_port: u16,
    pub xds: XdsServer,
    pub envoys: Vec<Envoy>,
    http: reqwest::Client,
}

impl Stack {
    /// `yaml` is the gateway config; `{port}` in it is replaced with a free port for the
    /// listener. One state-of-the-world Envoy is started; the listener named `public` must exist.
    pub async fn start(yaml: &str) -> anyhow::Result<Self> {
        Self::start_with(yaml, &[Ads::StateOfTheWorld]).await
    }

    pub async fn start_with(yaml: &str, envoys: &[Ads]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listen_port = free_port();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, yaml.replace("{port}", &listen_port.to_string()))?;
        let xds = XdsServer::start(&config, dir.path()).await?;
        let mut stack = Self {
            dir,
            config,
            listen_port,
            xds,
            envoys: Vec::new(),
            http: client(),
        };
        for (i, ads) in envoys.iter().enumerate() {
            stack.add_envoy(&format!("envoy-{i}"), *ads).await?;
        }
        Ok(stack)
    }

    pub async fn add_envoy(&mut self, node_id: &str, ads: Ads) -> anyhow::Result<&Envoy> {
        let envoy = Envoy::start(node_id, self.xds.grpc_port, self.dir.path(), ads).await?;
        envoy.wait_listener("public").await?;
        self.envoys.push(envoy);
        self.xds.wait_in_sync(self.envoys.len(), SYNC).await?;
        self.envoys
            .last()
            .ok_or_else(|| anyhow::anyhow!("no envoy"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// A client that follows no redirects and has a bounded timeout.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.get(self.url(path)).send().await?)
    }

    /// Replaces the config the way editors save (write a new file, rename it over the old
    /// one) without waiting for anything.
    pub fn write_config(&self, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, yaml.replace("{port}", &self.listen_port.to_string()))?;
        std::fs::rename(&tmp, &self.config)?;
        Ok(())
    }

    /// Saves a new config and waits until every Envoy has ACKed the version it produced.
    pub async fn reload(&self, yaml: &str) -> anyhow::Result<String> {
        let old = self.xds.version().await?;
        self.write_config(yaml)?;
        let new = self.xds.wait_version_change(&old, SYNC).await?;
        let synced = self.xds.wait_in_sync(self.envoys.len(), SYNC).await?;
        anyhow::ensure!(
            synced == new || synced != old,
            "nodes did not move to {new}"
        );
        Ok(synced)
    }
}

/// The HTTP client tests use: no redirects followed, 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}
