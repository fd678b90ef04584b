//! A real OpenID Connect provider (npm `oidc-provider`, started by the e2e harness) issues
//! client-credentials JWTs; the Check handler validates them. Requires Node.js and npm
//! (`./scripts/test` installs them and the package).

mod support;

use std::time::Duration;

use support::*;
use vrata_e2e::oidc::{self, NO_ROLE_CLIENT, ORDERS_CLIENT, Oidc};
use vrata_ext_authz::{Algorithm, PolicySpec};

#[tokio::test]
async fn real_provider_tokens_rotation_and_outage() {
    let mut idp = Oidc::start("demo").await.unwrap();
    let mut provider = provider(&idp.issuer);
    provider.audiences = vec![oidc::AUDIENCE.into()];
    provider.algorithms = vec![Algorithm::RS256];
    // The provider's tokens live 300 s of real time; refresh well within that.
    provider.jwks_refresh = Duration::from_secs(60);
    let spec = PolicySpec {
        providers: vec![provider],
        ..policy(&idp.issuer)
    };
    let h = harness(&spec);
    assert!(
        h.authz.refresh_due().await,
        "discovery + JWKS: {}",
        idp.logs()
    );

    // orders-client has realm role orders:read: allowed, identity forwarded.
    let token = idp.token(ORDERS_CLIENT, Some("orders.read")).await.unwrap();
    let ok = h.check_token("orders", &token).await.unwrap();
    assert_eq!(ok.set["x-user-id"], ORDERS_CLIENT.0);
    assert!(
        ok.set["x-user-roles"]
            .split(',')
            .any(|r| r == "orders:read")
    );
    h.check_token("scoped", &token)
        .await
        .expect_err("scope `openid` not granted")
        .assert(403, "forbidden", "missing_scope");
    // A valid client lacking the role: 403.
    let other = idp.token(NO_ROLE_CLIENT, None).await.unwrap();
    h.check_token("orders", &other)
        .await
        .unwrap_err()
        .assert(403, "forbidden", "missing_role");

    // Rotation: the provider signs with a new kid; once the refetch bound allows, the new key
    // is fetched on first sight and tokens signed with either key pass.
    let new_kid = idp.rotate(false).await.unwrap();
    let rotated = idp.token(ORDERS_CLIENT, None).await.unwrap();
    assert!(rotated.len() > 10 && new_kid.starts_with("k-"));
    h.clock.advance(Duration::from_secs(30));
    h.check_token("orders", &rotated).await.unwrap();

    // Provider down: tokens signed with known keys keep passing (this one was never cached).
    let before_outage = idp
        .token(ORDERS_CLIENT, Some("orders.write"))
        .await
        .unwrap();
    idp.stop();
    h.clock.advance(Duration::from_secs(61));
    let errors_before = metric(&h.metrics, "vrata_authz_jwks_fetch_errors_total");
    assert!(h.authz.refresh_due().await, "known keys kept");
    assert!(
        metric(&h.metrics, "vrata_authz_jwks_fetch_errors_total") > errors_before,
        "the refresh did try the stopped provider"
    );
    h.check_token("orders", &before_outage).await.unwrap();
}
