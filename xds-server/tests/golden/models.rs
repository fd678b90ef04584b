//! Hand-built gateways covering every feature of the model, for golden and Envoy tests.

use std::collections::BTreeMap;
use std::time::Duration;

use vrata_xds::model::*;

pub fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

pub fn header(s: &str) -> HeaderName {
    HeaderName::new(s).expect("valid header name")
}

pub fn methods(list: &[&str]) -> Vec<Method> {
    list.iter().map(|m| Method((*m).to_owned())).collect()
}

pub fn services() -> Services {
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
}

pub fn listener(n: &str, address: &str) -> Listener {
    Listener {
        name: name(n),
        address: address.parse().expect("socket address"),
        trusted_hops: 0,
        http2: false,
        redirect_https: false,
        access_log: false,
        tls: None,
    }
}

pub fn upstream(n: &str, endpoints: &[(&str, u32)]) -> Upstream {
    Upstream::new(
        name(n),
        Endpoints::Static(
            endpoints
                .iter()
                .map(|(a, w)| Endpoint {
                    address: a.parse().expect("socket address"),
                    weight: *w,
                })
                .collect(),
        ),
    )
}

/// A route to `upstream` for `path_prefix` on any host, nothing else set.
pub fn route(n: &str, path_prefix: &str, upstream: &str) -> Route {
    Route::to_upstream(name(n), path_prefix, name(upstream))
}

fn upstreams(list: Vec<Upstream>) -> BTreeMap<Name, Upstream> {
    list.into_iter().map(|u| (u.name.clone(), u)).collect()
}

/// Every golden model, by golden file name.
pub fn all() -> Vec<(&'static str, Gateway)> {
    vec![
        ("minimal", minimal()),
        ("upstreams", upstreams_model()),
        ("routing", routing()),
        ("listeners", listeners()),
        ("observability", observability()),
    ]
}

/// The stats listener and tracing (to a collector by DNS name), and services by DNS name.
pub fn observability() -> Gateway {
    let mut gw = minimal();
    gw.observability = Observability {
        prometheus: Some("0.0.0.0:9902".parse().expect("addr")),
        tracing: Some(Tracing {
            collector: Endpoints::Dns {
                host: "otel-collector".into(),
                port: 4318,
            },
            authority: "otel-collector:4318".into(),
            path: "/v1/traces".into(),
            service_name: "vrata-gateway".into(),
            sample_ratio: 0.25,
        }),
    };
    gw.services.ext_authz = ServiceAddress::Dns {
        host: "ext-authz".into(),
        port: 18001,
    };
    gw
}

/// The benchmark's plain route: one listener, one upstream, one prefix route.
pub fn minimal() -> Gateway {
    Gateway {
        listeners: vec![listener("public", "127.0.0.1:8080")],
        upstreams: upstreams(vec![upstream("echo", &[("127.0.0.1:9000", 1)])]),
        routes: vec![route("all", "/", "echo")],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    }
}

/// Every upstream feature: discovery, balancers and their hash policies, HTTP/2, health checks,
/// outlier detection, circuit breakers, weights.
pub fn upstreams_model() -> Gateway {
    let mut orders = upstream("orders", &[("10.0.0.11:8080", 1), ("10.0.0.12:8080", 2)]);
    orders.balance = Balance::LeastRequest;
    orders.connect_timeout = Duration::from_millis(1500);
    orders.health_check = Some(HealthCheck {
        path: "/healthz".into(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        healthy_after: 2,
        unhealthy_after: 3,
    });
    orders.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: 5,
        eject_for: Duration::from_secs(30),
    });
    orders.circuit_breaker = Some(CircuitBreaker {
        max_connections: Some(1024),
        max_pending: Some(1024),
        max_requests: Some(4096),
        max_retries: Some(3),
    });

    let mut users = upstream("users", &[]);
    users.endpoints = Endpoints::Dns {
        host: "users.internal".into(),
        port: 8080,
    };
    users.balance = Balance::RingHash(HashOn::Header(header("x-user-id")));

    let mut sessions = upstream("sessions", &[("10.0.1.1:8080", 1), ("[fd00::1]:8080", 1)]);
    sessions.balance = Balance::Maglev(HashOn::Cookie("session".into()));

    let mut grpc = upstream("grpc", &[("10.0.2.1:50051", 1)]);
    grpc.http2 = true;
    grpc.balance = Balance::RingHash(HashOn::Ip);
    grpc.health_check = Some(HealthCheck {
        path: "/health".into(),
        interval: defaults::HEALTH_INTERVAL,
        timeout: defaults::HEALTH_TIMEOUT,
        healthy_after: defaults::HEALTHY_AFTER,
        unhealthy_after: defaults::UNHEALTHY_AFTER,
    });

    let mut random = upstream("random", &[("10.0.3.1:8080", 1)]);
    random.balance = Balance::Random;
    random.circuit_breaker = Some(CircuitBreaker {
        max_requests: Some(10),
        ..Default::default()
    });

    Gateway {
        listeners: vec![listener("public", "0.0.0.0:8080")],
        upstreams: upstreams(vec![orders, users, sessions, grpc, random]),
        routes: vec![
            route("orders", "/orders", "orders"),
            route("users", "/users", "users"),
            route("sessions", "/sessions", "sessions"),
            route("grpc", "/pkg.Service/", "grpc"),
            route("random", "/random", "random"),
        ],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    }
}

/// Every routing feature: host patterns, path matches, methods (405 fallbacks), headers,
/// retries (idempotent split), timeouts, rewrites, header mutations, CORS (preflight routes),
/// direct responses, redirects.
pub fn routing() -> Gateway {
    let mut orders_read = route("orders-read", "/api/orders", "orders");
    orders_read.matcher.hosts = vec!["api.example.com".into()];
    orders_read.matcher.methods = methods(&["GET", "HEAD"]);
    orders_read.matcher.headers = vec![(header("x-api-version"), "2".into())];
    orders_read.rewrite = Some(Rewrite::PathPrefix("/orders".into()));
    orders_read.request_headers = HeaderMutation {
        set: vec![
            (header("x-gateway"), "vrata".into()),
            (header("x-discount"), "10%".into()),
            (header("host"), "orders.internal".into()),
        ],
        remove: vec![header("cookie")],
    };
    orders_read.response_headers = HeaderMutation {
        set: vec![(header("cache-control"), "no-store".into())],
        remove: vec![header("server"), header("x-powered-by")],
    };
    orders_read.timeout = Some(Duration::from_secs(5));
    orders_read.retries = Some(Retries {
        attempts: 2,
        retry_on: vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::RetriableStatus(503),
            RetryOn::RetriableStatus(502),
        ],
        per_try_timeout: Some(Duration::from_secs(1)),
    });
    orders_read.cors = Some(Cors {
        allow_origins: vec!["https://app.example.com".into()],
        allow_methods: methods(&["GET"]),
        allow_headers: vec![header("authorization")],
        expose_headers: vec![header("x-request-id")],
        allow_credentials: true,
        max_age: Some(Duration::from_secs(600)),
    });

    let mut orders_write = route("orders-write", "/api/orders", "orders");
    orders_write.matcher.hosts = vec!["api.example.com".into()];
    orders_write.matcher.methods = methods(&["POST", "GET"]);
    orders_write.retries = Some(Retries {
        attempts: 1,
        retry_on: vec![RetryOn::ConnectFailure],
        per_try_timeout: None,
    });

    let mut order_by_id = route("order-by-id", "/", "orders");
    order_by_id.matcher.hosts = vec!["*.example.com".into()];
    order_by_id.matcher.path = PathMatch::Template(PathTemplate {
        source: "/v1/orders/{id}".into(),
        variables: vec!["id".into()],
    });
    order_by_id.rewrite = Some(Rewrite::PathTemplate("/orders/{id}".into()));
    order_by_id.retries = Some(Retries {
        attempts: defaults::RETRY_ATTEMPTS,
        retry_on: vec![RetryOn::ServerError, RetryOn::GatewayError, RetryOn::Reset],
        per_try_timeout: None,
    });

    let mut legacy = route("legacy", "/", "legacy");
    legacy.matcher.path = PathMatch::Regex("^/legacy/([a-z]+)/[0-9]+$".into());
    legacy.rewrite = Some(Rewrite::Regex {
        regex: "^/legacy/([a-z]+)/".into(),
        substitution: "/\\1/".into(),
    });
    legacy.cors = Some(Cors {
        allow_origins: vec!["*".into()],
        allow_methods: Vec::new(),
        allow_headers: Vec::new(),
        expose_headers: Vec::new(),
        allow_credentials: false,
        max_age: None,
    });

    let mut health = route("health", "/", "orders");
    health.matcher.path = PathMatch::Exact("/healthz".into());
    health.action = Action::Respond(Respond {
        status: 200,
        body: Some("{\"status\":\"ok\"}".into()),
        headers: vec![(header("content-type"), "application/json".into())],
    });
    health.response_headers.set = vec![(header("cache-control"), "no-cache".into())];

    let mut maintenance = route("maintenance", "/maintenance", "orders");
    maintenance.matcher.hosts = vec!["api.example.com".into(), "admin.example.org".into()];
    maintenance.action = Action::Respond(Respond {
        status: 503,
        body: Some("Down for maintenance.\nBack at 10:00 UTC: \"soon\".\n".into()),
        headers: Vec::new(),
    });

    let mut old_docs = route("old-docs", "/docs", "orders");
    old_docs.matcher.methods = methods(&["GET"]);
    old_docs.action = Action::Redirect(Redirect {
        path: None,
        host: Some("docs.example.com".into()),
        scheme: Some(Scheme::Https),
        status: RedirectStatus::PermanentRedirect308,
    });
    old_docs.rewrite = Some(Rewrite::PathPrefix("/v1".into()));

    let mut moved = route("moved", "/old", "orders");
    moved.matcher.path = PathMatch::Exact("/old".into());
    moved.action = Action::Redirect(Redirect {
        path: Some("/new".into()),
        host: None,
        scheme: None,
        status: RedirectStatus::Found302,
    });

    let mut catch_all = route("catch-all", "/", "orders");
    catch_all.matcher.hosts = vec!["*".into()];
    catch_all.matcher.methods = methods(&["GET"]);

    Gateway {
        listeners: vec![listener("public", "0.0.0.0:8080")],
        upstreams: upstreams(vec![
            upstream("orders", &[("10.0.0.11:8080", 1)]),
            upstream("legacy", &[("10.0.0.21:8080", 1)]),
        ]),
        routes: vec![
            orders_read,
            orders_write,
            order_by_id,
            legacy,
            health,
            maintenance,
            old_docs,
            moved,
            catch_all,
        ],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    }
}

/// A `respond` body above Envoy's default 4 KiB limit for direct responses.
pub fn large_respond_body() -> Gateway {
    let mut r = route("big", "/big", "echo");
    r.action = Action::Respond(Respond {
        status: 200,
        body: Some("x".repeat(10_000)),
        headers: Vec::new(),
    });
    let mut gw = minimal();
    gw.routes.insert(0, r);
    gw
}

/// Every listener feature: HTTP/2, trusted hops, JSON access log, https redirect, two
/// listeners sharing the routes.
pub fn listeners() -> Gateway {
    let mut public = listener("public", "0.0.0.0:8080");
    public.http2 = true;
    public.trusted_hops = 1;
    public.access_log = true;
    let mut redirect = listener("plain-http", "[::]:8081");
    redirect.redirect_https = true;
    let mut api = route("api", "/api", "api");
    api.matcher.hosts = vec!["api.example.com".into()];
    Gateway {
        listeners: vec![public, redirect],
        upstreams: upstreams(vec![upstream("api", &[("127.0.0.1:9000", 1)])]),
        routes: vec![api],
        services: services(),
        auth_providers: Default::default(),
        rate_limits: Default::default(),
        observability: Default::default(),
        cache_redis: Vec::new(),
    }
}
