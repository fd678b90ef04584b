//! Load balancing and upstream resilience through a real Envoy: weights, consistent hashing,
//! active health checks, retries, timeouts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use vrata_e2e::{Stack, Upstream, eventually};

async fn upstream_of(s: &Stack, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut req = s.http().get(s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await?;
    anyhow::ensure!(r.status() == 200, "{path}: status {}", r.status());
    let v: Value = r.json().await?;
    Ok(v["upstream"].as_str().unwrap_or_default().to_owned())
}

fn listener() -> &'static str {
    "listeners:\n  - name: public\n    address: \"127.0.0.1:{port}\"\n"
}

#[tokio::test]
async fn weights_3_to_1_split_traffic_75_25() -> anyhow::Result<()> {
    let heavy = Upstream::start("heavy").await?;
    let light = Upstream::start("light").await?;
    let yaml = format!(
        "{}upstreams:\n  w:\n    endpoints: [{{address: \"{}\", weight: 3}}, {{address: \"{}\", weight: 1}}]\nroutes:\n  - name: all\n    upstream: w\n",
        listener(),
        heavy.endpoint(),
        light.endpoint()
    );
    let s = Stack::start(&yaml).await?;
    for _ in 0..1000 {
        upstream_of(&s, "/", &[]).await?;
    }
    let (h, l) = (heavy.hits(), light.hits());
    assert_eq!(h + l, 1000);
    assert!(
        (700..=800).contains(&h),
        "heavy got {h}, light {l}: expected 750 ± 50"
    );
    Ok(())
}

#[tokio::test]
async fn ring_hash_keeps_a_header_value_on_one_endpoint() -> anyhow::Result<()> {
    let ups = [
        Upstream::start("rh-1").await?,
        Upstream::start("rh-2").await?,
        Upstream::start("rh-3").await?,
    ];
    let eps: Vec<String> = ups
        .iter()
        .map(|u| format!("\"{}\"", u.endpoint()))
        .collect();
    let yaml = format!(
        "{}upstreams:\n  rh:\n    endpoints: [{}]\n    balance: ring_hash\n    hash_on: \"header:x-user-id\"\nroutes:\n  - name: all\n    upstream: rh\n",
        listener(),
        eps.join(", ")
    );
    let s = Stack::start(&yaml).await?;
    let mut placement: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..10 {
        for user in 0..12 {
            let id = format!("user-{user}");
            let got = upstream_of(&s, "/", &[("x-user-id", &id)]).await?;
            let first = placement.entry(id.clone()).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "{id} moved in round {round}");
        }
    }
    let distinct: std::collections::BTreeSet<&String> = placement.values().collect();
    assert!(
        distinct.len() >= 2,
        "12 users all hashed to one endpoint: {placement:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_endpoint_failing_its_health_check_stops_getting_traffic() -> anyhow::Result<()> {
    let sick = Upstream::start("sick").await?;
    let well = Upstream::start("well").await?;
    let yaml = format!(
        "{}upstreams:\n  hc:\n    endpoints: [\"{}\", \"{}\"]\n    health_check: {{path: /healthz, interval: 200ms, timeout: 150ms, healthy_after: 1, unhealthy_after: 1}}\nroutes:\n  - name: all\n    upstream: hc\n",
        listener(),
        sick.endpoint(),
        well.endpoint()
    );
    let s = Stack::start(&yaml).await?;
    let envoy = &s.envoys[0];
    eventually(
        "both endpoints healthy",
        Duration::from_secs(10),
        || async {
            let n = envoy.stat("cluster.hc.membership_healthy").await?;
            anyhow::ensure!(n == 2, "{n} healthy");
            Ok(())
        },
    )
    .await?;
    sick.set_healthy(false);
    eventually(
        "the sick endpoint ejected",
        Duration::from_secs(10),
        || async {
            let n = envoy.stat("cluster.hc.membership_healthy").await?;
            anyhow::ensure!(n == 1, "{n} healthy");
            Ok(())
        },
    )
    .await?;
    let before = sick.hits();
    for _ in 0..40 {
        assert_eq!(upstream_of(&s, "/", &[]).await?, "well");
    }
    assert_eq!(
        sick.hits(),
        before,
        "the unhealthy endpoint still got requests"
    );
    assert!(sick.health_checks() > 0);
    Ok(())
}

#[tokio::test]
async fn retries_on_503_reach_another_endpoint() -> anyhow::Result<()> {
    let broken = Upstream::start("broken").await?;
    let fine = Upstream::start("fine").await?;
    broken.set_status(Some(503));
    let yaml = format!(
        "{}upstreams:\n  r:\n    endpoints: [\"{}\", \"{}\"]\nroutes:\n  - name: all\n    upstream: r\n    retries: {{attempts: 2, retry_on: [\"503\"]}}\n",
        listener(),
        broken.endpoint(),
        fine.endpoint()
    );
    let s = Stack::start(&yaml).await?;
    for i in 0..30 {
        let r = s.get("/").await?;
        assert_eq!(
            r.status(),
            200,
            "request {i} was not retried onto the healthy endpoint"
        );
    }
    assert!(broken.hits() > 0, "the broken endpoint was never tried");
    // Without retries the same failure reaches the client: POST is not idempotent.
    let mut failed = 0;
    for _ in 0..10 {
        if s.http().post(s.url("/")).send().await?.status() == 503 {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "POST requests were retried although POST is not idempotent"
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_upstream_gives_504_problem_json_at_the_timeout() -> anyhow::Result<()> {
    let slow = Upstream::start("slow").await?;
    let yaml = format!(
        "{}upstreams:\n  slow: {{endpoints: [\"{}\"]}}\nroutes:\n  - name: all\n    upstream: slow\n    timeout: 300ms\n",
        listener(),
        slow.endpoint()
    );
    let s = Stack::start(&yaml).await?;
    let started = Instant::now();
    let r = s
        .http()
        .get(s.url("/"))
        .header("x-test-delay-ms", "3000")
        .send()
        .await?;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await?;
    assert_eq!(body["status"], 504, "{body}");
    assert_eq!(body["type"], "urn:vrata:error:upstream-timeout", "{body}");
    Ok(())
}
