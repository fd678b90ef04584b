//! Hot-path benchmarks: one memory-store decision, one whole `ShouldRateLimit` through the
//! handler (descriptor matching, store, statuses and headers) without the network, and Redis
//! store decisions against a real redis-server on loopback (one at a time: the round trip;
//! 64 at once: what pipelining over the multiplexed connection gives).
//!
//! `nice cargo bench -p vrata-ratelimit`. End-to-end throughput through Envoy lives in `bench/`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use vrata_ratelimit::clock::SystemClock;
use vrata_ratelimit::limits::MAX_LIMIT;
use vrata_ratelimit::store::memory::DEFAULT_CAPACITY;
use vrata_ratelimit::store::{Hit, Store};
use vrata_ratelimit::window::WindowSpec;
use vrata_ratelimit::{
    DOMAIN, Limit, LimitKey, LimitTable, Limits, MemoryStore, Metrics, RateLimiter, RedisStore,
    RedisTarget,
};

/// Limits high enough that every iteration is admitted (the common case) and keys spread over
/// many counters, as many clients would.
fn store() -> MemoryStore {
    MemoryStore::new(DEFAULT_CAPACITY, Arc::new(SystemClock), Metrics::default())
}

fn memory_decision(c: &mut Criterion) {
    let s = store();
    let spec = WindowSpec::new(MAX_LIMIT, Duration::from_secs(60));
    let keys: Vec<String> = (0..1_024)
        .map(|i| format!("vrata:rl:{{r:bench}}:ip:10.0.{i}"))
        .collect();
    let mut i = 0usize;
    c.bench_function("memory store: 1 counter", |b| {
        b.iter(|| {
            i = (i + 1) & 1_023;
            let hit = [Hit {
                key: keys[i].clone(),
                window: spec,
                hits: 1,
            }];
            black_box(s.decide_now(&hit))
        })
    });
    c.bench_function("memory store: 2 counters", |b| {
        b.iter(|| {
            i = (i + 1) & 1_023;
            let hits = [
                Hit {
                    key: keys[i].clone(),
                    window: spec,
                    hits: 1,
                },
                Hit {
                    key: keys[(i + 512) & 1_023].clone(),
                    window: spec,
                    hits: 1,
                },
            ];
            black_box(s.decide_now(&hits))
        })
    });
}

fn handler(c: &mut Criterion) {
    let metrics = Metrics::default();
    let table = Arc::new(LimitTable::new(metrics.clone()));
    let limits = Limits::new([(
        "orders".to_owned(),
        vec![
            Limit::new("per-ip", MAX_LIMIT, Duration::from_secs(60), LimitKey::Ip),
            Limit::new("all", MAX_LIMIT, Duration::from_secs(1), LimitKey::Route),
        ],
    )])
    .expect("valid limits");
    table.apply(&limits);
    let limiter = RateLimiter::new(table, store(), metrics);
    let entry = |k: &str, v: &str| Entry {
        key: k.to_owned(),
        value: v.to_owned(),
    };
    let requests: Vec<RateLimitRequest> = (0..1_024)
        .map(|i| RateLimitRequest {
            domain: DOMAIN.to_owned(),
            descriptors: vec![
                RateLimitDescriptor {
                    entries: vec![
                        entry("route", "orders"),
                        entry("limit", "per-ip"),
                        entry("remote_address", &format!("10.0.{}.{}", i / 256, i % 256)),
                    ],
                    ..Default::default()
                },
                RateLimitDescriptor {
                    entries: vec![entry("route", "orders"), entry("limit", "all")],
                    ..Default::default()
                },
            ],
            hits_addend: 0,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut i = 0usize;
    c.bench_function("handler: ShouldRateLimit, 2 limits, memory store", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) & 1_023;
            let req = &requests[i];
            let limiter = &limiter;
            async move { black_box(limiter.decide(req).await.expect("decision")) }
        })
    });
}

fn redis(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = rt
        .block_on(vrata_e2e::redis::RedisServer::start())
        .expect("redis-server (scripts/test installs it)");
    let store = RedisStore::new(
        RedisTarget::Standalone(server.url()),
        Duration::from_secs(1),
        Metrics::default(),
    );
    rt.block_on(store.connect()).expect("connect to redis");
    let spec = WindowSpec::new(MAX_LIMIT, Duration::from_secs(60));
    let keys: Vec<String> = (0..1_024)
        .map(|i| format!("vrata:rl:{{r:bench}}:ip:10.0.{i}"))
        .collect();
    let hit = |i: usize| {
        [Hit {
            key: keys[i & 1_023].clone(),
            window: spec,
            hits: 1,
        }]
    };
    let mut i = 0usize;
    c.bench_function("redis store: 1 decision (round trip)", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let h = hit(i);
            let store = &store;
            async move { black_box(store.decide(&h).await.expect("decision")) }
        })
    });
    let mut group = c.benchmark_group("redis store");
    group.throughput(Throughput::Elements(64));
    group.bench_function("64 concurrent decisions (pipelined)", |b| {
        b.to_async(&rt).iter(|| {
            i += 64;
            let batch: Vec<_> = (0..64).map(|j| hit(i + j)).collect();
            let store = &store;
            async move {
                let all = batch.iter().map(|h| store.decide(h));
                black_box(futures::future::join_all(all).await)
            }
        })
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, memory_decision, handler, redis);
criterion_main!(benches);
