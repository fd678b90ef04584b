//! The Redis tier against a real `redis-server` on a free loopback port (skipped, with the
//! reason printed, when the binary is not installed): entries shared by two instances, purges
//! across the fleet, Redis killed (requests bypass) and back (caching resumes, no restart).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{BOUND, Upstream, apply, request, route};
use vrata_proto::vrata::config::v1 as pb;
use vrata_response_cache::clock::{Clock, SystemClock};
use vrata_response_cache::metrics::StoreLabels;
use vrata_response_cache::{Cache, Metrics};

struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// `None` (and the reason printed) when redis-server is not installed.
    fn start(port: Option<u16>) -> Option<Self> {
        let port = port.unwrap_or_else(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("bound").port()
        });
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(Self { port, child }),
            Err(e) => {
                eprintln!("skipped: cannot run redis-server ({e})");
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn ready(&self) {
        let client = redis::Client::open(self.url()).expect("url");
        tokio::time::timeout(BOUND, async {
            loop {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server answers");
    }

    async fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url()).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        redis::cmd("KEYS")
            .arg("vrata:cache:v1:*")
            .query_async(&mut c)
            .await
            .expect("KEYS")
    }

    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(url: &str, purges: Vec<pb::Purge>) -> pb::CacheConfig {
    let mut r = route("r", pb::CacheStore::Redis);
    r.vary = vec!["accept-language".into()];
    pb::CacheConfig {
        redis: vec![url.to_owned()],
        routes: vec![r],
        purges,
    }
}

async fn instance(url: &str) -> Arc<Cache> {
    let cache = Cache::new(1 << 20, Arc::new(SystemClock), Metrics::default());
    apply(&cache, config(url, vec![])).await;
    cache
}

fn store_errors(cache: &Cache) -> u64 {
    cache
        .metrics()
        .store_errors
        .get_or_create(&StoreLabels {
            route: "r".into(),
            store: "redis",
        })
        .get()
}

#[tokio::test]
async fn two_instances_share_entries_and_purges() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    server.ready().await;
    let (a, b) = (instance(&server.url()).await, instance(&server.url()).await);
    let up = Upstream::new(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        "shared",
    );
    let en = [("accept-language", "en")];
    assert_eq!(
        request(&a, "r", "/p/1", &en, &up).await.x_cache(),
        Some("MISS")
    );
    let hit = request(&b, "r", "/p/1", &en, &up).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_slice()),
        (Some("HIT"), b"shared".as_slice())
    );
    assert_eq!(
        request(&b, "r", "/p/1", &[("accept-language", "de")], &up)
            .await
            .x_cache(),
        Some("MISS")
    );
    request(&a, "r", "/q", &en, &up).await;
    // The route's `vary` puts the language in the base key too: per language a marker (the
    // upstream's Vary) and its variant; /p/1 in two languages, /q in one.
    assert_eq!(server.keys().await.len(), 6, "{:?}", server.keys().await);

    let purge = pb::Purge {
        id: SystemClock.now_ms(),
        route: "r".into(),
        path_prefix: "/p".into(),
    };
    apply(&a, config(&server.url(), vec![purge.clone()])).await;
    apply(&b, config(&server.url(), vec![purge])).await;
    // One instance deleted the keys (in the background: await it).
    tokio::time::timeout(BOUND, async {
        while server.keys().await.len() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the purge deletes /p's keys");
    assert_eq!(a.metrics().purged.get() + b.metrics().purged.get(), 4);
    assert_eq!(
        request(&a, "r", "/p/1", &en, &up).await.x_cache(),
        Some("MISS")
    );
    assert_eq!(
        request(&b, "r", "/p/1", &en, &up).await.x_cache(),
        Some("HIT")
    );
    assert_eq!(
        request(&b, "r", "/q", &en, &up).await.x_cache(),
        Some("HIT")
    );
}

#[tokio::test]
async fn redis_down_bypasses_and_recovery_needs_no_restart() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    server.ready().await;
    let url = server.url();
    let cache = instance(&url).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "x");
    request(&cache, "r", "/k", &[], &up).await;
    assert_eq!(
        request(&cache, "r", "/k", &[], &up).await.x_cache(),
        Some("HIT")
    );

    let port = server.kill();
    let started = std::time::Instant::now();
    let down = request(&cache, "r", "/k", &[], &up).await;
    assert_eq!((down.x_cache(), down.status), (Some("BYPASS"), 200));
    // Known down: the next one does not even try Redis.
    assert_eq!(
        request(&cache, "r", "/k", &[], &up).await.x_cache(),
        Some("BYPASS")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.calls(), 3);
    assert!(store_errors(&cache) >= 2);
    assert_eq!(cache.metrics().redis_down.get(), 1);

    let again = RedisServer::start(Some(port)).expect("redis-server ran before");
    again.ready().await;
    let redis = cache.redis().expect("a redis store");
    tokio::time::timeout(BOUND, async {
        while redis.is_down() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the probe sees redis again");
    assert_eq!(cache.metrics().redis_down.get(), 0);
    assert_eq!(
        request(&cache, "r", "/k", &[], &up).await.x_cache(),
        Some("MISS")
    );
    assert_eq!(
        request(&cache, "r", "/k", &[], &up).await.x_cache(),
        Some("HIT")
    );
}

#[tokio::test]
async fn redis_down_at_start_is_not_fatal() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("bound").port()
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let cache = instance(&url).await;
    let up = Upstream::new(200, &[("cache-control", "max-age=60")], "x");
    assert_eq!(
        request(&cache, "r", "/k", &[], &up).await.x_cache(),
        Some("BYPASS")
    );
    assert!(store_errors(&cache) >= 1);
}
