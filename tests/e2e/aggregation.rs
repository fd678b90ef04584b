//! Aggregation and response shaping end to end: a real Envoy, xds-server, the aggregator
//! (definitions over ADS, backend calls back through Envoy's loopback listener), echo
//! upstreams, and for the protected route ext-authz with the real `oidc-provider`. The gateway
//! config is `examples/aggregation.yaml` with its `${...}` addresses filled in. Times are
//! measured around requests and compared with budgets; nothing sleeps to wait.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vrata_e2e::oidc::{ORDERS_CLIENT, Oidc};
use vrata_e2e::ports::free_port;
use vrata_e2e::stack::SYNC;
use vrata_e2e::{Aggregator, ExtAuthz, Stack, Upstream, eventually};

/// Time a loaded machine may add to an answer beyond its budget (two Envoy hops, the
/// aggregator, the echo server).
const MARGIN: Duration = Duration::from_millis(400);

struct Gateway {
    stack: Stack,
    aggregator: Aggregator,
    users: Upstream,
    orders: Upstream,
    reco: Upstream,
    _authz: Option<ExtAuthz>,
}

/// `examples/aggregation.yaml` with `${NAME:-default}` replaced by `values[NAME]` (or the
/// default), and the listener on the stack's port.
fn example(values: &BTreeMap<&str, String>) -> anyhow::Result<String> {
    let path = vrata_e2e::paths::repo_root().join("examples/aggregation.yaml");
    let mut text = std::fs::read_to_string(&path)?;
    while let Some(start) = text.find("${") {
        let len = text[start..]
            .find('}')
            .ok_or_else(|| anyhow::anyhow!("unclosed ${{ in {}", path.display()))?;
        let inner = &text[start + 2..start + len];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        let value = values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned());
        text.replace_range(start..=start + len, &value);
    }
    Ok(text)
}

impl Gateway {
    /// With `oidc`, ext-authz runs too (the protected route).
    async fn start(oidc: Option<&Oidc>) -> anyhow::Result<Self> {
        let users = Upstream::start("users").await?;
        let orders = Upstream::start("orders").await?;
        let reco = Upstream::start("reco").await?;
        let aggregator_port = free_port();
        let authz_port = free_port();
        let values = BTreeMap::from([
            ("VRATA_LISTEN", "127.0.0.1:{port}".to_owned()),
            ("VRATA_USERS", users.endpoint()),
            ("VRATA_ORDERS", orders.endpoint()),
            ("VRATA_RECO", reco.endpoint()),
            (
                "VRATA_ISSUER",
                oidc.map_or_else(
                    || "http://127.0.0.1:9/realms/none".to_owned(),
                    |o| o.issuer.clone(),
                ),
            ),
            ("VRATA_EXT_AUTHZ", format!("127.0.0.1:{authz_port}")),
            ("VRATA_AGGREGATOR", format!("127.0.0.1:{aggregator_port}")),
            ("VRATA_LOOPBACK", format!("127.0.0.1:{}", free_port())),
        ]);
        let stack = Stack::start(&example(&values)?).await?;
        let aggregator = Aggregator::start(
            "aggregator",
            stack.xds.grpc_port,
            aggregator_port,
            stack.dir.path(),
            &[],
        )
        .await?;
        let authz = match oidc {
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
        let gw = Self {
            stack,
            aggregator,
            users,
            orders,
            reco,
            _authz: authz,
        };
        // The loopback listener is up once a backend call goes through.
        eventually("an aggregate answers", SYNC, || async {
            let r = gw.get("/api/profile/1", &[]).await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", gw.aggregator.proc.logs()))?;
        Ok(gw)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
        let mut req = self.stack.http().get(self.stack.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(req.send().await?)
    }

    fn hits(&self) -> u64 {
        self.users.hits() + self.orders.hits() + self.reco.hits()
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn ok_json(r: reqwest::Response) -> anyhow::Result<(Option<String>, Value)> {
    let completed = header(&r, "x-vrata-completed").map(str::to_owned);
    anyhow::ensure!(
        r.status() == 200,
        "status {}: {}",
        r.status(),
        r.text().await?
    );
    Ok((completed, r.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_backends_merge_under_groups_with_a_chained_call_and_shaping() -> anyhow::Result<()> {
    let gw = Gateway::start(None).await?;
    let r = gw
        .get(
            "/api/dashboard/42",
            &[
                ("x-request-id", "req-dash-1"),
                ("authorization", "Bearer not-forwarded"),
            ],
        )
        .await?;
    let (completed, body) = ok_json(r).await?;
    assert_eq!(completed.as_deref(), Some("true"));
    // Groups nest each answer; the chained backend used `segment` from user's answer.
    assert_eq!(body["user"]["upstream"], "users");
    assert_eq!(body["user"]["path"], "/users/42?segment=gold");
    assert_eq!(body["orders"]["upstream"], "orders");
    assert_eq!(body["orders"]["path"], "/orders?user=42");
    assert_eq!(body["recommendations"]["upstream"], "reco");
    assert_eq!(body["recommendations"]["path"], "/reco/gold");
    // Shaping on nested data of the merged document: deny and rename.
    assert!(body["orders"].get("headers").is_none(), "{body}");
    assert!(body["user"]["headers"].get("accept").is_none(), "{body}");
    assert_eq!(body["user"]["query"], json!({"tier": "gold"}));
    // What a backend receives: the client's request id, not its Authorization (the route does
    // not forward it), and not the loopback routing header.
    let seen = &body["user"]["headers"];
    assert_eq!(seen["x-request-id"], "req-dash-1", "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert!(seen.get("x-vrata-upstream").is_none(), "{seen}");
    assert!(seen.get("x-vrata-aggregate").is_none(), "{seen}");
    // One call per backend, each through Envoy: the upstream cluster's stats count it.
    assert_eq!(gw.reco.hits(), 1);
    assert_eq!(
        gw.stack.envoys[0]
            .stat("cluster.reco.upstream_rq_total")
            .await?,
        1
    );

    let raw = gw.get("/api/users/42/segment", &[]).await?;
    let (_, segment) = ok_json(raw).await?;
    // `target` on an aggregate picks `user.query`; `deny` then removes `internal`.
    assert_eq!(segment, json!({"segment": "gold"}));

    // Metrics per aggregate and backend.
    let calls = gw
        .aggregator
        .metric(
            "vrata_aggregator_backend_calls_total",
            "route=\"dashboard\",backend=\"reco\"",
        )
        .await?;
    assert_eq!(calls, 1.0);
    let requests = gw
        .aggregator
        .metric(
            "vrata_aggregator_requests_total",
            "route=\"dashboard\",result=\"ok\"",
        )
        .await?;
    assert_eq!(requests, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_declared_backend_wins_a_collision_even_when_it_answers_first()
-> anyhow::Result<()> {
    let gw = Gateway::start(None).await?;
    for _ in 0..3 {
        let started = Instant::now();
        let (_, body) = ok_json(gw.get("/api/profile/9", &[]).await?).await?;
        // `account` (declared first) answered 150ms after `profile` and still lost.
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(
            body,
            json!({"upstream": "orders", "path": "/profiles/9", "query": {"plan": "pro"}})
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_an_optional_backend_past_its_timeout_and_a_required_one_past_the_aggregates()
-> anyhow::Result<()> {
    let gw = Gateway::start(None).await?;
    let started = Instant::now();
    let r = gw.get("/api/degraded/5", &[]).await?;
    let elapsed = started.elapsed();
    let (completed, body) = ok_json(r).await?;
    assert_eq!(completed.as_deref(), Some("false"));
    assert_eq!(body["orders"], Value::Null);
    assert_eq!(body["user"]["path"], "/users/5");
    // orders' own 300ms, well inside the aggregate's 1s.
    assert!(
        elapsed < Duration::from_millis(300) + MARGIN,
        "took {elapsed:?}"
    );
    assert!(elapsed >= Duration::from_millis(300), "took {elapsed:?}");

    let started = Instant::now();
    let r = gw
        .get("/api/too-slow/5", &[("x-request-id", "req-slow-1")])
        .await?;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    let problem: Value = r.json().await?;
    assert_eq!(problem["type"], "urn:vrata:error:backend-timeout");
    assert_eq!(problem["status"], 504);
    assert_eq!(problem["request_id"], "req-slow-1");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("`orders`"), "{detail}");
    assert!(!detail.contains("127.0.0.1"), "an address leaked: {detail}");
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(500) + MARGIN,
        "took {elapsed:?}"
    );
    let failures = gw
        .aggregator
        .metric(
            "vrata_aggregator_backend_failures_total",
            "route=\"dashboard-too-slow\",backend=\"orders\",reason=\"timeout\"",
        )
        .await?;
    assert_eq!(failures, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_routes_are_shaped_through_the_aggregator() -> anyhow::Result<()> {
    let gw = Gateway::start(None).await?;
    let (completed, body) = ok_json(
        gw.get("/api/cards/7?segment=gold&name=ann&secret=s3&other=x", &[])
            .await?,
    )
    .await?;
    // A passthrough keeps the upstream's own headers (no completion header of its own).
    assert_eq!(completed, None);
    // allow (nested), deny (nested), rename (nested); the route's rewrite still applied.
    assert_eq!(
        body,
        json!({"upstream": "users", "path": "/users/7?segment=gold&name=ann&secret=s3&other=x",
               "query": {"name": "ann", "tier": "gold"}})
    );
    // target.
    let (_, body) = ok_json(gw.get("/api/queries/3?a=1&b=2", &[]).await?).await?;
    assert_eq!(body, json!({"a": "1", "b": "2"}));
    // The client's Authorization goes on to the upstream of a plain route, as without shaping.
    let r = gw
        .get("/api/queries/3?x=1", &[("authorization", "Bearer abc")])
        .await?;
    assert_eq!(r.status(), 200);
    // The plain route without shaping answers directly (for comparison).
    let (_, plain) = ok_json(gw.get("/api/plain/x", &[]).await?).await?;
    assert_eq!(plain["path"], "/api/plain/x");
    assert!(plain["headers"].get("x-vrata-aggregate").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_with_auth_refuses_a_request_without_token_before_any_backend_call()
-> anyhow::Result<()> {
    let oidc = Oidc::start("demo").await?;
    let gw = Gateway::start(Some(&oidc)).await?;
    let before = gw.hits();
    let r = gw.get("/api/users/42/dashboard", &[]).await?;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    // A client's own route header changes nothing either.
    let r = gw
        .get(
            "/api/users/42/dashboard",
            &[("x-vrata-aggregate", "dashboard")],
        )
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(gw.hits(), before, "a backend was called");

    // With a token: the aggregate runs and the backends get the identity ext-authz set.
    let token = oidc.token(ORDERS_CLIENT, None).await?;
    let (_, body) = ok_json(
        gw.get(
            "/api/users/42/dashboard",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await?,
    )
    .await?;
    assert_eq!(body["user"]["path"], "/users/42?segment=gold");
    assert_eq!(body["recommendations"]["path"], "/reco/gold");
    // The identity ext-authz set reaches the backends; the token does not.
    assert!(
        body["user"]["headers"]["x-user-id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        body["user"]["headers"].get("authorization").is_none(),
        "{body}"
    );
    assert_eq!(gw.hits(), before + 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_applies_without_restart() -> anyhow::Result<()> {
    let gw = Gateway::start(None).await?;
    let (_, before) = ok_json(gw.get("/api/profile/4", &[]).await?).await?;
    assert_eq!(before["path"], "/profiles/4");
    let old = std::fs::read_to_string(&gw.stack.config)?;
    let new = old.replace("path: \"/profiles/{id}\"", "path: \"/profiles/v2/{id}\"");
    anyhow::ensure!(new != old, "the example's profile backend moved");
    gw.stack.write_config(&new)?;
    // The aggregator gets the new definitions over ADS; no process is restarted.
    eventually("the new backend path is used", SYNC, || async {
        let (_, body) = ok_json(gw.get("/api/profile/4", &[]).await?).await?;
        anyhow::ensure!(body["path"] == "/profiles/v2/4", "still {}", body["path"]);
        Ok(())
    })
    .await?;
    assert!(gw.aggregator.proc.logs().contains("definitions applied"));
    Ok(())
}
