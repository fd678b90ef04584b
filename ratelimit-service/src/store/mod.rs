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
