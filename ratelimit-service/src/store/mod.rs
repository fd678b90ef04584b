//! Counter stores behind one trait: a decision checks every counter a request touches and
//! consumes them all only if every one admits it, atomically.
//!
//! - [`memory::MemoryStore`]: per instance, bounded, the default and the fallback.
//! - [`redis::RedisStore`]: shared by the fleet (standalone Redis or Redis Cluster), one script
//!   call per decision.
//! - [`failover::Failover`]: Redis with the `on_error` behaviour when it fails.

pub mod failover;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::metrics::Metrics;
pub use crate::window::CounterState;
use crate::window::WindowSpec;

/// One counter a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub key: String,
    pub window: WindowSpec,
    pub hits: u64,
}

/// The outcome for one request: admitted only if every counter admitted it, in which case every
/// counter was consumed; otherwise none was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// One per [`Hit`], same order.
    pub counters: Vec<CounterState>,
    /// Made by `on_error: allow|deny` without counting: no quota to advertise.
    pub uncounted: bool,
}

impl Decision {
    /// Folds per-counter checks into a decision (the memory store and the script agree on this).
    pub fn from_checks(counters: Vec<CounterState>) -> Self {
        Self {
            admitted: counters.iter().all(|c| c.fits),
            counters,
            uncounted: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis call took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("no redis connection yet")]
    NotConnected,
    #[error("redis script answered {0}")]
    BadReply(String),
}

/// A place where counters live.
pub trait Store: Send + Sync + 'static {
    /// Checks every hit, then consumes all or none. `hits` is never empty and its keys are
    /// distinct (the handler merges hits on one counter).
    fn decide(&self, hits: &[Hit]) -> impl Future<Output = Result<Decision, StoreError>> + Send;
}

/// The store a service runs with, chosen at start.
pub enum Backend {
    Memory(memory::MemoryStore),
    Redis(failover::Failover),
}

impl Store for Backend {
    async fn decide(&self, hits: &[Hit]) -> Result<Decision, StoreError> {
        match self {
            Backend::Memory(m) => m.decide(hits).await,
            Backend::Redis(r) => r.decide(hits).await,
        }
    }
}

/// Bound on one Redis call, connecting included. A healthy round trip is well under a
/// millisecond; this must stay far below Envoy's timeout for the whole service call (SPEC §2
/// `services.timeout`, 250 ms by default) so a failing Redis still leaves time to answer from
/// the fallback.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// How the service keeps its counters: SPEC §1 `--redis` (which overrides) and §2
/// `rate_limits.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `None`: in-memory counters only.
    pub redis: Option<self::redis::RedisTarget>,
    pub on_error: failover::OnError,
    pub call_timeout: Duration,
    pub probe_interval: Duration,
    /// Bound of the memory store (the store itself, or the `on_error: local` fallback).
    pub memory_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis: None,
            on_error: failover::OnError::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            probe_interval: failover::DEFAULT_PROBE_INTERVAL,
            memory_capacity: memory::DEFAULT_CAPACITY,
        }
    }
}

impl Backend {
    /// Builds the store `config` names. With Redis, connects (or starts in fallback if Redis is
    /// down: the service serves either way).
    pub async fn start(config: &StoreConfig, clock: Arc<dyn Clock>, metrics: &Metrics) -> Self {
        let memory = memory::MemoryStore::new(config.memory_capacity, clock, metrics.clone());
        match &config.redis {
            None => Backend::Memory(memory),
            Some(target) => {
                let redis = self::redis::RedisStore::new(
                    target.clone(),
                    config.call_timeout,
                    metrics.clone(),
                );
                Backend::Redis(
                    failover::Failover::start(
                        redis,
                        memory,
                        config.on_error,
                        config.probe_interval,
                        metrics.clone(),
                    )
                    .await,
                )
            }
        }
    }
}
