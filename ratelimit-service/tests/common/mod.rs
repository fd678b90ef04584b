//! Helpers shared by the service tests: limits, requests and handler instances.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use vrata_ratelimit::clock::SystemClock;
use vrata_ratelimit::store::Store;
use vrata_ratelimit::{
    DOMAIN, Failover, Limit, LimitTable, Limits, MemoryStore, Metrics, OnError, RateLimiter,
    RedisStore, RedisTarget,
};

/// Short enough that a test with a dead Redis finishes quickly, long enough for a loaded CI.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

pub fn limits(route: &str, limits: Vec<Limit>) -> Limits {
    Limits::new([(route.to_owned(), limits)]).expect("valid limits")
}

pub fn table(limits: &Limits, metrics: &Metrics) -> Arc<LimitTable> {
    let t = Arc::new(LimitTable::new(metrics.clone()));
    t.apply(limits);
    t
}

/// A descriptor in the contract's shape: route, limit, then the key entry if any.
pub fn descriptor(route: &str, limit: &str, key: Option<(&str, &str)>) -> RateLimitDescriptor {
    let mut entries = vec![
        Entry {
            key: "route".into(),
            value: route.into(),
        },
        Entry {
            key: "limit".into(),
            value: limit.into(),
        },
    ];
    if let Some((k, v)) = key {
        entries.push(Entry {
            key: k.into(),
            value: v.into(),
        });
    }
    RateLimitDescriptor {
        entries,
        ..Default::default()
    }
}

pub fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: DOMAIN.into(),
        descriptors,
        hits_addend: 0,
    }
}

/// Calls the handler the way tonic does.
pub async fn call<S: Store>(
    l: &RateLimiter<S>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    l.should_rate_limit(tonic::Request::new(req))
        .await
        .map(tonic::Response::into_inner)
}

pub async fn admitted<S: Store>(l: &RateLimiter<S>, req: RateLimitRequest) -> bool {
    let r = call(l, req).await.expect("a decision");
    r.overall_code == Code::Ok as i32
}

pub fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

/// One service instance over Redis: its own connection, its own fallback memory, its own
/// metrics, as a separate process would have.
pub async fn redis_instance(
    target: RedisTarget,
    limits: &Limits,
    on_error: OnError,
) -> (RateLimiter<Failover>, Metrics) {
    let metrics = Metrics::default();
    let redis = RedisStore::new(target, CALL_TIMEOUT, metrics.clone());
    let local = MemoryStore::new(10_000, Arc::new(SystemClock), metrics.clone());
    let store = Failover::start(redis, local, on_error, PROBE_INTERVAL, metrics.clone()).await;
    (
        RateLimiter::new(table(limits, &metrics), store, metrics.clone()),
        metrics,
    )
}
