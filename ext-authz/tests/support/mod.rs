//! Test support: in-test signing keys (RSA, P-256, Ed25519), a tiny IdP serving discovery and
//! JWKS on a free loopback port (counting its JWKS downloads), token minting, and helpers to
//! call the Check handler in-process and read its answer.

// Test-only code: a panic here is a test failure with its location, which is what we want.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response::HttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use serde_json::{Value, json};
use vrata_ext_authz::{
    Algorithm, Authz, CheckService, ManualClock, Metrics, Options, PolicySpec, ProviderSpec,
    RequirementSpec, RouteAuthSpec, RouteSpec,
};

pub const AUDIENCE: &str = "api-gateway";
/// Bound on every await in these tests: a hang fails instead of stalling the suite.
pub const BOUND: Duration = Duration::from_secs(10);

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub enum Signer {
    Rsa(RsaKeyPair),
    RsaPss(RsaKeyPair),
    Es256(EcdsaKeyPair),
    Es384(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    signer: Signer,
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen");
        Self {
            kid: kid.into(),
            alg: "RS256",
            signer: Signer::Rsa(kp),
        }
    }

    pub fn ps256(kid: &str) -> Self {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen");
        Self {
            kid: kid.into(),
            alg: "PS256",
            signer: Signer::RsaPss(kp),
        }
    }

    pub fn es384(kid: &str) -> Self {
        let kp = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("EC keygen");
        Self {
            kid: kid.into(),
            alg: "ES384",
            signer: Signer::Es384(kp),
        }
    }

    pub fn es256(kid: &str) -> Self {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC keygen");
        Self {
            kid: kid.into(),
            alg: "ES256",
            signer: Signer::Es256(kp),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let kp = Ed25519KeyPair::generate().expect("Ed25519 keygen");
        Self {
            kid: kid.into(),
            alg: "EdDSA",
            signer: Signer::Ed(kp),
        }
    }

    /// The public JWK, as an IdP publishes it.
    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(kp) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                       "n": b64(&c.n), "e": b64(&c.e)})
            }
            // No `alg` member: PS256 must be allowed by the key type alone.
            Signer::RsaPss(kp) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                json!({"kty": "RSA", "kid": self.kid, "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Es256(kp) => {
                let p = kp.public_key().as_ref();
                json!({"kty": "EC", "kid": self.kid, "use": "sig", "crv": "P-256",
                       "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Signer::Es384(kp) => {
                let p = kp.public_key().as_ref();
                json!({"kty": "EC", "kid": self.kid, "use": "sig", "crv": "P-384", "alg": "ES384",
                       "x": b64(&p[1..49]), "y": b64(&p[49..97])})
            }
            Signer::Ed(kp) => {
                json!({"kty": "OKP", "kid": self.kid, "use": "sig", "crv": "Ed25519",
                       "x": b64(kp.public_key().as_ref())})
            }
        }
    }

    /// The RSA public key as DER bytes (what an HS256-confusion attacker would use as secret).
    pub fn public_der(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(kp) | Signer::RsaPss(kp) => kp.public_key().as_ref().to_vec(),
            Signer::Es256(kp) | Signer::Es384(kp) => kp.public_key().as_ref().to_vec(),
            Signer::Ed(kp) => kp.public_key().as_ref().to_vec(),
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .expect("RSA sign");
                sig
            }
            Signer::RsaPss(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&RSA_PSS_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .expect("RSA-PSS sign");
                sig
            }
            Signer::Es256(kp) | Signer::Es384(kp) => kp
                .sign(&SystemRandom::new(), msg)
                .expect("EC sign")
                .as_ref()
                .to_vec(),
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
        }
    }

    /// A token with this key's `alg`/`kid` header.
    pub fn token(&self, claims: &Value) -> String {
        self.token_with_header(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Keycloak-shaped claims valid for five minutes from the clock's now.
pub fn claims(issuer: &str, clock: &ManualClock, roles: &[&str]) -> Value {
    use vrata_ext_authz::Clock;
    let now = clock.now_secs() as i64;
    json!({
        "iss": issuer,
        "aud": [AUDIENCE, "account"],
        "sub": "user-1",
        "azp": "web",
        "exp": now + 300,
        "iat": now,
        "realm_access": {"roles": roles},
        "resource_access": {AUDIENCE: {"roles": ["client-role"]}},
        "scope": "openid orders.read",
    })
}

#[derive(Clone)]
struct IdpState {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
}

/// A minimal OIDC provider: discovery + JWKS under a Keycloak-style issuer path.
pub struct Idp {
    pub issuer: String,
    state: IdpState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Idp {
    pub async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}/realms/test");
        let state = IdpState {
            issuer: issuer.clone(),
            jwks: Arc::new(Mutex::new(jwks(keys))),
            jwks_hits: Arc::default(),
            discovery_hits: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                get(|State(s): State<IdpState>| async move {
                    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "issuer": s.issuer,
                        "jwks_uri": format!("{}/protocol/openid-connect/certs", s.issuer),
                    }))
                }),
            )
            .route(
                "/realms/test/protocol/openid-connect/certs",
                get(|State(s): State<IdpState>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let doc = s.jwks.lock().unwrap().clone();
                    axum::Json(doc)
                }),
            )
            .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            issuer,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    pub fn set_jwks(&self, doc: Value) {
        *self.state.jwks.lock().unwrap() = doc;
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
        }
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn provider(issuer: &str) -> ProviderSpec {
    ProviderSpec {
        name: "kc".into(),
        issuer: issuer.into(),
        jwks_url: None,
        audiences: vec![AUDIENCE.into()],
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        leeway: Duration::from_secs(30),
        roles_claims: vec![
            "realm_access.roles".into(),
            format!("resource_access.{AUDIENCE}.roles"),
        ],
        jwks_refresh: Duration::from_secs(600),
        jwks_min_refetch: Duration::from_secs(30),
    }
}

pub fn route(name: &str, f: impl FnOnce(&mut RouteAuthSpec)) -> RouteSpec {
    let mut auth = RouteAuthSpec {
        provider: "kc".into(),
        roles: RequirementSpec::default(),
        scopes: RequirementSpec::default(),
        optional: false,
        forward_claims: vec![],
        metadata_claims: vec!["sub".into()],
    };
    f(&mut auth);
    RouteSpec {
        name: name.into(),
        auth: Some(auth),
    }
}

/// The policy most tests use.
pub fn policy(issuer: &str) -> PolicySpec {
    PolicySpec {
        version: "v1".into(),
        providers: vec![provider(issuer)],
        routes: vec![
            route("orders", |a| {
                a.roles.any_of = vec!["orders:read".into(), "admin".into()];
                a.forward_claims = vec![
                    ("x-user-id".into(), "sub".into()),
                    ("x-user-roles".into(), "realm_access.roles".into()),
                ];
            }),
            route("admin", |a| {
                a.roles.all_of = vec!["admin".into(), "client-role".into()];
            }),
            route("scoped", |a| {
                a.scopes.all_of = vec!["orders.read".into()];
                a.scopes.any_of = vec!["openid".into(), "profile".into()];
            }),
            route("writes", |a| {
                a.scopes.any_of = vec!["orders.write".into()];
            }),
            route("optional", |a| {
                a.optional = true;
                a.forward_claims = vec![("x-user-id".into(), "sub".into())];
            }),
            // A route whose configuration reads no claim: xds-server sends no metadata claims.
            route("lean", |a| {
                a.forward_claims = vec![("x-user-id".into(), "sub".into())];
                a.metadata_claims.clear();
            }),
            route("roles-only", |a| {
                a.forward_claims = vec![("x-user-roles".into(), "realm_access.roles".into())];
            }),
            RouteSpec {
                name: "public".into(),
                auth: None,
            },
        ],
    }
}

pub struct Harness {
    pub authz: Arc<Authz>,
    pub service: CheckService,
    pub clock: ManualClock,
    pub metrics: Metrics,
}

/// A quiet HTTP client: no idle connections, so a stopped IdP is really unreachable.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

pub fn harness(spec: &PolicySpec) -> Harness {
    let clock = ManualClock::starting_now();
    let metrics = Metrics::default();
    let authz = Arc::new(
        Authz::new(
            Options {
                clock: Arc::new(clock.clone()),
                http: Some(http()),
                ..Options::default()
            },
            metrics.clone(),
        )
        .unwrap(),
    );
    authz.apply(spec).unwrap();
    let service = CheckService::new(authz.clone());
    Harness {
        authz,
        service,
        clock,
        metrics,
    }
}

pub fn request(route: Option<&str>, headers: &[(&str, &str)]) -> CheckRequest {
    let mut ext = HashMap::new();
    if let Some(r) = route {
        ext.insert(vrata_ext_authz::ROUTE_CONTEXT_KEY.to_owned(), r.to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            context_extensions: ext,
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/api/orders".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[derive(Debug)]
pub struct Allowed {
    pub set: HashMap<String, String>,
    pub remove: Vec<String>,
    pub metadata: Struct,
}

#[derive(Debug)]
pub struct Denied {
    pub status: i32,
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub result: String,
}

pub fn result_of(m: &Struct) -> String {
    match m
        .fields
        .get(vrata_ext_authz::METADATA_RESULT)
        .and_then(|v| v.kind.clone())
    {
        Some(Kind::StringValue(s)) => s,
        other => panic!("no result metadata: {other:?}"),
    }
}

pub fn split(resp: CheckResponse) -> Result<Allowed, Denied> {
    let grpc = resp.status.as_ref().map(|s| s.code).unwrap();
    let metadata = resp.dynamic_metadata.clone().unwrap();
    match resp.http_response.unwrap() {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(grpc, 0);
            Ok(Allowed {
                set: ok
                    .headers
                    .iter()
                    .map(|h| {
                        let hv = h.header.as_ref().unwrap();
                        (hv.key.clone(), hv.value.clone())
                    })
                    .collect(),
                remove: ok.headers_to_remove,
                metadata,
            })
        }
        HttpResponse::DeniedResponse(d) => {
            assert_ne!(grpc, 0);
            let headers: HashMap<String, String> = d
                .headers
                .iter()
                .map(|h| {
                    let hv = h.header.as_ref().unwrap();
                    (hv.key.clone(), hv.value.clone())
                })
                .collect();
            Err(Denied {
                status: d.status.unwrap().code,
                body: serde_json::from_str(&d.body).unwrap(),
                headers,
                result: result_of(&metadata),
            })
        }
        other => panic!("unexpected response {other:?}"),
    }
}

impl Harness {
    pub async fn check(&self, route: &str, headers: &[(&str, &str)]) -> Result<Allowed, Denied> {
        let resp = tokio::time::timeout(
            BOUND,
            self.service
                .check(tonic::Request::new(request(Some(route), headers))),
        )
        .await
        .expect("Check answered in time")
        .unwrap()
        .into_inner();
        split(resp)
    }

    pub async fn check_token(&self, route: &str, token: &str) -> Result<Allowed, Denied> {
        let auth = format!("Bearer {token}");
        self.check(
            route,
            &[("authorization", &auth), ("x-request-id", "req-1")],
        )
        .await
    }
}

impl Denied {
    /// Asserts the RFC 9457 shape, the status, and the reason recorded for logs/metrics.
    pub fn assert(&self, status: i32, code: &str, reason: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.result, reason, "{self:?}");
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/problem+json")
        );
        assert_eq!(self.body["type"], format!("urn:vrata:error:{code}"));
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        // The precise reason never reaches the client.
        assert!(
            !self.body.to_string().contains(reason),
            "reason leaked: {}",
            self.body
        );
        match status {
            401 => assert!(self.headers["www-authenticate"].starts_with("Bearer")),
            403 => assert_eq!(
                self.headers["www-authenticate"],
                "Bearer error=\"insufficient_scope\""
            ),
            _ => assert!(!self.headers.contains_key("www-authenticate")),
        }
    }

    pub fn assert_invalid_token(&self, reason: &str) {
        self.assert(401, "invalid_token", reason);
        assert_eq!(
            self.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(self.body["request_id"], "req-1");
    }
}

/// Reads one counter line from the OpenMetrics text.
pub fn metric(metrics: &Metrics, line_prefix: &str) -> f64 {
    let mut reg = prometheus_client::registry::Registry::default();
    metrics.register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}
