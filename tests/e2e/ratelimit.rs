//! Rate limits end to end: real Envoys, xds-server, ratelimit-service (limits over ADS) and a
//! real redis-server or 3-master Redis Cluster. Counts are exact: every assertion is on the
//! number of 200s and 429s, never on timing.

use std::time::{Duration, Instant};

use serde_json::Value;
use vrata_e2e::ports::free_port;
use vrata_e2e::redis::{RedisCluster, RedisServer};
use vrata_e2e::stack::SYNC;
use vrata_e2e::{RateLimitService, Stack, Upstream, eventually};

/// One gateway instance: xds-server, one Envoy and its own ratelimit-service.
struct Gateway {
    stack: Stack,
    rl: RateLimitService,
}

impl Gateway {
    /// `routes` is the YAML of the `routes:` list (and anything after it); `store` the
    /// `rate_limits:` section or "". `rl_args`: extra ratelimit-service flags (`--redis`).
    async fn start(
        upstream: &Upstream,
        routes: &str,
        store: &str,
        rl_args: &[&str],
    ) -> anyhow::Result<Self> {
        let rl_port = free_port();
        let yaml = config(upstream, rl_port, routes, store);
        let stack = Stack::start(&yaml).await?;
        let rl = RateLimitService::start(
            "ratelimit",
            stack.xds.grpc_port,
            rl_port,
            stack.dir.path(),
            rl_args,
        )
        .await?;
        stack.xds.wait_in_sync(1, SYNC).await?;
        Ok(Self { stack, rl })
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
        let mut req = self.stack.http().get(self.stack.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(req.send().await?)
    }

    /// Sends `n` requests; returns how many passed (200) and checks every other one is a 429.
    async fn count_passed(
        &self,
        path: &str,
        n: usize,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<usize> {
        let mut passed = 0;
        for _ in 0..n {
            let r = self.get(path, headers).await?;
            match r.status().as_u16() {
                200 => passed += 1,
                429 => {}
                other => anyhow::bail!("unexpected status {other}: {}", r.text().await?),
            }
        }
        Ok(passed)
    }
}

fn config(upstream: &Upstream, rl_port: u16, routes: &str, store: &str) -> String {
    format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
upstreams:
  app: {{endpoints: ["{endpoint}"]}}
services:
  ratelimit: "127.0.0.1:{rl_port}"
  timeout: 1s
  ratelimit_failure: deny
{store}
routes:
{routes}"#,
        endpoint = upstream.endpoint()
    )
}

/// A route `/name` to the upstream with one limit.
fn route(name: &str, limit: u64, per: &str, key: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{path_prefix: /{name}}}\n    upstream: app\n    rate_limit:\n      - {{name: l, limit: {limit}, per: {per}, key: \"{key}\"}}\n"
    )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn ten_per_two_seconds_admits_exactly_ten_then_recovers() -> anyhow::Result<()> {
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &route("ten", 10, "2s", "route"), "", &[]).await?;

    let mut passed = 0;
    let mut refused = Vec::new();
    let started = Instant::now();
    for _ in 0..30 {
        let r = gw.get("/ten", &[]).await?;
        match r.status().as_u16() {
            200 => passed += 1,
            429 => refused.push(r),
            other => anyhow::bail!("unexpected status {other}"),
        }
    }
    // The 30 requests must fit in one window for "exactly 10" to be the promise.
    anyhow::ensure!(
        started.elapsed() < Duration::from_secs(2),
        "30 requests took {:?}: too slow to test a 2 s window",
        started.elapsed()
    );
    assert_eq!(passed, 10, "exactly the limit passes");
    assert_eq!(refused.len(), 20);

    let r = refused.pop().expect("a refused request");
    let retry_after: u64 = header(&r, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("delay-seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&r, "ratelimit-policy"), Some("\"l\";q=10;w=2"));
    let ratelimit = header(&r, "ratelimit").expect("RateLimit");
    assert!(
        ratelimit.starts_with("\"l\";r=0;t="),
        "RateLimit {ratelimit}"
    );
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    assert!(header(&r, "x-envoy-ratelimited").is_none());
    let body: Value = r.json().await?;
    assert_eq!(body["type"], "urn:vrata:error:rate-limited");
    assert_eq!(body["status"], 429);
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    // An admitted response carries the quota headers too.
    // After the window, requests pass again (a refused request consumed nothing).
    let r = eventually(
        "a request to pass after the window",
        Duration::from_secs(5),
        || async {
            let r = gw.get("/ten", &[]).await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            Ok(r)
        },
    )
    .await?;
    assert_eq!(header(&r, "ratelimit-policy"), Some("\"l\";q=10;w=2"));
    assert!(header(&r, "ratelimit").is_some());
    Ok(())
}

/// Two gateway instances, each an xds-server + Envoy + ratelimit-service, on one store.
async fn two_instances(
    store: &str,
    rl_args: &[&str],
) -> anyhow::Result<(Upstream, Gateway, Gateway)> {
    let up = Upstream::start("app").await?;
    let routes = format!(
        "{}{}",
        route("shared", 20, "1h", "route"),
        route("after", 20, "1h", "route")
    );
    let a = Gateway::start(&up, &routes, store, rl_args).await?;
    let b = Gateway::start(&up, &routes, store, rl_args).await?;
    Ok((up, a, b))
}

async fn alternate(a: &Gateway, b: &Gateway, path: &str, n: usize) -> anyhow::Result<usize> {
    let mut passed = 0;
    for i in 0..n {
        let gw = if i % 2 == 0 { a } else { b };
        passed += gw.count_passed(path, 1, &[]).await?;
    }
    Ok(passed)
}

#[tokio::test]
async fn two_instances_sharing_one_redis_admit_exactly_the_limit() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    // The store comes from the gateway file here (the cluster test uses --redis).
    let store = format!("rate_limits:\n  store: {{redis: \"{}\"}}\n", redis.url());
    let (_up, a, b) = two_instances(&store, &[]).await?;
    assert_eq!(alternate(&a, &b, "/shared", 40).await?, 20);
    Ok(())
}

#[tokio::test]
async fn two_instances_sharing_a_redis_cluster_admit_exactly_the_limit() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    let urls = cluster.urls().join(",");
    let (_up, a, b) = two_instances("", &["--redis", &urls]).await?;
    assert_eq!(alternate(&a, &b, "/shared", 40).await?, 20);
    Ok(())
}

#[tokio::test]
async fn redis_down_keeps_limits_per_instance_and_shared_counting_resumes() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let (_up, a, b) = two_instances("", &["--redis", &redis.url()]).await?;
    // Shared: 10 alternating requests consume 10 of the 20.
    assert_eq!(alternate(&a, &b, "/shared", 10).await?, 10);

    redis.kill();
    // Each instance now counts alone, with the same limit: 20 each of 25, not unlimited.
    assert_eq!(a.count_passed("/shared", 25, &[]).await?, 20);
    assert_eq!(b.count_passed("/shared", 25, &[]).await?, 20);
    a.rl.wait_fallback(true, SYNC).await?;
    b.rl.wait_fallback(true, SYNC).await?;

    // Redis back (empty, as after a crash): both services find it again by themselves.
    redis.restart().await?;
    a.rl.wait_fallback(false, SYNC).await?;
    b.rl.wait_fallback(false, SYNC).await?;
    assert_eq!(
        alternate(&a, &b, "/after", 40).await?,
        20,
        "shared counting again"
    );
    Ok(())
}

#[tokio::test]
async fn a_changed_limit_applies_within_a_second_and_unchanged_counters_survive()
-> anyhow::Result<()> {
    let up = Upstream::start("app").await?;
    let routes = |changed_limit: u64| {
        format!(
            "{}{}",
            route("kept", 5, "1h", "route"),
            route("changed", changed_limit, "1h", "route")
        )
    };
    let gw = Gateway::start(&up, &routes(3), "", &[]).await?;
    assert_eq!(gw.count_passed("/kept", 3, &[]).await?, 3);
    assert_eq!(gw.count_passed("/changed", 5, &[]).await?, 3);

    let old = gw.stack.xds.version().await?;
    let saved = Instant::now();
    gw.stack
        .write_config(&config(&up, gw.rl.grpc_port, &routes(6), ""))?;
    gw.stack.xds.wait_version_change(&old, SYNC).await?;
    // In sync = the Envoy and ratelimit-service both ACKed the new version.
    gw.stack.xds.wait_in_sync(1, SYNC).await?;
    let applied = saved.elapsed();
    assert!(
        applied < Duration::from_secs(1),
        "applied after {applied:?}"
    );

    // The changed limit starts afresh with its new value.
    assert_eq!(gw.count_passed("/changed", 8, &[]).await?, 6);
    // The unchanged one kept its counter: 2 of its 5 left.
    assert_eq!(gw.count_passed("/kept", 5, &[]).await?, 2);
    Ok(())
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_does_not_change_the_ip_key() -> anyhow::Result<()> {
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &route("ip", 3, "1h", "ip"), "", &[]).await?;
    let mut passed = 0;
    for i in 0..8 {
        let spoofed = format!("203.0.113.{i}");
        passed += gw
            .count_passed("/ip", 1, &[("x-forwarded-for", spoofed.as_str())])
            .await?;
    }
    assert_eq!(passed, 3, "every request counted as the one TCP peer");
    Ok(())
}

#[tokio::test]
async fn header_keys_give_separate_budgets() -> anyhow::Result<()> {
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &route("keyed", 2, "1h", "header:x-api-key"), "", &[]).await?;
    assert_eq!(
        gw.count_passed("/keyed", 3, &[("x-api-key", "alice")])
            .await?,
        2
    );
    assert_eq!(
        gw.count_passed("/keyed", 3, &[("x-api-key", "bob")])
            .await?,
        2
    );
    // Without the header: one budget shared by all such requests, not a way around the limit.
    assert_eq!(gw.count_passed("/keyed", 3, &[]).await?, 2);
    Ok(())
}

#[tokio::test]
async fn the_service_node_shows_on_admin_status_with_its_acked_version() -> anyhow::Result<()> {
    let up = Upstream::start("app").await?;
    let gw = Gateway::start(&up, &route("r", 1, "1s", "route"), "", &[]).await?;
    let status = gw.stack.xds.status().await?;
    let serving = status["current"]["type_versions"]["RLC"].clone();
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    let node = nodes
        .iter()
        .find(|n| n["node_id"] == gw.rl.node_id.as_str())
        .ok_or_else(|| anyhow::anyhow!("no ratelimit node in {status}"))?;
    assert_eq!(node["cluster"], "vrata-ratelimit");
    assert_eq!(node["types"]["RLC"]["acked_version"], serving);
    // Envoy never asked for vrata's own resources.
    let envoy = nodes
        .iter()
        .find(|n| n["node_id"] == "envoy-0")
        .ok_or_else(|| anyhow::anyhow!("no envoy node"))?;
    assert!(envoy["types"].get("RLC").is_none());
    Ok(())
}
