//! The Redis stores against real redis-server processes: counting shared by two instances
//! (standalone and Cluster), and Redis dying and coming back under traffic.

mod common;

use std::time::Duration;

use common::*;
use vrata_e2e::eventually;
use vrata_e2e::redis::{RedisCluster, RedisServer};
use vrata_ratelimit::metrics::{StoreKind, StoreLabels};
use vrata_ratelimit::{
    Failover, Health, Limit, LimitKey, Limits, OnError, RateLimiter, RedisTarget,
};

fn limit_20_per_minute() -> Limits {
    limits(
        "orders",
        vec![Limit::new(
            "all",
            20,
            Duration::from_secs(60),
            LimitKey::Route,
        )],
    )
}

async fn alternate(a: &RateLimiter<Failover>, b: &RateLimiter<Failover>, n: usize) -> usize {
    let mut passed = 0;
    for i in 0..n {
        let l = if i % 2 == 0 { a } else { b };
        if admitted(l, request(vec![descriptor("orders", "all", None)])).await {
            passed += 1;
        }
    }
    passed
}

fn store_errors(m: &vrata_ratelimit::Metrics) -> u64 {
    m.store_errors
        .get_or_create(&StoreLabels {
            store: StoreKind::Redis,
        })
        .get()
}

#[tokio::test]
async fn two_instances_sharing_one_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start().await.unwrap();
    let l = limit_20_per_minute();
    let target = || RedisTarget::Standalone(redis.url());
    let (a, am) = redis_instance(target(), &l, OnError::Local).await;
    let (b, bm) = redis_instance(target(), &l, OnError::Local).await;
    assert_eq!(a.store().health(), Health::Shared, "{}", redis.logs());
    // The script reports counters after consuming, as the memory store does.
    let first = call(&a, request(vec![descriptor("orders", "all", None)]))
        .await
        .unwrap();
    let current = header(&first, "ratelimit").unwrap();
    assert!(current.starts_with("\"all\";r=19;t="), "{current}");
    assert_eq!(alternate(&b, &a, 39).await, 19);
    // Refused by the script: told to come back when the first hit leaves the minute window
    // (the hits above took well under a second, buckets are 1 s).
    let refused = call(&b, request(vec![descriptor("orders", "all", None)]))
        .await
        .unwrap();
    let wait: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((58..=61).contains(&wait), "retry-after {wait}");
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(format!("\"all\";r=0;t={wait}").as_str())
    );
    // Every decision went to Redis: nothing failed, neither instance counted locally.
    assert_eq!(store_errors(&am) + store_errors(&bm), 0);
    assert!(a.store().local().is_empty() && b.store().local().is_empty());
}

#[tokio::test]
async fn concurrent_decisions_from_two_instances_never_over_admit() {
    let redis = RedisServer::start().await.unwrap();
    let l = limits(
        "orders",
        vec![
            Limit::new("per-ip", 30, Duration::from_secs(60), LimitKey::Ip),
            Limit::new("all", 50, Duration::from_secs(60), LimitKey::Route),
        ],
    );
    let target = || RedisTarget::Standalone(redis.url());
    let (a, _) = redis_instance(target(), &l, OnError::Local).await;
    let (b, _) = redis_instance(target(), &l, OnError::Local).await;
    // 200 decisions in flight at once over the two multiplexed connections, from two client
    // addresses: each address gets 30, and together they hit "all" at 50.
    let decisions = (0..200).map(|i| {
        let l = if i % 2 == 0 { &a } else { &b };
        let ip = if i % 4 < 2 { "10.0.0.1" } else { "10.0.0.2" };
        admitted(
            l,
            request(vec![
                descriptor("orders", "per-ip", Some(("remote_address", ip))),
                descriptor("orders", "all", None),
            ]),
        )
    });
    let passed = futures::future::join_all(decisions)
        .await
        .into_iter()
        .filter(|&ok| ok)
        .count();
    assert_eq!(passed, 50);
}

#[tokio::test]
async fn two_instances_sharing_a_three_master_cluster_admit_exactly_the_limit() {
    let cluster = RedisCluster::start().await.unwrap();
    // Several routes, so counters land on different masters; each route's two limits share
    // one slot (a CROSSSLOT error would fail the decision).
    let routes = ["orders", "users", "carts", "search"];
    let l = Limits::new(routes.iter().map(|r| {
        (
            r.to_string(),
            vec![
                Limit::new("all", 20, Duration::from_secs(60), LimitKey::Route),
                Limit::new("per-ip", 1_000, Duration::from_secs(60), LimitKey::Ip),
            ],
        )
    }))
    .unwrap();
    let target = || RedisTarget::Cluster(cluster.urls());
    let (a, am) = redis_instance(target(), &l, OnError::Local).await;
    let (b, bm) = redis_instance(target(), &l, OnError::Local).await;
    assert_eq!(a.store().health(), Health::Shared, "{}", cluster.logs());
    for route in routes {
        let mut passed = 0;
        for i in 0..40 {
            let l = if i % 2 == 0 { &a } else { &b };
            let req = request(vec![
                descriptor(route, "all", None),
                descriptor(route, "per-ip", Some(("remote_address", "10.1.1.1"))),
            ]);
            passed += usize::from(admitted(l, req).await);
        }
        assert_eq!(passed, 20, "route {route}");
    }
    assert_eq!(
        store_errors(&am) + store_errors(&bm),
        0,
        "{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn redis_dying_switches_to_local_counting_and_recovery_resumes_sharing() {
    let mut redis = RedisServer::start().await.unwrap();
    let l = limit_20_per_minute();
    let target = || RedisTarget::Standalone(redis.url());
    let (a, am) = redis_instance(target(), &l, OnError::Local).await;
    let (b, bm) = redis_instance(target(), &l, OnError::Local).await;
    assert_eq!(alternate(&a, &b, 10).await, 10, "shared: 10 of 20 used");

    redis.kill();
    // Each instance finds out on its next call (one failed call each), then counts locally:
    // the full limit per instance, as documented for on_error: local.
    let mut a_passed = 0;
    for _ in 0..30 {
        a_passed +=
            usize::from(admitted(&a, request(vec![descriptor("orders", "all", None)])).await);
    }
    assert_eq!(a_passed, 20, "instance a enforces the limit on its own");
    assert_eq!(a.store().health(), Health::Fallback);
    assert_eq!(am.fallback.get(), 1);
    // Exactly one call failed: after it no decision went to Redis, so none could wait for its
    // timeout.
    assert_eq!(store_errors(&am), 1);
    assert!(!a.store().local().is_empty());
    assert!(admitted(&b, request(vec![descriptor("orders", "all", None)])).await);
    assert_eq!(b.store().health(), Health::Fallback);
    assert_eq!(store_errors(&bm), 1);

    // A fresh, empty Redis on the same address: both instances find it by themselves.
    redis.restart().await.unwrap();
    for (name, inst) in [("a", &a), ("b", &b)] {
        eventually(
            &format!("instance {name} back on redis"),
            Duration::from_secs(10),
            || async {
                match inst.store().health() {
                    Health::Shared => Ok(()),
                    Health::Fallback => anyhow::bail!("still in fallback"),
                }
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(am.fallback.get(), 0);
    assert_eq!(alternate(&a, &b, 40).await, 20, "shared counting resumed");
    assert_eq!(store_errors(&am), 1);
}

#[tokio::test]
async fn starting_without_redis_serves_in_fallback_then_connects() {
    let port = vrata_e2e::ports::free_port();
    let l = limit_20_per_minute();
    let target = RedisTarget::Standalone(format!("redis://127.0.0.1:{port}"));
    let (a, _) = redis_instance(target, &l, OnError::Deny).await;
    assert_eq!(a.store().health(), Health::Fallback);
    // on_error: deny refuses what has a limit and says nothing of a quota it did not measure.
    let r = call(&a, request(vec![descriptor("orders", "all", None)]))
        .await
        .unwrap();
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert_eq!(header(&r, "ratelimit"), None);
    assert!(!admitted(&a, request(vec![descriptor("orders", "all", None)])).await);
    // Traffic without a limit is untouched.
    assert!(admitted(&a, request(vec![descriptor("other", "all", None)])).await);

    // Redis appears at the configured address: the prober finds it, no restart needed.
    let redis = RedisServer::start_on(port).await.unwrap();
    eventually("the store to connect", Duration::from_secs(10), || async {
        match a.store().health() {
            Health::Shared => Ok(()),
            Health::Fallback => anyhow::bail!("still in fallback\n{}", redis.logs()),
        }
    })
    .await
    .unwrap();
    assert!(admitted(&a, request(vec![descriptor("orders", "all", None)])).await);
}

#[tokio::test]
async fn a_hung_redis_costs_one_timeout_then_decisions_skip_it() {
    let redis = RedisServer::start().await.unwrap();
    let l = limit_20_per_minute();
    let (a, am) = redis_instance(RedisTarget::Standalone(redis.url()), &l, OnError::Local).await;
    assert!(admitted(&a, request(vec![descriptor("orders", "all", None)])).await);

    redis.pause().unwrap();
    // The first call after the freeze waits for the call timeout and fails over; the local
    // counter then starts from zero (each instance enforces the limit alone).
    let mut passed = 0;
    for _ in 0..25 {
        passed += usize::from(admitted(&a, request(vec![descriptor("orders", "all", None)])).await);
    }
    assert_eq!(passed, 20);
    assert_eq!(a.store().health(), Health::Fallback);
    assert_eq!(
        store_errors(&am),
        1,
        "only the first call went to the hung redis"
    );

    redis.resume().unwrap();
    eventually("back on redis", Duration::from_secs(10), || async {
        match a.store().health() {
            Health::Shared => Ok(()),
            Health::Fallback => anyhow::bail!("still in fallback"),
        }
    })
    .await
    .unwrap();
    // Redis kept its count, and also ran the call that timed out once it was thawed (a
    // timed-out call may still be applied: the safe direction). 1 + 1 counted: 18 more fit.
    let mut passed = 0;
    for _ in 0..25 {
        passed += usize::from(admitted(&a, request(vec![descriptor("orders", "all", None)])).await);
    }
    assert_eq!(passed, 18);
}

#[tokio::test]
async fn a_cluster_master_dying_switches_to_local_and_its_return_resumes_sharing() {
    let mut cluster = RedisCluster::start().await.unwrap();
    let l = limit_20_per_minute();
    let target = || RedisTarget::Cluster(cluster.urls());
    let (a, am) = redis_instance(target(), &l, OnError::Local).await;
    let (b, _) = redis_instance(target(), &l, OnError::Local).await;
    assert_eq!(alternate(&a, &b, 10).await, 10);

    // The master holding route "orders" dies: its slots have no server (no replicas).
    let owner = cluster.node_of("{r:orders}").await.unwrap();
    cluster.kill(owner);
    let mut passed = 0;
    for _ in 0..25 {
        passed += usize::from(admitted(&a, request(vec![descriptor("orders", "all", None)])).await);
    }
    assert_eq!(passed, 20, "instance a counts alone");
    assert_eq!(a.store().health(), Health::Fallback);
    assert_eq!(store_errors(&am), 1);
    assert!(admitted(&b, request(vec![descriptor("orders", "all", None)])).await);
    assert_eq!(b.store().health(), Health::Fallback);

    cluster.restart(owner).await.unwrap();
    for (name, inst) in [("a", &a), ("b", &b)] {
        eventually(
            &format!("instance {name} back on the cluster"),
            Duration::from_secs(20),
            || async {
                match inst.store().health() {
                    Health::Shared => Ok(()),
                    Health::Fallback => anyhow::bail!("still in fallback\n{}", cluster.logs()),
                }
            },
        )
        .await
        .unwrap();
    }
    // The restarted master came back empty: the fleet counts from zero, together.
    assert_eq!(alternate(&a, &b, 40).await, 20, "{}", cluster.logs());
}
