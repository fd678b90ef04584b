//! The gRPC handler called in-process, as tonic calls it, over the memory store with a manual
//! clock: no network, no sleeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use vrata_ratelimit::clock::ManualClock;
use vrata_ratelimit::{Limit, LimitKey, Limits, MemoryStore, Metrics, OnError, RateLimiter};

/// A multiple of every bucket width used below, so waits come out in whole seconds.
const T0: u64 = 1_670_000_000_000 * 17;

fn memory_limiter(l: &Limits) -> (RateLimiter<MemoryStore>, ManualClock, Metrics) {
    let metrics = Metrics::default();
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(10_000, Arc::new(clock.clone()), metrics.clone());
    (
        RateLimiter::new(table(l, &metrics), store, metrics.clone()),
        clock,
        metrics,
    )
}

fn route_limit(name: &str, limit: u64, per_s: u64) -> Limit {
    Limit::new(name, limit, Duration::from_secs(per_s), LimitKey::Route)
}

fn one(route: &str, limit: &str) -> RateLimitRequest {
    request(vec![descriptor(route, limit, None)])
}

#[tokio::test]
async fn ten_per_two_seconds_admits_ten_of_thirty_and_again_after_the_window() {
    let l = limits("orders", vec![route_limit("all", 10, 2)]);
    let (s, clock, _) = memory_limiter(&l);
    let mut passed = 0;
    for _ in 0..30 {
        passed += usize::from(admitted(&s, one("orders", "all")).await);
    }
    assert_eq!(passed, 10);
    clock.advance(Duration::from_millis(1_999));
    assert!(!admitted(&s, one("orders", "all")).await);
    clock.advance(Duration::from_millis(1));
    let mut passed = 0;
    for _ in 0..30 {
        passed += usize::from(admitted(&s, one("orders", "all")).await);
    }
    assert_eq!(passed, 10);
}

#[tokio::test]
async fn headers_on_admitted_and_refused_requests() {
    let l = limits("orders", vec![route_limit("all", 2, 60)]);
    let (s, clock, _) = memory_limiter(&l);
    let r = call(&s, one("orders", "all")).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(header(&r, "ratelimit-policy"), Some("\"all\";q=2;w=60"));
    assert_eq!(header(&r, "ratelimit"), Some("\"all\";r=1;t=60"));
    assert_eq!(header(&r, "retry-after"), None);
    let st = &r.statuses[0];
    assert_eq!(st.limit_remaining, 1);
    assert_eq!(st.current_limit.as_ref().unwrap().requests_per_unit, 2);
    assert_eq!(st.current_limit.as_ref().unwrap().name, "all");

    clock.advance(Duration::from_secs(10));
    assert!(admitted(&s, one("orders", "all")).await);
    let r = call(&s, one("orders", "all")).await.unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    // The first hit (at T0) leaves the window 50 s from now.
    assert_eq!(header(&r, "retry-after"), Some("50"));
    assert_eq!(header(&r, "ratelimit"), Some("\"all\";r=0;t=50"));
    assert_eq!(
        r.statuses[0].duration_until_reset.as_ref().unwrap().seconds,
        50
    );
}

#[tokio::test]
async fn a_request_must_pass_every_limit_and_a_refusal_consumes_none() {
    let l = limits(
        "orders",
        vec![
            Limit::new("per-ip", 100, Duration::from_secs(60), LimitKey::Ip),
            route_limit("burst", 3, 60),
        ],
    );
    let (s, _, metrics) = memory_limiter(&l);
    let both = || {
        request(vec![
            descriptor("orders", "per-ip", Some(("remote_address", "10.0.0.1"))),
            descriptor("orders", "burst", None),
        ])
    };
    for _ in 0..3 {
        assert!(admitted(&s, both()).await);
    }
    for _ in 0..10 {
        let r = call(&s, both()).await.unwrap();
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        // Statuses follow the descriptors: per-ip had room, burst refused.
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
        assert_eq!(r.statuses[1].code, Code::OverLimit as i32);
        assert_eq!(
            r.statuses[0].limit_remaining, 97,
            "refusals consumed per-ip"
        );
    }
    let decisions = |limit: &str, admitted: bool| metrics.decision("orders", limit, admitted).get();
    assert_eq!(decisions("burst", true), 3);
    assert_eq!(decisions("burst", false), 10);
    assert_eq!(
        decisions("per-ip", true),
        13,
        "per-ip's own verdict was ok each time"
    );
}

#[tokio::test]
async fn claims_give_each_user_a_budget_and_a_missing_claim_shares_one() {
    let l = limits(
        "orders",
        vec![Limit::new(
            "per-user",
            2,
            Duration::from_secs(60),
            LimitKey::Claim("sub".into()),
        )],
    );
    let (s, _, _) = memory_limiter(&l);
    let user = |sub: Option<&str>| {
        request(vec![descriptor(
            "orders",
            "per-user",
            sub.map(|v| ("claim", v)),
        )])
    };
    for u in [Some("alice"), Some("bob"), None] {
        assert!(admitted(&s, user(u)).await);
        assert!(admitted(&s, user(u)).await);
        assert!(!admitted(&s, user(u)).await, "{u:?} has a budget of 2");
    }
}

#[tokio::test]
async fn unknown_domain_route_or_limit_is_answered_ok_without_headers() {
    let l = limits("orders", vec![route_limit("all", 1, 60)]);
    let (s, _, _) = memory_limiter(&l);
    assert!(admitted(&s, one("orders", "all")).await);
    let mut other_domain = one("orders", "all");
    other_domain.domain = "someone-else".into();
    for req in [
        other_domain,
        one("nope", "all"),
        one("orders", "nope"),
        // An ip entry on a route-keyed limit: config skew, not this limit.
        request(vec![descriptor(
            "orders",
            "all",
            Some(("remote_address", "1.2.3.4")),
        )]),
    ] {
        let r = call(&s, req).await.unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses.len(), 1);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
        assert!(r.response_headers_to_add.is_empty());
    }
    // The matched limit is still spent.
    assert!(!admitted(&s, one("orders", "all")).await);
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument() {
    let l = limits("orders", vec![route_limit("all", 1, 60)]);
    let (s, _, _) = memory_limiter(&l);
    let mut swapped = descriptor("orders", "all", None);
    swapped.entries.swap(0, 1);
    let mut negative = descriptor("orders", "all", None);
    negative.is_negative_hits = true;
    for d in [swapped, negative] {
        let e = call(&s, request(vec![d])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with("descriptor 0:"), "{e:?}");
    }
}

#[tokio::test]
async fn hits_addend_counts_several_hits() {
    let l = limits("orders", vec![route_limit("all", 5, 60)]);
    let (s, _, _) = memory_limiter(&l);
    let mut req = one("orders", "all");
    req.hits_addend = 3;
    assert!(admitted(&s, req.clone()).await);
    assert!(!admitted(&s, req).await, "3 + 3 > 5");
    let mut d = descriptor("orders", "all", None);
    d.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 2 });
    assert!(
        admitted(&s, request(vec![d])).await,
        "descriptor-level 2 fits"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_counters_of_unchanged_limits() {
    let v1 = limits(
        "orders",
        vec![route_limit("kept", 3, 60), route_limit("changed", 3, 60)],
    );
    let (s, _, _) = memory_limiter(&v1);
    let both = || {
        request(vec![
            descriptor("orders", "kept", None),
            descriptor("orders", "changed", None),
        ])
    };
    for _ in 0..3 {
        assert!(admitted(&s, both()).await);
    }
    let v2 = limits(
        "orders",
        vec![route_limit("kept", 3, 60), route_limit("changed", 4, 60)],
    );
    s.limits().apply(&v2);
    // "kept" is still spent; "changed" starts afresh with its new limit.
    assert!(!admitted(&s, one("orders", "kept")).await);
    for _ in 0..4 {
        assert!(admitted(&s, one("orders", "changed")).await);
    }
    assert!(!admitted(&s, one("orders", "changed")).await);
}

#[tokio::test]
async fn on_error_allow_admits_everything_while_redis_is_down() {
    let l = limits("orders", vec![route_limit("all", 1, 60)]);
    let dead = vrata_ratelimit::RedisTarget::Standalone(format!(
        "redis://127.0.0.1:{}",
        vrata_e2e::ports::free_port()
    ));
    let (s, metrics) = redis_instance(dead, &l, OnError::Allow).await;
    assert_eq!(metrics.fallback.get(), 1);
    for _ in 0..5 {
        let r = call(&s, one("orders", "all")).await.unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert!(r.response_headers_to_add.is_empty());
    }
}

#[tokio::test]
async fn the_backend_follows_the_store_config() {
    use vrata_ratelimit::clock::SystemClock;
    use vrata_ratelimit::{Backend, Health, StoreConfig};
    let m = Metrics::default();
    let b = Backend::start(&StoreConfig::default(), Arc::new(SystemClock), &m).await;
    assert!(matches!(b, Backend::Memory(_)), "no redis: memory counters");
    let config = StoreConfig {
        redis: vrata_ratelimit::RedisTarget::from_urls(vec![format!(
            "redis://127.0.0.1:{}",
            vrata_e2e::ports::free_port()
        )])
        .unwrap(),
        on_error: OnError::Deny,
        ..Default::default()
    };
    match Backend::start(&config, Arc::new(SystemClock), &m).await {
        Backend::Redis(f) => {
            assert_eq!(f.health(), Health::Fallback, "nothing listens there");
            assert_eq!(f.on_error(), OnError::Deny);
        }
        Backend::Memory(_) => panic!("a redis URL must give the Redis store"),
    }
}

#[tokio::test]
async fn answers_over_grpc_on_the_wire() {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;

    let l = limits("orders", vec![route_limit("all", 1, 60)]);
    let (s, _, _) = memory_limiter(&l);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RateLimitServiceServer::new(s))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let first = client
        .should_rate_limit(one("orders", "all"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.overall_code, Code::Ok as i32);
    let second = client
        .should_rate_limit(one("orders", "all"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.overall_code, Code::OverLimit as i32);
    assert_eq!(header(&second, "retry-after"), Some("60"));
    let mut bad = one("orders", "all");
    bad.descriptors[0].entries.clear();
    let e = client.should_rate_limit(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "descriptor 0: no entries");
    server.abort();
}
