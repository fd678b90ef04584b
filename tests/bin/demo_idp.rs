//! `demo-idp --listen 127.0.0.1:9180 [--realm demo] [--audience api-gateway]`: a small
//! Keycloak-shaped token issuer for the local stack (scripts/up), so a protected route can be
//! tried without Keycloak. It is a demo, not an identity provider: two fixed clients, one
//! signing key generated at start, client-credentials grant only. The end-to-end tests use a
//! real OpenID Connect provider (tests/oidc) instead.
//!
//! Keycloak's paths under `/realms/<realm>`: OIDC discovery, `protocol/openid-connect/certs`
//! (the JWKS) and `protocol/openid-connect/token`. Tokens are ES256 JWTs with Keycloak's claim
//! shapes: `realm_access.roles`, `resource_access.<audience>.roles`, `scope`, `azp`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// How long an issued token is valid (Keycloak's default access token lifespan).
const TOKEN_LIFETIME_S: u64 = 300;
const KID: &str = "demo-idp-1";

/// Client id, secret, realm roles, client roles: the same clients tests/oidc and the
/// examples/keycloak realm define.
const CLIENTS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "orders-client",
        "orders-secret",
        &["orders:read", "offline_access"],
        &["reader"],
    ),
    ("no-role-client", "no-role-secret", &["offline_access"], &[]),
];

struct Idp {
    issuer: String,
    audience: String,
    key: EcdsaKeyPair,
    jwks: Value,
}

fn usage() -> &'static str {
    "usage: demo-idp --listen IP:PORT [--realm demo] [--audience api-gateway]"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let mut realm = String::from("demo");
    let mut audience = String::from("api-gateway");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value ({})", usage()))
        };
        match a.as_str() {
            "--listen" => listen = Some(value()?.parse()?),
            "--realm" => realm = value()?,
            "--audience" => audience = value()?,
            "--help" | "-h" => {
                println!("{}", usage());
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} ({})", usage()),
        }
    }
    let listen = listen.ok_or_else(|| anyhow::anyhow!("{}", usage()))?;

    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|e| anyhow::anyhow!("generating the signing key: {e}"))?;
    let point = key.public_key().as_ref();
    anyhow::ensure!(
        point.len() == 65 && point[0] == 4,
        "an uncompressed P-256 point"
    );
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": KID, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}]});
    let issuer = format!("http://{listen}/realms/{realm}");
    let idp = Arc::new(Idp {
        issuer: issuer.clone(),
        audience,
        key,
        jwks,
    });

    let base = format!("/realms/{realm}");
    let app = axum::Router::new()
        .route(
            &format!("{base}/.well-known/openid-configuration"),
            get({
                let idp = idp.clone();
                move || async move { axum::Json(discovery(&idp.issuer)) }
            }),
        )
        .route(
            &format!("{base}/protocol/openid-connect/certs"),
            get({
                let idp = idp.clone();
                move || async move { axum::Json(idp.jwks.clone()) }
            }),
        )
        .route(
            &format!("{base}/protocol/openid-connect/token"),
            post({
                let idp = idp.clone();
                move |headers: HeaderMap, body: String| async move { token(&idp, &headers, &body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{}", json!({"ready": true, "issuer": issuer}));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "grant_types_supported": ["client_credentials"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    })
}

/// OAuth 2.0 errors (RFC 6749 §5.2) as Keycloak sends them.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn token(idp: &Idp, headers: &HeaderMap, body: &str) -> Response {
    let form = parse_form(body);
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials",
        );
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(i, p)| (i.to_owned(), p.to_owned())));
    let (id, secret) = match (basic, field("client_id"), field("client_secret")) {
        (Some(pair), _, _) => pair,
        (None, Some(i), Some(s)) => (i.to_owned(), s.to_owned()),
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client_id and client_secret required",
            );
        }
    };
    let Some((_, _, realm_roles, client_roles)) =
        CLIENTS.iter().find(|(i, s, _, _)| *i == id && *s == secret)
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = json!({
        "iss": idp.issuer,
        "sub": format!("service-account-{id}"),
        "aud": idp.audience,
        "azp": id,
        "typ": "Bearer",
        "iat": now,
        "exp": now + TOKEN_LIFETIME_S,
        "jti": format!("{now}-{id}"),
        "scope": "orders.read",
        "realm_access": {"roles": realm_roles},
        "resource_access": {idp.audience.clone(): {"roles": client_roles}},
    });
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match idp.key.sign(&SystemRandom::new(), input.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("signing failed: {e}"),
            );
        }
    };
    let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    axum::Json(json!({
        "access_token": jwt,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_S,
        "scope": "orders.read",
    }))
    .into_response()
}

/// `application/x-www-form-urlencoded` pairs, percent- and `+`-decoded.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let f = parse_form(
            "grant_type=client_credentials&client_id=orders%2Dclient&x=a+b&bad=%zz&end=%4",
        );
        assert_eq!(f[0], ("grant_type".into(), "client_credentials".into()));
        assert_eq!(f[1], ("client_id".into(), "orders-client".into()));
        assert_eq!(f[2], ("x".into(), "a b".into()));
        assert_eq!(f[3], ("bad".into(), "%zz".into()));
        assert_eq!(f[4], ("end".into(), "%4".into()));
    }
}
