//! Service-level tests: the ext_proc exchange driven in-process as Envoy drives it (see
//! `common`), over the memory store, with a hand-moved clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Call, Exchange, Upstream, apply, claims, header_map, request, request_chunked, route,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::HeaderSendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::HttpHeaders;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Req;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use vrata_proto::vrata::config::v1 as pb;
use vrata_response_cache::clock::ManualClock;
use vrata_response_cache::metrics::{RequestLabels, RouteLabels};
use vrata_response_cache::{Cache, Metrics};

const START_MS: u64 = 1_800_000_000_000;

async fn cache_with(routes: Vec<pb::RouteCache>) -> (Arc<Cache>, ManualClock) {
    let clock = ManualClock::new(START_MS);
    let cache = Cache::new(64 << 20, Arc::new(clock.clone()), Metrics::default());
    apply(
        &cache,
        pb::CacheConfig {
            redis: vec![],
            routes,
            purges: vec![],
        },
    )
    .await;
    (cache, clock)
}

fn local(name: &str) -> pb::RouteCache {
    route(name, pb::CacheStore::Local)
}

fn count(cache: &Cache, route: &str, result: &'static str) -> u64 {
    cache
        .metrics()
        .requests
        .get_or_create(&RequestLabels {
            route: route.into(),
            result,
        })
        .get()
}

#[tokio::test]
async fn miss_then_hit_with_age() {
    let (cache, clock) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("content-type", "application/json"),
            ("content-length", "7"),
            ("connection", "keep-alive"),
            ("x-envoy-upstream-service-time", "3"),
        ],
        "{\"a\":1}",
    );
    let first = request(&cache, "r", "/items?b=2&a=1", &[], &up).await;
    assert!(first.from_upstream);
    assert_eq!(first.x_cache(), Some("MISS"));

    clock.advance(Duration::from_secs(3));
    // The query in another order is the same resource.
    let hit = request(&cache, "r", "/items?a=1&b=2", &[], &up).await;
    assert!(!hit.from_upstream);
    assert_eq!(up.calls(), 1);
    assert_eq!(hit.status, 200);
    assert_eq!(hit.body, b"{\"a\":1}");
    assert_eq!(hit.x_cache(), Some("HIT"));
    assert_eq!(hit.header("age"), Some("3"));
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    // Hop-by-hop, length and Envoy's own headers are not replayed.
    for gone in [
        "content-length",
        "connection",
        "x-envoy-upstream-service-time",
    ] {
        assert_eq!(hit.header(gone), None, "{gone}");
    }
    assert_eq!(count(&cache, "r", "miss"), 1);
    assert_eq!(count(&cache, "r", "hit"), 1);

    // Past max-age: a miss again.
    clock.advance(Duration::from_secs(60));
    let again = request(&cache, "r", "/items?a=1&b=2", &[], &up).await;
    assert_eq!(again.x_cache(), Some("MISS"));
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn upstream_age_counts_and_route_ttl_is_the_default() {
    let mut r = local("r");
    r.ttl_ms = 10_000;
    let (cache, clock) = cache_with(vec![r]).await;
    let up = Upstream::new(200, &[("age", "4")], "x");
    request(&cache, "r", "/", &[], &up).await;
    clock.advance(Duration::from_secs(2));
    let hit = request(&cache, "r", "/", &[], &up).await;
    assert_eq!(hit.header("age"), Some("6"));
    // ttl 10 s minus the 4 s it arrived with: stale after 6 s.
    clock.advance(Duration::from_secs(4));
    assert_eq!(
        request(&cache, "r", "/", &[], &up).await.x_cache(),
        Some("MISS")
    );
}

#[tokio::test]
async fn no_store_private_set_cookie_and_uncacheable_status_are_never_stored() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let cases: [(u16, &[(&str, &str)]); 5] = [
        (200, &[("cache-control", "max-age=60, no-store")]),
        (200, &[("cache-control", "private, max-age=60")]),
        (
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
        ),
        (200, &[("cache-control", "no-cache, max-age=60")]),
        (500, &[("cache-control", "max-age=60")]),
    ];
    for (status, headers) in cases {
        let up = Upstream::new(status, headers, "body");
        for _ in 0..2 {
            let served = request(&cache, "r", "/p", &[], &up).await;
            assert_eq!(served.x_cache(), Some("MISS"), "{headers:?}");
            assert!(served.from_upstream);
        }
        assert_eq!(up.calls(), 2, "{headers:?}");
    }
    assert!(cache.memory().is_empty());
}

#[tokio::test]
async fn bodies_over_max_body_are_not_stored() {
    let mut r = local("r");
    r.max_body = 10;
    let (cache, _) = cache_with(vec![r]).await;
    // No Content-Length: found out while streaming.
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "0123456789abc");
    for _ in 0..2 {
        let s = request_chunked(
            &cache,
            "r",
            Call {
                chunk: 4,
                ..Call::new("GET", "/big")
            },
            &up,
        )
        .await;
        assert_eq!(s.x_cache(), Some("MISS"));
    }
    assert_eq!(up.calls(), 2);
    // Exactly max_body is fine, in several chunks.
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "0123456789");
    request_chunked(
        &cache,
        "r",
        Call {
            chunk: 3,
            ..Call::new("GET", "/ten")
        },
        &up,
    )
    .await;
    let hit = request(&cache, "r", "/ten", &[], &up).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    assert_eq!(hit.body, b"0123456789");
}

#[tokio::test]
async fn requests_that_must_bypass() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "x");
    for extra in [
        &[("authorization", "Bearer t")][..],
        &[("cookie", "s=1")][..],
        &[("cache-control", "no-store")][..],
    ] {
        let s = request(&cache, "r", "/b", extra, &up).await;
        assert_eq!(s.x_cache(), Some("BYPASS"), "{extra:?}");
    }
    let post = request_chunked(&cache, "r", Call::new("POST", "/b"), &up).await;
    assert_eq!(post.x_cache(), Some("BYPASS"));
    assert_eq!(up.calls(), 4);
    assert!(cache.memory().is_empty());
    assert_eq!(count(&cache, "r", "bypass"), 4);
}

#[tokio::test]
async fn key_extra_keeps_users_apart_and_a_missing_claim_bypasses() {
    let mut r = local("r");
    r.key_extra = vec!["claim:sub".into()];
    let (cache, _) = cache_with(vec![r]).await;
    let alice = Upstream::new(200, &[("cache-control", "max-age=60")], "alice's");
    let bob = Upstream::new(200, &[("cache-control", "max-age=60")], "bob's");
    let auth = [("authorization", "Bearer t")];
    let get = |who: &'static str, up: Arc<Upstream>| {
        let cache = cache.clone();
        async move {
            let call = Call {
                extra: &auth,
                metadata: Some(claims(&[("sub", who)])),
                ..Call::new("GET", "/me")
            };
            request_chunked(&cache, "r", call, &up).await
        }
    };
    assert_eq!(get("alice", alice.clone()).await.x_cache(), Some("MISS"));
    assert_eq!(get("bob", bob.clone()).await.x_cache(), Some("MISS"));
    let a = get("alice", alice.clone()).await;
    let b = get("bob", bob.clone()).await;
    assert_eq!(
        (a.x_cache(), a.body.as_slice()),
        (Some("HIT"), b"alice's".as_slice())
    );
    assert_eq!(
        (b.x_cache(), b.body.as_slice()),
        (Some("HIT"), b"bob's".as_slice())
    );
    // No claims at all: bypass, never a shared entry.
    let none = request_chunked(
        &cache,
        "r",
        Call {
            extra: &auth,
            ..Call::new("GET", "/me")
        },
        &alice,
    )
    .await;
    assert_eq!(none.x_cache(), Some("BYPASS"));
    assert_eq!(alice.calls(), 2);
}

#[tokio::test]
async fn upstream_vary_keeps_languages_apart() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let en = Upstream::new(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        "hello",
    );
    let de = Upstream::new(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        "hallo",
    );
    let lang = |l: &'static str| [("accept-language", l)];
    assert_eq!(
        request(&cache, "r", "/g", &lang("en"), &en).await.x_cache(),
        Some("MISS")
    );
    assert_eq!(
        request(&cache, "r", "/g", &lang("de"), &de).await.x_cache(),
        Some("MISS")
    );
    let hit_en = request(&cache, "r", "/g", &lang("en"), &en).await;
    let hit_de = request(&cache, "r", "/g", &lang("de"), &de).await;
    assert_eq!(
        (hit_en.x_cache(), hit_en.body.as_slice()),
        (Some("HIT"), b"hello".as_slice())
    );
    assert_eq!(
        (hit_de.x_cache(), hit_de.body.as_slice()),
        (Some("HIT"), b"hallo".as_slice())
    );
    // A third language has no entry yet.
    assert_eq!(
        request(&cache, "r", "/g", &lang("fr"), &en).await.x_cache(),
        Some("MISS")
    );
    assert_eq!((en.calls(), de.calls()), (2, 1));
}

#[tokio::test]
async fn conditional_requests_get_304_from_a_fresh_entry() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("content-type", "text/html"),
        ],
        "<p>",
    );
    request(&cache, "r", "/c", &[], &up).await;
    let inm = request(
        &cache,
        "r",
        "/c",
        &[("if-none-match", "W/\"v0\", W/\"v1\"")],
        &up,
    )
    .await;
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    assert_eq!(inm.header("etag"), Some("\"v1\""));
    assert_eq!(inm.header("x-cache"), Some("HIT"));
    assert!(inm.header("age").is_some());
    assert_eq!(inm.header("content-type"), None);
    // If-None-Match wins over If-Modified-Since.
    let other = request(
        &cache,
        "r",
        "/c",
        &[
            ("if-none-match", "\"v0\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
        &up,
    )
    .await;
    assert_eq!(
        (other.status, other.body.as_slice()),
        (200, b"<p>".as_slice())
    );
    let ims = request(
        &cache,
        "r",
        "/c",
        &[("if-modified-since", "Mon, 07 Nov 1994 00:00:00 GMT")],
        &up,
    )
    .await;
    assert_eq!(ims.status, 304);
    let older = request(
        &cache,
        "r",
        "/c",
        &[("if-modified-since", "Sat, 05 Nov 1994 00:00:00 GMT")],
        &up,
    )
    .await;
    assert_eq!(older.status, 200);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn request_no_cache_and_max_age_zero_go_to_the_upstream_and_refill() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "x");
    request(&cache, "r", "/n", &[], &up).await;
    for cc in ["no-cache", "max-age=0"] {
        let s = request(&cache, "r", "/n", &[("cache-control", cc)], &up).await;
        assert_eq!(s.x_cache(), Some("MISS"), "{cc}");
    }
    assert_eq!(up.calls(), 3);
    assert_eq!(
        request(&cache, "r", "/n", &[], &up).await.x_cache(),
        Some("HIT")
    );
    assert_eq!(
        cache
            .metrics()
            .stored
            .get_or_create(&RouteLabels { route: "r".into() })
            .get(),
        3
    );
}

#[tokio::test]
async fn head_uses_the_get_entry_without_a_body_and_never_fills() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "body");
    let head = request_chunked(&cache, "r", Call::new("HEAD", "/h"), &up).await;
    assert_eq!(head.x_cache(), Some("MISS"));
    assert!(cache.memory().is_empty());
    request(&cache, "r", "/h", &[], &up).await;
    let head = request_chunked(&cache, "r", Call::new("HEAD", "/h"), &up).await;
    assert_eq!(head.x_cache(), Some("HIT"));
    assert!(head.body.is_empty());
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn stale_is_served_on_5xx_inside_the_window_only() {
    let mut r = local("r");
    r.stale_if_error_ms = 10_000;
    let (cache, clock) = cache_with(vec![r]).await;
    let ok = Upstream::new(200, &[("cache-control", "max-age=1")], "good");
    request(&cache, "r", "/s", &[], &ok).await;
    clock.advance(Duration::from_secs(5));
    let down = Upstream::new(503, &[("content-type", "application/problem+json")], "{}");
    let stale = request(&cache, "r", "/s", &[], &down).await;
    assert_eq!(stale.x_cache(), Some("STALE"));
    assert_eq!(
        (stale.status, stale.body.as_slice()),
        (200, b"good".as_slice())
    );
    assert_eq!(stale.header("age"), Some("5"));
    assert_eq!(down.calls(), 1, "the upstream was tried first");
    assert_eq!(count(&cache, "r", "stale"), 1);
    // A 4xx is an answer, not a failure: passed on.
    let gone = Upstream::new(404, &[], "");
    assert_eq!(request(&cache, "r", "/s", &[], &gone).await.status, 404);
    // Beyond fresh + stale_if_error: the error.
    clock.advance(Duration::from_secs(7));
    let after = request(&cache, "r", "/s", &[], &down).await;
    assert_eq!((after.status, after.x_cache()), (503, Some("MISS")));
}

#[tokio::test]
async fn concurrent_misses_on_a_cold_key_reach_the_upstream_once() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "shared");
    up.hold();
    const N: usize = 20;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let (cache, up) = (cache.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            request(&cache, "r", "/cold", &[], &up).await
        }));
    }
    // Every stream but the leader is waiting before the upstream answers.
    let coalesced = cache
        .metrics()
        .coalesced
        .get_or_create(&RouteLabels { route: "r".into() })
        .clone();
    tokio::time::timeout(common::BOUND, async {
        while coalesced.get() < (N - 1) as u64 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("followers wait");
    up.release();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("request task"));
    }
    assert_eq!(up.calls(), 1);
    assert_eq!(
        results
            .iter()
            .filter(|s| s.x_cache() == Some("MISS"))
            .count(),
        1
    );
    assert_eq!(
        results
            .iter()
            .filter(|s| s.x_cache() == Some("HIT"))
            .count(),
        N - 1
    );
    assert!(results.iter().all(|s| s.body == b"shared"));
    assert!(cache.flights().is_empty());
}

#[tokio::test]
async fn followers_go_to_the_upstream_when_the_leader_cannot_fill() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(200, &[("cache-control", "no-store")], "private");
    up.hold();
    let (c1, u1) = (cache.clone(), up.clone());
    let leader = tokio::spawn(async move { request(&c1, "r", "/x", &[], &u1).await });
    let coalesced = cache
        .metrics()
        .coalesced
        .get_or_create(&RouteLabels { route: "r".into() })
        .clone();
    let (c2, u2) = (cache.clone(), up.clone());
    let follower = tokio::spawn(async move { request(&c2, "r", "/x", &[], &u2).await });
    tokio::time::timeout(common::BOUND, async {
        while coalesced.get() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the follower waits");
    up.release();
    assert_eq!(leader.await.expect("leader").x_cache(), Some("MISS"));
    assert_eq!(follower.await.expect("follower").x_cache(), Some("MISS"));
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn a_reset_leader_releases_its_followers() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    let mut leader = Exchange::open(&cache, Some("r"));
    let get = HttpHeaders {
        headers: Some(header_map(&[
            (":method", "GET"),
            (":path", "/z"),
            (":authority", "a"),
        ])),
        end_of_stream: true,
        ..Default::default()
    };
    leader.send(Req::RequestHeaders(get.clone()), None).await;
    assert!(matches!(
        leader.recv().await.response,
        Some(Resp::RequestHeaders(_))
    ));
    assert_eq!(cache.flights().len(), 1);

    let mut follower = Exchange::open(&cache, Some("r"));
    follower.send(Req::RequestHeaders(get), None).await;
    let first = follower.recv().await;
    let timeout = first
        .override_message_timeout
        .expect("the wait is announced first");
    // The route's 5 s wait plus the margin, within Envoy's 60 s maximum.
    assert_eq!(timeout.seconds, 6);
    leader.reset().await;
    // Released at once (not after the 5 s bound): the follower goes to the upstream itself.
    let next = tokio::time::timeout(Duration::from_secs(2), follower.recv())
        .await
        .expect("released by the reset");
    assert!(matches!(next.response, Some(Resp::RequestHeaders(_))));
    assert!(cache.flights().is_empty());
}

#[tokio::test]
async fn purges_invalidate_by_epoch_and_delete_from_memory() {
    let (cache, _) = cache_with(vec![local("r"), local("s")]).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=600")], "v1");
    for (route, path) in [("r", "/api/a"), ("r", "/web"), ("s", "/api/a")] {
        request(&cache, route, path, &[], &up).await;
    }
    assert_eq!(up.calls(), 3);
    apply(
        &cache,
        pb::CacheConfig {
            redis: vec![],
            routes: vec![local("r"), local("s")],
            purges: vec![pb::Purge {
                id: 100,
                route: "r".into(),
                path_prefix: "/api".into(),
            }],
        },
    )
    .await;
    assert_eq!(cache.metrics().purged.get(), 1);
    assert_eq!(
        request(&cache, "r", "/api/a", &[], &up).await.x_cache(),
        Some("MISS")
    );
    assert_eq!(
        request(&cache, "r", "/web", &[], &up).await.x_cache(),
        Some("HIT")
    );
    assert_eq!(
        request(&cache, "s", "/api/a", &[], &up).await.x_cache(),
        Some("HIT")
    );
    // Written after the purge (epoch 100): served.
    assert_eq!(
        request(&cache, "r", "/api/a", &[], &up).await.x_cache(),
        Some("HIT")
    );
}

#[tokio::test]
async fn an_entry_written_before_a_purge_arrived_is_not_served() {
    // The purge reaches this instance while a fill that started before it is in flight.
    let (cache, _) = cache_with(vec![local("r")]).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=600")], "old");
    up.hold();
    let (c, u) = (cache.clone(), up.clone());
    let fill = tokio::spawn(async move { request(&c, "r", "/late", &[], &u).await });
    tokio::time::timeout(common::BOUND, async {
        while up.calls() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the fill reaches the upstream");
    apply(
        &cache,
        pb::CacheConfig {
            redis: vec![],
            routes: vec![local("r")],
            purges: vec![pb::Purge {
                id: 7,
                route: String::new(),
                path_prefix: String::new(),
            }],
        },
    )
    .await;
    up.release();
    assert_eq!(fill.await.expect("fill").x_cache(), Some("MISS"));
    assert!(
        !cache.memory().is_empty(),
        "stored, with the epoch of its start"
    );
    assert_eq!(
        request(&cache, "r", "/late", &[], &up).await.x_cache(),
        Some("MISS")
    );
}

#[tokio::test]
async fn unknown_or_missing_routes_pass_through_without_x_cache() {
    let (cache, _) = cache_with(vec![local("r")]).await;
    for route in [Some("nope"), None] {
        let mut ex = Exchange::open(&cache, route);
        ex.send(
            Req::RequestHeaders(HttpHeaders {
                headers: Some(header_map(&[
                    (":method", "GET"),
                    (":path", "/"),
                    (":authority", "a"),
                ])),
                end_of_stream: true,
                ..Default::default()
            }),
            None,
        )
        .await;
        let r = ex.recv().await;
        let mode = r.mode_override.expect("the response phase is skipped");
        assert_eq!(mode.response_header_mode, HeaderSendMode::Skip as i32);
        let Some(Resp::RequestHeaders(h)) = r.response else {
            panic!("CONTINUE expected")
        };
        assert!(h.response.and_then(|c| c.header_mutation).is_none());
    }
    let unrouted = |reason| {
        cache
            .metrics()
            .unrouted
            .get_or_create(&vrata_response_cache::metrics::UnroutedLabels { reason })
            .get()
    };
    assert_eq!((unrouted("unknown"), unrouted("missing")), (1, 1));
}
