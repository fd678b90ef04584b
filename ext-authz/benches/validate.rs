//! Hot-path figures: one RS256 and one ES256 (and EdDSA) validation (parse + signature +
//! claims, no cache), and one whole Check answered from the token cache.
//! Run: `cargo bench -p vrata-ext-authz --bench validate`. Figures: docs/performance.md.

// Bench-only code: a panic is a broken benchmark setup, reported with its location.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use support::*;
use vrata_ext_authz::jwks::KeySet;
use vrata_ext_authz::policy::Policies;
use vrata_ext_authz::validate;
use vrata_ext_authz::{CheckInput, Clock};

fn validation(c: &mut Criterion) {
    let clock = vrata_ext_authz::ManualClock::starting_now();
    let issuer = "https://sso.example.com/realms/demo";
    let policies = Policies::compile(&policy(issuer)).unwrap();
    let provider = policies.providers["kc"].clone();
    for key in [
        TestKey::rsa("r1"),
        TestKey::es256("e1"),
        TestKey::ed25519("d1"),
    ] {
        let jwks = serde_json::json!({"keys": [key.jwk()]});
        let (set, _) = KeySet::parse(&serde_json::to_vec(&jwks).unwrap(), 1).unwrap();
        let token = key.token(&claims(issuer, &clock, &["orders:read", "viewer"]));
        let now = clock.now_secs();
        c.bench_function(&format!("validate/{}", key.alg), |b| {
            b.iter(|| {
                let parsed = validate::parse(black_box(&token), provider.algorithms).unwrap();
                let k = set.find(parsed.kid.as_deref(), parsed.alg);
                validate::verify(&parsed, &k[0], &provider, now).unwrap()
            })
        });
    }
}

fn cached_check(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = TestKey::rsa("r1");
    let idp = rt.block_on(Idp::start(&[&key]));
    let h = rt.block_on(async { harness(&policy(&idp.issuer)) });
    let token = key.token(&claims(&idp.issuer, &h.clock, &["orders:read"]));
    let auth = format!("Bearer {token}");
    let input = CheckInput {
        route: Some("orders"),
        authorization: Some(&auth),
        request_id: Some("bench"),
    };
    // Warm: JWKS fetched, token validated and cached.
    rt.block_on(h.check_token("orders", &token)).unwrap();
    c.bench_function("part/block_on_empty", |b| b.iter(|| rt.block_on(async {})));
    c.bench_function("check/cached_RS256", |b| {
        b.iter(|| rt.block_on(h.authz.check(black_box(input))))
    });
    // The same on a route whose configuration reads no claim: no claims Struct in the answer.
    let lean = CheckInput {
        route: Some("lean"),
        ..input
    };
    rt.block_on(h.check_token("lean", &token)).unwrap();
    c.bench_function("check/cached_RS256_no_claims", |b| {
        b.iter(|| rt.block_on(h.authz.check(black_box(lean))))
    });
}

/// The parts of a cached decision, to see where its time goes.
fn cached_parts(c: &mut Criterion) {
    let clock = vrata_ext_authz::ManualClock::starting_now();
    let key = TestKey::rsa("r1");
    let token = key.token(&claims(
        "https://sso.example.com/realms/demo",
        &clock,
        &["orders:read"],
    ));
    c.bench_function("part/cache_key_sha256", |b| {
        b.iter(|| vrata_ext_authz::cache::TokenCache::key(&[7; 32], black_box(&token)))
    });
    let claims = claims(
        "https://sso.example.com/realms/demo",
        &clock,
        &["orders:read"],
    );
    let paths = [vrata_ext_authz::policy::ClaimPath::parse("sub").unwrap()];
    c.bench_function("part/metadata_claims_sub", |b| {
        b.iter(|| {
            vrata_ext_authz::response::claims_subset(claims.as_object().unwrap(), black_box(&paths))
        })
    });
    let metrics = vrata_ext_authz::Metrics::default();
    c.bench_function("part/decision_metric", |b| {
        b.iter(|| {
            metrics.decision(
                black_box("orders"),
                vrata_ext_authz::metrics::Outcome::Allowed,
            )
        })
    });
}

criterion_group!(benches, validation, cached_check, cached_parts);
criterion_main!(benches);
