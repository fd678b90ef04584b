//! Request coalescing within one process: the first miss on a key leads (goes to the upstream
//! and fills the entry); concurrent misses on the same key follow (wait, bounded, for the
//! leader's outcome) instead of going to the upstream too.
//!
//! The leader holds a [`FlightGuard`]. Whatever happens to its stream — the entry stored, the
//! response not cacheable, the store failing, Envoy resetting the stream, the task ending — the
//! guard's drop releases the key and wakes every follower, so no follower ever waits for a
//! leader that is gone. Followers that get no entry go to the upstream themselves.
//!
//! Coalescing is per instance. Across instances sharing Redis, each instance sends at most one
//! request per cold key; a fleet-wide lock would add a Redis round trip to every miss and a
//! failure mode (a lock holder dying) for a small gain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::entry::SharedEntry;

/// A fill's outcome as followers see it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pending,
    Filled(SharedEntry),
    /// Not cacheable, failed, or the leader went away.
    NotFilled,
}

#[derive(Default)]
struct Inner {
    /// Key -> (flight id, outcome watch).
    flights: Mutex<HashMap<String, (u64, watch::Receiver<Outcome>)>>,
    next_id: AtomicU64,
}

/// The fills in progress; clones share them.
#[derive(Clone, Default)]
pub struct Flights {
    inner: Arc<Inner>,
}

/// What a miss on a key does.
pub enum Join {
    Lead(FlightGuard),
    Follow(watch::Receiver<Outcome>),
}

impl Flights {
    /// Leads the key's fill, or follows the one in progress.
    pub fn join(&self, key: &str) -> Join {
        let mut flights = lock(&self.inner.flights);
        if let Some((_, rx)) = flights.get(key) {
            return Join::Follow(rx.clone());
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Outcome::Pending);
        flights.insert(key.to_owned(), (id, rx));
        Join::Lead(FlightGuard {
            inner: self.inner.clone(),
            key: key.to_owned(),
            id,
            tx,
        })
    }

    /// The fill in progress on `key`, if any, to follow without ever leading (a HEAD request
    /// cannot fill).
    pub fn follow(&self, key: &str) -> Option<watch::Receiver<Outcome>> {
        lock(&self.inner.flights).get(key).map(|(_, rx)| rx.clone())
    }

    /// Fills in progress (for tests and the admin view).
    pub fn len(&self) -> usize {
        lock(&self.inner.flights).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock only means a panic elsewhere while holding it; the map itself is always
/// consistent (single inserts and removes), so keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The leader's hold on a key; dropping it releases the key (see the module documentation).
pub struct FlightGuard {
    inner: Arc<Inner>,
    key: String,
    id: u64,
    tx: watch::Sender<Outcome>,
}

impl FlightGuard {
    /// Publishes the outcome and releases the key.
    pub fn finish(self, outcome: Outcome) {
        self.tx.send_replace(outcome);
        // Drop releases the key.
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        {
            let mut flights = lock(&self.inner.flights);
            if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                flights.remove(&self.key);
            }
        }
        if matches!(*self.tx.borrow(), Outcome::Pending) {
            self.tx.send_replace(Outcome::NotFilled);
        }
    }
}

/// Waits at most `within` for the leader's outcome: the entry it filled, or `None` (not filled,
/// leader gone, or still pending when the time is up).
pub async fn wait(mut rx: watch::Receiver<Outcome>, within: Duration) -> Option<SharedEntry> {
    let outcome = tokio::time::timeout(within, async {
        rx.wait_for(|o| !matches!(o, Outcome::Pending))
            .await
            .map(|o| o.clone())
    })
    .await;
    match outcome {
        Ok(Ok(Outcome::Filled(entry))) => Some(entry),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> SharedEntry {
        SharedEntry::new(crate::entry::Entry {
            status: 200,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let f = Flights::default();
        let Join::Lead(guard) = f.join("k") else {
            panic!("first join leads")
        };
        let Join::Follow(rx) = f.join("k") else {
            panic!("second join follows")
        };
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        guard.finish(Outcome::Filled(entry()));
        let got = waiter.await.expect("joins");
        assert_eq!(got.map(|e| e.status), Some(200));
        assert!(f.is_empty());
        // The key is free again: the next miss leads.
        assert!(matches!(f.join("k"), Join::Lead(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_followers_at_once() {
        let f = Flights::default();
        let Join::Lead(guard) = f.join("k") else {
            panic!("first join leads")
        };
        let Join::Follow(rx) = f.join("k") else {
            panic!("second join follows")
        };
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(60)));
        drop(guard);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released before the wait bound")
            .expect("joins");
        assert!(got.is_none());
        assert!(f.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_leader_is_waited_for_only_so_long() {
        let f = Flights::default();
        let Join::Lead(_guard) = f.join("k") else {
            panic!("first join leads")
        };
        let Join::Follow(rx) = f.join("k") else {
            panic!("second join follows")
        };
        assert!(wait(rx, Duration::from_millis(100)).await.is_none());
        assert_eq!(f.len(), 1);
    }
}
