//! Service tests: the Check handler in-process against an in-test IdP, with in-test keys.
//! Time moves only through the injected clock; network waits are bounded.

mod support;

use std::time::Duration;

use envoy_types::pb::google::protobuf::value::Kind;
use serde_json::json;
use support::*;

async fn setup() -> (Idp, TestKey, Harness) {
    let key = TestKey::rsa("rsa-1");
    let idp = Idp::start(&[&key]).await;
    let h = harness(&policy(&idp.issuer));
    (idp, key, h)
}

#[tokio::test]
async fn valid_token_passes_with_forwarded_claims_and_metadata() {
    let (idp, key, h) = setup().await;
    let token = key.token(&claims(&idp.issuer, &h.clock, &["orders:read", "viewer"]));
    let ok = h
        .check(
            "orders",
            &[
                ("authorization", &format!("Bearer {token}")),
                // A client trying to pose as someone else upstream.
                ("x-user-id", "admin"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ok.set["x-user-id"], "user-1");
    assert_eq!(ok.set["x-user-roles"], "orders:read,viewer");
    // Headers set here overwrite the client's copy; removing them too would drop ours
    // (Envoy removes after setting), so the remove list holds only headers not set.
    assert!(ok.remove.is_empty(), "{:?}", ok.remove);
    assert_eq!(result_of(&ok.metadata), "allowed");
    let Some(Kind::StructValue(claims)) = ok.metadata.fields["vrata.authz"].kind.clone() else {
        panic!("claims metadata missing")
    };
    assert_eq!(
        claims.fields["sub"].kind,
        Some(Kind::StringValue("user-1".into()))
    );
    // Only the claims the route's config reads (`sub` here): not the whole token.
    assert_eq!(claims.fields.len(), 1, "{claims:?}");
    assert_eq!(
        metric(
            &h.metrics,
            "vrata_authz_decisions_total{route=\"orders\",result=\"allowed\"}"
        ),
        1.0
    );
}

/// Envoy decodes and stores every metadata value on every request: a route whose configuration
/// reads no claim gets the decision alone, not even `sub`.
#[tokio::test]
async fn no_claims_in_metadata_when_nothing_reads_them() {
    let (idp, key, h) = setup().await;
    let token = key.token(&claims(&idp.issuer, &h.clock, &["viewer"]));
    let ok = h
        .check("lean", &[("authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    assert_eq!(ok.set["x-user-id"], "user-1");
    assert_eq!(result_of(&ok.metadata), "allowed");
    assert_eq!(
        ok.metadata.fields.keys().collect::<Vec<_>>(),
        ["vrata.authz.result"],
        "{:?}",
        ok.metadata
    );
}

#[tokio::test]
async fn every_algorithm_family_verifies() {
    let keys = [
        TestKey::rsa("r"),
        TestKey::ps256("p"),
        TestKey::es256("e"),
        TestKey::es384("e3"),
        TestKey::ed25519("d"),
    ];
    let idp = Idp::start(&keys.iter().collect::<Vec<_>>()).await;
    let mut spec = policy(&idp.issuer);
    spec.providers[0].algorithms = vrata_ext_authz::Algorithm::ALL.to_vec();
    let h = harness(&spec);
    for k in &keys {
        let t = k.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
        h.check_token("orders", &t)
            .await
            .unwrap_or_else(|d| panic!("{}: {d:?}", k.alg));
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (idp, key, h) = setup().await;
    let c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    let unsigned = format!(
        "{}.{}.",
        b64(&serde_json::to_vec(&json!({"alg": "none", "kid": key.kid})).unwrap()),
        b64(&serde_json::to_vec(&c).unwrap())
    );
    h.check_token("orders", &unsigned)
        .await
        .unwrap_err()
        .assert_invalid_token("alg_none");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let (idp, key, h) = setup().await;
    let c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&json!({"alg": "HS256", "kid": key.kid})).unwrap()),
        b64(&serde_json::to_vec(&c).unwrap())
    );
    let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key.public_der());
    let tag = aws_lc_rs::hmac::sign(&mac_key, input.as_bytes());
    let forged = format!("{input}.{}", b64(tag.as_ref()));
    h.check_token("orders", &forged)
        .await
        .unwrap_err()
        .assert_invalid_token("alg_hmac");
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let (idp, key, h) = setup().await;
    let token = key.token(&claims(&idp.issuer, &h.clock, &["viewer"]));
    let mut parts: Vec<&str> = token.split('.').collect();
    let elevated = b64(&serde_json::to_vec(&claims(&idp.issuer, &h.clock, &["admin"])).unwrap());
    parts[1] = &elevated;
    h.check_token("orders", &parts.join("."))
        .await
        .unwrap_err()
        .assert_invalid_token("bad_signature");
}

#[tokio::test]
async fn claim_checks_refuse_issuer_audience_and_time_violations() {
    let (idp, key, h) = setup().await;
    let base = claims(&idp.issuer, &h.clock, &["orders:read"]);
    let now = base["iat"].as_i64().unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = base.clone();
        f(&mut c);
        key.token(&c)
    };
    let cases = [
        (
            with(&|c| c["iss"] = json!(format!("{}x", idp.issuer))),
            "bad_issuer",
        ),
        (
            with(&|c| c["iss"] = json!(idp.issuer.trim_end_matches("/test"))),
            "bad_issuer",
        ),
        (with(&|c| c["aud"] = json!("someone-else")), "bad_audience"),
        (with(&|c| c["aud"] = json!(["a", "b"])), "bad_audience"),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "bad_audience",
        ),
        // Expired beyond the 30 s leeway.
        (with(&|c| c["exp"] = json!(now - 31)), "expired"),
        (with(&|c| c["nbf"] = json!(now + 31)), "not_yet_valid"),
        (with(&|c| c["iat"] = json!(now + 3600)), "issued_in_future"),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "missing_exp",
        ),
    ];
    for (token, reason) in cases {
        h.check_token("orders", &token)
            .await
            .unwrap_err()
            .assert_invalid_token(reason);
    }
    // Within the leeway both ways.
    let ok = with(&|c| {
        c["exp"] = json!(now - 29);
        c["nbf"] = json!(now + 29);
    });
    h.check_token("orders", &ok).await.unwrap();
}

#[tokio::test]
async fn all_zero_ecdsa_signature_is_refused() {
    let ec = TestKey::es256("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let h = harness(&policy(&idp.issuer));
    let token = ec.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    let (input, _) = token.rsplit_once('.').unwrap();
    let zero = format!("{input}.{}", b64(&[0u8; 64]));
    h.check_token("orders", &zero)
        .await
        .unwrap_err()
        .assert_invalid_token("bad_signature");
}

#[tokio::test]
async fn oversized_token_is_refused_before_decoding() {
    let (idp, key, h) = setup().await;
    let mut c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    c["padding"] = json!("x".repeat(vrata_ext_authz::validate::MAX_TOKEN_BYTES));
    h.check_token("orders", &key.token(&c))
        .await
        .unwrap_err()
        .assert_invalid_token("oversized");
    assert_eq!(idp.jwks_hits(), 0, "refused before any key lookup");
}

#[tokio::test]
async fn header_attacks_are_refused() {
    let (idp, key, h) = setup().await;
    let c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    for (header, reason) in [
        (
            json!({"alg": "RS256", "kid": key.kid, "jku": format!("{}/evil", idp.issuer)}),
            "embedded_key",
        ),
        (
            json!({"alg": "RS256", "kid": key.kid, "jwk": key.jwk()}),
            "embedded_key",
        ),
        (
            json!({"alg": "RS256", "kid": key.kid, "x5u": "http://127.0.0.1/x"}),
            "embedded_key",
        ),
        (
            json!({"alg": "RS256", "kid": key.kid, "crit": ["exp"], "exp": 1}),
            "crit_unsupported",
        ),
        (json!({"alg": "PS384", "kid": key.kid}), "alg_not_allowed"),
        // An RSA key used for ES256: kty and alg disagree.
        (json!({"alg": "ES256", "kid": key.kid}), "key_mismatch"),
    ] {
        h.check_token("orders", &key.token_with_header(&header, &c))
            .await
            .unwrap_err()
            .assert_invalid_token(reason);
    }
}

#[tokio::test]
async fn missing_or_empty_bearer() {
    let (_idp, _key, h) = setup().await;
    let d = h
        .check("orders", &[("x-request-id", "r9")])
        .await
        .unwrap_err();
    d.assert(401, "unauthorized", "missing_token");
    assert_eq!(d.headers["www-authenticate"], "Bearer");
    assert_eq!(d.body["request_id"], "r9");
    h.check("orders", &[("authorization", "Basic dTpw")])
        .await
        .unwrap_err()
        .assert(401, "unauthorized", "missing_token");
    h.check("orders", &[("authorization", "Bearer ")])
        .await
        .unwrap_err()
        .assert(401, "invalid_token", "malformed");
}

#[tokio::test]
async fn unknown_kid_and_keys_not_for_signing() {
    let (idp, key, h) = setup().await;
    let c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    let stranger = TestKey::rsa("not-published");
    h.check_token("orders", &stranger.token(&c))
        .await
        .unwrap_err()
        .assert_invalid_token("unknown_kid");

    // The same kid published as an encryption key is not a signing key.
    let mut enc = key.jwk();
    enc["use"] = json!("enc");
    idp.set_jwks(json!({"keys": [enc]}));
    h.clock.advance(Duration::from_secs(601));
    h.authz.refresh_due().await;
    let fresh = TestKey::rsa("rsa-2");
    let mut enc2 = fresh.jwk();
    enc2["use"] = json!("enc");
    idp.set_jwks(json!({"keys": [key.jwk(), enc2]}));
    h.clock.advance(Duration::from_secs(601));
    assert!(h.authz.refresh_due().await);
    h.check_token(
        "orders",
        &fresh.token(&claims(&idp.issuer, &h.clock, &["orders:read"])),
    )
    .await
    .unwrap_err()
    .assert_invalid_token("unknown_kid");
}

#[tokio::test]
async fn random_unknown_kids_cause_at_most_two_jwks_fetches() {
    let (idp, key, h) = setup().await;
    // Warm up: the first token loads the key set (fetch 1).
    h.check_token(
        "orders",
        &key.token(&claims(&idp.issuer, &h.clock, &["orders:read"])),
    )
    .await
    .unwrap();
    assert_eq!(idp.jwks_hits(), 1);
    // Let the refetch bound pass so the flood may cause exactly one more fetch.
    h.clock.advance(Duration::from_secs(31));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).unwrap();
        header["kid"] = json!(format!("rnd-{i}-{}", b64(&rnd)));
        let token =
            key.token_with_header(&header, &claims(&idp.issuer, &h.clock, &["orders:read"]));
        let service = h.service.clone();
        set.spawn(async move {
            use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
            let auth = format!("Bearer {token}");
            let req = request(Some("orders"), &[("authorization", &auth)]);
            split(
                service
                    .check(tonic::Request::new(req))
                    .await
                    .unwrap()
                    .into_inner(),
            )
        });
    }
    let all = tokio::time::timeout(BOUND, set.join_all()).await.unwrap();
    for r in all {
        assert_eq!(r.unwrap_err().result, "unknown_kid");
    }
    assert_eq!(idp.jwks_hits(), 2, "one initial fetch, one shared refetch");
    // One more unknown kid inside the bound: refused without a fetch, and counted.
    let stranger = TestKey::rsa("late");
    h.check_token(
        "orders",
        &stranger.token(&claims(&idp.issuer, &h.clock, &[])),
    )
    .await
    .unwrap_err()
    .assert_invalid_token("unknown_kid");
    assert_eq!(idp.jwks_hits(), 2);
    assert_eq!(
        metric(
            &h.metrics,
            "vrata_authz_jwks_refetch_suppressed_total{provider=\"kc\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn key_rotation_is_followed() {
    let (idp, old, h) = setup().await;
    let old_token = old.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &old_token).await.unwrap();

    // The IdP adds a new key and signs with it: a token with the new kid refetches (once the
    // refetch bound allows) and passes.
    let new = TestKey::es256("ec-2");
    idp.set_keys(&[&old, &new]);
    let new_token = new.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &new_token)
        .await
        .unwrap_err()
        .assert_invalid_token("unknown_kid");
    h.clock.advance(Duration::from_secs(30));
    h.check_token("orders", &new_token).await.unwrap();

    // The old key is withdrawn; the background refresh picks that up and even the cached
    // decision for the old token stops working.
    idp.set_keys(&[&new]);
    h.clock.advance(Duration::from_secs(600));
    assert!(h.authz.refresh_due().await);
    let old_token = old.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &old_token)
        .await
        .unwrap_err()
        .assert_invalid_token("unknown_kid");
    let new_token = new.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &new_token).await.unwrap();
}

#[tokio::test]
async fn stopped_idp_leaves_known_keys_working() {
    let (mut idp, key, h) = setup().await;
    let issuer = idp.issuer.clone();
    assert!(h.authz.refresh_due().await, "first fetch");
    idp.stop().await;
    h.clock.advance(Duration::from_secs(601));
    // Refresh fails, keys stay.
    assert!(h.authz.refresh_due().await);
    assert!(metric(&h.metrics, "vrata_authz_jwks_fetch_errors_total") >= 1.0);
    // A token never seen before (so not cached) still verifies with the known key.
    let t = key.token(&claims(&issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &t).await.unwrap();
}

#[tokio::test]
async fn provider_never_reached_answers_503_and_is_not_ready() {
    // A port that was free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}/realms/down");
    let h = harness(&policy(&issuer));
    assert!(!h.authz.refresh_due().await);
    assert!(!h.authz.is_ready());
    assert_eq!(h.authz.unreached_providers(), ["kc"]);
    let key = TestKey::rsa("k");
    let d = h
        .check_token(
            "orders",
            &key.token(&claims(&issuer, &h.clock, &["orders:read"])),
        )
        .await
        .unwrap_err();
    d.assert(503, "auth_unavailable", "provider_unavailable");
    assert_eq!(d.body["request_id"], "req-1");
}

#[tokio::test]
async fn roles_any_of_all_of_and_scopes() {
    let (idp, key, h) = setup().await;
    let tok = |roles: &[&str]| key.token(&claims(&idp.issuer, &h.clock, roles));
    // any_of [orders:read, admin]
    h.check_token("orders", &tok(&["admin"])).await.unwrap();
    h.check_token("orders", &tok(&["viewer"]))
        .await
        .unwrap_err()
        .assert(403, "forbidden", "missing_role");
    // all_of [admin, client-role]: client-role comes from resource_access.api-gateway.roles.
    h.check_token("admin", &tok(&["admin"])).await.unwrap();
    let mut c = claims(&idp.issuer, &h.clock, &["admin"]);
    c["resource_access"] = json!({});
    h.check_token("admin", &key.token(&c))
        .await
        .unwrap_err()
        .assert(403, "forbidden", "missing_role");
    // scopes: `scope` string has openid + orders.read.
    h.check_token("scoped", &tok(&[])).await.unwrap();
    h.check_token("writes", &tok(&[]))
        .await
        .unwrap_err()
        .assert(403, "forbidden", "missing_scope");
    // `scp` as an array also counts.
    let mut c = claims(&idp.issuer, &h.clock, &[]);
    c["scp"] = json!(["orders.write"]);
    h.check_token("writes", &key.token(&c)).await.unwrap();
}

#[tokio::test]
async fn optional_routes_pass_anonymous_but_still_validate_tokens() {
    let (idp, key, h) = setup().await;
    let anon = h
        .check(
            "optional",
            &[("x-user-id", "forged"), ("x-user-roles", "admin")],
        )
        .await
        .unwrap();
    assert!(anon.set.is_empty());
    let mut removed = anon.remove.clone();
    removed.sort();
    assert_eq!(removed, ["x-user-id", "x-user-roles"]);
    assert_eq!(result_of(&anon.metadata), "anonymous");

    let valid = key.token(&claims(&idp.issuer, &h.clock, &[]));
    let ok = h.check_token("optional", &valid).await.unwrap();
    assert_eq!(ok.set["x-user-id"], "user-1");
    assert_eq!(ok.remove, ["x-user-roles"]);

    let mut expired = claims(&idp.issuer, &h.clock, &[]);
    expired["exp"] = json!(1);
    h.check_token("optional", &key.token(&expired))
        .await
        .unwrap_err()
        .assert_invalid_token("expired");
}

#[tokio::test]
async fn client_sent_identity_headers_are_removed_on_every_route() {
    let (idp, key, h) = setup().await;
    let token = key.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    let auth = format!("Bearer {token}");
    let forged = [("authorization", auth.as_str()), ("x-user-id", "admin")];
    // A route that forwards only roles still strips a client's x-user-id.
    let ok = h.check("roles-only", &forged).await.unwrap();
    assert_eq!(ok.remove, ["x-user-id"]);
    assert_eq!(ok.set["x-user-roles"], "orders:read");
    // So does a route without auth, if Envoy calls for it.
    let ok = h.check("public", &[("x-user-id", "admin")]).await.unwrap();
    let mut removed = ok.remove.clone();
    removed.sort();
    assert_eq!(removed, ["x-user-id", "x-user-roles"]);
    // A claim that is absent is not forwarded, and its header is removed.
    let mut c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    c.as_object_mut().unwrap().remove("sub");
    let ok = h.check_token("orders", &key.token(&c)).await.unwrap();
    assert!(!ok.set.contains_key("x-user-id"));
    assert_eq!(ok.remove, ["x-user-id"]);
}

#[tokio::test]
async fn unknown_or_missing_route_fails_closed() {
    let (idp, key, h) = setup().await;
    let token = key.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("no-such-route", &token)
        .await
        .unwrap_err()
        .assert(500, "internal", "unknown_route");
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
    let resp = h
        .service
        .check(tonic::Request::new(request(None, &[])))
        .await
        .unwrap()
        .into_inner();
    split(resp)
        .unwrap_err()
        .assert(500, "internal", "unknown_route");
}

#[tokio::test]
async fn cached_decisions_respect_exp_and_policy_changes() {
    let (idp, key, h) = setup().await;
    let mut c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    let now = c["iat"].as_i64().unwrap();
    c["exp"] = json!(now + 60);
    let token = key.token(&c);
    h.check_token("orders", &token).await.unwrap();
    h.check_token("orders", &token).await.unwrap();
    assert_eq!(
        metric(&h.metrics, "vrata_authz_token_cache_total{result=\"hit\"}"),
        1.0
    );

    // A new policy version requiring another role changes the decision for the cached token.
    let mut spec = policy(&idp.issuer);
    spec.version = "v2".into();
    spec.routes[0].auth.as_mut().unwrap().roles.any_of = vec!["orders:admin".into()];
    h.authz.apply(&spec).unwrap();
    assert_eq!(h.authz.version().as_deref(), Some("v2"));
    h.check_token("orders", &token)
        .await
        .unwrap_err()
        .assert(403, "forbidden", "missing_role");
    h.authz.apply(&policy(&idp.issuer)).unwrap();
    h.check_token("orders", &token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1, "keys survived both reloads");

    // Past exp (and its leeway) the cache does not answer; the validator refuses.
    h.clock.advance(Duration::from_secs(60 + 30));
    h.check_token("orders", &token)
        .await
        .unwrap_err()
        .assert_invalid_token("expired");
}

#[tokio::test]
async fn invalid_policy_keeps_the_previous_one() {
    let (idp, key, h) = setup().await;
    let mut bad = policy(&idp.issuer);
    bad.routes[0].auth.as_mut().unwrap().provider = "missing".into();
    assert!(h.authz.apply(&bad).is_err());
    let token = key.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &token).await.unwrap();
    assert_eq!(h.authz.version().as_deref(), Some("v1"));
}

#[tokio::test]
async fn cached_token_stops_passing_when_its_key_is_withdrawn() {
    let (idp, old, h) = setup().await;
    let mut c = claims(&idp.issuer, &h.clock, &["orders:read"]);
    c["exp"] = json!(c["iat"].as_i64().unwrap() + 3600);
    let token = old.token(&c);
    h.check_token("orders", &token).await.unwrap();
    h.check_token("orders", &token).await.unwrap();
    assert_eq!(
        metric(&h.metrics, "vrata_authz_token_cache_total{result=\"hit\"}"),
        1.0
    );
    let new = TestKey::rsa("rsa-2");
    idp.set_keys(&[&new]);
    h.clock.advance(Duration::from_secs(601));
    assert!(h.authz.refresh_due().await);
    h.check_token("orders", &token)
        .await
        .unwrap_err()
        .assert_invalid_token("unknown_kid");
}

#[tokio::test]
async fn refresher_fetches_and_reports_readiness() {
    let (idp, key, h) = setup().await;
    assert!(!h.authz.is_ready(), "nothing fetched yet");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(h.authz.clone().run_refresher(
        Duration::from_millis(10),
        move |ready| {
            let _ = tx.send(ready);
        },
    ));
    // The first tick is immediate: one fetch, then ready.
    let ready = tokio::time::timeout(BOUND, rx.recv())
        .await
        .unwrap()
        .unwrap();
    task.abort();
    assert!(ready);
    assert_eq!(idp.jwks_hits(), 1);
    let t = key.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    h.check_token("orders", &t).await.unwrap();
    assert_eq!(
        idp.jwks_hits(),
        1,
        "no fetch on the request path once keys are loaded"
    );
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let key = TestKey::rsa("k");
    let idp = Idp::start(&[&key]).await;
    // Same discovery URL, but the document's issuer has no trailing slash: not the same issuer.
    let configured = format!("{}/", idp.issuer);
    let h = harness(&policy(&configured));
    assert!(!h.authz.refresh_due().await);
    assert_eq!(
        idp.jwks_hits(),
        0,
        "keys of a mismatching issuer are never fetched"
    );
    assert!(metric(&h.metrics, "vrata_authz_jwks_fetch_errors_total") >= 1.0);
    h.check_token(
        "orders",
        &key.token(&claims(&configured, &h.clock, &["orders:read"])),
    )
    .await
    .unwrap_err()
    .assert(503, "auth_unavailable", "provider_unavailable");
}

#[tokio::test]
async fn jwks_url_skips_discovery() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    // The issuer's host does not serve discovery at all; the explicit JWKS URL is used.
    let issuer = "https://sso.invalid/realms/elsewhere";
    let mut spec = policy(issuer);
    spec.providers[0].jwks_url = Some(format!("{}/protocol/openid-connect/certs", idp.issuer));
    let h = harness(&spec);
    assert!(h.authz.refresh_due().await);
    h.check_token(
        "orders",
        &key.token(&claims(issuer, &h.clock, &["orders:read"])),
    )
    .await
    .unwrap();
    assert_eq!(idp.jwks_hits(), 1);
}
