//! Authentication end to end: a real Envoy, xds-server, ext-authz (policies over ADS) and the
//! real `oidc-provider` (tests/oidc) issuing Keycloak-shaped client-credentials tokens. Every
//! case goes through Envoy; the exhaustive list of token attacks is phase 1's service tests
//! (ext-authz/tests/check.rs), the ones here prove Envoy hands ext-authz's answers through.

use std::time::Duration;

use serde_json::Value;
use vrata_e2e::oidc::{NO_ROLE_CLIENT, ORDERS_CLIENT, Oidc};
use vrata_e2e::ports::free_port;
use vrata_e2e::stack::SYNC;
use vrata_e2e::{ExtAuthz, Stack, Upstream, eventually};

struct Gateway {
    stack: Stack,
    _authz: ExtAuthz,
    authz_port: u16,
}

impl Gateway {
    async fn start(upstream: &Upstream, oidc: &Oidc, role: &str) -> anyhow::Result<Self> {
        let authz_port = free_port();
        let stack = Stack::start(&config(upstream, oidc, authz_port, role)).await?;
        let authz = ExtAuthz::start(
            "ext-authz",
            stack.xds.grpc_port,
            authz_port,
            stack.dir.path(),
        )
        .await?;
        stack.xds.wait_in_sync(1, SYNC).await?;
        Ok(Self {
            stack,
            _authz: authz,
            authz_port,
        })
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
        let mut req = self.stack.http().get(self.stack.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(req.send().await?)
    }
}

/// `/orders` needs `role`; `/catalog` is optional; `/public` has no `auth`.
fn config(upstream: &Upstream, oidc: &Oidc, authz_port: u16, role: &str) -> String {
    format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
upstreams:
  app: {{endpoints: ["{endpoint}"]}}
auth:
  providers:
    demo:
      issuer: "{issuer}"
      audiences: [api-gateway]
      roles_claims: [realm_access.roles]
      jwks_min_refetch: 1s
services:
  ext_authz: "127.0.0.1:{authz_port}"
  timeout: 1s
routes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: app
    auth: {{provider: demo, roles: {{any_of: ["{role}"]}}, forward_claims: {{x-user-id: sub}}}}
  - name: catalog
    match: {{path_prefix: /catalog}}
    upstream: app
    auth: {{provider: demo, optional: true, forward_claims: {{x-user-id: sub}}}}
  - name: public
    match: {{path_prefix: /public}}
    upstream: app
"#,
        endpoint = upstream.endpoint(),
        issuer = oidc.issuer,
    )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The upstream's echo of the request it received.
async fn echoed(r: reqwest::Response) -> anyhow::Result<Value> {
    anyhow::ensure!(
        r.status() == 200,
        "status {}: {}",
        r.status(),
        r.text().await?
    );
    Ok(r.json().await?)
}

async fn problem(r: reqwest::Response, status: u16, kind: &str) -> anyhow::Result<Value> {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    let body: Value = r.json().await?;
    assert_eq!(body["type"], format!("urn:vrata:error:{kind}"));
    assert_eq!(body["status"], status);
    Ok(body)
}

#[tokio::test]
async fn tokens_roles_and_identity_headers_through_envoy() -> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &oidc, "orders:read").await?;

    // A valid token with the role passes; the upstream sees sub in x-user-id, never the
    // client's copy.
    let token = oidc.token(ORDERS_CLIENT, Some("orders.read")).await?;
    let bearer = format!("Bearer {token}");
    let seen = echoed(
        gw.get(
            "/orders/1",
            &[("authorization", &bearer), ("x-user-id", "mallory")],
        )
        .await?,
    )
    .await?;
    assert_eq!(seen["headers"]["x-user-id"], ORDERS_CLIENT.0, "{seen}");

    // No token: 401 with a bare Bearer challenge.
    let r = gw.get("/orders/1", &[]).await?;
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
    problem(r, 401, "unauthorized").await?;

    // A garbage token: 401 invalid_token.
    let r = gw
        .get("/orders/1", &[("authorization", "Bearer not.a.token")])
        .await?;
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    problem(r, 401, "invalid_token").await?;

    // A valid token without the role: 403 insufficient_scope.
    let weak = oidc.token(NO_ROLE_CLIENT, None).await?;
    let r = gw
        .get("/orders/1", &[("authorization", &format!("Bearer {weak}"))])
        .await?;
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer error=\"insufficient_scope\"")
    );
    problem(r, 403, "forbidden").await?;

    // Optional route: anonymous passes without identity; with a token, identity is forwarded.
    let seen = echoed(gw.get("/catalog", &[("x-user-id", "mallory")]).await?).await?;
    assert!(seen["headers"].get("x-user-id").is_none(), "{seen}");
    let seen = echoed(gw.get("/catalog", &[("authorization", &bearer)]).await?).await?;
    assert_eq!(seen["headers"]["x-user-id"], ORDERS_CLIENT.0);

    // Public route: no ext-authz call, and the client's x-user-id is still removed.
    let seen = echoed(gw.get("/public", &[("x-user-id", "mallory")]).await?).await?;
    assert!(seen["headers"].get("x-user-id").is_none(), "{seen}");
    Ok(())
}

#[tokio::test]
async fn a_changed_role_in_the_file_changes_the_decision_without_restart() -> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &oidc, "orders:read").await?;
    let bearer = format!("Bearer {}", oidc.token(ORDERS_CLIENT, None).await?);
    assert_eq!(
        gw.get("/orders", &[("authorization", &bearer)])
            .await?
            .status(),
        200
    );

    gw.stack
        .write_config(&config(&up, &oidc, gw.authz_port, "orders:admin"))?;
    eventually(
        "the new role is required",
        Duration::from_secs(1),
        || async {
            let status = gw
                .get("/orders", &[("authorization", &bearer)])
                .await?
                .status();
            anyhow::ensure!(status == 403, "still {status}");
            Ok(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn key_rotation_is_followed_and_known_keys_survive_the_provider() -> anyhow::Result<()> {
    let mut oidc = Oidc::start("demo").await?;
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &oidc, "orders:read").await?;
    let before = format!("Bearer {}", oidc.token(ORDERS_CLIENT, None).await?);
    assert_eq!(
        gw.get("/orders", &[("authorization", &before)])
            .await?
            .status(),
        200
    );

    // A new signing key: its tokens carry an unknown kid, which makes ext-authz refetch.
    oidc.rotate(false).await?;
    let after = format!("Bearer {}", oidc.token(ORDERS_CLIENT, None).await?);
    eventually(
        "the rotated key is accepted",
        Duration::from_secs(5),
        || async {
            let status = gw
                .get("/orders", &[("authorization", &after)])
                .await?
                .status();
            anyhow::ensure!(status == 200, "status {status}");
            Ok(())
        },
    )
    .await?;

    // The provider gone: tokens signed with keys already fetched keep working.
    oidc.stop();
    for bearer in [&before, &after] {
        assert_eq!(
            gw.get("/orders", &[("authorization", bearer)])
                .await?
                .status(),
            200
        );
    }
    Ok(())
}
