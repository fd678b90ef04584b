//! Where entries live, behind one trait, chosen per route (`RouteCache.store`):
//!
//! - [`memory::MemoryStore`]: this instance's memory, bounded in bytes, LRU-like eviction
//!   (`quick_cache`'s CLOCK-Pro), entries dropped at their `stale_until`.
//! - [`redis::RedisStore`]: one standalone Redis shared by the fleet; every call bounded by a
//!   short timeout; a failure marks Redis down, and requests bypass the cache without touching
//!   Redis until a background probe sees it answer again.
//!
//! A store failure never fails a request: the service bypasses the cache (the upstream
//! answers), counts it and moves on.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::entry::Record;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis call took longer than {0:?}")]
    Timeout(Duration),
    #[error("redis is down (waiting for the probe to see it answer)")]
    Down,
    #[error("stored value does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("no redis is configured")]
    NoRedis,
}

/// A place where records live.
pub trait Store: Send + Sync + 'static {
    /// The record at `key`, if any and not expired.
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Arc<Record>>, StoreError>> + Send;

    /// Writes `records` (all of one request: an entry, perhaps with its `Vary` marker) of
    /// `route` and request `path`, each kept until its own `stale_until`.
    fn put(
        &self,
        route: &str,
        path: &str,
        records: Vec<(String, Arc<Record>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
