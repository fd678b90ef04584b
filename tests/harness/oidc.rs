//! A real OpenID Connect provider for end-to-end tests: `tests/oidc/provider.mjs` (the npm
//! package `oidc-provider`) with a Keycloak-style issuer `http://127.0.0.1:PORT/realms/REALM`,
//! client-credentials clients issuing RS256 JWT access tokens with Keycloak-shaped claims,
//! and signing-key rotation through its admin port.
//!
//! Clients (see provider.mjs): `orders-client` (realm role `orders:read`, client role
//! `reader`) and `no-role-client` (neither). Token audience: [`AUDIENCE`].

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::ports::free_port;
use crate::process::Proc;

pub const AUDIENCE: &str = "api-gateway";
pub const ORDERS_CLIENT: (&str, &str) = ("orders-client", "orders-secret");
pub const NO_ROLE_CLIENT: (&str, &str) = ("no-role-client", "no-role-secret");

/// Start-up bound: node starts in well under a second; `npm ci` is not inside it.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `npm ci` at a time in this process (tests run in parallel threads).
static NPM: Mutex<()> = Mutex::new(());

/// The provider's folder, with its npm dependencies installed (`npm ci` when `node_modules`
/// is missing; `scripts/test` runs it up front).
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    let dir = crate::paths::repo_root().join("tests").join("oidc");
    let _guard = NPM.lock().unwrap_or_else(|p| p.into_inner());
    if dir.join("node_modules").join("oidc-provider").is_dir() {
        return Ok(dir);
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run npm ({e}): install Node.js and npm (./scripts/test does)")
        })?;
    anyhow::ensure!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir)
}

/// A running provider; killed on drop.
pub struct Oidc {
    pub issuer: String,
    pub admin: String,
    pub realm: String,
    proc: Option<Proc>,
    http: reqwest::Client,
    _logs: tempfile::TempDir,
}

impl Oidc {
    /// Starts the provider for `realm` on free loopback ports and waits until its discovery
    /// document answers.
    pub async fn start(realm: &str) -> anyhow::Result<Self> {
        let dir = ensure_installed()?;
        let (port, admin_port) = (free_port(), free_port());
        let logs = tempfile::tempdir()?;
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir).args([
            "provider.mjs",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
            "--realm",
            realm,
            "--audience",
            AUDIENCE,
        ]);
        let proc = Proc::spawn("oidc-provider", cmd, logs.path())?;
        let issuer = format!("http://127.0.0.1:{port}/realms/{realm}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let me = Self {
            issuer,
            admin: format!("http://127.0.0.1:{admin_port}"),
            realm: realm.to_owned(),
            proc: Some(proc),
            http,
            _logs: logs,
        };
        let discovery = format!("{}/.well-known/openid-configuration", me.issuer);
        let waited = crate::eventually("oidc-provider discovery", START_TIMEOUT, || {
            let (http, url, admin) = (me.http.clone(), discovery.clone(), me.admin.clone());
            async move {
                let doc: serde_json::Value = http
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                // Both ports must answer before the provider counts as started.
                http.get(format!("{admin}/healthz"))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(doc)
            }
        })
        .await;
        match waited {
            Ok(doc) => {
                anyhow::ensure!(
                    doc["issuer"] == me.issuer.as_str(),
                    "discovery names issuer {}, expected {}",
                    doc["issuer"],
                    me.issuer
                );
                Ok(me)
            }
            Err(e) => Err(e.context(me.logs())),
        }
    }

    /// The provider's stdout/stderr so far, for failure messages.
    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::logs).unwrap_or_default()
    }

    /// An access token for `(client_id, secret)` by the client-credentials grant, with the
    /// token endpoint taken from discovery as a real client would.
    pub async fn token(&self, client: (&str, &str), scope: Option<&str>) -> anyhow::Result<String> {
        let doc: serde_json::Value = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let endpoint = doc["token_endpoint"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("discovery has no token_endpoint: {doc}"))?;
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(endpoint)
            .basic_auth(client.0, Some(client.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "token request failed ({status}): {json}"
        );
        json["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no access_token in {json}"))
    }

    /// Makes a new key the signing key; the previous one stays published unless
    /// `drop_previous`. Returns the new signing `kid`.
    pub async fn rotate(&self, drop_previous: bool) -> anyhow::Result<String> {
        let url = format!(
            "{}/rotate{}",
            self.admin,
            if drop_previous { "?drop=1" } else { "" }
        );
        let out: serde_json::Value = self
            .http
            .post(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out["signing_kid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("rotate answered {out}"))
    }

    /// Kills the provider (its ports close): for "IdP down" tests.
    pub fn stop(&mut self) {
        self.proc = None;
    }
}
