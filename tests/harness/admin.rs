//! An HTTP admin endpoint on loopback (Envoy's admin, a vrata service's admin).

use std::time::Duration;

use crate::process::Proc;

#[derive(Clone)]
pub struct Admin {
    pub port: u16,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            http: reqwest::Client::new(),
        }
    }

    /// `GET path`, with a 5 s timeout.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await?)
    }

    /// The value of the Prometheus line `/metrics` shows for `name` with exactly these labels
    /// (`name{a="x",b="y"}`; `labels` empty: no labels), 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = self.get("/metrics").await?.text().await?;
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

    /// Waits until `path` answers 2xx; on time-out the error carries the process's logs.
    pub async fn wait_ok(&self, path: &str, timeout: Duration, proc: &Proc) -> anyhow::Result<()> {
        let what = format!("{} {path}", proc.name);
        let ready = crate::eventually(&what, timeout, || async {
            let r = self.get(path).await?;
            anyhow::ensure!(r.status().is_success(), "status {}", r.status());
            Ok(())
        })
        .await;
        ready.map_err(|e| anyhow::anyhow!("{e:#}\n{}", proc.logs()))
    }
}
