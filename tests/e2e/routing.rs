//! Routing through a real Envoy: every match kind and its precedence, rewrites, header changes
//! both ways, `respond`, `redirect`, CORS, and the gateway's own problem+json errors.

use serde_json::Value;
use vrata_e2e::{Stack, Upstream};

async fn json(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let text = r.text().await?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("status {status}, not JSON ({e}): {text}"))
}

fn config(a: &Upstream, b: &Upstream) -> String {
    format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
upstreams:
  a: {{endpoints: ["{a}"]}}
  b: {{endpoints: ["{b}"]}}
routes:
  - name: exact
    match: {{path: /exact}}
    upstream: a
  - name: template
    match: {{path_template: "/users/{{id}}/orders/{{order}}"}}
    upstream: b
    rewrite: {{path_template: "/v2/orders/{{order}}/user/{{id}}"}}
  - name: regex
    match: {{path_regex: "^/re/[0-9]+$"}}
    upstream: b
  - name: by-header
    match: {{path_prefix: /variant, headers: {{x-variant: blue}}}}
    upstream: b
  - name: by-prefix
    match: {{path_prefix: /variant}}
    upstream: a
  - name: rewritten
    match: {{path_prefix: /api/a}}
    upstream: a
    rewrite: {{path_prefix: /internal}}
    request_headers: {{set: {{x-gateway: vrata}}, remove: [x-secret]}}
    response_headers: {{set: {{x-served-by: vrata}}, remove: [server, x-powered-by]}}
  - name: get-only
    match: {{path: /only-get, methods: [GET]}}
    upstream: a
  - name: post-only
    match: {{path: /only-get, methods: [POST]}}
    upstream: b
  - name: teapot
    match: {{path: /teapot}}
    respond: {{status: 418, body: "short and stout", headers: {{content-type: text/plain}}}}
  - name: moved
    match: {{path_prefix: /old}}
    redirect: {{path: /new, status: 301}}
  - name: cors
    match: {{path_prefix: /cors}}
    upstream: a
    cors: {{allow_origins: ["https://app.example.com"], allow_methods: [GET, PUT], allow_headers: [authorization], max_age: 10m}}
  - name: host-specific
    match: {{hosts: ["api.example.com"], path_prefix: /host}}
    upstream: b
  - name: host-any
    match: {{path_prefix: /host}}
    upstream: a
"#,
        a = a.endpoint(),
        b = b.endpoint()
    )
}

async fn stack() -> anyhow::Result<(Stack, Upstream, Upstream)> {
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let stack = Stack::start(&config(&a, &b)).await?;
    Ok((stack, a, b))
}

#[tokio::test]
async fn each_match_kind_reaches_its_upstream_in_precedence_order() -> anyhow::Result<()> {
    let (s, _a, _b) = stack().await?;
    let cases = [
        ("/exact", None, None, "a", "/exact"),
        (
            "/users/7/orders/42",
            None,
            None,
            "b",
            "/v2/orders/42/user/7",
        ),
        ("/re/123", None, None, "b", "/re/123"),
        (
            "/variant/x",
            Some(("x-variant", "blue")),
            None,
            "b",
            "/variant/x",
        ),
        (
            "/variant/x",
            Some(("x-variant", "green")),
            None,
            "a",
            "/variant/x",
        ),
        ("/variant/x", None, None, "a", "/variant/x"),
        ("/host/1", None, Some("api.example.com"), "b", "/host/1"),
        ("/host/1", None, Some("other.example.com"), "a", "/host/1"),
        ("/api/a/items?x=1", None, None, "a", "/internal/items?x=1"),
    ];
    for (path, header, host, upstream, upstream_path) in cases {
        let mut req = s.http().get(s.url(path));
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let r = req.send().await?;
        assert_eq!(r.status(), 200, "{path} {header:?} {host:?}");
        let echo = json(r).await?;
        assert_eq!(
            echo["upstream"], upstream,
            "{path} {header:?} {host:?}: {echo}"
        );
        assert_eq!(echo["path"], upstream_path, "{path}: {echo}");
    }
    // The exact match does not match a longer path, the regex no other shape.
    assert_eq!(s.get("/exact/more").await?.status(), 404);
    assert_eq!(s.get("/re/abc").await?.status(), 404);
    Ok(())
}

#[tokio::test]
async fn no_route_is_a_problem_json_404_with_the_request_id() -> anyhow::Result<()> {
    let (s, _a, _b) = stack().await?;
    let r = s.get("/nothing/here").await?;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let request_id = r.headers()["x-request-id"].to_str()?.to_owned();
    let body = json(r).await?;
    assert_eq!(body["status"], 404, "{body}");
    assert_eq!(body["type"], "urn:vrata:error:not-found", "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_method_no_route_allows_is_405_with_allow() -> anyhow::Result<()> {
    let (s, _a, _b) = stack().await?;
    let r = s.http().delete(s.url("/only-get")).send().await?;
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str()?.to_owned();
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "POST"], "allow: {allow}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body = json(r).await?;
    assert_eq!(body["status"], 405, "{body}");
    // The methods that are routed go where their routes say.
    assert_eq!(json(s.get("/only-get").await?).await?["upstream"], "a");
    let post = s.http().post(s.url("/only-get")).send().await?;
    assert_eq!(json(post).await?["upstream"], "b");
    Ok(())
}

#[tokio::test]
async fn headers_are_set_and_removed_both_ways() -> anyhow::Result<()> {
    let (s, _a, _b) = stack().await?;
    let r = s
        .http()
        .get(s.url("/api/a/x"))
        .header("x-secret", "hunter2")
        .header("x-gateway", "client-forged")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-served-by").map(|v| v.as_bytes()),
        Some(&b"vrata"[..])
    );
    assert!(
        r.headers().get("server").is_none(),
        "server header kept: {:?}",
        r.headers()
    );
    assert!(r.headers().get("x-powered-by").is_none());
    let echo = json(r).await?;
    assert_eq!(echo["headers"]["x-gateway"], "vrata", "{echo}");
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");
    // Another route does not inherit them.
    let other = json(s.get("/exact").await?).await?;
    assert!(other["headers"].get("x-gateway").is_none(), "{other}");
    Ok(())
}

#[tokio::test]
async fn respond_and_redirect_answer_from_the_gateway() -> anyhow::Result<()> {
    let (s, a, _b) = stack().await?;
    let r = s.get("/teapot").await?;
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await?, "short and stout");

    let r = s.get("/old/page").await?;
    assert_eq!(r.status(), 301);
    let location = r.headers()["location"].to_str()?;
    assert!(location.ends_with("/new"), "location: {location}");
    assert_eq!(a.hits(), 0, "nothing reached an upstream");
    Ok(())
}

#[tokio::test]
async fn cors_preflight_is_answered_for_allowed_origins_only() -> anyhow::Result<()> {
    let (s, a, _b) = stack().await?;
    let r = s
        .http()
        .request(reqwest::Method::OPTIONS, s.url("/cors/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .send()
        .await?;
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(h["access-control-allow-methods"].to_str()?.contains("PUT"));
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(a.hits(), 0, "a preflight is answered by the gateway");

    let r = s
        .http()
        .request(reqwest::Method::OPTIONS, s.url("/cors/x"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "PUT")
        .send()
        .await?;
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );

    let r = s
        .http()
        .get(s.url("/cors/x"))
        .header("origin", "https://app.example.com")
        .send()
        .await?;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    Ok(())
}
