//! Logging and monitoring end to end (issue 6): after known traffic through a real Envoy with
//! ext-authz, ratelimit-service and a real OIDC provider, the access log, Envoy's Prometheus
//! output (through the stats listener) and the services' `/metrics` all count exactly that
//! traffic; spans from Envoy and ext-authz share the client's trace id; a collector that is
//! down costs no request; xds-server's fleet view counts what the Envoys stream to it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use vrata_e2e::oidc::{ORDERS_CLIENT, Oidc};
use vrata_e2e::otlp::OtlpReceiver;
use vrata_e2e::ports::free_port;
use vrata_e2e::prom::{self, Exposition};
use vrata_e2e::stack::SYNC;
use vrata_e2e::{Ads, ExtAuthz, RateLimitService, Stack, Upstream, eventually};

/// The access log fields docs/observability.md documents as stable, in its order.
const LOG_FIELDS: &[&str] = &[
    "time",
    "request_id",
    "client_address",
    "method",
    "authority",
    "path",
    "protocol",
    "route",
    "upstream_cluster",
    "upstream_host",
    "status",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration_ms",
    "upstream_service_time_ms",
    "trace_id",
    "authz",
    "rate_limit",
];

/// Known traffic: N OK, M no route (404), K without a token (401), L over the limit (429).
/// The limited route admits `LIMIT` requests first, which are OK too.
const N: usize = 5;
const M: usize = 3;
const K: usize = 4;
const L: usize = 3;
const LIMIT: usize = 2;

struct Gateway {
    stack: Stack,
    authz: ExtAuthz,
    rl: RateLimitService,
    stats_port: u16,
    _oidc: Oidc,
}

/// `/ok` public, `/orders` needs a token with `orders:read`, `/limited` admits [`LIMIT`] a
/// minute; tracing to `otlp` when given.
async fn gateway(upstream: &Upstream, otlp: Option<&str>) -> anyhow::Result<Gateway> {
    let oidc = Oidc::start("demo").await?;
    let authz_port = free_port();
    let rl_port = free_port();
    let stats_port = free_port();
    let tracing = otlp
        .map(|e| format!("  tracing: {{otlp_endpoint: \"{e}\", service_name: vrata-gateway, sample_ratio: 1.0}}\n"))
        .unwrap_or_default();
    let yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
upstreams:
  app: {{endpoints: ["{endpoint}"]}}
auth:
  providers:
    demo: {{issuer: "{issuer}", audiences: [api-gateway], roles_claims: [realm_access.roles]}}
services:
  ext_authz: "127.0.0.1:{authz_port}"
  ratelimit: "127.0.0.1:{rl_port}"
  timeout: 1s
observability:
  prometheus: {{address: "127.0.0.1:{stats_port}"}}
{tracing}routes:
  - name: ok
    match: {{path_prefix: /ok}}
    upstream: app
  - name: orders
    match: {{path_prefix: /orders}}
    upstream: app
    auth: {{provider: demo, roles: {{any_of: ["orders:read"]}}}}
  - name: limited
    match: {{path_prefix: /limited}}
    upstream: app
    rate_limit: [{{name: per-route, limit: {LIMIT}, per: 1m, key: route}}]
"#,
        endpoint = upstream.endpoint(),
        issuer = oidc.issuer,
    );
    let stack = Stack::start(&yaml).await?;
    let extra: Vec<String> = otlp
        .map(|e| vec!["--otlp-endpoint".to_owned(), e.to_owned()])
        .unwrap_or_default();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let authz = ExtAuthz::start_with(
        "ext-authz",
        stack.xds.grpc_port,
        authz_port,
        stack.dir.path(),
        &extra,
    )
    .await?;
    let rl = RateLimitService::start(
        "ratelimit",
        stack.xds.grpc_port,
        rl_port,
        stack.dir.path(),
        &[],
    )
    .await?;
    stack.xds.wait_in_sync(1, SYNC).await?;
    Ok(Gateway {
        stack,
        authz,
        rl,
        stats_port,
        _oidc: oidc,
    })
}

async fn status_of(g: &Gateway, path: &str) -> anyhow::Result<u16> {
    Ok(g.stack.get(path).await?.status().as_u16())
}

async fn send_known_traffic(g: &Gateway) -> anyhow::Result<()> {
    for i in 0..N {
        assert_eq!(status_of(g, &format!("/ok/{i}")).await?, 200);
    }
    for i in 0..M {
        assert_eq!(status_of(g, &format!("/nowhere/{i}")).await?, 404);
    }
    for _ in 0..K {
        assert_eq!(status_of(g, "/orders").await?, 401);
    }
    for i in 0..LIMIT + L {
        let expected = if i < LIMIT { 200 } else { 429 };
        assert_eq!(status_of(g, "/limited").await?, expected, "request {i}");
    }
    Ok(())
}

async fn scrape(url: &str) -> anyhow::Result<Exposition> {
    let r = vrata_e2e::stack::client().get(url).send().await?;
    anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
    let text = r.text().await?;
    prom::parse(&text).map_err(|e| anyhow::anyhow!("{url}: {e:#}"))
}

fn by_status(lines: &[Value]) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for l in lines {
        *out.entry(l["status"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn known_traffic_is_counted_exactly_in_logs_and_metrics() -> anyhow::Result<()> {
    let upstream = Upstream::start("app").await?;
    let g = gateway(&upstream, None).await?;
    // The fleet's history counts from Envoy's first stats flush on (that one is the
    // baseline, its series point empty): wait for it before any traffic.
    eventually("Envoy's first stats flush", SYNC, || async {
        let f: Value = g.stack.xds.get("/admin/fleet").await?.json().await?;
        anyhow::ensure!(
            f["nodes"][0]["series"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            "no report yet: {f}"
        );
        Ok(())
    })
    .await?;
    send_known_traffic(&g).await?;
    let envoy = &g.stack.envoys[0];
    let total = N + M + K + LIMIT + L;

    // Access log: exactly one line per request, with every documented field.
    let lines = eventually("every request logged", SYNC, || async {
        let lines = envoy.access_log();
        anyhow::ensure!(lines.len() >= total, "{} lines so far", lines.len());
        Ok(lines)
    })
    .await?;
    assert_eq!(lines.len(), total, "{lines:#?}");
    for l in &lines {
        let keys: Vec<&str> = l
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut expected = LOG_FIELDS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "fields of {l}");
        assert!(l["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(l["duration_ms"].is_u64());
        assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(l["client_address"], "127.0.0.1");
        assert_eq!(l["method"], "GET");
        assert!(l["trace_id"].is_null(), "tracing is off here");
    }
    assert_eq!(
        by_status(&lines),
        BTreeMap::from([(200, N + LIMIT), (401, K), (404, M), (429, L)])
    );
    for l in &lines {
        let path = l["path"].as_str().unwrap_or_default();
        match l["status"].as_u64() {
            Some(200) if path.starts_with("/ok") => {
                assert_eq!(l["route"], "ok");
                assert_eq!(l["upstream_cluster"], "app");
                assert_eq!(l["upstream_host"], upstream.endpoint());
                assert_eq!(l["response_flags"], "-");
                assert!(l["upstream_service_time_ms"].is_u64());
                assert!(l["authz"].is_null() && l["rate_limit"].is_null());
            }
            Some(200) => {
                assert_eq!(l["route"], "limited");
                assert_eq!(l["rate_limit"], "ok");
            }
            Some(404) => {
                assert!(l["route"].is_null());
                assert_eq!(l["response_flags"], "NR");
            }
            Some(401) => {
                assert_eq!(l["route"], "orders");
                assert_eq!(l["authz"], "missing_token");
                assert_eq!(l["response_flags"], "UAEX");
                assert!(l["upstream_host"].is_null());
            }
            Some(429) => {
                assert_eq!(l["route"], "limited");
                assert_eq!(l["rate_limit"], "over_limit");
                assert_eq!(l["response_flags"], "RL");
            }
            other => panic!("unexpected status {other:?}: {l}"),
        }
    }

    // Envoy's Prometheus output, through the stats listener only.
    let stats = format!("http://127.0.0.1:{}", g.stats_port);
    let e = scrape(&format!("{stats}/stats/prometheus")).await?;
    let hcm = [("envoy_http_conn_manager_prefix", "public")];
    let class = |c: &'static str| {
        [
            ("envoy_http_conn_manager_prefix", "public"),
            ("envoy_response_code_class", c),
        ]
    };
    assert_eq!(
        e.get("envoy_http_downstream_rq_completed", &hcm)?,
        total as f64
    );
    assert_eq!(
        e.get("envoy_http_downstream_rq_xx", &class("2"))?,
        (N + LIMIT) as f64
    );
    assert_eq!(
        e.get("envoy_http_downstream_rq_xx", &class("4"))?,
        (M + K + L) as f64
    );
    assert_eq!(
        e.get_or_zero("envoy_http_downstream_rq_xx", &class("5"))?,
        0.0
    );
    assert_eq!(e.get("envoy_http_ext_authz_denied", &hcm)?, K as f64);
    let app = [("envoy_cluster_name", "app")];
    assert_eq!(e.get("envoy_cluster_ratelimit_over_limit", &app)?, L as f64);
    assert_eq!(e.get("envoy_cluster_ext_authz_denied", &app)?, K as f64);
    assert_eq!(
        e.get(
            "envoy_vhost_route_upstream_rq_total",
            &[("envoy_route", "ok")]
        )?,
        N as f64
    );
    assert_eq!(
        e.get("envoy_cluster_upstream_rq_completed", &app)?,
        (N + LIMIT) as f64
    );
    // Nothing else of the admin is reachable there.
    let http = vrata_e2e::stack::client();
    for path in [
        "/config_dump",
        "/stats",
        "/clusters",
        "/",
        "/stats/prometheus/x",
    ] {
        let r = http.get(format!("{stats}{path}")).send().await?;
        assert_eq!(r.status(), 404, "{path}");
    }
    for path in ["/quitquitquit", "/stats/prometheus"] {
        let r = http.post(format!("{stats}{path}")).send().await?;
        assert_eq!(r.status(), 404, "POST {path}");
    }
    assert_eq!(
        envoy.admin("/ready").await?.status(),
        200,
        "Envoy still runs"
    );

    // The services' own metrics.
    let authz = scrape(&format!("http://127.0.0.1:{}/metrics", g.authz.admin_port)).await?;
    assert_eq!(
        authz.get(
            "vrata_authz_decisions_total",
            &[("route", "orders"), ("result", "unauthenticated")]
        )?,
        K as f64
    );
    assert_eq!(authz.sum("vrata_authz_decisions_total", &[]), K as f64);
    let rl = scrape(&format!("http://127.0.0.1:{}/metrics", g.rl.admin_port)).await?;
    let limited = |result| {
        [
            ("route", "limited"),
            ("limit", "per-route"),
            ("result", result),
        ]
    };
    assert_eq!(
        rl.get("vrata_ratelimit_decisions_total", &limited("ok"))?,
        LIMIT as f64
    );
    assert_eq!(
        rl.get("vrata_ratelimit_decisions_total", &limited("over_limit"))?,
        L as f64
    );
    let xds = scrape(&format!(
        "http://127.0.0.1:{}/metrics",
        g.stack.xds.admin_port
    ))
    .await?;
    assert!(xds.sum("vrata_config_reloads_total", &[("result", "success")]) >= 1.0);

    // The fleet view counts the same traffic from what Envoy streamed to xds-server.
    let fleet = eventually("the fleet view to count the traffic", SYNC, || async {
        let f: Value = g.stack.xds.get("/admin/fleet").await?.json().await?;
        let entity = |kind: &str, name: &str| {
            f["entities"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["kind"] == kind && e["name"] == name))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let public = entity("listener", "public");
        anyhow::ensure!(
            public["totals"]["requests"] == total as f64,
            "listener public: {public}"
        );
        let app = entity("upstream", "app");
        anyhow::ensure!(
            app["totals"]["rate_limited"] == L as f64,
            "upstream app: {app}"
        );
        Ok(f)
    })
    .await?;
    let node = &fleet["nodes"][0];
    assert_eq!(node["node_id"], envoy.node_id);
    assert!(
        node["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("envoy 1.40"))
    );
    let entities = fleet["entities"].as_array().cloned().unwrap_or_default();
    let get = |kind: &str, name: &str| {
        entities
            .iter()
            .find(|e| e["kind"] == kind && e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        get("listener", "public")["totals"]["status_4xx"],
        (M + K + L) as f64
    );
    assert_eq!(
        get("listener", "public")["totals"]["authz_denied"],
        K as f64
    );
    assert_eq!(
        get("upstream", "app")["totals"]["requests"],
        (N + LIMIT) as f64
    );
    assert_eq!(get("route", "ok")["totals"]["requests"], N as f64);
    // The history has it too: Envoy's first flush (before any traffic) was the baseline.
    let in_series: f64 = get("listener", "public")["series"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["requests"].as_f64()).sum())
        .unwrap_or(0.0);
    assert_eq!(in_series, total as f64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_share_the_clients_trace_and_a_dead_collector_costs_no_request() -> anyhow::Result<()>
{
    let upstream = Upstream::start("app").await?;
    let receiver = OtlpReceiver::start().await?;
    let g = gateway(&upstream, Some(&receiver.endpoint())).await?;
    let token = g._oidc.token(ORDERS_CLIENT, None).await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let r = g
        .stack
        .http()
        .get(g.stack.url("/orders/1"))
        .header("authorization", format!("Bearer {token}"))
        .header("traceparent", &traceparent)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await?;
    // W3C trace context reaches the upstream, in the client's trace, under Envoy's span.
    let upstream_tp = echo["headers"]["traceparent"].as_str().unwrap_or_default();
    assert!(
        upstream_tp.starts_with(&format!("00-{trace_id}-")),
        "upstream saw traceparent {upstream_tp:?}"
    );
    assert!(!upstream_tp.contains("00f067aa0ba902b7"));

    let spans = receiver
        .wait_trace(trace_id, &["vrata-gateway", "ext-authz"], SYNC)
        .await?;
    let check = spans
        .iter()
        .find(|s| s.service == "ext-authz")
        .expect("waited for");
    assert_eq!(check.name, "ext_authz Check");
    // ext-authz's span continues a span Envoy reported in the same trace.
    assert!(
        spans
            .iter()
            .any(|s| s.service == "vrata-gateway" && s.span_id == check.parent_span_id),
        "ext-authz's parent {} is not one of Envoy's spans: {spans:#?}",
        check.parent_span_id
    );
    let logged = eventually("the traced request's log line", SYNC, || async {
        g.stack.envoys[0]
            .access_log()
            .into_iter()
            .find(|l| l["path"] == "/orders/1")
            .ok_or_else(|| anyhow::anyhow!("not logged yet"))
    })
    .await?;
    assert_eq!(logged["trace_id"], trace_id);
    assert_eq!(logged["authz"], "allowed");

    // The collector goes away: requests are answered as before, spans are lost.
    receiver.stop();
    for i in 0..20 {
        let r = g
            .stack
            .http()
            .get(g.stack.url("/orders/2"))
            .header("authorization", format!("Bearer {token}"))
            .header(
                "traceparent",
                format!("00-{:032x}-00f067aa0ba902b7-01", i + 1),
            )
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        assert_eq!(r.status(), 200, "request {i} with the collector down");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_envoys_stream_their_stats_to_the_fleet_view() -> anyhow::Result<()> {
    let upstream = Upstream::start("app").await?;
    let yaml = format!(
        "listeners:\n  - name: public\n    address: \"127.0.0.1:{{port}}\"\nupstreams:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - name: ok\n    match: {{path_prefix: /}}\n    upstream: app\n",
        upstream.endpoint()
    );
    let stack = Stack::start_with(&yaml, &[Ads::StateOfTheWorld, Ads::Delta]).await?;
    eventually("both Envoys reporting", SYNC, || async {
        let f: Value = stack.xds.get("/admin/fleet").await?.json().await?;
        let nodes = f["nodes"].as_array().map(Vec::len).unwrap_or(0);
        anyhow::ensure!(nodes == 2, "{nodes} nodes: {f}");
        Ok(())
    })
    .await?;
    // Envoys share the listener port (SO_REUSEPORT): count per node from each Envoy's admin.
    for _ in 0..10 {
        assert_eq!(stack.get("/x").await?.status(), 200);
    }
    let mut per_node = BTreeMap::new();
    for e in &stack.envoys {
        per_node.insert(
            e.node_id.clone(),
            e.stat("http.public.downstream_rq_completed").await?,
        );
    }
    assert_eq!(per_node.values().sum::<u64>(), 10);
    eventually("the fleet view to match each Envoy", SYNC, || async {
        let f: Value = stack.xds.get("/admin/fleet").await?.json().await?;
        for n in f["nodes"].as_array().cloned().unwrap_or_default() {
            let id = n["node_id"].as_str().unwrap_or_default();
            anyhow::ensure!(
                n["requests_total"].as_f64() == per_node.get(id).map(|v| *v as f64),
                "node {id}: {n} vs {per_node:?}"
            );
            anyhow::ensure!(n["streaming"] == true);
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// The dashboard as a person sees it: headless Chromium shows both Envoys with their version,
/// the counts rise after traffic, no console errors; the screenshot is kept in
/// `target/test-artifacts/dashboard.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_both_envoys_and_rising_counts_in_chromium() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = vrata_e2e::browser::ensure_installed()?;
    let screenshot = vrata_e2e::browser::artifacts()?.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let upstream = Upstream::start("app").await?;
    let yaml = format!(
        "listeners:\n  - name: public\n    address: \"127.0.0.1:{{port}}\"\nupstreams:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - name: ok\n    match: {{path_prefix: /}}\n    upstream: app\n",
        upstream.endpoint()
    );
    let stack = Stack::start_with(&yaml, &[Ads::StateOfTheWorld, Ads::Delta]).await?;
    const TRAFFIC: usize = 20;
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .args([
            "--url",
            &format!("http://127.0.0.1:{}/", stack.xds.admin_port),
        ])
        .args(["--nodes", "2", "--expect-increase", &TRAFFIC.to_string()])
        .arg("--screenshot")
        .arg(&screenshot)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut output = Vec::new();
    let run = async {
        // Traffic only once the page shows the baseline.
        while let Some(line) = lines.next_line().await? {
            output.push(line.clone());
            if line.starts_with("BASELINE") {
                for i in 0..TRAFFIC {
                    assert_eq!(stack.get(&format!("/r/{i}")).await?.status(), 200);
                }
            }
        }
        anyhow::Ok(child.wait_with_output().await?)
    };
    let done = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .map_err(|_| anyhow::anyhow!("the browser check did not finish"))??;
    let report = output.join("\n");
    assert!(
        done.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(report.contains("INCREASED"), "{report}");
    let versions = output
        .iter()
        .find_map(|l| l.strip_prefix("VERSIONS "))
        .unwrap_or_default();
    assert_eq!(versions.matches("envoy 1.40.").count(), 2, "{report}");
    let png = std::fs::read(&screenshot)?;
    assert!(
        png.starts_with(b"\x89PNG"),
        "a screenshot at {}",
        screenshot.display()
    );
    Ok(())
}
