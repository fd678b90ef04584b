//! Loading end to end from in-memory files: each rule with good and bad input, asserting exact
//! messages and positions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::model::*;

type Outcome = Result<(Gateway, serde_json::Value), Vec<String>>;

fn load_files(files: &[(&str, &str)], env: &[(&str, &str)]) -> Outcome {
    let mut sink = Sink::default();
    let sources = files
        .iter()
        .map(|(name, text)| (sink.add_file(PathBuf::from(name)), Ok((*text).to_owned())))
        .collect();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let materials = convert::tls::Materials::new(std::time::SystemTime::now());
    load_sources(sink, sources, &|name| env.get(name).cloned(), &materials)
        .map(|(gw, doc, _warnings)| (gw, doc.to_json()))
        .map_err(|ds| ds.iter().map(ToString::to_string).collect())
}

/// The diagnostics for a single file `gw.yaml`.
#[track_caller]
fn errors(yaml: &str) -> Vec<String> {
    match load_files(&[("gw.yaml", yaml)], &[]) {
        Ok((gw, _)) => panic!("expected errors, loaded {gw:#?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn ok(yaml: &str) -> Gateway {
    match load_files(&[("gw.yaml", yaml)], &[]) {
        Ok((gw, _)) => gw,
        Err(e) => panic!("expected success, got:\n{}", e.join("\n")),
    }
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn header(s: &str) -> HeaderName {
    HeaderName::new(s).expect("header name")
}

const UPSTREAM: &str = "upstreams:\n  orders:\n    endpoints: [\"10.0.0.1:80\"]\n";

/// A route on top of the `orders` upstream; the route's keys start at line 5, column 5.
fn route(body: &str) -> String {
    format!("{UPSTREAM}routes:\n  - name: r\n{body}")
}

// ---------------------------------------------------------------------------------------------
// A complete file

#[test]
fn a_complete_file_converts_to_the_model() {
    let gw = ok(r#"
listeners:
  - name: public
    address: "0.0.0.0:8080"
  - name: internal
    address: "[::1]:9090"
    http2: false
    redirect_https: true
    trusted_hops: 2
    access_log: false
upstreams:
  orders:
    endpoints: ["10.0.0.11:8080", {address: "10.0.0.12:8080", weight: 2}]
    balance: ring_hash
    hash_on: "header:X-User-Id"
    connect_timeout: 1s
    http2: true
    health_check: {path: /healthz, interval: 5s, timeout: 2s, healthy_after: 2, unhealthy_after: 4}
    outlier_detection: {consecutive_5xx: 7, eject_for: 1m}
    circuit_breaker: {max_connections: 1024, max_retries: 3}
  users:
    dns: users.internal:8080
    balance: maglev
    hash_on: cookie:session
services:
  ext_authz: "10.1.0.1:18001"
  ratelimit: "10.1.0.2:18002"
  timeout: 100ms
  ext_authz_failure: allow
  ratelimit_failure: deny
routes:
  - name: orders-read
    match:
      hosts: ["API.example.com", "*.example.com"]
      path_template: "/api/orders/{id}"
      methods: [get, HEAD, GET]
      headers: {X-Api-Version: "2"}
    upstream: orders
    rewrite: {path_template: "/v2/orders/{id}"}
    request_headers: {set: {x-gateway: vrata}, remove: [cookie]}
    response_headers: {remove: [server, x-powered-by]}
    timeout: 5s
    retries: {attempts: 2, retry_on: [connect-failure, reset, "503", 502], per_try_timeout: 1s}
    cors: {allow_origins: ["https://app.example.com"], allow_methods: [GET], allow_headers: [authorization], expose_headers: [x-id], allow_credentials: true, max_age: 10m}
  - name: legacy
    match: {path_prefix: /old}
    redirect: {path: /new, scheme: https, status: 301}
  - name: teapot
    match: {path: /tea}
    respond: {status: 418, body: "short and stout", headers: {content-type: text/plain}}
  - name: users
    match: {path_regex: "^/users/([0-9]+)$"}
    upstream: users
    rewrite: {regex: "^/users/([0-9]+)$", substitution: "/u/\\1"}
"#);
    assert_eq!(
        gw.listeners,
        [
            Listener {
                name: name("public"),
                address: addr("0.0.0.0:8080"),
                trusted_hops: 0,
                http2: true,
                redirect_https: false,
                access_log: true,
                tls: None,
            },
            Listener {
                name: name("internal"),
                address: addr("[::1]:9090"),
                trusted_hops: 2,
                http2: false,
                redirect_https: true,
                access_log: false,
                tls: None,
            },
        ]
    );
    assert_eq!(
        gw.upstreams[&name("orders")],
        Upstream {
            name: name("orders"),
            endpoints: Endpoints::Static(vec![
                Endpoint {
                    address: addr("10.0.0.11:8080"),
                    weight: 1
                },
                Endpoint {
                    address: addr("10.0.0.12:8080"),
                    weight: 2
                },
            ]),
            balance: Balance::RingHash(HashOn::Header(header("x-user-id"))),
            connect_timeout: Duration::from_secs(1),
            http2: true,
            health_check: Some(HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
                healthy_after: 2,
                unhealthy_after: 4,
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 7,
                eject_for: Duration::from_secs(60),
            }),
            circuit_breaker: Some(CircuitBreaker {
                max_connections: Some(1024),
                max_pending: None,
                max_requests: None,
                max_retries: Some(3),
            }),
            tls: None,
        }
    );
    assert_eq!(
        gw.upstreams[&name("users")].endpoints,
        Endpoints::Dns {
            host: "users.internal".into(),
            port: 8080
        }
    );
    assert_eq!(
        gw.upstreams[&name("users")].balance,
        Balance::Maglev(HashOn::Cookie("session".into()))
    );
    assert_eq!(
        gw.services,
        Services {
            ext_authz: addr("10.1.0.1:18001").into(),
            ratelimit: addr("10.1.0.2:18002").into(),
            timeout: Duration::from_millis(100),
            ext_authz_failure: FailureMode::Allow,
            ratelimit_failure: FailureMode::Deny,
            aggregator: defaults::AGGREGATOR,
            aggregator_loopback: defaults::AGGREGATOR_LOOPBACK,
            response_cache: defaults::RESPONSE_CACHE,
        }
    );
    assert_eq!(gw.routes.len(), 4);
    assert_eq!(
        gw.routes[0],
        Route {
            name: name("orders-read"),
            matcher: RouteMatch {
                hosts: vec!["api.example.com".into(), "*.example.com".into()],
                path: PathMatch::Template(PathTemplate {
                    source: "/api/orders/{id}".into(),
                    variables: vec!["id".into()],
                }),
                methods: vec![Method("GET".into()), Method("HEAD".into())],
                headers: vec![(header("x-api-version"), "2".into())],
            },
            action: Action::Upstream(name("orders")),
            rewrite: Some(Rewrite::PathTemplate("/v2/orders/{id}".into())),
            request_headers: HeaderMutation {
                set: vec![(header("x-gateway"), "vrata".into())],
                remove: vec![header("cookie")],
            },
            response_headers: HeaderMutation {
                set: vec![],
                remove: vec![header("server"), header("x-powered-by")],
            },
            timeout: Some(Duration::from_secs(5)),
            retries: Some(Retries {
                attempts: 2,
                retry_on: vec![
                    RetryOn::ConnectFailure,
                    RetryOn::Reset,
                    RetryOn::RetriableStatus(503),
                    RetryOn::RetriableStatus(502),
                ],
                per_try_timeout: Some(Duration::from_secs(1)),
            }),
            cors: Some(Cors {
                allow_origins: vec!["https://app.example.com".into()],
                allow_methods: vec![Method("GET".into())],
                allow_headers: vec![header("authorization")],
                expose_headers: vec![header("x-id")],
                allow_credentials: true,
                max_age: Some(Duration::from_secs(600)),
            }),
            auth: None,
            rate_limit: Vec::new(),
            response_json: None,
            cache: None,
        }
    );
    assert_eq!(
        gw.routes[1].action,
        Action::Redirect(Redirect {
            path: Some("/new".into()),
            host: None,
            scheme: Some(Scheme::Https),
            status: RedirectStatus::MovedPermanently301,
        })
    );
    assert_eq!(gw.routes[1].matcher.path, PathMatch::Prefix("/old".into()));
    assert_eq!(
        gw.routes[2].action,
        Action::Respond(Respond {
            status: 418,
            body: Some("short and stout".into()),
            headers: vec![(header("content-type"), "text/plain".into())],
        })
    );
    assert_eq!(gw.routes[2].matcher.path, PathMatch::Exact("/tea".into()));
    assert_eq!(
        gw.routes[3].rewrite,
        Some(Rewrite::Regex {
            regex: "^/users/([0-9]+)$".into(),
            substitution: "/u/\\1".into()
        })
    );
}

#[test]
fn defaults() {
    let gw = ok(&format!(
        "{UPSTREAM}listeners:\n  - {{name: l, address: \"0.0.0.0:80\"}}\nroutes:\n  - name: r\n    upstream: orders\n    retries: {{retry_on: [5xx]}}\n    \
         cors: {{allow_origins: [\"*\"]}}\n"
    ));
    let u = &gw.upstreams[&name("orders")];
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert!(!u.http2);
    assert_eq!(
        (&u.health_check, &u.outlier_detection, &u.circuit_breaker),
        (&None, &None, &None)
    );
    let l = &gw.listeners[0];
    assert_eq!(
        (l.trusted_hops, l.http2, l.redirect_https, l.access_log),
        (0, true, false, true)
    );
    let r = &gw.routes[0];
    assert_eq!(
        r.matcher,
        RouteMatch {
            hosts: vec!["*".into()],
            path: PathMatch::Prefix("/".into()),
            methods: vec![],
            headers: vec![],
        }
    );
    assert_eq!(
        (&r.rewrite, &r.timeout, &r.request_headers),
        (&None, &None, &HeaderMutation::default())
    );
    let retries = r.retries.as_ref().expect("retries");
    assert_eq!(retries.attempts, defaults::RETRY_ATTEMPTS);
    assert_eq!(retries.per_try_timeout, None);
    let cors = r.cors.as_ref().expect("cors");
    assert!(!cors.allow_credentials && cors.max_age.is_none() && cors.allow_methods.is_empty());
    assert_eq!(
        gw.services,
        Services {
            ext_authz: defaults::EXT_AUTHZ,
            ratelimit: defaults::RATELIMIT,
            timeout: defaults::SERVICE_TIMEOUT,
            ext_authz_failure: FailureMode::Deny,
            ratelimit_failure: FailureMode::Allow,
            aggregator: defaults::AGGREGATOR,
            aggregator_loopback: defaults::AGGREGATOR_LOOPBACK,
            response_cache: defaults::RESPONSE_CACHE,
        }
    );

    let gw = ok(
        "upstreams:\n  u:\n    endpoints: [\"10.0.0.1:80\"]\n    health_check: {path: /h}\n    outlier_detection: {}\n",
    );
    let u = &gw.upstreams[&name("u")];
    assert_eq!(
        u.health_check,
        Some(HealthCheck {
            path: "/h".into(),
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            healthy_after: defaults::HEALTHY_AFTER,
            unhealthy_after: defaults::UNHEALTHY_AFTER,
        })
    );
    assert_eq!(
        u.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: defaults::CONSECUTIVE_5XX,
            eject_for: defaults::EJECT_FOR,
        })
    );
}

#[test]
fn empty_files_are_empty_configurations() {
    for text in [
        "",
        "# nothing\n",
        "---\n",
        "listeners: []\nroutes: []\nupstreams: {}\n",
    ] {
        let gw = ok(text);
        assert!(gw.listeners.is_empty() && gw.routes.is_empty() && gw.upstreams.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding: unknown keys, types, missing keys

#[test]
fn unknown_keys_with_suggestions() {
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    match: {method: [GET]}\n    colour: red\n"
        )),
        [
            "gw.yaml:7:13: unknown key `method`; did you mean `methods`?",
            "gw.yaml:8:5: unknown key `colour` (expected `name`, `match`, `upstream`, `respond`, \
             `redirect`, `rewrite`, `request_headers`, `response_headers`, `timeout`, `retries`, `cors`, \
             `auth`, `rate_limit`, `aggregate`, `response` or `cache`)",
        ]
    );
    assert_eq!(
        errors("listner: []\n"),
        ["gw.yaml:1:1: unknown key `listner`; did you mean `listeners`?"]
    );
}

#[test]
fn tls_mistakes() {
    let yaml = r#"listeners:
  - name: l
    address: "0.0.0.0:443"
    tls: {certificates: []}
upstreams:
  u:
    endpoints: ["10.0.0.1:80"]
    tls: {ca: /nonexistent/ca.pem}
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:4:25: `certificates` needs at least one {cert, key} pair",
            "gw.yaml:8:10: `sni` is required with IP `endpoints`: it is the name the upstream's certificate is checked against",
            "gw.yaml:8:15: cannot read `/nonexistent/ca.pem`: No such file or directory (os error 2)",
        ]
    );
}

#[test]
fn retry_on_written_as_on() {
    // One line for the mistake: no second "missing `retry_on`".
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    retries:\n      on: [5xx]\n"
        )),
        ["gw.yaml:8:7: unknown key `on`: use `retry_on:` (YAML 1.1 tools read `on:` as `true:`)"]
    );
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    retries: {attempts: 2, true: [5xx]}\n"
        )),
        [
            "gw.yaml:7:28: unknown key `true`: use `retry_on:` (YAML 1.1 tools read `on:` as `true:`)"
        ]
    );
    assert_eq!(
        errors(&route("    upstream: orders\n    retries: {attempts: 2}\n")),
        ["gw.yaml:7:14: missing required key `retry_on`"]
    );
}

#[test]
fn type_errors_are_reported_at_the_value_and_siblings_still_checked() {
    let yaml = r#"listeners:
  - name: l
    address: "0.0.0.0:80"
    http2: yes
    trusted_hops: -1
    access_log: 1
    redirect_https: [true]
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:4:12: expected `true` or `false`, found string \"yes\"",
            "gw.yaml:5:19: expected an integer from 0 to 4294967295, found integer `-1`",
            "gw.yaml:6:17: expected `true` or `false`, found integer `1`",
            "gw.yaml:7:21: expected `true` or `false`, found a list",
        ]
    );
    assert_eq!(
        errors("listeners: {name: l}\nroutes: x\nupstreams: [a]\nservices: 5\n"),
        [
            "gw.yaml:1:12: expected a list, found a mapping",
            "gw.yaml:2:9: expected a list, found string \"x\"",
            "gw.yaml:3:12: expected a mapping, found a list",
            "gw.yaml:4:11: expected a mapping, found integer `5`",
        ]
    );
    assert_eq!(
        errors("- a\n"),
        ["gw.yaml:1:1: expected a mapping, found a list"]
    );
}

#[test]
fn plain_scalars_are_accepted_as_strings() {
    let gw = ok(&route(
        "    upstream: orders\n    match: {headers: {x-version: 2, x-flag: true}}\n",
    ));
    assert_eq!(
        gw.routes[0].matcher.headers,
        [
            (header("x-version"), "2".to_owned()),
            (header("x-flag"), "true".to_owned())
        ]
    );
    // `null` (or nothing) is a value left out: for a required key, a type error.
    assert_eq!(
        errors(
            "listeners: [{name: ~, address: \"0.0.0.0:80\"}]\nroutes: [{name: r, upstream: }]\n"
        ),
        [
            "gw.yaml:1:20: expected a string, found null",
            "gw.yaml:2:10: a route needs one of `upstream`, `respond`, `redirect` or `aggregate`",
        ]
    );
}

#[test]
fn missing_required_keys_at_the_mapping() {
    assert_eq!(
        errors("listeners:\n  - address: \"0.0.0.0:80\"\n  - name: x\n"),
        [
            "gw.yaml:2:5: missing required key `name`",
            "gw.yaml:3:5: missing required key `address`",
        ]
    );
    assert_eq!(
        errors(&route("    respond: {body: x}\n")),
        ["gw.yaml:6:14: missing required key `status`"]
    );
}

#[test]
fn enum_values_with_suggestions() {
    assert_eq!(
        errors("upstreams:\n  u:\n    endpoints: [\"10.0.0.1:80\"]\n    balance: roundrobin\n"),
        [
            "gw.yaml:4:14: unknown value `roundrobin`: expected `round_robin`, `least_request`, \
          `random`, `ring_hash` or `maglev`; did you mean `round_robin`?"
        ]
    );
    assert_eq!(
        errors("services: {ext_authz_failure: [allow]}\n"),
        ["gw.yaml:1:31: expected `allow` or `deny`, found a list"]
    );
}

// ---------------------------------------------------------------------------------------------
// YAML-level problems through the loader

#[test]
fn yaml_problems() {
    assert_eq!(
        errors("listeners: []\nlisteners: []\n"),
        ["gw.yaml:2:1: duplicate key `listeners` (first given at line 1, column 1)"]
    );
    let e = errors("routes:\n  - name: [\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("gw.yaml:3:1: YAML syntax error: "),
        "{e:?}"
    );
    assert_eq!(
        errors(&format!(
            "{UPSTREAM}routes:\n  - name: &n r\n    upstream: orders\n"
        )),
        ["gw.yaml:5:11: YAML anchors (`&name`) are not supported: write the value out"]
    );
}

// ---------------------------------------------------------------------------------------------
// Listeners

#[test]
fn listener_rules() {
    let yaml = r#"listeners:
  - {name: a, address: "0.0.0.0:80"}
  - {name: a, address: "0.0.0.0:81"}
  - {name: b, address: "0.0.0.0:80"}
  - {name: c, address: "10.0.0.1:81"}
  - {name: d, address: "[::]:81"}
  - {name: "e f", address: "localhost:80"}
  - {name: g, address: "10.0.0.1:0"}
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:3:12: listener `a` is already defined at gw.yaml:2:12",
            "gw.yaml:4:24: address `0.0.0.0:80` is already used by listener `a` at gw.yaml:2:24",
            "gw.yaml:5:24: address `10.0.0.1:81` overlaps `0.0.0.0:81` of listener `a` at gw.yaml:3:24: both bind port 81",
            "gw.yaml:7:12: invalid name \"e f\": use 1 to 128 characters of A-Z a-z 0-9 - _ .",
            "gw.yaml:7:28: invalid address `localhost:80`: expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080",
            "gw.yaml:8:24: invalid address `10.0.0.1:0`: port 0 is not allowed",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Upstreams

#[test]
fn upstream_endpoint_rules() {
    let yaml = r#"upstreams:
  both:
    endpoints: ["10.0.0.1:80"]
    dns: x.internal:80
  neither:
    balance: random
  empty:
    endpoints: []
  host:
    endpoints: ["orders.internal:8080", {address: "10.0.0.1:80", weight: 0}, {address: "10.0.0.2:80", weight: 129}]
  twice:
    endpoints: ["10.0.0.1:80", {address: "10.0.0.1:80"}]
  baddns:
    dns: "x.internal"
  "bad name":
    dns: x.internal:80
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:4:10: `dns` cannot be combined with `endpoints`",
            "gw.yaml:6:5: an upstream needs `endpoints` (a list of IP:PORT) or `dns` (host:port)",
            "gw.yaml:8:16: `endpoints` is empty: list at least one IP:PORT",
            "gw.yaml:10:17: `orders.internal:8080` is not an IP address: endpoints are IP:PORT; for a DNS name write `dns: orders.internal:8080` instead of `endpoints`",
            "gw.yaml:10:74: `weight` must be from 1 to 128, found 0",
            "gw.yaml:10:111: `weight` must be from 1 to 128, found 129",
            "gw.yaml:12:32: endpoint `10.0.0.1:80` is listed twice",
            "gw.yaml:14:10: invalid DNS target `x.internal`: expected host:port, e.g. orders.internal:8080",
            "gw.yaml:15:3: invalid name \"bad name\": use 1 to 128 characters of A-Z a-z 0-9 - _ .",
        ]
    );
}

#[test]
fn upstream_balance_rules() {
    let yaml = r#"upstreams:
  a:
    endpoints: ["10.0.0.1:80"]
    balance: ring_hash
  b:
    endpoints: ["10.0.0.1:80"]
    hash_on: ip
  c:
    endpoints: ["10.0.0.1:80"]
    balance: maglev
    hash_on: "query:x"
  d:
    endpoints: ["10.0.0.1:80"]
    balance: maglev
    hash_on: "header:x y"
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:4:14: `balance: ring_hash` needs `hash_on`: header:NAME, cookie:NAME or ip",
            "gw.yaml:7:14: `hash_on` only applies to `balance: ring_hash` or `balance: maglev`",
            "gw.yaml:11:14: invalid `hash_on` value `query:x`: expected header:NAME, cookie:NAME or ip",
            "gw.yaml:15:14: invalid header name `x y`: use letters, digits and !#$%&'*+-.^_`|~",
        ]
    );
}

#[test]
fn upstream_protection_rules() {
    let yaml = r#"upstreams:
  a:
    endpoints: ["10.0.0.1:80"]
    connect_timeout: 5
    health_check: {interval: 1s}
    outlier_detection: {consecutive_5xx: 0, eject_for: 0s}
    circuit_breaker: {max_pending: 0, max_connectons: 1}
  b:
    endpoints: ["10.0.0.1:80"]
    health_check: {path: healthz, healthy_after: 0}
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:4:22: `5` has no unit: write 5s (units: ms, s, m, h, d)",
            "gw.yaml:5:19: missing required key `path`",
            "gw.yaml:6:42: `consecutive_5xx` must be at least 1, found 0",
            "gw.yaml:6:56: duration `0s` must be greater than 0",
            "gw.yaml:7:36: `max_pending` must be at least 1, found 0",
            "gw.yaml:7:39: unknown key `max_connectons`; did you mean `max_connections`?",
            "gw.yaml:10:26: path `healthz` must start with `/`",
            "gw.yaml:10:50: `healthy_after` must be at least 1, found 0",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Routes

#[test]
fn route_names_and_actions() {
    let yaml = format!(
        "{UPSTREAM}routes:
  - name: a
    upstream: ordrs
  - name: a
    upstream: orders
  - name: none
  - name: two
    upstream: orders
    respond: {{status: 200}}
    redirect: {{path: /x}}
  - name: \"bad/name\"
    upstream: orders
"
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:6:15: unknown upstream `ordrs`; did you mean `orders`?",
            "gw.yaml:7:11: route `a` is already defined at gw.yaml:5:11",
            "gw.yaml:9:5: a route needs one of `upstream`, `respond`, `redirect` or `aggregate`",
            "gw.yaml:12:14: `respond` cannot be combined with `upstream`: a route has exactly one of `upstream`, `respond`, `redirect` or `aggregate`",
            "gw.yaml:13:15: `redirect` cannot be combined with `upstream`: a route has exactly one of `upstream`, `respond`, `redirect` or `aggregate`",
            "gw.yaml:14:11: invalid name \"bad/name\": use 1 to 128 characters of A-Z a-z 0-9 - _ .",
        ]
    );
    assert_eq!(
        errors("routes:\n  - name: r\n    upstream: orders\n"),
        ["gw.yaml:3:15: unknown upstream `orders` (no upstreams are defined)"]
    );
}

#[test]
fn respond_and_redirect_rules() {
    let yaml = "routes:
  - name: a
    respond: {status: 199}
  - name: b
    redirect: {status: 302}
  - name: c
    redirect: {host: \"bad host\", status: 303, scheme: ftp}
  - name: d
    respond: {status: 200, headers: {\"bad header\": x, ok: \"a\\nb\"}}
";
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:3:23: `status` must be from 200 to 599, found 199",
            "gw.yaml:5:15: a redirect needs at least one of `path`, `host` or `scheme`",
            "gw.yaml:7:22: invalid host `bad host`: expected a host name such as www.example.com",
            "gw.yaml:7:42: `status` of a redirect must be 301, 302, 307 or 308, found 303",
            "gw.yaml:7:55: unknown value `ftp`: expected `http` or `https`",
            "gw.yaml:9:38: invalid header name `bad header`: use letters, digits and !#$%&'*+-.^_`|~",
            "gw.yaml:9:59: a header value cannot contain line breaks or NUL characters",
        ]
    );
}

#[test]
fn match_rules() {
    let yaml = route(
        r#"    upstream: orders
    match:
      hosts: ["api.example.com", "bad host", "API.example.com"]
      path: /a
      path_prefix: /b
      methods: [GET, "P OST"]
      headers: {x-a: "1", X-A: "2"}
  - name: r2
    upstream: orders
    match: {hosts: [], methods: [], path_prefix: nope}
"#,
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:8:34: invalid host `bad host`: expected a domain (api.example.com), `*`, `*.example.com` or `api.*`",
            "gw.yaml:10:20: `path_prefix` cannot be combined with `path`: a route matches on one of `path`, `path_prefix`, `path_template` or `path_regex`",
            "gw.yaml:11:22: invalid method `P OST`: expected a token such as GET or POST",
            "gw.yaml:12:27: header `x-a` is listed twice",
            "gw.yaml:15:20: `hosts` is empty: leave it out to match any host",
            "gw.yaml:15:33: `methods` is empty: leave it out to match any method",
            "gw.yaml:15:50: path `nope` must start with `/`",
        ]
    );
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    match: {hosts: [a.example.com, A.example.com]}\n"
        )),
        ["gw.yaml:7:36: host `a.example.com` is listed twice"]
    );
}

#[test]
fn path_templates_and_regexes_report_the_exact_column() {
    let yaml = route(
        r#"    upstream: orders
    match: {path_template: "/api/{id}/{id}"}
  - name: r2
    upstream: orders
    match:
      path_regex: /x(?=y)
  - name: r3
    upstream: orders
    match:
      path_regex: "/x\\(?=y)"
"#,
    );
    assert_eq!(
        errors(&yaml),
        [
            // The second `id` starts at offset 11 of the value, which starts at column 29.
            "gw.yaml:7:40: invalid path template: variable `id` is used twice",
            "gw.yaml:11:21: invalid regex: look-around, including look-ahead and look-behind, is not supported",
            // Escapes in a double-quoted value: the column is the value's start.
            "gw.yaml:15:19: invalid regex: unopened group",
        ]
    );
}

#[test]
fn rewrite_rules() {
    let yaml = format!(
        "{UPSTREAM}routes:
  - name: a
    match: {{path: /x}}
    upstream: orders
    rewrite: {{path_prefix: /y}}
  - name: b
    upstream: orders
    rewrite: {{path_template: \"/y/{{id}}\"}}
  - name: c
    match: {{path_template: \"/o/{{id}}\"}}
    upstream: orders
    rewrite: {{path_template: \"/v2/{{oid}}\"}}
  - name: d
    respond: {{status: 200}}
    rewrite: {{path_prefix: /y}}
  - name: e
    upstream: orders
    rewrite: {{regex: \"^/(a)$\"}}
  - name: f
    upstream: orders
    rewrite: {{substitution: x}}
  - name: g
    upstream: orders
    rewrite: {{regex: \"^/(a)$\", substitution: \"/\\\\2\", path_prefix: /z}}
  - name: h
    upstream: orders
    rewrite: {{regex: \"^/(a)$\", substitution: '/\\2'}}
  - name: i
    upstream: orders
    rewrite: {{}}
  - name: j
    upstream: orders
    rewrite: {{path_prefix: /a, substitution: x}}
"
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:8:28: `rewrite: {path_prefix}` needs a `path_prefix` match (this route matches with `path`)",
            "gw.yaml:11:30: `rewrite: {path_template}` needs a `path_template` match (this route matches with `path_prefix`)",
            "gw.yaml:15:36: invalid rewrite template: `{oid}` is not a variable of the route's `path_template`: it has `id`",
            "gw.yaml:18:14: `rewrite` only applies to routes that proxy to an `upstream`",
            "gw.yaml:21:14: `regex` needs a `substitution` (it may be empty: \"\")",
            "gw.yaml:24:29: `substitution` needs a `regex`",
            "gw.yaml:27:67: `path_prefix` cannot be combined with `regex`: a rewrite is one of `path_prefix`, `path_template` or `regex`",
            "gw.yaml:30:48: `\\2` refers to a group the regex does not have (it has 1)",
            "gw.yaml:33:14: `rewrite` needs one of `path_prefix`, `path_template` or `regex` (with `substitution`)",
            "gw.yaml:36:46: `substitution` only goes with `regex`",
        ]
    );
}

#[test]
fn header_rules() {
    let yaml = route(
        r#"    upstream: orders
    request_headers:
      set: {":path": /x, Host: y, x-a: "1", X-A: "2"}
      remove: [x-b, X-B, x-a, "bad name"]
    response_headers: {remove: [":status"]}
"#,
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:8:13: pseudo-header `:path` cannot be set or removed",
            "gw.yaml:8:26: `host` cannot be set or removed by header rules (Envoy forbids it); use `redirect: {host}` to send clients elsewhere",
            "gw.yaml:8:45: header `x-a` is set twice",
            "gw.yaml:9:31: invalid header name `bad name`: use letters, digits and !#$%&'*+-.^_`|~",
            "gw.yaml:10:33: pseudo-header `:status` cannot be set or removed",
        ]
    );
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    request_headers: {set: {x-a: \"1\"}, remove: [x-b, X-B, X-A]}\n"
        )),
        [
            "gw.yaml:7:54: header `x-b` is listed twice",
            "gw.yaml:7:59: header `x-a` is both set and removed",
        ]
    );
}

#[test]
fn retries_rules() {
    let yaml = route(
        r#"    upstream: orders
    retries: {attempts: 11, retry_on: [reset, rest, "302", reset], per_try_timeout: 1.5s}
  - name: r2
    upstream: orders
    retries: {retry_on: []}
"#,
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:7:25: `attempts` must be from 1 to 10, found 11",
            "gw.yaml:7:47: unknown retry condition `rest`: expected `connect-failure`, `reset`, `5xx` or `gateway-error`, or a status code from 400 to 599; did you mean `reset`?",
            "gw.yaml:7:53: a retry status must be from 400 to 599, found 302",
            "gw.yaml:7:85: invalid duration `1.5s`: write an integer and a unit (ms, s, m, h, d), e.g. 250ms, 30s, 5m or 1m30s",
            "gw.yaml:10:25: `retry_on` is empty: list when to retry, e.g. [connect-failure, reset, 503]",
        ]
    );
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    retries: {retry_on: [5xx, 503, \"5xx\"]}\n"
        )),
        ["gw.yaml:7:36: this retry condition is listed twice"]
    );
}

#[test]
fn cors_rules() {
    let yaml = route(
        r#"    upstream: orders
    cors: {allow_origins: ["*"], allow_credentials: true}
  - name: r2
    upstream: orders
    cors: {allow_origins: ["https://a.example.com/"], allow_headers: ["x y"], max_age: 1500ms}
  - name: r3
    upstream: orders
    cors: {allow_methods: [GET]}
"#,
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:7:53: `allow_credentials: true` cannot be used with origin `*` (browsers refuse it): list the origins",
            "gw.yaml:10:28: invalid origin `https://a.example.com/`: an origin has no path (not even a trailing `/`); write scheme://host[:port], e.g. https://app.example.com, or `*`",
            "gw.yaml:10:71: invalid header name `x y`: use letters, digits and !#$%&'*+-.^_`|~",
            "gw.yaml:10:88: `max_age` is sent in whole seconds: write e.g. 10m or 600s",
            "gw.yaml:13:11: missing required key `allow_origins`",
        ]
    );
}

#[test]
fn route_timeout_durations() {
    assert_eq!(
        errors(&route("    upstream: orders\n    timeout: 30\n")),
        ["gw.yaml:7:14: `30` has no unit: write 30s (units: ms, s, m, h, d)"]
    );
    let gw = ok(&route("    upstream: orders\n    timeout: 1m30s\n"));
    assert_eq!(gw.routes[0].timeout, Some(Duration::from_secs(90)));
}

// ---------------------------------------------------------------------------------------------
// Services

#[test]
fn services_rules() {
    assert_eq!(
        errors(
            "services:\n  ext_authz: \"ext-authz:0\"\n  ratelimit: nope\n  timeout: 0ms\n  ratelimit_failure: open\n"
        ),
        [
            "gw.yaml:2:14: invalid address `ext-authz:0`: expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080, or HOST:PORT with a DNS name (e.g. ext-authz:18001)",
            "gw.yaml:3:14: invalid address `nope`: expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080, or HOST:PORT with a DNS name (e.g. ext-authz:18001)",
            "gw.yaml:4:12: duration `0ms` must be greater than 0",
            "gw.yaml:5:22: unknown value `open`: expected `allow` or `deny`",
        ]
    );
}

#[test]
fn services_by_dns_name() {
    let gw = ok("services:\n  ext_authz: \"ext-authz:18001\"\n  ratelimit: \"10.0.0.2:18002\"\n");
    assert_eq!(
        gw.services.ext_authz,
        crate::model::ServiceAddress::Dns {
            host: "ext-authz".into(),
            port: 18001
        }
    );
    assert_eq!(gw.services.ratelimit, addr("10.0.0.2:18002").into());
}

#[test]
fn observability_convert_and_rules() {
    let gw = ok(
        "observability:\n  prometheus: {address: \"0.0.0.0:9902\"}\n  tracing: {otlp_endpoint: \"http://otel:4318\", sample_ratio: 0.5}\n",
    );
    assert_eq!(gw.observability.prometheus, Some(addr("0.0.0.0:9902")));
    let t = gw.observability.tracing.expect("tracing");
    assert_eq!(t.service_name, "vrata-gateway");
    assert_eq!(t.sample_ratio, 0.5);
    assert_eq!(t.path, "/v1/traces");
    assert_eq!(ok("").observability, crate::model::Observability::default());
    assert_eq!(
        errors(&format!(
            "{}observability:\n  prometheus: {{address: \"0.0.0.0:8080\"}}\n  tracing: {{otlp_endpoint: \"otel:4318\", sample_ratio: 2, service_name: \"\"}}\n",
            "listeners:\n  - name: public\n    address: \"0.0.0.0:8080\"\n"
        )),
        [
            "gw.yaml:5:25: address `0.0.0.0:8080` is already used by listener `public` at gw.yaml:3:14",
            "gw.yaml:6:28: invalid `otlp_endpoint` `otel:4318`: the scheme must be http (expected http://HOST:PORT, e.g. http://otel-collector:4318)",
            "gw.yaml:6:55: `sample_ratio` 2 is not between 0.0 and 1.0",
            "gw.yaml:6:72: `service_name` must be 1 to 255 printable characters",
        ]
    );
    assert_eq!(
        errors("listeners:\n  - name: vrata_prometheus\n    address: \"0.0.0.0:8080\"\n"),
        [
            "gw.yaml:2:11: listener names starting with `vrata_` are reserved for vrata's own listeners"
        ]
    );
}

#[test]
fn rate_limits_convert() {
    let gw = ok(&format!(
        "{}rate_limits:\n  store: {{redis: [\"redis://r1:6379\", \"redis://r2:6379\"], on_error: deny}}\n",
        route(
            "    upstream: orders\n    rate_limit:\n      - {name: u, limit: 10, per: 1m, key: \"claim:org.id\"}\n      - {name: k, limit: 5, per: 2s, key: \"header:X-Api-Key\"}\n      - {name: a, limit: 1, per: 1s, key: route}\n      - {name: i, limit: 9007199254740992, per: 1d, key: ip}\n"
        )
    ));
    assert_eq!(
        gw.rate_limits,
        RateLimits {
            redis: vec!["redis://r1:6379".into(), "redis://r2:6379".into()],
            on_error: OnError::Deny,
        }
    );
    let limits = &gw.routes[0].rate_limit;
    assert_eq!(
        limits[0],
        RateLimit {
            name: "u".into(),
            limit: 10,
            per: Duration::from_secs(60),
            key: LimitKey::Claim(vec!["org".into(), "id".into()]),
        }
    );
    assert_eq!(limits[1].key, LimitKey::Header(header("x-api-key")));
    assert_eq!(limits[2].key, LimitKey::Route);
    assert_eq!(limits[3].key, LimitKey::Ip);
    // One URL is a standalone Redis; nothing at all is in-memory with `local`.
    let one = ok("rate_limits: {store: {redis: \"redis://r:6379/2\"}}\n");
    assert_eq!(one.rate_limits.redis, ["redis://r:6379/2"]);
    assert_eq!(one.rate_limits.on_error, OnError::Local);
    assert_eq!(ok("").rate_limits, RateLimits::default());
}

#[test]
fn rate_limit_rules() {
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    rate_limit:\n      - {name: \"a b\", limit: 0, per: 1500ms, key: user}\n      - {name: x, limit: 1, per: 1s, key: \"claim:a..b\"}\n      - {name: x, limit: 1, per: 1s, key: \"header:\"}\n"
        )),
        [
            "gw.yaml:8:16: invalid rate limit name `a b`: use 1 to 64 characters of A-Z a-z 0-9 . _ - (it is shown to clients in the RateLimit-Policy header)",
            "gw.yaml:8:30: `limit` must be between 1 and 2^53 (got 0)",
            "gw.yaml:8:38: `per` must be a whole number of seconds, at least 1s (limits count in 1 s steps)",
            "gw.yaml:8:51: unknown rate limit key `user`: use `route`, `ip`, `header:NAME` or `claim:PATH`",
            "gw.yaml:9:43: invalid claim path `a..b`: use claim names separated by dots, e.g. `sub` or `org.id`",
            "gw.yaml:10:16: rate limit `x` is already defined at gw.yaml:9:16",
            "gw.yaml:10:43: invalid header name ``: use letters, digits and !#$%&'*+-.^_`|~",
        ]
    );
    assert_eq!(
        errors(&route(
            "    respond: {status: 200}\n    rate_limit: [{name: a, limit: 1, per: 1s, key: ip}]\n"
        )),
        ["gw.yaml:7:17: `rate_limit` only applies to routes that proxy to an `upstream`"]
    );
    assert_eq!(
        errors(
            "rate_limits:\n  store: {redis: [\"rediss://r:1\", \"http://r\"], on_error: open}\nupstreams:\n  vrata_x: {dns: \"x:80\"}\n"
        ),
        [
            "gw.yaml:2:19: `rediss://r:1`: TLS to Redis (rediss://) is not supported by this version of vrata yet",
            "gw.yaml:2:35: `http://r` is not a Redis URL: use redis://HOST:PORT[/DB] or unix:///PATH",
            "gw.yaml:2:58: unknown value `open`: expected `local`, `allow` or `deny`",
            "gw.yaml:4:3: upstream names starting with `vrata_` are reserved for the clusters of vrata's own services",
        ]
    );
}

#[test]
fn route_cache_converts() {
    let gw = ok(&format!(
        "{PROVIDER}cache_store: {{redis: \"redis://cache:6379/1\"}}\n{}",
        route(
            "    upstream: orders\n    auth: {provider: kc}\n    cache:\n      store: redis\n      ttl: 30s\n      vary: [Accept-Language]\n      key_extra: [\"claim:sub\", \"header:X-Tenant\"]\n      max_body: 512KiB\n      stale_if_error: 5m\n"
        )
    ));
    assert_eq!(
        gw.routes[0].cache,
        Some(RouteCache {
            store: CacheStore::Redis,
            ttl: Duration::from_secs(30),
            vary: vec![header("accept-language")],
            key_extra: vec![
                CacheKeyPart::Claim(ClaimPath::new("sub").expect("path")),
                CacheKeyPart::Header(header("x-tenant")),
            ],
            max_body: 512 * 1024,
            stale_if_error: Duration::from_secs(300),
        })
    );
    assert_eq!(gw.cache_redis, ["redis://cache:6379/1"]);
    // Defaults: in memory, a minute, 1 MiB, never stale.
    let gw = ok(&route("    upstream: orders\n    cache: {}\n"));
    assert_eq!(
        gw.routes[0].cache,
        Some(RouteCache {
            store: CacheStore::Local,
            ttl: defaults::CACHE_TTL,
            vary: Vec::new(),
            key_extra: Vec::new(),
            max_body: defaults::CACHE_MAX_BODY,
            stale_if_error: Duration::ZERO,
        })
    );
    assert!(gw.cache_redis.is_empty());
    // The rate limits' Redis serves when the cache has none of its own.
    let gw = ok(&format!(
        "rate_limits: {{store: {{redis: \"redis://r:6379\"}}}}\n{}",
        route("    upstream: orders\n    cache: {store: redis}\n")
    ));
    assert_eq!(gw.cache_redis, ["redis://r:6379"]);
}

#[test]
fn route_cache_rules() {
    assert_eq!(
        errors(&route(
            "    upstream: orders\n    cache:\n      store: redis\n      vary: [\"a b\", x, X]\n      key_extra: [\"claim:sub\", user]\n      max_body: 2GB\n"
        )),
        [
            "gw.yaml:8:14: `store: redis` needs a Redis: set `cache_store.redis` (or `rate_limits.store.redis`)",
            "gw.yaml:9:14: invalid header name `a b`: use letters, digits and !#$%&'*+-.^_`|~",
            "gw.yaml:9:24: `x` is listed twice",
            "gw.yaml:10:19: `claim:sub` needs `auth` on the route: claims come from the caller's token, checked by ext-authz",
            "gw.yaml:10:32: unknown key part `user`: use `claim:PATH` or `header:NAME`",
            "gw.yaml:11:17: `2GB`: expected a size such as 512KiB or 1MiB",
        ]
    );
    assert_eq!(
        errors(&route("    respond: {status: 200}\n    cache: {}\n")),
        ["gw.yaml:7:12: `cache` only applies to routes that proxy to an `upstream`"]
    );
    assert_eq!(
        errors(&format!(
            "rate_limits: {{store: {{redis: [\"redis://a:1\", \"redis://b:1\"]}}}}\n{}",
            route("    upstream: orders\n    cache: {store: redis}\n")
        )),
        [
            "gw.yaml:8:20: `rate_limits.store.redis` is a Redis Cluster, which response-cache does not use: set `cache_store.redis` to one Redis"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Several files

#[test]
fn files_are_merged_in_order() {
    let a = "listeners:\n  - {name: a, address: \"0.0.0.0:80\"}\nupstreams:\n  orders: {endpoints: [\"10.0.0.1:80\"]}\nroutes:\n  - {name: r1, upstream: users}\n";
    let b = "listeners:\n  - {name: b, address: \"0.0.0.0:81\"}\nupstreams:\n  users: {dns: \"users:80\"}\nroutes:\n  - {name: r2, upstream: orders}\nservices: {timeout: 1s}\n";
    let (gw, doc) = load_files(&[("a.yaml", a), ("b.yaml", b)], &[]).expect("valid");
    let names = |v: Vec<&Name>| {
        v.into_iter()
            .map(Name::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(names(gw.listeners.iter().map(|l| &l.name).collect()), "a,b");
    assert_eq!(names(gw.routes.iter().map(|r| &r.name).collect()), "r1,r2");
    assert_eq!(names(gw.upstreams.keys().collect()), "orders,users");
    assert_eq!(gw.services.timeout, Duration::from_secs(1));
    assert_eq!(
        doc,
        serde_json::json!({
            "listeners": [{"name": "a", "address": "0.0.0.0:80"}, {"name": "b", "address": "0.0.0.0:81"}],
            "upstreams": {"orders": {"endpoints": ["10.0.0.1:80"]}, "users": {"dns": "users:80"}},
            "routes": [{"name": "r1", "upstream": "users"}, {"name": "r2", "upstream": "orders"}],
            "services": {"timeout": "1s"},
        })
    );
}

#[test]
fn names_defined_twice_across_files_name_both_places() {
    let a = "upstreams:\n  orders: {endpoints: [\"10.0.0.1:80\"]}\nroutes:\n  - name: r\n    upstream: orders\nservices: {}\nlisteners: [{name: l, address: \"0.0.0.0:80\"}]\n";
    let b = "upstreams:\n  orders: {dns: \"orders:80\"}\nroutes:\n  - name: r\n    upstream: orders\nservices:\n  timeout: 1s\nlisteners: [{name: l, address: \"0.0.0.0:81\"}]\n";
    assert_eq!(
        load_files(&[("conf/a.yaml", a), ("conf/b.yaml", b)], &[]).map(|_| ()),
        Err(vec![
            "conf/b.yaml:2:3: upstream `orders` is already defined at conf/a.yaml:2:3".to_owned(),
            "conf/b.yaml:4:11: route `r` is already defined at conf/a.yaml:4:11".to_owned(),
            "conf/b.yaml:7:3: `services` is already defined at conf/a.yaml:6:11: define it in one file only".to_owned(),
            "conf/b.yaml:8:20: listener `l` is already defined at conf/a.yaml:7:20".to_owned(),
        ])
    );
}

#[test]
fn a_broken_file_does_not_cause_follow_up_errors() {
    // The upstream may be defined in the file that does not parse: no "unknown upstream".
    let a = "upstreams:\n  orders: [\n";
    let b = "routes:\n  - name: r\n    upstream: orders\n";
    let e = load_files(&[("a.yaml", a), ("b.yaml", b)], &[]).map(|_| ());
    let e = e.expect_err("a.yaml is broken");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("a.yaml:3:1: YAML syntax error"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Environment variables

#[test]
fn env_expansion() {
    let yaml = "listeners:\n  - name: ${NAME:-public}\n    address: \"${HOST}:${PORT:-8080}\"\n    trusted_hops: ${HOPS}\n    http2: ${H2:-false}\n";
    let (gw, doc) =
        load_files(&[("gw.yaml", yaml)], &[("HOST", "10.0.0.1"), ("HOPS", "2")]).expect("valid");
    let l = &gw.listeners[0];
    assert_eq!(l.name, name("public"));
    assert_eq!(l.address, addr("10.0.0.1:8080"));
    // A plain value is resolved after expansion: an integer.
    assert_eq!(l.trusted_hops, 2);
    assert_eq!(doc["listeners"][0]["trusted_hops"], serde_json::json!(2));
    assert_eq!(
        doc["listeners"][0]["address"],
        serde_json::json!("10.0.0.1:8080")
    );
    assert!(!l.http2);
    // A quoted value stays a string, which is not a boolean.
    assert_eq!(
        load_files(
            &[(
                "gw.yaml",
                &format!("{yaml}    access_log: \"${{LOG:-true}}\"\n")
            )],
            &[("HOST", "10.0.0.1"), ("HOPS", "2")]
        )
        .map(|_| ()),
        Err(vec![
            "gw.yaml:6:17: expected `true` or `false`, found string \"true\"".to_owned()
        ])
    );
}

#[test]
fn unset_variables_are_reported_where_they_are_written() {
    let yaml = "listeners:\n  - name: l\n    address: \"${HOST}:${PORT}\"\n    trusted_hops: ${HOPS}\n    http2: ${H2:-yes}\nroutes:\n  - name: r\n    respond: {status: 200, body: \"$${HOME} is literal\"}\n";
    assert_eq!(
        load_files(&[("gw.yaml", yaml)], &[("HOST", "10.0.0.1")]).map(|_| ()),
        Err(vec![
            "gw.yaml:3:23: environment variable `PORT` is not set (write `${PORT:-default}` to give a default)".to_owned(),
            "gw.yaml:4:19: environment variable `HOPS` is not set (write `${HOPS:-default}` to give a default)".to_owned(),
            // The keys after a reported value are still checked.
            "gw.yaml:5:12: expected `true` or `false`, found string \"yes\"".to_owned(),
        ])
    );
    let (gw, _) = load_files(
        &[("gw.yaml", yaml)],
        &[
            ("HOST", "10.0.0.1"),
            ("PORT", "80"),
            ("HOPS", "1"),
            ("H2", "true"),
        ],
    )
    .expect("valid");
    let Action::Respond(r) = &gw.routes[0].action else {
        panic!("respond")
    };
    assert_eq!(r.body.as_deref(), Some("${HOME} is literal"));
}

// ---------------------------------------------------------------------------------------------
// The JSON Schema and the docs

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn checked_in_schema_is_current() {
    let path = repo_file("docs/gateway.schema.json");
    let fresh = format!(
        "{}\n",
        serde_json::to_string_pretty(&json_schema()).expect("schema serializes")
    );
    if std::env::var_os("VRATA_BLESS").is_some() {
        fs::write(&path, &fresh).expect("write the schema");
        return;
    }
    let checked_in = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "docs/gateway.schema.json is stale: rerun with VRATA_BLESS=1 to rewrite it"
    );
}

/// Every key of the schema appears in docs/config.md as `key`.
#[test]
fn docs_mention_every_key() {
    fn keys(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                map.values().for_each(|v| keys(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    keys(&json_schema(), &mut all);
    all.sort();
    all.dedup();
    assert!(all.len() > 40, "{all:?}");
    let docs = fs::read_to_string(repo_file("docs/config.md")).expect("docs/config.md");
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| !docs.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md does not mention {missing:?}"
    );
}

#[test]
fn schema_describes_the_format() {
    let schema = json_schema();
    assert_eq!(schema["title"], "vrata gateway configuration");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["$defs"]["Listener"]["required"],
        serde_json::json!(["name", "address"])
    );
    assert_eq!(
        schema["$defs"]["Balance"]["enum"],
        serde_json::json!([
            "round_robin",
            "least_request",
            "random",
            "ring_hash",
            "maglev"
        ])
    );
    assert_eq!(
        schema["$defs"]["Duration"]["pattern"],
        "^([0-9]+(ms|s|m|h|d))+$"
    );
}

// ---------------------------------------------------------------------------------------------
// Files on disk

#[test]
fn load_reads_a_file_or_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.yaml");
    let e = load(&missing).expect_err("missing file");
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].file.as_path(), e[0].line, e[0].col),
        (missing.as_path(), 1, 1)
    );
    assert!(
        e[0].message.starts_with("cannot read the configuration: "),
        "{e:?}"
    );

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    fs::write(empty.join("notes.txt"), "x").expect("write");
    assert_eq!(
        load(&empty)
            .expect_err("no yaml")
            .iter()
            .map(|d| d.message.as_str())
            .collect::<Vec<_>>(),
        ["no *.yaml or *.yml files in this directory"]
    );

    let conf = dir.path().join("conf");
    fs::create_dir(&conf).expect("mkdir");
    fs::write(
        conf.join("20-routes.yml"),
        "routes:\n  - {name: r, upstream: u}\n",
    )
    .expect("write");
    fs::write(
        conf.join("10-upstreams.yaml"),
        "upstreams:\n  u: {endpoints: [\"${IP}:80\"]}\n",
    )
    .expect("write");
    fs::write(conf.join(".10-upstreams.yaml.swp"), "garbage: [").expect("write");
    fs::write(conf.join("README.md"), "# not config").expect("write");
    let loaded =
        load_with_env(&conf, &|n| (n == "IP").then(|| "10.0.0.9".to_owned())).expect("valid");
    assert_eq!(
        loaded.files,
        [conf.join("10-upstreams.yaml"), conf.join("20-routes.yml")]
    );
    assert_eq!(
        loaded.gateway.upstreams[&name("u")].endpoints,
        Endpoints::Static(vec![Endpoint {
            address: addr("10.0.0.9:80"),
            weight: 1
        }])
    );

    let single = conf.join("20-routes.yml");
    let e = load(&single).expect_err("unknown upstream");
    assert_eq!(
        e[0].to_string(),
        format!(
            "{}:2:25: unknown upstream `u` (no upstreams are defined)",
            single.display()
        )
    );
}

#[test]
fn proxy_settings_on_respond_and_redirect_routes_are_errors() {
    let yaml = format!(
        "{UPSTREAM}routes:
  - name: a
    respond: {{status: 200}}
    cors: {{allow_origins: [\"https://app.example.com\"]}}
    timeout: 1s
  - name: b
    redirect: {{path: /x}}
    retries: {{retry_on: [reset]}}
"
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:7:11: `cors` only applies to routes that proxy to an `upstream`",
            "gw.yaml:8:14: `timeout` only applies to routes that proxy to an `upstream`",
            "gw.yaml:11:14: `retries` only applies to routes that proxy to an `upstream`",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// auth

const PROVIDER: &str = "auth:\n  providers:\n    kc:\n      issuer: \"https://sso.example.com/realms/demo\"\n      audiences: [api-gateway]\n";

#[test]
fn auth_providers_and_route_auth_convert_with_defaults() {
    let gw = ok(&format!(
        "{PROVIDER}{}",
        route(
            "    upstream: orders\n    auth:\n      provider: kc\n      roles: {any_of: [\"orders:read\"]}\n      scopes: {all_of: [orders.read, profile]}\n      optional: true\n      forward_claims: {X-User-Id: sub, x-user-roles: realm_access.roles}\n"
        )
    ));
    let kc = &gw.auth_providers[&name("kc")];
    assert_eq!(
        *kc,
        AuthProvider {
            name: name("kc"),
            issuer: "https://sso.example.com/realms/demo".into(),
            jwks_url: None,
            audiences: vec!["api-gateway".into()],
            algorithms: vec![Algorithm::RS256],
            leeway: Duration::from_secs(30),
            roles_claims: vec![ClaimPath::new("realm_access.roles").expect("path")],
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
        }
    );
    assert_eq!(
        gw.routes[0].auth,
        Some(RouteAuth {
            provider: name("kc"),
            roles: Requirement {
                any_of: vec!["orders:read".into()],
                all_of: vec![],
            },
            scopes: Requirement {
                any_of: vec![],
                all_of: vec!["orders.read".into(), "profile".into()],
            },
            optional: true,
            forward_claims: vec![
                (header("x-user-id"), ClaimPath::new("sub").expect("path")),
                (
                    header("x-user-roles"),
                    ClaimPath::new("realm_access.roles").expect("path")
                ),
            ],
        })
    );
    assert!(gw.uses_auth());
}

#[test]
fn every_provider_setting_is_read() {
    let gw = ok(r#"auth:
  providers:
    kc:
      issuer: "https://sso.example.com/realms/demo"
      jwks_url: "https://sso.example.com/certs"
      audiences: [a, b]
      algorithms: [ES256, RS256, EdDSA]
      leeway: 5s
      roles_claims: ["resource_access.my.app.roles"]
      jwks_refresh: 1m
      jwks_min_refetch: 1m
"#);
    let kc = &gw.auth_providers[&name("kc")];
    assert_eq!(
        kc.jwks_url.as_deref(),
        Some("https://sso.example.com/certs")
    );
    assert_eq!(kc.audiences, ["a", "b"]);
    assert_eq!(
        kc.algorithms,
        [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA]
    );
    assert_eq!(kc.leeway, Duration::from_secs(5));
    assert_eq!(kc.jwks_refresh, Duration::from_secs(60));
    assert_eq!(kc.jwks_min_refetch, Duration::from_secs(60));
    // A null jwks_url (as in SPEC's example) means "discover".
    let gw = ok(&format!("{PROVIDER}      jwks_url: null\n"));
    assert_eq!(gw.auth_providers[&name("kc")].jwks_url, None);
    assert!(!gw.uses_auth());
}

#[test]
fn provider_mistakes_are_reported_at_their_values() {
    let yaml = r#"auth:
  providers:
    kc:
      issuer: "sso.example.com"
      jwks_url: "https:///certs"
      audiences: []
      algorithms: [RS256, HS256, none, rs256, RS256]
      leeway: 10m
      roles_claims: ["realm_access..roles"]
      jwks_refresh: 1m
      jwks_min_refetch: 5m
    "bad name":
      issuer: "https://a.example.com"
      audiences: [x, x, ""]
"#;
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:4:15: `issuer` must be an http(s) URL, found `sso.example.com`",
            "gw.yaml:5:17: `jwks_url` `https:///certs` has no host",
            "gw.yaml:6:18: `audiences` is empty: name the audience (client id) tokens for this gateway carry",
            "gw.yaml:7:27: algorithm `HS256` is not allowed: HMAC needs a shared secret, and the gateway only holds the provider's public keys (accepting it would let anyone sign with the public key)",
            "gw.yaml:7:34: algorithm `none` is not allowed: unsigned tokens are never accepted",
            "gw.yaml:7:40: algorithm `rs256` is not allowed: algorithm names are case-sensitive: write `RS256`",
            "gw.yaml:7:47: algorithm `RS256` is listed twice",
            "gw.yaml:8:15: `leeway` must be at most 300s: a longer one keeps expired tokens working",
            "gw.yaml:9:22: invalid claim path \"realm_access..roles\": use dot-separated names such as realm_access.roles",
            "gw.yaml:11:25: `jwks_min_refetch` (300s) must not be longer than `jwks_refresh` (60s)",
            "gw.yaml:12:5: invalid name \"bad name\": use 1 to 128 characters of A-Z a-z 0-9 - _ .",
            "gw.yaml:14:22: audience `x` is listed twice",
            "gw.yaml:14:25: an empty audience never matches",
        ]
    );
}

#[test]
fn route_auth_mistakes_are_reported_at_their_values() {
    let yaml = format!(
        "{PROVIDER}{}",
        route(
            r#"    upstream: orders
    request_headers: {set: {x-tenant: a}}
    auth:
      provider: kk
      roles: {any_of: [a, a], one_of: [b]}
      forward_claims: {authorization: sub, x-tenant: tid, "x y": sub, x-ok: "a..b"}
"#
        )
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:14:17: unknown auth provider `kk`; did you mean `kc`?",
            "gw.yaml:15:27: role `a` is listed twice",
            "gw.yaml:15:31: unknown key `one_of`; did you mean `any_of`?",
            "gw.yaml:16:24: header `authorization` cannot carry a claim: the gateway relies on the client's or its own value",
            "gw.yaml:16:44: header `x-tenant` is also set by `request_headers`: it would overwrite the claim",
            "gw.yaml:16:59: invalid header name `x y`: use letters, digits and !#$%&'*+-.^_`|~",
            "gw.yaml:16:77: invalid claim path \"a..b\": use dot-separated names such as realm_access.roles",
        ]
    );
    // No providers at all.
    assert_eq!(
        errors(&route("    upstream: orders\n    auth: {provider: kc}\n")),
        [
            "gw.yaml:7:22: unknown auth provider `kc` (no providers are defined under `auth.providers`)"
        ]
    );
}

#[test]
fn providers_merge_across_files_and_names_are_unique() {
    let a = PROVIDER;
    let b = "auth:\n  providers:\n    kc:\n      issuer: \"https://b.example.com\"\n      audiences: [x]\n";
    let errors = load_files(&[("a.yaml", a), ("b.yaml", b)], &[]).expect_err("duplicate");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("b.yaml:3:5: auth provider `kc` is already defined at a.yaml:3:5"),
        "{errors:?}"
    );
    let other = "auth:\n  providers:\n    other:\n      issuer: \"https://b.example.com\"\n      audiences: [x]\n";
    let (gw, _) = load_files(&[("a.yaml", a), ("b.yaml", other)], &[]).expect("loads");
    assert_eq!(gw.auth_providers.len(), 2);
}

#[test]
fn vrata_upstream_names_are_reserved() {
    assert_eq!(
        errors("upstreams:\n  vrata_ext_authz:\n    endpoints: [\"10.0.0.1:80\"]\n"),
        [
            "gw.yaml:2:3: upstream names starting with `vrata_` are reserved for the clusters of vrata's own services"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Aggregation

const THREE_UPSTREAMS: &str = "upstreams:\n  users: {endpoints: [\"10.0.0.1:80\"]}\n  orders: {endpoints: [\"10.0.0.2:80\"]}\n  reco: {endpoints: [\"10.0.0.3:80\"]}\n";

#[test]
fn aggregates_convert() {
    let gw = ok(&format!(
        "{THREE_UPSTREAMS}services: {{aggregator: \"127.0.0.1:7003\", aggregator_loopback: \"127.0.0.1:7004\"}}\nroutes:
  - name: dash
    match: {{path_template: \"/u/{{id}}/dash\"}}
    aggregate:
      timeout: 1s
      forward_authorization: true
      backends:
        - {{name: reco, upstream: reco, path: \"/reco/{{user.profile.segment}}?u={{id}}\", group: recommendations, optional: true}}
        - {{name: user, upstream: users, path: \"/users/{{id}}\", group: user}}
        - {{name: orders, upstream: orders, path: \"/orders?user={{id}}\", optional: true, timeout: 300ms}}
    response:
      json: {{deny: [user.internal], rename: {{user.createdAt: created_at}}, allow: [user, recommendations], target: x.y}}
  - name: card
    upstream: users
    response: {{json: {{allow: [id]}}}}
"
    ));
    assert_eq!(gw.services.aggregator, addr("127.0.0.1:7003"));
    assert_eq!(gw.services.aggregator_loopback, addr("127.0.0.1:7004"));
    let Action::Aggregate(a) = &gw.routes[0].action else {
        panic!("an aggregate");
    };
    assert_eq!(a.timeout, Duration::from_secs(1));
    assert!(a.forward_authorization);
    assert_eq!(a.backends.len(), 3);
    assert_eq!(a.backends[0].depends_on, [name("user")]);
    assert_eq!(a.backends[0].group.as_deref(), Some("recommendations"));
    assert!(a.backends[0].optional);
    assert_eq!(a.backends[2].timeout, Some(Duration::from_millis(300)));
    assert_eq!(a.backends[2].group, None);
    let shape = gw.routes[0].response_json.as_ref().expect("shape");
    assert_eq!(shape.deny[0].as_str(), "user.internal");
    assert_eq!(shape.rename[0].1, "created_at");
    assert_eq!(shape.target.as_ref().map(|t| t.as_str()), Some("x.y"));
    assert!(gw.routes[0].via_aggregator());
    assert!(gw.routes[1].via_aggregator());
    // Defaults.
    let d = ok(&format!(
        "{THREE_UPSTREAMS}routes:\n  - name: d\n    aggregate: {{backends: [{{name: u, upstream: users, path: /u}}]}}\n"
    ));
    let Action::Aggregate(a) = &d.routes[0].action else {
        panic!("an aggregate");
    };
    assert_eq!(a.timeout, defaults::AGGREGATE_TIMEOUT);
    assert!(!a.forward_authorization);
    assert_eq!(d.services.aggregator, defaults::AGGREGATOR);
}

#[test]
fn aggregate_rules() {
    let e = errors(&format!(
        "{THREE_UPSTREAMS}routes:
  - name: dash
    match: {{path_template: \"/u/{{id}}\"}}
    aggregate:
      backends:
        - {{name: a, upstream: userz, path: \"/a/{{idd}}\"}}
        - {{name: b, upstream: users, path: \"/b/{{nobody.x}}\", group: g}}
        - {{name: c, upstream: users, path: \"/c/{{c.x}}\", group: g}}
        - {{name: a, upstream: users, path: \"x\"}}
"
    ));
    assert_eq!(
        e,
        [
            "gw.yaml:10:31: unknown upstream `userz`; did you mean `users`?",
            "gw.yaml:10:48: `{idd}` is not a variable of the route's path template; did you mean `id`?; `{backend.field}` names another backend's answer",
            "gw.yaml:11:48: unknown backend `nobody` in `{nobody.x}`",
            "gw.yaml:12:48: backend `c` cannot use its own answer",
            "gw.yaml:13:45: a backend path starts with `/`, found `x`",
        ]
    );
    let cycle = errors(&format!(
        "{THREE_UPSTREAMS}routes:
  - name: dash
    aggregate:
      backends:
        - {{name: a, upstream: users, path: \"/a/{{b.x}}\"}}
        - {{name: b, upstream: users, path: \"/b/{{a.y}}\"}}
"
    ));
    assert_eq!(
        cycle,
        ["gw.yaml:9:44: backends `a` -> `b` -> `a` wait for each other's answers: a cycle"]
    );
    let misc = errors(&format!(
        "{THREE_UPSTREAMS}routes:
  - name: dash
    aggregate: {{backends: []}}
    rewrite: {{path_prefix: /x}}
    retries: {{retry_on: [reset]}}
  - name: direct
    respond: {{status: 200}}
    response: {{json: {{deny: [a..b]}}}}
  - name: groups
    upstream: users
    aggregate: {{backends: [{{name: a, upstream: users, path: /a}}]}}
"
    ));
    assert_eq!(misc.len(), 6, "{misc:#?}");
    assert!(misc[0].contains("`backends` is empty"), "{misc:#?}");
}
