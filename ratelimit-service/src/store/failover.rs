//! The shared store with a way out: when Redis fails, decisions follow `on_error` at once.
//!
//! States: **shared** (decisions go to Redis) and **fallback**. The first failed or timed-out
//! Redis call (each bounded by the store's short call timeout) switches to fallback; from then
//! on no decision touches Redis, so none waits for it. A background prober opens a fresh
//! connection and runs the script (with no keys) every `probe_interval`; the first success
//! switches back to shared. No restart is needed either way.
//!
//! In fallback, `on_error: local` counts in this instance's memory with the same limits (each
//! instance then enforces the full limit on its own traffic), `allow` admits everything and
//! `deny` refuses everything that has a limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::{CounterState, Decision, Hit, Store, StoreError};
use crate::metrics::{Metrics, StoreKind};

/// How often a down Redis is probed: often enough that shared counting resumes within a second.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// SPEC §2 `rate_limits.store.on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Count in this instance's memory (the default: limits stay enforced).
    #[default]
    Local,
    /// Admit every request.
    Allow,
    /// Refuse every request that has a limit.
    Deny,
}

/// Where decisions are being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Shared,
    Fallback,
}

struct Inner {
    redis: RedisStore,
    local: MemoryStore,
    on_error: OnError,
    probe_interval: Duration,
    down: AtomicBool,
    metrics: Metrics,
}

/// Redis with `on_error`; clones share state.
#[derive(Clone)]
pub struct Failover {
    inner: Arc<Inner>,
}

impl Failover {
    /// Connects to Redis; if that fails, starts in fallback with the prober running (the
    /// service must serve even when Redis is down at start).
    pub async fn start(
        redis: RedisStore,
        local: MemoryStore,
        on_error: OnError,
        probe_interval: Duration,
        metrics: Metrics,
    ) -> Self {
        let f = Self {
            inner: Arc::new(Inner {
                redis,
                local,
                on_error,
                probe_interval,
                down: AtomicBool::new(false),
                metrics,
            }),
        };
        match f.inner.redis.probe().await {
            Ok(()) => tracing::info!(target = ?f.inner.redis.target(), "redis connected"),
            Err(e) => {
                f.inner.metrics.store_error(StoreKind::Redis);
                f.mark_down(&e);
            }
        }
        f
    }

    pub fn health(&self) -> Health {
        if self.inner.down.load(Ordering::Acquire) {
            Health::Fallback
        } else {
            Health::Shared
        }
    }

    pub fn on_error(&self) -> OnError {
        self.inner.on_error
    }

    /// The fallback counters (for tests and the admin page).
    pub fn local(&self) -> &MemoryStore {
        &self.inner.local
    }

    fn mark_down(&self, e: &StoreError) {
        if self.inner.down.swap(true, Ordering::AcqRel) {
            return; // another decision got here first; one prober is enough
        }
        self.inner.metrics.fallback.set(1);
        tracing::warn!(
            error = %e,
            on_error = ?self.inner.on_error,
            "redis unavailable: deciding without it until it answers again"
        );
        tokio::spawn(probe_until_up(
            Arc::downgrade(&self.inner),
            self.inner.probe_interval,
        ));
    }

    fn fallback(&self, hits: &[Hit]) -> Decision {
        match self.inner.on_error {
            OnError::Local => self.inner.local.decide_now(hits),
            OnError::Allow => verdict(hits, true),
            OnError::Deny => verdict(hits, false),
        }
    }
}

/// A decision made without counting: every counter says the same thing. Marked `uncounted` so
/// the response does not advertise a quota nobody measured.
fn verdict(hits: &[Hit], admit: bool) -> Decision {
    let mut d = Decision::from_checks(
        hits.iter()
            .map(|h| CounterState {
                counted: if admit { 0 } else { h.window.limit },
                limit: h.window.limit,
                fits: admit,
                reset_after_ms: 0,
                retry_after_ms: 0,
            })
            .collect(),
    );
    d.uncounted = true;
    d
}

/// Runs until Redis answers or the store is dropped (a weak reference, so a dropped service
/// does not leave a prober behind).
async fn probe_until_up(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the failure just happened
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        // A fresh connection each time: the old one may point at a dead socket or an outdated
        // cluster topology.
        let probe = async {
            inner.redis.connect().await?;
            inner.redis.probe().await
        };
        match probe.await {
            Ok(()) => {
                inner.down.store(false, Ordering::Release);
                inner.metrics.fallback.set(0);
                tracing::info!("redis answers again: shared counting resumed");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "redis still unavailable"),
        }
    }
}

impl Store for Failover {
    async fn decide(&self, hits: &[Hit]) -> Result<Decision, StoreError> {
        if !self.inner.down.load(Ordering::Acquire) {
            match self.inner.redis.decide(hits).await {
                Ok(d) => return Ok(d),
                Err(e) => {
                    self.inner.metrics.store_error(StoreKind::Redis);
                    self.mark_down(&e);
                }
            }
        }
        Ok(self.fallback(hits))
    }
}
