//! The `redis` tier: records in one standalone Redis shared by every instance.
//!
//! One `GET` per lookup (two for a response with `Vary`: the marker, then the variant), one
//! pipelined `SET .. PX` per fill; values are [`Record`]s encoded with prost; keys expire at
//! the record's `stale_until`, so Redis drops what can no longer be served.
//!
//! **Failures.** Every call is bounded by `call_timeout` (100 ms by default: a healthy Redis
//! answers in well under a millisecond, and a request must not wait on a sick one). The first
//! failed or timed-out call marks Redis down: from then on no request touches it (each bypasses
//! the cache at once, counted as a store error) and a background probe opens a fresh connection
//! and sends `PING` every `probe_interval`; its first success marks Redis up again. So a dead
//! Redis costs one timeout, not one per request, is not hammered, and needs no restart.
//!
//! Redis Cluster is refused by the config conversion for now (a NACK naming the reason): the
//! variant keys of one entry would need a shared hash tag, and `SCAN` for purges would have to
//! visit every primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Store, StoreError};
use crate::clock::Clock;
use crate::entry::Record;
use crate::key::route_prefix;
use crate::metrics::Metrics;
use crate::purge::{PurgeRule, glob_escape};

/// Bound of one request-path call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a down Redis is probed: often enough that caching resumes within a second.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Purges run in the background and walk many keys: each of their calls gets longer.
const PURGE_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the record of a purge having been run stays: far longer than any purge takes, and
/// than xds-server keeps a purge in the config.
const PURGE_CLAIM_SECONDS: u64 = 86_400;
/// Keys asked per `SCAN` step.
const SCAN_COUNT: usize = 500;

struct Inner {
    url: String,
    conn: ArcSwapOption<ConnectionManager>,
    call_timeout: Duration,
    probe_interval: Duration,
    down: AtomicBool,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

/// Clones share the connection and the up/down state.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl RedisStore {
    /// Connects; if that fails, starts down with the probe running (the service must serve
    /// even when Redis is down at start). The URL was checked by the config conversion.
    pub async fn start(
        url: &str,
        call_timeout: Duration,
        probe_interval: Duration,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        let store = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                conn: ArcSwapOption::empty(),
                call_timeout,
                probe_interval,
                down: AtomicBool::new(false),
                clock,
                metrics,
            }),
        };
        match connect(&store.inner).await {
            Ok(conn) => {
                store.inner.conn.store(Some(Arc::new(conn)));
                store.inner.metrics.redis_down.set(0);
                tracing::info!(url = %redact(url), "redis connected");
            }
            Err(e) => store.mark_down(&e),
        }
        store
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Acquire)
    }

    /// Switches to down and starts the probe, unless already down.
    fn mark_down(&self, error: &StoreError) {
        if self.inner.down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.metrics.redis_down.set(1);
        tracing::warn!(
            url = %redact(&self.inner.url),
            error = %error,
            retry_every_ms = self.inner.probe_interval.as_millis() as u64,
            "redis unavailable: requests on redis routes bypass the cache until it answers"
        );
        tokio::spawn(probe_until_up(
            Arc::downgrade(&self.inner),
            self.inner.probe_interval,
        ));
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if self.is_down() {
            return Err(StoreError::Down);
        }
        self.inner
            .conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or(StoreError::Down)
    }

    /// Runs one request-path call with the call timeout; a failure marks Redis down.
    async fn call<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let t = self.inner.call_timeout;
        let result = match tokio::time::timeout(t, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(t)),
        };
        if let Err(e) = &result {
            self.mark_down(e);
        }
        result
    }

    /// Runs `rule` over Redis unless another instance already did: the instance that sets
    /// `vrata:cache:purge:<id>` first deletes every key of `routes` (the Redis routes the rule
    /// matches) under the rule's path prefix. Returns the number of keys deleted, `None` when
    /// another instance has the purge.
    pub async fn purge(
        &self,
        rule: &PurgeRule,
        routes: &[String],
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.connection()?;
        let claim = format!("vrata:cache:purge:{}", rule.id);
        let won: Option<String> = bounded(
            redis::cmd("SET")
                .arg(&claim)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(PURGE_CLAIM_SECONDS)
                .query_async(&mut conn),
        )
        .await?;
        if won.is_none() {
            return Ok(None);
        }
        let mut deleted = 0u64;
        for route in routes {
            let pattern = format!(
                "{}{}*",
                glob_escape(&route_prefix(route)),
                glob_escape(&rule.path_prefix)
            );
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut conn),
                )
                .await?;
                if !keys.is_empty() {
                    let n: u64 =
                        bounded(redis::cmd("UNLINK").arg(&keys).query_async(&mut conn)).await?;
                    deleted += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(Some(deleted))
    }
}

/// A purge call: longer bound, and a failure does not mark Redis down (the purge is retried by
/// nobody, but entries it missed are invalidated by their epoch anyway).
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(PURGE_CALL_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout(PURGE_CALL_TIMEOUT)),
    }
}

/// A fresh connection manager that fails fast: no retries inside the manager (a failed call
/// must fail now so the request bypasses; reconnecting is the probe's job).
async fn connect(inner: &Inner) -> Result<ConnectionManager, StoreError> {
    let t = inner.call_timeout;
    let attempt = async {
        let client = redis::Client::open(inner.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(0);
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    // Connecting may take a handshake more than one call: allow a few call bounds.
    let bound = t * 5;
    match tokio::time::timeout(bound, attempt).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout(bound)),
    }
}

/// Runs until Redis answers or the store is dropped (a weak reference, so a replaced store
/// does not leave a probe behind).
async fn probe_until_up(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the failure just happened
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match connect(&inner).await {
            Ok(conn) => {
                inner.conn.store(Some(Arc::new(conn)));
                inner.down.store(false, Ordering::Release);
                inner.metrics.redis_down.set(0);
                tracing::info!(url = %redact(&inner.url), "redis answers again: caching resumes");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "redis still unavailable"),
        }
    }
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Record>>, StoreError> {
        let mut conn = self.connection()?;
        let value: Option<Vec<u8>> = self
            .call(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await?;
        match value {
            None => Ok(None),
            Some(bytes) => Ok(Some(Arc::new(Record::decode(bytes.as_slice())?))),
        }
    }

    async fn put(
        &self,
        _route: &str,
        _path: &str,
        records: Vec<(String, Arc<Record>)>,
    ) -> Result<(), StoreError> {
        let now = self.inner.clock.now_ms();
        let mut pipe = redis::pipe();
        let mut any = false;
        for (key, record) in &records {
            let ttl = record.stale_until_ms().saturating_sub(now);
            if ttl == 0 {
                continue;
            }
            pipe.cmd("SET")
                .arg(key)
                .arg(record.encode_to_vec())
                .arg("PX")
                .arg(ttl)
                .ignore();
            any = true;
        }
        if !any {
            return Ok(());
        }
        let mut conn = self.connection()?;
        self.call(pipe.query_async::<()>(&mut conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
