//! Response caching end to end: real Envoys, xds-server, response-cache (settings over ADS), a
//! real redis-server, echo upstreams that count every request they serve, and for the per-user
//! route ext-authz with the real `oidc-provider`.
//!
//! Every assertion is on what a client sees (`X-Cache`, `Age`, status, body) and on how many
//! requests reached the upstream. The upstream's answer headers (`Cache-Control`, `Vary`,
//! `Set-Cookie`) are asked for with `x-test-response-header` on the request.

use std::time::Duration;

use vrata_e2e::oidc::{NO_ROLE_CLIENT, ORDERS_CLIENT, Oidc};
use vrata_e2e::ports::free_port;
use vrata_e2e::redis::RedisServer;
use vrata_e2e::stack::SYNC;
use vrata_e2e::{ExtAuthz, ResponseCache, Stack, Upstream, eventually};

const FRESH: (&str, &str) = ("x-test-response-header", "Cache-Control: max-age=300");

/// What a gateway instance is started with.
#[derive(Default)]
struct Options<'a> {
    /// `cache_store.redis`: the `shared` routes need it.
    redis: Option<String>,
    /// ext-authz and the per-user routes.
    oidc: Option<&'a Oidc>,
}

impl Options<'_> {
    /// Both tiers, entries of the `shared` routes in `redis`.
    fn redis(redis: &RedisServer) -> Self {
        Self {
            redis: Some(redis.url()),
            ..Default::default()
        }
    }
}

/// The two upstreams every gateway here routes to: `app` and `flaky` (whose status a test sets).
async fn upstreams() -> anyhow::Result<(Upstream, Upstream)> {
    Ok((
        Upstream::start("app").await?,
        Upstream::start("flaky").await?,
    ))
}

/// One gateway instance: its own xds-server, Envoy and response-cache.
struct Gateway {
    stack: Stack,
    cache: ResponseCache,
    _authz: Option<ExtAuthz>,
}

impl Gateway {
    async fn start(app: &Upstream, flaky: &Upstream, options: Options<'_>) -> anyhow::Result<Self> {
        let cache_port = free_port();
        let authz_port = free_port();
        let stack = Stack::start(&config(app, flaky, cache_port, authz_port, &options)).await?;
        let cache = ResponseCache::start(
            "response-cache",
            stack.xds.grpc_port,
            cache_port,
            stack.dir.path(),
            &[],
        )
        .await?;
        let authz = match options.oidc {
            Some(_) => Some(
                ExtAuthz::start(
                    "ext-authz",
                    stack.xds.grpc_port,
                    authz_port,
                    stack.dir.path(),
                )
                .await?,
            ),
            None => None,
        };
        stack.xds.wait_in_sync(1, SYNC).await?;
        Ok(Self {
            stack,
            cache,
            _authz: authz,
        })
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
        let mut req = self.stack.http().get(self.stack.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await?;
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Answer {
            status: r.status().as_u16(),
            x_cache: header("x-cache"),
            age: header("age"),
            body: r.text().await?,
        })
    }

    /// `POST /admin/cache/purge` on this instance's xds-server.
    async fn purge(&self, query: &str) -> anyhow::Result<serde_json::Value> {
        let r = self
            .stack
            .http()
            .post(format!(
                "http://127.0.0.1:{}/admin/cache/purge?{query}",
                self.stack.xds.admin_port
            ))
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == 200,
            "purge: {} {}",
            r.status(),
            r.text().await?
        );
        Ok(r.json().await?)
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    x_cache: Option<String>,
    age: Option<String>,
    body: String,
}

impl Answer {
    fn cache(&self) -> &str {
        self.x_cache.as_deref().unwrap_or("(none)")
    }
}

fn config(
    app: &Upstream,
    flaky: &Upstream,
    cache_port: u16,
    authz_port: u16,
    options: &Options<'_>,
) -> String {
    let mut yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
upstreams:
  app: {{endpoints: ["{app}"]}}
  flaky: {{endpoints: ["{flaky}"]}}
services:
  response_cache: "127.0.0.1:{cache_port}"
  ext_authz: "127.0.0.1:{authz_port}"
  timeout: 1s
"#,
        app = app.endpoint(),
        flaky = flaky.endpoint(),
    );
    if let Some(url) = &options.redis {
        yaml.push_str(&format!("cache_store: {{redis: \"{url}\"}}\n"));
    }
    if let Some(oidc) = options.oidc {
        yaml.push_str(&format!(
            "auth:\n  providers:\n    demo:\n      issuer: \"{}\"\n      audiences: [api-gateway]\n",
            oidc.issuer
        ));
    }
    yaml.push_str(
        r#"routes:
  - name: local
    match: {path_prefix: /local}
    upstream: app
    cache: {store: local}
  - name: stale
    match: {path_prefix: /stale}
    upstream: flaky
    timeout: 1s
    cache: {store: local, ttl: 1s, stale_if_error: 4s}
"#,
    );
    if options.redis.is_some() {
        yaml.push_str(
            r#"  - name: shared
    match: {path_prefix: /shared}
    upstream: app
    cache: {store: redis}
"#,
        );
        if options.oidc.is_some() {
            yaml.push_str(
                r#"  - name: per-user
    match: {path_prefix: /me}
    upstream: app
    auth: {provider: demo, optional: true}
    cache: {store: redis, key_extra: ["claim:sub"]}
  - name: team
    match: {path_prefix: /team}
    upstream: app
    auth: {provider: demo, optional: true}
    cache: {store: redis}
"#,
            );
        }
    }
    yaml
}

/// MISS, then HIT with `Age`, for an answer the upstream lets a shared cache keep; answers the
/// upstream marks `no-store` or `private`, or that set a cookie, are never kept; `Vary:
/// Accept-Language` keeps languages apart.
async fn tier_keeps_its_promises(gw: &Gateway, app: &Upstream, prefix: &str) -> anyhow::Result<()> {
    let path = format!("{prefix}/products?page=1");
    let before = app.hits();
    let first = gw.get(&path, &[FRESH]).await?;
    assert_eq!((first.status, first.cache()), (200, "MISS"), "{first:?}");
    let second = gw.get(&path, &[]).await?;
    assert_eq!((second.status, second.cache()), (200, "HIT"), "{second:?}");
    let age: u64 = second
        .age
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("a hit without Age: {second:?}"))?
        .parse()?;
    assert!(age <= 5, "Age {age}");
    assert_eq!(second.body, first.body, "the stored answer, byte for byte");
    assert_eq!(app.hits() - before, 1, "the upstream saw one request");

    // The query is normalised: the same parameters in another order are the same entry.
    let reordered = gw
        .get(&format!("{prefix}/products?b=2&a=1"), &[FRESH])
        .await?;
    assert_eq!(reordered.cache(), "MISS");
    let reordered = gw.get(&format!("{prefix}/products?a=1&b=2"), &[]).await?;
    assert_eq!(reordered.cache(), "HIT");

    for (what, answer_header) in [
        ("no-store", "Cache-Control: no-store"),
        ("private", "Cache-Control: private, max-age=300"),
        ("set-cookie", "Set-Cookie: session=abc"),
    ] {
        let path = format!("{prefix}/never-{what}");
        let before = app.hits();
        let headers: &[(&str, &str)] = if what == "set-cookie" {
            &[FRESH, ("x-test-response-header", answer_header)]
        } else {
            &[("x-test-response-header", answer_header)]
        };
        for _ in 0..3 {
            let a = gw.get(&path, headers).await?;
            assert_eq!(a.status, 200);
            assert_ne!(a.cache(), "HIT", "{what}: {a:?}");
        }
        assert_eq!(
            app.hits() - before,
            3,
            "{what}: every request reached the upstream"
        );
    }

    let path = format!("{prefix}/greeting");
    let vary = ("x-test-response-header", "Vary: Accept-Language");
    let before = app.hits();
    for lang in ["en", "de"] {
        let a = gw
            .get(&path, &[FRESH, vary, ("accept-language", lang)])
            .await?;
        assert_eq!(a.cache(), "MISS", "{lang}: {a:?}");
    }
    for lang in ["en", "de", "en"] {
        let a = gw.get(&path, &[("accept-language", lang)]).await?;
        assert_eq!(a.cache(), "HIT", "{lang}: {a:?}");
        let echoed: serde_json::Value = serde_json::from_str(&a.body)?;
        assert_eq!(
            echoed["headers"]["accept-language"], lang,
            "the entry of the language asked for"
        );
    }
    assert_eq!(app.hits() - before, 2, "one fill per language");
    Ok(())
}

#[tokio::test]
async fn both_tiers_hit_with_age_and_never_keep_what_they_must_not() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (app, flaky) = upstreams().await?;
    let gw = Gateway::start(&app, &flaky, Options::redis(&redis)).await?;
    tier_keeps_its_promises(&gw, &app, "/local").await?;
    tier_keeps_its_promises(&gw, &app, "/shared").await?;
    assert!(
        gw.cache
            .metric(
                "vrata_cache_requests_total",
                r#"route="shared",result="hit""#
            )
            .await?
            >= 5.0,
        "hits are counted per route"
    );
    Ok(())
}

#[tokio::test]
async fn a_conditional_request_to_a_fresh_entry_is_answered_304() -> anyhow::Result<()> {
    let (app, flaky) = upstreams().await?;
    let gw = Gateway::start(&app, &flaky, Options::default()).await?;
    let etag = ("x-test-response-header", "ETag: \"v1\"");
    let first = gw.get("/local/etagged", &[FRESH, etag]).await?;
    assert_eq!(first.cache(), "MISS");
    let before = app.hits();
    let not_modified = gw
        .get("/local/etagged", &[("if-none-match", "\"v0\", \"v1\"")])
        .await?;
    assert_eq!((not_modified.status, not_modified.cache()), (304, "HIT"));
    assert!(not_modified.body.is_empty());
    let changed = gw
        .get("/local/etagged", &[("if-none-match", "\"v0\"")])
        .await?;
    assert_eq!((changed.status, changed.cache()), (200, "HIT"));
    assert_eq!(app.hits(), before, "both answered by the cache");
    Ok(())
}

#[tokio::test]
async fn a_hundred_concurrent_misses_reach_the_upstream_once() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (app, flaky) = upstreams().await?;
    let gw = Gateway::start(&app, &flaky, Options::redis(&redis)).await?;
    for prefix in ["/local", "/shared"] {
        let before = app.hits();
        let path = format!("{prefix}/cold");
        // The upstream takes 300 ms: every request arrives while the first is being filled.
        let headers = [FRESH, ("x-test-delay-ms", "300")];
        let answers =
            futures::future::try_join_all((0..100).map(|_| gw.get(&path, &headers))).await?;
        assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
        assert_eq!(
            app.hits() - before,
            1,
            "{prefix}: one request reached the upstream"
        );
        let misses = answers.iter().filter(|a| a.cache() == "MISS").count();
        assert_eq!(misses, 1, "{prefix}: one fill, 99 answered from it");
        assert!(answers.iter().all(|a| a.body == answers[0].body));
    }
    assert!(
        gw.cache
            .metric("vrata_cache_coalesced_total", r#"route="shared""#)
            .await?
            >= 99.0
    );
    Ok(())
}

#[tokio::test]
async fn per_user_entries_and_tokened_requests_without_key_extra_bypass() -> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let redis = RedisServer::start().await?;
    let (app, flaky) = upstreams().await?;
    let gw = Gateway::start(
        &app,
        &flaky,
        Options {
            redis: Some(redis.url()),
            oidc: Some(&oidc),
        },
    )
    .await?;
    let alice = format!("Bearer {}", oidc.token(ORDERS_CLIENT, None).await?);
    let bob = format!("Bearer {}", oidc.token(NO_ROLE_CLIENT, None).await?);

    let before = app.hits();
    let a1 = gw.get("/me", &[FRESH, ("authorization", &alice)]).await?;
    let b1 = gw.get("/me", &[FRESH, ("authorization", &bob)]).await?;
    assert_eq!((a1.status, a1.cache(), b1.cache()), (200, "MISS", "MISS"));
    let a2 = gw.get("/me", &[("authorization", &alice)]).await?;
    let b2 = gw.get("/me", &[("authorization", &bob)]).await?;
    assert_eq!((a2.cache(), b2.cache()), ("HIT", "HIT"));
    assert_eq!(a2.body, a1.body, "alice gets her own entry");
    assert_eq!(b2.body, b1.body, "bob gets his");
    assert_ne!(a1.body, b1.body);
    assert_eq!(app.hits() - before, 2);

    // A route without key_extra: tokened requests are never answered from (or stored in) the
    // shared entry; anonymous ones are.
    let before = app.hits();
    for _ in 0..3 {
        let a = gw.get("/team", &[FRESH, ("authorization", &alice)]).await?;
        assert_eq!((a.status, a.cache()), (200, "BYPASS"));
    }
    assert_eq!(app.hits() - before, 3);
    assert_eq!(gw.get("/team", &[FRESH]).await?.cache(), "MISS");
    assert_eq!(gw.get("/team", &[]).await?.cache(), "HIT");
    let tokened = gw.get("/team", &[("authorization", &alice)]).await?;
    assert_eq!(tokened.cache(), "BYPASS", "never the anonymous entry");
    Ok(())
}

#[tokio::test]
async fn two_instances_share_redis_entries_purges_and_survive_a_dead_redis() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let (app, flaky) = upstreams().await?;
    let a = Gateway::start(&app, &flaky, Options::redis(&redis)).await?;
    // The host is part of the key: clients reach every instance under one name (the two
    // listeners here have different ports).
    const HOST: (&str, &str) = ("host", "catalog.example");
    let b = Gateway::start(&app, &flaky, Options::redis(&redis)).await?;

    let before = app.hits();
    assert_eq!(
        a.get("/shared/catalog", &[FRESH, HOST]).await?.cache(),
        "MISS"
    );
    assert_eq!(
        b.get("/shared/catalog", &[HOST]).await?.cache(),
        "HIT",
        "filled through a"
    );
    assert_eq!(
        a.get("/shared/other", &[FRESH, HOST]).await?.cache(),
        "MISS"
    );
    assert_eq!(app.hits() - before, 2);

    // Purge one path prefix through a's control plane: gone for both instances; the other
    // entry stays.
    let purged = a.purge("route=shared&path_prefix=/shared/catalog").await?;
    assert_eq!(
        (purged["instances"].as_u64(), purged["applied"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        b.get("/shared/catalog", &[FRESH, HOST]).await?.cache(),
        "MISS"
    );
    // b's refill comes from an instance whose control plane never heard of the purge (each
    // gateway has its own xds-server here): a refuses it rather than risk serving pre-purge
    // content, and fills again.
    assert_eq!(
        a.get("/shared/catalog", &[FRESH, HOST]).await?.cache(),
        "MISS"
    );
    assert_eq!(a.get("/shared/catalog", &[HOST]).await?.cache(), "HIT");
    assert_eq!(b.get("/shared/other", &[HOST]).await?.cache(), "HIT");
    // A purge of the whole route.
    a.purge("route=shared").await?;
    assert_eq!(
        b.get("/shared/other", &[FRESH, HOST]).await?.cache(),
        "MISS"
    );

    // Redis dies: every request still succeeds, from the upstream.
    redis.kill();
    let before = app.hits();
    for gw in [&a, &b, &a, &b] {
        let r = gw.get("/shared/catalog", &[FRESH, HOST]).await?;
        assert_eq!((r.status, r.cache()), (200, "BYPASS"), "{r:?}");
    }
    assert_eq!(app.hits() - before, 4);
    assert!(
        a.cache
            .metric(
                "vrata_cache_store_errors_total",
                r#"route="shared",store="redis""#
            )
            .await?
            >= 1.0
    );
    // Redis back (empty): caching resumes without a restart.
    redis.restart().await?;
    eventually("caching resumes", SYNC, || async {
        let r = a.get("/shared/after", &[FRESH, HOST]).await?;
        anyhow::ensure!(r.status == 200, "{r:?}");
        let again = b.get("/shared/after", &[HOST]).await?;
        anyhow::ensure!(again.cache() == "HIT", "{again:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn stale_if_error_serves_the_old_answer_inside_the_window_only() -> anyhow::Result<()> {
    let (app, flaky) = upstreams().await?;
    let gw = Gateway::start(&app, &flaky, Options::default()).await?;
    // `stale` keeps answers 1 s (its ttl) and may serve them 4 s past that.
    let first = gw.get("/stale/prices", &[]).await?;
    assert_eq!((first.status, first.cache()), (200, "MISS"));

    flaky.set_status(Some(503));
    eventually(
        "the stale entry answers for the failing upstream",
        SYNC,
        || async {
            let r = gw.get("/stale/prices", &[]).await?;
            anyhow::ensure!(r.cache() == "STALE", "{r:?}");
            anyhow::ensure!(r.status == 200 && r.body == first.body, "{r:?}");
            Ok(())
        },
    )
    .await?;
    // An upstream that does not answer in time (the route's 1 s) is an error too.
    flaky.set_status(None);
    let slow = gw
        .get("/stale/prices", &[("x-test-delay-ms", "1500")])
        .await?;
    assert_eq!((slow.status, slow.cache()), (200, "STALE"), "{slow:?}");
    // Beyond the window the error goes through.
    flaky.set_status(Some(503));
    eventually(
        "past the window, the error",
        Duration::from_secs(10),
        || async {
            let r = gw.get("/stale/prices", &[]).await?;
            anyhow::ensure!(r.status == 503, "{r:?}");
            Ok(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_dead_response_cache_leaves_requests_uncached_but_served() -> anyhow::Result<()> {
    let (app, flaky) = upstreams().await?;
    let mut gw = Gateway::start(&app, &flaky, Options::default()).await?;
    assert_eq!(gw.get("/local/x", &[FRESH]).await?.cache(), "MISS");
    gw.cache.proc.kill();
    let before = app.hits();
    for _ in 0..3 {
        let r = gw.get("/local/x", &[FRESH]).await?;
        assert_eq!((r.status, r.x_cache.as_deref()), (200, None), "{r:?}");
    }
    assert_eq!(app.hits() - before, 3);
    Ok(())
}
