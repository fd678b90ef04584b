//! Counters in Redis, shared by every instance: one `EVALSHA` per decision.
//!
//! The script ([`SCRIPT`]) runs the same steps as [`crate::window`] for every counter of the
//! decision, reading the Redis server's `TIME` so that every instance agrees on "now", then
//! consumes all counters or none. Redis runs a script atomically, so concurrent decisions from
//! any number of instances serialize on the server; there is no read-modify-write race.
//!
//! Per counter the script issues `HGETALL`, at most one `HDEL` (expired buckets), and when the
//! request is admitted `HINCRBY` + `PEXPIREAT` (so an idle counter leaves Redis by itself one
//! window after its last hit). A counter is a hash of at most `SUB_WINDOWS` small fields.
//!
//! Connections are multiplexed: concurrent decisions are pipelined over one connection per
//! Redis node (`ConnectionManager` for a standalone Redis, the cluster client's connection for
//! a Cluster). Every key of one decision shares the route's hash tag (see
//! [`crate::limits::CompiledLimit::counter_key`]), so a Cluster routes the whole script to one
//! node. `EVALSHA` falls back to `EVAL` on `NOSCRIPT` (a restarted or new node), which also
//! caches the script there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, ServerErrorKind};

use super::{CounterState, Decision, Hit, Store, StoreError};
use crate::metrics::{Metrics, StoreKind};

/// The decision script. ARGV holds four numbers per key: limit, per (ms), bucket width (ms),
/// hits. It answers four integers per key: counted, fits (1/0), reset (ms), retry (ms).
pub const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local newest = {}
local admitted = true
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local limit, per = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local width, hits = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local raw = redis.call('HGETALL', KEYS[i])
  local live, dead, counted = {}, {}, 0
  for j = 1, #raw, 2 do
    local k, c = tonumber(raw[j]), tonumber(raw[j + 1])
    if k * width + per <= now then
      dead[#dead + 1] = raw[j]
    else
      live[#live + 1] = {k, c}
      counted = counted + c
      if newest[i] == nil or k > newest[i] then newest[i] = k end
    end
  end
  if #dead > 0 then redis.call('HDEL', KEYS[i], unpack(dead)) end
  local reset, retry, fits = 0, 0, 1
  if newest[i] ~= nil then reset = newest[i] * width + per - now end
  if counted + hits > limit then
    fits, admitted, retry = 0, false, per
    if hits <= limit then
      -- Only a refusal needs the buckets in order: oldest first, until enough have left.
      table.sort(live, function(x, y) return x[1] < y[1] end)
      local left = counted
      for _, b in ipairs(live) do
        left = left - b[2]
        if left + hits <= limit then
          retry = b[1] * width + per - now
          break
        end
      end
    end
  end
  out[a + 1], out[a + 2], out[a + 3], out[a + 4] = counted, fits, reset, retry
end
if admitted then
  for i = 1, #KEYS do
    local a = (i - 1) * 4
    local per, width, hits = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local k = math.ceil(now / width)
    redis.call('HINCRBY', KEYS[i], string.format('%d', k), hits)
    if newest[i] ~= nil and newest[i] > k then k = newest[i] end
    redis.call('PEXPIREAT', KEYS[i], string.format('%d', k * width + per))
    out[a + 1] = out[a + 1] + hits
    out[a + 3] = k * width + per - now
  end
end
return out
"#;

/// Where the counters are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis URL.
    Standalone(String),
    /// Seed URLs of a Redis Cluster (any reachable node is enough to find the others).
    Cluster(Vec<String>),
}

/// A Redis URL the store could never use; the binary reports it and exits before serving.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("redis URL {url:?}: {reason}")]
pub struct BadRedisUrl {
    pub url: String,
    pub reason: String,
}

impl RedisTarget {
    /// SPEC §1 `--redis URL[,URL...]` and `rate_limits.store.redis`: one URL is a standalone
    /// Redis, several are Cluster seeds, none is no Redis. Every URL is checked now, so a typo
    /// fails at start instead of leaving the service in fallback for good.
    pub fn from_urls(urls: Vec<String>) -> Result<Option<Self>, BadRedisUrl> {
        for url in &urls {
            check_url(url)?;
        }
        Ok(match urls.len() {
            0 => None,
            1 => urls.into_iter().next().map(RedisTarget::Standalone),
            _ => Some(RedisTarget::Cluster(urls)),
        })
    }
}

fn check_url(url: &str) -> Result<(), BadRedisUrl> {
    let bad = |reason: String| BadRedisUrl {
        url: url.to_owned(),
        reason,
    };
    // TLS to Redis needs one of the client's TLS features, not built in yet: say so rather than
    // fail every connection attempt.
    if url.starts_with("rediss:") {
        return Err(bad("TLS (rediss://) is not supported yet".into()));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&mut self, cmd: &Cmd) -> redis::RedisResult<Vec<i64>> {
        match self {
            Conn::Standalone(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

pub struct RedisStore {
    target: RedisTarget,
    conn: ArcSwapOption<Conn>,
    call_timeout: Duration,
    sha: String,
    metrics: Metrics,
}

impl RedisStore {
    /// Does not connect: see [`connect`](Self::connect). `call_timeout` bounds every call,
    /// connecting included.
    pub fn new(target: RedisTarget, call_timeout: Duration, metrics: Metrics) -> Self {
        Self {
            target,
            conn: ArcSwapOption::empty(),
            call_timeout,
            sha: redis::Script::new(SCRIPT).get_hash().to_owned(),
            metrics,
        }
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Opens the connection(s), replacing any previous one.
    pub async fn connect(&self) -> Result<(), StoreError> {
        let t = self.call_timeout;
        let conn = tokio::time::timeout(t, async {
            match &self.target {
                RedisTarget::Standalone(url) => {
                    let client = redis::Client::open(url.as_str())?;
                    // No retries inside the manager: a failed call must fail now so the service
                    // switches to its fallback; reconnecting is the prober's job.
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(t))
                        .set_response_timeout(Some(t))
                        .set_number_of_retries(0);
                    let m = ConnectionManager::new_with_config(client, config).await?;
                    Ok::<_, redis::RedisError>(Conn::Standalone(m))
                }
                RedisTarget::Cluster(urls) => {
                    let client = ClusterClient::builder(urls.iter().map(String::as_str))
                        .connection_timeout(t)
                        .response_timeout(t)
                        .retries(0)
                        .build()?;
                    Ok(Conn::Cluster(client.get_async_connection().await?))
                }
            }
        })
        .await
        .map_err(|_| StoreError::Timeout(t))??;
        self.conn.store(Some(Arc::new(conn)));
        Ok(())
    }

    /// Whether Redis answers and runs the script (with no keys: it only reads `TIME`).
    pub async fn probe(&self) -> Result<(), StoreError> {
        if self.conn.load().is_none() {
            self.connect().await?;
        }
        self.run(&[]).await.map(|_| ())
    }

    /// Runs the script over `hits`, `EVAL` after a `NOSCRIPT`.
    async fn run(&self, hits: &[Hit]) -> Result<Vec<i64>, StoreError> {
        let mut conn = self
            .conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or(StoreError::NotConnected)?;
        let call = async {
            let reply = conn.query(&self.command("EVALSHA", &self.sha, hits)).await;
            match reply {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    tracing::debug!("redis did not have the script cached: sending it whole");
                    conn.query(&self.command("EVAL", SCRIPT, hits)).await
                }
                other => other,
            }
        };
        Ok(tokio::time::timeout(self.call_timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.call_timeout))??)
    }

    fn command(&self, verb: &str, script: &str, hits: &[Hit]) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(hits.len());
        for h in hits {
            cmd.arg(h.key.as_str());
        }
        for h in hits {
            cmd.arg(h.window.limit)
                .arg(h.window.per_ms)
                .arg(h.window.bucket_ms)
                .arg(h.hits);
        }
        cmd
    }
}

impl Store for RedisStore {
    async fn decide(&self, hits: &[Hit]) -> Result<Decision, StoreError> {
        let started = Instant::now();
        let reply = self.run(hits).await;
        self.metrics
            .observe_latency(StoreKind::Redis, started.elapsed().as_secs_f64());
        let reply = reply?;
        if reply.len() != hits.len() * 4 {
            return Err(StoreError::BadReply(format!(
                "{} integers for {} counters",
                reply.len(),
                hits.len()
            )));
        }
        let num = |v: i64| u64::try_from(v).unwrap_or(0);
        let counters = hits
            .iter()
            .zip(reply.chunks_exact(4))
            .map(|(h, r)| CounterState {
                counted: num(r[0]),
                limit: h.window.limit,
                fits: r[1] == 1,
                reset_after_ms: num(r[2]),
                retry_after_ms: num(r[3]),
            })
            .collect();
        Ok(Decision::from_checks(counters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_standalone_several_are_a_cluster() {
        assert_eq!(RedisTarget::from_urls(vec![]), Ok(None));
        assert_eq!(
            RedisTarget::from_urls(vec!["redis://a:6379/0".into()]),
            Ok(Some(RedisTarget::Standalone("redis://a:6379/0".into())))
        );
        assert!(matches!(
            RedisTarget::from_urls(vec!["redis://a".into(), "redis://b".into()]),
            Ok(Some(RedisTarget::Cluster(v))) if v.len() == 2
        ));
    }

    #[test]
    fn unusable_urls_are_refused_with_the_url_named() {
        for url in ["http://a:6379", "redis://a:notaport", "rediss://a:6379"] {
            let e = RedisTarget::from_urls(vec!["redis://ok".into(), url.into()]).unwrap_err();
            assert_eq!(e.url, url, "{e}");
        }
    }

    #[tokio::test]
    async fn without_a_connection_a_decision_fails_at_once() {
        let s = RedisStore::new(
            RedisTarget::Standalone("redis://127.0.0.1:1".into()),
            Duration::from_millis(100),
            Metrics::default(),
        );
        let hit = Hit {
            key: "k".into(),
            window: crate::window::WindowSpec::new(1, Duration::from_secs(1)),
            hits: 1,
        };
        assert!(matches!(
            s.decide(&[hit]).await,
            Err(StoreError::NotConnected)
        ));
        assert!(s.probe().await.is_err());
    }
}
