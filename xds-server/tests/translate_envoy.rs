//! Behaviour of translated resources in the real Envoy: a static bootstrap from
//! `static_bootstrap`, a tiny upstream that echoes what it receives, raw HTTP/1.1 requests.
//! Checks what golden files cannot: that `respond` bodies survive the local-reply mappers,
//! that Envoy's own errors are problem+json, and what the upstream actually receives.
//!
//! Everything listens on free loopback ports; every wait is bounded.

mod golden;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vrata_e2e::ports::free_port;

use golden::models::*;
use serde_json::Value;
use vrata_xds::model::*;
use vrata_xds::translate::{ACCESS_LOG_FIELDS, PROBLEM_JSON, static_bootstrap, translate};

const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 upstream

/// Echoes each request as JSON (`method`, `path`, `headers`, its own `port`); `/fail*` answers
/// 503 (counted in `fail_hits`), `/slow*` answers after a second, `/healthz` answers 503 once
/// `healthy` is false.
struct Upstream {
    port: u16,
    fail_hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let fail_hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (hits, health) = (fail_hits.clone(), healthy.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (hits, health) = (hits.clone(), health.clone());
                std::thread::spawn(move || serve(stream, port, &hits, &health));
            }
        });
        Self {
            port,
            fail_hits,
            healthy,
        }
    }
}

fn serve(stream: TcpStream, port: u16, fail_hits: &AtomicUsize, healthy: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = serde_json::Map::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                }
                headers.insert(k, Value::String(v));
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, body) = if path.starts_with("/fail") {
            fail_hits.fetch_add(1, Ordering::SeqCst);
            ("503 Service Unavailable", "upstream says 503".to_owned())
        } else if path == "/healthz" && !healthy.load(Ordering::SeqCst) {
            ("503 Service Unavailable", "unhealthy".to_owned())
        } else {
            if path.starts_with("/slow") {
                std::thread::sleep(Duration::from_secs(1));
            }
            let echo = serde_json::json!({
                "method": method, "path": path, "headers": headers, "port": port,
            });
            ("200 OK", echo.to_string())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-powered-by: echo\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

struct Envoy {
    child: Child,
    admin_port: u16,
    access_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Envoy {
    fn start(gateway: &Gateway) -> Self {
        let admin_port = free_port();
        let bootstrap = static_bootstrap(&translate(gateway), admin_port).expect("bootstrap");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("envoy.json");
        std::fs::write(&config, bootstrap.to_string()).expect("write bootstrap");
        let access_log = dir.path().join("stdout.log");
        let child = Command::new(vrata_e2e::paths::envoy_bin())
            .arg("--config-path")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--log-level", "warning", "--file-flush-interval-msec", "20"])
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"))
            .stdout(Stdio::from(
                std::fs::File::create(&access_log).expect("stdout file"),
            ))
            .spawn()
            .expect("Envoy starts");
        let envoy = Self {
            child,
            admin_port,
            access_log,
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if try_request(admin_port, "GET /ready HTTP/1.1\r\nHost: admin\r\n")
                .is_ok_and(|r| r.status == 200)
            {
                return envoy;
            }
            assert!(Instant::now() < deadline, "Envoy not ready in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Access log lines, once at least `count` are written.
    fn access_log_lines(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "only {} access log lines:\n{text}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Envoy {
    /// Waits until Envoy's `/clusters` output satisfies `ready`.
    fn wait_for_clusters(&self, what: &str, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let clusters =
                try_request(self.admin_port, "GET /clusters HTTP/1.1\r\nHost: admin\r\n")
                    .map(|r| r.body)
                    .unwrap_or_default();
            if ready(&clusters) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}; /clusters:\n{clusters}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: exact bytes out (smuggling attempts included), whole response in.

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// What the echo upstream received.
    fn upstream_saw(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.json()
    }
}

/// Sends `head` (request line and headers, each ending in CRLF; `Connection: close` is added)
/// and reads one response (by its framing: Envoy closes only after a delay).
fn try_request(port: u16, head: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let raw = match head.split_once("\r\n\r\n") {
        Some((h, body)) => format!("{h}\r\nConnection: close\r\n\r\n{body}"),
        None => format!("{head}Connection: close\r\n\r\n"),
    };
    stream.write_all(raw.as_bytes())?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        if let Some(response) = parse_response(&bytes) {
            return Ok(response);
        }
    }
    parse_response(&bytes).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    })
}

/// The response in `bytes`, once complete.
fn parse_response(bytes: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        if !body.ends_with("0\r\n\r\n") {
            return None;
        }
        dechunk(body)
    } else {
        let length: usize = header("content-length").and_then(|v| v.parse().ok())?;
        if body.len() < length {
            return None;
        }
        body[..length].to_owned()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn get(port: u16, path: &str, extra_headers: &str) -> Response {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n{extra_headers}"),
    )
}

fn request(port: u16, head: &str) -> Response {
    try_request(port, head).unwrap_or_else(|e| panic!("request to Envoy failed: {e}"))
}

/// Asserts a problem+json body of `code` and `status`, whose request_id is the response's.
fn assert_problem(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("content-type"), Some(PROBLEM_JSON), "{r:?}");
    let body = r.json();
    assert_eq!(body["type"], format!("urn:vrata:error:{code}"), "{r:?}");
    assert_eq!(
        body["status"],
        Value::from(status),
        "status is a number: {r:?}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{r:?}"
    );
    assert_eq!(
        body["request_id"].as_str(),
        r.header("x-request-id"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Gateways

fn respond(n: &str, path: &str, status: u16, body: &str) -> Route {
    let mut r = route(n, "/", "echo");
    r.matcher.path = PathMatch::Exact(path.to_owned());
    r.action = Action::Respond(Respond {
        status,
        body: Some(body.to_owned()),
        headers: vec![(header("content-type"), "text/plain".into())],
    });
    r
}

/// No catch-all route: unknown paths are Envoy's "no route".
fn errors_gateway(listen: u16, echo: u16) -> Gateway {
    let mut get_only = route("get-only", "/get-only", "echo");
    get_only.matcher.methods = methods(&["GET", "HEAD"]);
    let mut slow = route("slow", "/slow", "echo");
    slow.timeout = Some(Duration::from_millis(200));
    let mut public = listener("public", &format!("127.0.0.1:{listen}"));
    public.access_log = true;
    Gateway {
        listeners: vec![public],
        upstreams: [
            upstream("echo", &[(&format!("127.0.0.1:{echo}"), 1)]),
            // Port 1 on loopback refuses connections.
            upstream("dead", &[("127.0.0.1:1", 1)]),
            upstream("empty", &[]),
        ]
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect(),
        routes: vec![
            respond("user-503", "/user-503", 503, "maintenance, back soon"),
            respond("user-404", "/user-404", 404, "nothing here, says the user"),
            respond("user-405", "/user-405", 405, "user 405"),
            get_only,
            slow,
            route("dead", "/dead", "dead"),
            route("empty", "/empty", "empty"),
            route("echo", "/echo", "echo"),
        ],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    }
}

#[test]
fn gateway_errors_are_problem_json_and_respond_bodies_survive() {
    let echo = Upstream::start();
    let port = free_port();
    let envoy = Envoy::start(&errors_gateway(port, echo.port));

    // A route's own `respond` keeps its status, body and content type, whatever the status.
    for (path, status, body) in [
        ("/user-503", 503, "maintenance, back soon"),
        ("/user-404", 404, "nothing here, says the user"),
        ("/user-405", 405, "user 405"),
    ] {
        let r = get(port, path, "");
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(r.body, body, "{r:?}");
        assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    }

    assert_problem(&get(port, "/nowhere", ""), 404, "not-found");
    assert_problem(&get(port, "/empty", ""), 503, "no-healthy-upstream");
    assert_problem(&get(port, "/slow", ""), 504, "upstream-timeout");
    assert_problem(&get(port, "/dead", ""), 503, "upstream-unavailable");

    let r = request(
        port,
        "POST /get-only HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n",
    );
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(get(port, "/get-only", "").status, 200);

    // Duplicate Host headers are refused rather than forwarded as "a,b".
    let r = request(
        port,
        "GET /echo HTTP/1.1\r\nHost: gw.test\r\nHost: evil.test\r\n",
    );
    assert_problem(&r, 400, "bad-request");

    // Smuggling shapes the HTTP/1 codec refuses (Envoy's own plain-text 400).
    for head in [
        "POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "GET /echo HTTP/1.1\r\nHost: gw.test\r\nx_user_id: 1\r\n",
    ] {
        let r = request(port, head);
        assert_eq!(r.status, 400, "{head:?} -> {r:?}");
    }

    // Every request is logged, with the documented fields.
    let lines = envoy.access_log_lines(12);
    for line in &lines {
        for (field, _) in ACCESS_LOG_FIELDS {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
    let nowhere = lines
        .iter()
        .find(|l| l["path"] == "/nowhere")
        .expect("logged");
    assert_eq!(nowhere["status"], 404);
    assert_eq!(nowhere["response_flags"], "NR");
    assert_eq!(nowhere["route"], Value::Null);
    let dead = lines.iter().find(|l| l["path"] == "/dead").expect("logged");
    assert_eq!(dead["route"], "dead");
    assert_eq!(dead["upstream_cluster"], "dead");
}

fn forwarding_gateway(
    listen: u16,
    behind_proxy: u16,
    redirect: u16,
    echo: u16,
    sticky: [u16; 2],
) -> Gateway {
    let mut public = listener("public", &format!("127.0.0.1:{listen}"));
    public.access_log = true;
    let mut proxied = listener("proxied", &format!("127.0.0.1:{behind_proxy}"));
    proxied.trusted_hops = 1;
    proxied.access_log = true;
    let mut https_only = listener("https-only", &format!("127.0.0.1:{redirect}"));
    https_only.redirect_https = true;

    let mut rewrite = route("rewrite", "/api/v1", "echo");
    rewrite.rewrite = Some(Rewrite::PathPrefix("/v2".into()));
    rewrite.request_headers = HeaderMutation {
        set: vec![
            (header("x-gateway"), "vrata 100%".into()),
            (header("host"), "inner.test".into()),
            (header("x-forwarded-host"), "set-by-route.test".into()),
        ],
        remove: vec![header("cookie")],
    };
    rewrite.response_headers = HeaderMutation {
        set: vec![(header("x-served-by"), "vrata".into())],
        remove: vec![header("x-powered-by")],
    };
    let mut template = route("template", "/", "echo");
    template.matcher.path = PathMatch::Template(PathTemplate {
        source: "/items/{id}".into(),
        variables: vec!["id".into()],
    });
    template.rewrite = Some(Rewrite::PathTemplate("/v2/items/{id}".into()));
    let mut retried = route("retried", "/fail", "echo");
    retried.retries = Some(Retries {
        attempts: 2,
        retry_on: vec![RetryOn::RetriableStatus(503)],
        per_try_timeout: None,
    });
    let mut post_retried = route("post-retried", "/fail-post", "echo");
    post_retried.matcher.methods = methods(&["POST"]);
    post_retried.retries = retried.retries.clone();
    let mut cors = route("cors", "/cors", "echo");
    cors.matcher.methods = methods(&["GET"]);
    cors.cors = Some(Cors {
        allow_origins: vec!["https://app.test".into()],
        allow_methods: methods(&["GET"]),
        allow_headers: vec![header("authorization")],
        expose_headers: vec![header("x-request-id")],
        allow_credentials: false,
        max_age: Some(Duration::from_secs(60)),
    });
    let mut api_host = route("api-host", "/host", "echo");
    api_host.matcher.hosts = vec!["api.example.test".into()];
    let mut wildcard = route("wildcard", "/host", "echo");
    wildcard.matcher.hosts = vec!["*.example.test".into()];

    let mut sticky_upstream = upstream(
        "sticky",
        &[
            (&format!("127.0.0.1:{}", sticky[0]), 1),
            (&format!("127.0.0.1:{}", sticky[1]), 1),
        ],
    );
    sticky_upstream.balance = Balance::Maglev(HashOn::Ip);

    Gateway {
        listeners: vec![public, proxied, https_only],
        upstreams: [
            upstream("echo", &[(&format!("127.0.0.1:{echo}"), 1)]),
            sticky_upstream,
        ]
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect(),
        routes: vec![
            // `/fail-post` first: `/fail` is a prefix of it.
            post_retried,
            retried,
            rewrite,
            template,
            cors,
            api_host,
            wildcard,
            route("sticky", "/sticky", "sticky"),
            route("echo", "/", "echo"),
        ],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    }
}

#[test]
fn upstreams_receive_what_the_gateway_vouches_for() {
    let echo = Upstream::start();
    let sticky = [Upstream::start().port, Upstream::start().port];
    let (port, proxied, https_only) = (free_port(), free_port(), free_port());
    let envoy = Envoy::start(&forwarding_gateway(
        port, proxied, https_only, echo.port, sticky,
    ));

    // Client-sent forwarding headers are not believed (trusted_hops: 0).
    let r = get(
        port,
        "/echo",
        "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9\r\n\
         X-Real-IP: 203.0.113.9\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 443\r\n\
         X-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Envoy-Original-Path: /spoofed\r\nX-Request-Id: client-id-1\r\n",
    );
    let seen = r.upstream_saw();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-envoy-external-address"], "127.0.0.1");
    let xff = h["x-forwarded-for"].as_str().expect("xff");
    // Envoy appends the peer (for a loopback peer: its own host address, not 127.0.0.1).
    assert!(xff.starts_with("203.0.113.9,"), "{xff}");
    for stripped in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-original-path",
    ] {
        assert!(h.get(stripped).is_none(), "{stripped} reached the upstream");
    }
    // A client's request id is kept and echoed.
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));
    assert!(r.header("x-envoy-upstream-service-time").is_none());

    // Behind one trusted proxy, the client is the proxy's x-forwarded-for entry.
    let r = get(proxied, "/echo", "X-Forwarded-For: 203.0.113.7\r\n");
    assert_eq!(
        r.upstream_saw()["headers"]["x-envoy-external-address"],
        "203.0.113.7"
    );

    // Consistent hashing on `ip` uses the trusted client address, not the proxy's.
    let mut seen_ports = std::collections::BTreeSet::new();
    for client in 1..=16 {
        let xff = format!("X-Forwarded-For: 198.51.100.{client}\r\n");
        let first = get(proxied, "/sticky", &xff).upstream_saw()["port"].clone();
        for _ in 0..3 {
            assert_eq!(
                get(proxied, "/sticky", &xff).upstream_saw()["port"],
                first,
                "client {client} moved"
            );
        }
        seen_ports.insert(first.to_string());
    }
    assert_eq!(seen_ports.len(), 2, "clients spread over both endpoints");

    // Rewrites, header mutations, literal values.
    let r = get(port, "/api/v1/orders?id=7", "Cookie: secret=1\r\n");
    assert_eq!(r.header("x-served-by"), Some("vrata"));
    assert!(r.header("x-powered-by").is_none());
    let seen = r.upstream_saw();
    assert_eq!(seen["path"], "/v2/orders?id=7");
    let h = &seen["headers"];
    assert_eq!(h["host"], "inner.test");
    assert_eq!(h["x-gateway"], "vrata 100%");
    assert_eq!(h["x-forwarded-host"], "set-by-route.test");
    assert_eq!(h["x-envoy-original-path"], "/api/v1/orders?id=7");
    assert!(h.get("cookie").is_none());
    assert_eq!(
        get(port, "/items/42", "").upstream_saw()["path"],
        "/v2/items/42"
    );

    // Path normalization; escaped slashes come back as a redirect to the decoded path.
    assert_eq!(get(port, "/a//b/../c", "").upstream_saw()["path"], "/a/c");
    let r = get(port, "/a%2Fb", "");
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(r.header("location"), Some("/a/b"));

    // Hosts: port, trailing dot and case do not matter; wildcards and `*` routes still apply.
    let r = request(
        port,
        "GET /host HTTP/1.1\r\nHost: API.Example.Test.:8080\r\n",
    );
    assert_eq!(r.status, 200);
    let r = request(port, "GET /host HTTP/1.1\r\nHost: www.example.test\r\n");
    assert_eq!(r.status, 200);

    // Retries: idempotent methods only, unless the route lists the method.
    echo.fail_hits.store(0, Ordering::SeqCst);
    assert_eq!(get(port, "/fail", "").status, 503);
    assert_eq!(
        echo.fail_hits.swap(0, Ordering::SeqCst),
        3,
        "GET tried 1 + 2 times"
    );
    let r = request(
        port,
        "POST /fail HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n",
    );
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body, "upstream says 503",
        "the upstream's own 503 is not rewritten"
    );
    assert_eq!(
        echo.fail_hits.swap(0, Ordering::SeqCst),
        1,
        "POST is not retried"
    );
    let r = request(
        port,
        "POST /fail-post HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n",
    );
    assert_eq!(r.status, 503);
    assert_eq!(
        echo.fail_hits.swap(0, Ordering::SeqCst),
        3,
        "POST retried when listed"
    );

    // CORS on a GET-only route: preflights answered by Envoy, never forwarded.
    let preflight =
        "OPTIONS /cors HTTP/1.1\r\nHost: gw.test\r\nAccess-Control-Request-Method: GET\r\n";
    let r = request(port, &format!("{preflight}Origin: https://app.test\r\n"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    let r = request(port, &format!("{preflight}Origin: https://evil.test\r\n"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("access-control-allow-origin").is_none());
    let r = get(port, "/cors", "Origin: https://app.test\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );

    // redirect_https: 308 to the same URL on https, on the https port (Envoy writes the
    // default port out; clients treat `:443` on https as no port).
    let r = request(
        https_only,
        "GET /x?y=1 HTTP/1.1\r\nHost: api.example.test:8080\r\n",
    );
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://api.example.test:443/x?y=1")
    );

    // Access log: the path as received (before the rewrite), the trusted client address.
    let lines = envoy.access_log_lines(12);
    let rewritten = lines
        .iter()
        .find(|l| l["route"] == "rewrite")
        .expect("logged");
    assert_eq!(rewritten["path"], "/api/v1/orders?id=7");
    assert_eq!(rewritten["method"], "GET");
    assert_eq!(rewritten["status"], 200);
    assert_eq!(rewritten["upstream_cluster"], "echo");
    assert_eq!(rewritten["client_address"], "127.0.0.1");
    assert!(rewritten["duration_ms"].is_number());
    assert!(rewritten["upstream_service_time_ms"].is_number());
    let proxied_line = lines
        .iter()
        .find(|l| l["client_address"] == "203.0.113.7")
        .expect("client address after one trusted hop");
    assert_eq!(proxied_line["route"], "echo");
    let spoofed: BTreeMap<_, _> = lines
        .iter()
        .filter(|l| l["path"] == "/spoofed")
        .map(|l| (l["request_id"].to_string(), l))
        .collect();
    assert!(
        spoofed.is_empty(),
        "a client's x-envoy-original-path reached the log"
    );
}

/// Envoy's default `no_traffic_interval` (60 s) would leave a host that fails after start marked
/// healthy for a minute when it gets no traffic; vrata's configured interval applies at once.
#[test]
fn health_checks_run_at_the_configured_interval_from_the_start() {
    let backend = Upstream::start();
    let mut checked = upstream("checked", &[(&format!("127.0.0.1:{}", backend.port), 1)]);
    checked.health_check = Some(HealthCheck {
        path: "/healthz".into(),
        interval: Duration::from_millis(300),
        timeout: Duration::from_secs(1),
        healthy_after: 1,
        unhealthy_after: 1,
    });
    let port = free_port();
    let gateway = Gateway {
        listeners: vec![listener("public", &format!("127.0.0.1:{port}"))],
        upstreams: [(checked.name.clone(), checked)].into_iter().collect(),
        routes: vec![route("checked", "/", "checked")],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    };
    let envoy = Envoy::start(&gateway);
    let failed = |clusters: &str| {
        clusters
            .lines()
            .any(|l| l.starts_with("checked::") && l.contains("health_flags::/failed_active_hc"))
    };
    let healthy = |clusters: &str| {
        clusters
            .lines()
            .any(|l| l.starts_with("checked::") && l.ends_with("health_flags::healthy"))
    };
    envoy.wait_for_clusters("the endpoint passes its first check", healthy);
    // No traffic at all: only the health checker talks to the endpoint.
    backend.healthy.store(false, Ordering::SeqCst);
    let started = Instant::now();
    envoy.wait_for_clusters("the failing endpoint is marked unhealthy", failed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_problem(&get(port, "/", ""), 503, "no-healthy-upstream");
}
