//! Authentication end to end: a real Envoy, xds-server, ext-authz (policies over ADS) and the
//! real `oidc-provider` (tests/oidc) issuing Keycloak-shaped client-credentials tokens. Every
//! case goes through Envoy; the exhaustive list of token attacks is phase 1's service tests
//! (ext-authz/tests/check.rs), the ones here prove Envoy hands ext-authz's answers through.

use std::time::Duration;

use serde_json::Value;
use vrata_e2e::oidc::{NO_ROLE_CLIENT, ORDERS_CLIENT, Oidc};
use vrata_e2e::ports::free_port;
use vrata_e2e::stack::SYNC;
use vrata_e2e::{ExtAuthz, RateLimitService, Stack, Upstream, eventually};

struct Gateway {
    stack: Stack,
    authz: ExtAuthz,
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
            authz,
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
    config_with(upstream, oidc, authz_port, role, "", "")
}

/// [`config`] plus more providers and routes (YAML indented for their sections).
fn config_with(
    upstream: &Upstream,
    oidc: &Oidc,
    authz_port: u16,
    role: &str,
    providers: &str,
    routes: &str,
) -> String {
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
{providers}services:
  ext_authz: "127.0.0.1:{authz_port}"
  timeout: 1s
routes:
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: app
    cors: {{allow_origins: ["https://app.example.com"], allow_headers: [authorization]}}
    auth: {{provider: demo, roles: {{any_of: ["{role}"]}}, forward_claims: {{x-user-id: sub}}}}
  - name: catalog
    match: {{path_prefix: /catalog}}
    upstream: app
    auth: {{provider: demo, optional: true, forward_claims: {{x-user-id: sub}}}}
  - name: public
    match: {{path_prefix: /public}}
    upstream: app
{routes}"#,
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

    // CORS: the preflight needs no token (answered before ext_authz), and a refusal carries
    // the CORS headers a script needs to read it.
    let preflight = gw
        .stack
        .http()
        .request(reqwest::Method::OPTIONS, gw.stack.url("/orders/1"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await?;
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = gw
        .get("/orders/1", &[("origin", "https://app.example.com")])
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );

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
async fn ext_authz_down_answers_503_on_protected_routes_only() -> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let up = Upstream::start("app").await?;
    let mut gw = Gateway::start(&up, &oidc, "orders:read").await?;
    let bearer = format!("Bearer {}", oidc.token(ORDERS_CLIENT, None).await?);
    assert_eq!(
        gw.get("/orders", &[("authorization", &bearer)])
            .await?
            .status(),
        200
    );
    let hits = up.hits();

    gw.authz.proc.terminate(Duration::from_secs(10)).await?;
    // failure_mode_allow is false: a valid token does not get past a dead ext-authz, and the
    // answer is the gateway's problem+json, not an empty 403.
    let r = gw.get("/orders", &[("authorization", &bearer)]).await?;
    let body = problem(r, 503, "auth_unavailable").await?;
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(up.hits(), hits, "nothing reached the upstream");
    // Routes without `auth` do not depend on ext-authz.
    assert_eq!(gw.get("/public", &[]).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn per_user_rate_limits_from_a_jwt_claim_give_each_user_a_budget() -> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let up = Upstream::start("app").await?;
    let key = TestKey::start().await?;
    let authz_port = free_port();
    let rl_port = free_port();
    let routes = "  - name: per-user\n    match: {path_prefix: /per-user}\n    upstream: app\n    auth: {provider: test}\n    rate_limit:\n      - {name: by-account, limit: 3, per: 1m, key: \"claim:account.id\"}\n";
    let yaml = config_with(
        &up,
        &oidc,
        authz_port,
        "orders:read",
        &key.provider_yaml(),
        routes,
    )
    .replace(
        "services:\n",
        &format!("services:\n  ratelimit: \"127.0.0.1:{rl_port}\"\n"),
    );
    let stack = Stack::start(&yaml).await?;
    let _authz = ExtAuthz::start(
        "ext-authz",
        stack.xds.grpc_port,
        authz_port,
        stack.dir.path(),
    )
    .await?;
    let _rl = RateLimitService::start(
        "ratelimit",
        stack.xds.grpc_port,
        rl_port,
        stack.dir.path(),
        &[],
    )
    .await?;
    stack.xds.wait_in_sync(1, SYNC).await?;
    let es256 = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": TEST_KID});
    let token = |sub: &str| {
        key.token(
            &es256,
            &serde_json::json!({"iss": TEST_ISSUER, "aud": "api-gateway", "sub": sub,
                "account": {"id": sub, "plan": "free"}, "exp": now() + 300, "iat": now()}),
            Signing::Es256,
        )
    };
    let statuses = |sub: &'static str, n: usize| {
        let bearer = format!("Bearer {}", token(sub));
        let stack = &stack;
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                let r = stack
                    .http()
                    .get(stack.url("/per-user"))
                    .header("authorization", &bearer)
                    .header("x-forwarded-for", "203.0.113.9")
                    .send()
                    .await?;
                out.push(r.status().as_u16());
            }
            anyhow::Ok(out)
        }
    };
    // A nested claim: ext-authz returns it as metadata because this route's limit names it.
    // Alice spends her budget; Bob, from the same address, still has all of his.
    assert_eq!(statuses("alice", 4).await?, [200, 200, 200, 429]);
    assert_eq!(statuses("bob", 4).await?, [200, 200, 200, 429]);
    assert_eq!(statuses("alice", 1).await?, [429]);
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

/// An ES256 key held by the test, its JWKS served on a loopback port.
struct TestKey {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
    jwks_url: String,
    /// The JWKS document: what an attacker can read, used as an HMAC "secret".
    public_jwk: String,
    /// JWKS requests served so far.
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

const TEST_KID: &str = "test-key";
const TEST_ISSUER: &str = "https://issuer.test";

impl TestKey {
    async fn start() -> anyhow::Result<Self> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| anyhow::anyhow!("key: {e}"))?;
        let point = pair.public_key().as_ref().to_vec();
        anyhow::ensure!(
            point.len() == 65 && point[0] == 4,
            "uncompressed P-256 point"
        );
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": TEST_KID, "use": "sig",
            "alg": "ES256", "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..])});
        let jwks = serde_json::json!({"keys": [jwk]});
        let body = jwks.to_string();
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let body = body.clone();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            pair,
            jwks_url: format!("http://127.0.0.1:{port}/jwks"),
            public_jwk: jwk.to_string(),
            fetches,
        })
    }

    fn provider_yaml(&self) -> String {
        format!(
            "    test:\n      issuer: \"{TEST_ISSUER}\"\n      jwks_url: \"{}\"\n      audiences: [api-gateway]\n      algorithms: [ES256]\n      leeway: 1s\n",
            self.jwks_url
        )
    }

    /// `header.payload.signature` with `alg` and the signature chosen by the caller.
    fn token(&self, header: &Value, claims: &Value, sign: Signing) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = match sign {
            Signing::Es256 => self
                .pair
                .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Signing::HmacWithPublicKey => {
                let key = aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    self.public_jwk.as_bytes(),
                );
                aws_lc_rs::hmac::sign(&key, input.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            Signing::None => Vec::new(),
            // r = s = 0: the "psychic signature" (CVE-2022-21449) a broken verifier accepts.
            Signing::ZeroEcdsa => vec![0; 64],
        };
        format!("{input}.{}", b64.encode(signature))
    }
}

enum Signing {
    Es256,
    HmacWithPublicKey,
    None,
    ZeroEcdsa,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_refused_through_envoy() -> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let up = Upstream::start("app").await?;
    let key = TestKey::start().await?;
    let authz_port = free_port();
    let routes = "  - name: test\n    match: {path_prefix: /test}\n    upstream: app\n    auth: {provider: test, forward_claims: {x-user-id: sub}}\n";
    let yaml = config_with(
        &up,
        &oidc,
        authz_port,
        "orders:read",
        &key.provider_yaml(),
        routes,
    );
    let stack = Stack::start(&yaml).await?;
    let _authz = ExtAuthz::start(
        "ext-authz",
        stack.xds.grpc_port,
        authz_port,
        stack.dir.path(),
    )
    .await?;
    stack.xds.wait_in_sync(1, SYNC).await?;
    let get = |token: String| {
        let req = stack
            .http()
            .get(stack.url("/test"))
            .header("authorization", format!("Bearer {token}"));
        async move { anyhow::Ok(req.send().await?) }
    };
    let es256 = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": TEST_KID});
    let good = serde_json::json!({"iss": TEST_ISSUER, "aud": "api-gateway", "sub": "alice",
        "exp": now() + 300, "iat": now()});

    // The control: the same key and claims pass, so each refusal below is the attack's.
    let r = get(key.token(&es256, &good, Signing::Es256)).await?;
    assert_eq!(echoed(r).await?["headers"]["x-user-id"], "alice");

    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push((
        "alg none",
        key.token(
            &serde_json::json!({"alg": "none", "kid": TEST_KID}),
            &good,
            Signing::None,
        ),
    ));
    cases.push((
        "HS256 signed with the public key",
        key.token(
            &serde_json::json!({"alg": "HS256", "kid": TEST_KID}),
            &good,
            Signing::HmacWithPublicKey,
        ),
    ));
    let mut expired = good.clone();
    expired["exp"] = serde_json::json!(now() - 120);
    cases.push(("expired", key.token(&es256, &expired, Signing::Es256)));
    let mut audience = good.clone();
    audience["aud"] = serde_json::json!("another-api");
    cases.push((
        "wrong audience",
        key.token(&es256, &audience, Signing::Es256),
    ));
    let mut issuer = good.clone();
    issuer["iss"] = serde_json::json!("https://evil.test");
    cases.push(("wrong issuer", key.token(&es256, &issuer, Signing::Es256)));
    let mut early = good.clone();
    early["nbf"] = serde_json::json!(now() + 600);
    cases.push((
        "nbf in the future",
        key.token(&es256, &early, Signing::Es256),
    ));
    let mut no_exp = good.clone();
    no_exp.as_object_mut().map(|c| c.remove("exp"));
    cases.push(("missing exp", key.token(&es256, &no_exp, Signing::Es256)));
    cases.push((
        "all-zero ECDSA signature",
        key.token(&es256, &good, Signing::ZeroEcdsa),
    ));
    // A valid signature over other claims, the payload swapped for one naming another user.
    let tampered = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signed = key.token(&es256, &good, Signing::Es256);
        let parts: Vec<&str> = signed.split('.').collect();
        let mut admin = good.clone();
        admin["sub"] = serde_json::json!("admin");
        format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(admin.to_string()),
            parts[2]
        )
    };
    cases.push(("tampered payload", tampered));
    let mut padded = good.clone();
    padded["pad"] = serde_json::json!("x".repeat(20 * 1024));
    cases.push((
        "oversized token",
        key.token(&es256, &padded, Signing::Es256),
    ));
    cases.push((
        "unknown key",
        key.token(
            &serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "nobody-knows-me"}),
            &good,
            Signing::Es256,
        ),
    ));
    for (what, token) in cases {
        let r = get(token).await?;
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{what}"
        );
        problem(r, 401, "invalid_token").await?;
    }
    assert_eq!(
        up.hits(),
        1,
        "only the control request reached the upstream"
    );

    // 200 tokens with random unknown kids: one refetch at most (jwks_min_refetch), so the
    // provider sees at most 2 JWKS fetches in all, counting the first.
    let before = key.fetches.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..200 {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": format!("random-{i}-{}", now())});
        let r = get(key.token(&header, &good, Signing::Es256)).await?;
        assert_eq!(r.status(), 401);
    }
    let fetches = key.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        fetches <= 2,
        "{fetches} JWKS fetches in all ({before} before the 200 unknown kids)"
    );
    Ok(())
}
