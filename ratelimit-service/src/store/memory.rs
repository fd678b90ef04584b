//! Counters in this process's memory: sharded maps behind short mutexes, bounded in size.
//!
//! A decision locks only the shards its counters live in, in ascending order (so two decisions
//! can never wait on each other in a cycle), checks every counter, consumes all or none, and
//! unlocks. No lock is held across an await.
//!
//! Memory is bounded by `capacity` counters. Expired counters go in sweeps of one shard at a
//! time: every `capacity / SHARDS / 4` new counters in a shard (so the cost is a few entries per
//! new counter, and a shard does not keep dead counters while traffic moves on to new keys), and
//! whenever a new counter finds its shard full. A shard still full after its sweep drops the
//! eighth of its counters closest to expiring (they hold the least state) and counts them in
//! `vrata_ratelimit_memory_evicted_live`. Evicting live counters can only admit more than the
//! limit for the evicted keys; a non-zero metric means `capacity` is too small for the traffic.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{Decision, Hit, Store, StoreError};
use crate::clock::Clock;
use crate::metrics::{Metrics, StoreKind};
use crate::window::{SlidingWindow, WindowSpec};

/// Shards: a power of two well above the number of cores, so two decisions rarely share a lock.
const SHARDS: usize = 64;

/// Default bound: a million counters, about 150 MB at worst (60 buckets each), far less in
/// practice (most counters hold a few buckets).
pub const DEFAULT_CAPACITY: usize = 1_000_000;

struct Entry {
    spec: WindowSpec,
    window: SlidingWindow,
}

struct Shard {
    map: HashMap<String, Entry>,
    /// New counters since the last sweep.
    created: usize,
}

impl Shard {
    fn sweep(&mut self, now: u64) {
        self.map
            .retain(|_, e| e.window.expires_at_ms(&e.spec) > now);
        self.created = 0;
    }
}

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl MemoryStore {
    /// `capacity` is rounded up to a multiple of the shard count.
    pub fn new(capacity: usize, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        created: 0,
                    })
                })
                .collect(),
            per_shard,
            hasher: RandomState::new(),
            clock,
            metrics,
        }
    }

    /// Counters held now (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    fn shard_of(&self, key: &str) -> usize {
        // SHARDS is a power of two: the low bits of a good hash pick the shard.
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    /// The decision itself, synchronous: the memory store never waits.
    pub fn decide_now(&self, hits: &[Hit]) -> Decision {
        let now = self.clock.now_ms();
        let shard_ids: Vec<usize> = hits.iter().map(|h| self.shard_of(&h.key)).collect();
        let mut order = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, lock(&self.shards[i]))).collect();
        let checks = hits
            .iter()
            .zip(&shard_ids)
            .map(|(h, &s)| {
                let shard = find(&mut guards, s);
                match shard.map.get_mut(&h.key) {
                    Some(e) => {
                        // A counter key names its limit and period, so its spec never changes.
                        e.spec = h.window;
                        e.window.check(&h.window, now, h.hits)
                    }
                    None => SlidingWindow::default().check(&h.window, now, h.hits),
                }
            })
            .collect();
        let mut decision = Decision::from_checks(checks);
        if decision.admitted {
            for ((h, &s), state) in hits.iter().zip(&shard_ids).zip(&mut decision.counters) {
                let per_shard = self.per_shard;
                let shard = find(&mut guards, s);
                // The key is cloned only for a new counter: most decisions hit existing ones.
                if !shard.map.contains_key(&h.key) {
                    shard.created += 1;
                    if shard.created >= (per_shard / 4).max(1) {
                        shard.sweep(now);
                    }
                    self.make_room(shard, per_shard, now);
                    shard.map.insert(
                        h.key.clone(),
                        Entry {
                            spec: h.window,
                            window: SlidingWindow::default(),
                        },
                    );
                }
                let Some(entry) = shard.map.get_mut(&h.key) else {
                    continue; // inserted just above, under the same lock
                };
                entry.window.consume(&h.window, now, h.hits);
                // Report the counter as it is after this request, as the Redis script does.
                state.counted = state.counted.saturating_add(h.hits);
                state.reset_after_ms = entry.window.expires_at_ms(&h.window).saturating_sub(now);
            }
        }
        decision
    }

    fn make_room(&self, shard: &mut Shard, per_shard: usize, now: u64) {
        if shard.map.len() < per_shard {
            return;
        }
        shard.sweep(now);
        if shard.map.len() < per_shard {
            return;
        }
        let evict = (per_shard / 8).max(1);
        let mut expiries: Vec<u64> = shard
            .map
            .values()
            .map(|e| e.window.expires_at_ms(&e.spec))
            .collect();
        let (_, &mut cutoff, _) = expiries.select_nth_unstable(evict - 1);
        let mut left = evict;
        shard.map.retain(|_, e| {
            if left > 0 && e.window.expires_at_ms(&e.spec) <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
        let evicted = evict - left;
        self.metrics.evicted_live.inc_by(evicted as u64);
        tracing::warn!(
            evicted,
            capacity = self.capacity(),
            "memory store full: evicted live counters (raise its capacity)"
        );
    }
}

/// The locked shard `shard` among the (few) shards a decision holds.
fn find<'a>(guards: &'a mut [(usize, MutexGuard<'_, Shard>)], shard: usize) -> &'a mut Shard {
    let pos = guards
        .iter()
        .position(|(i, _)| *i == shard)
        .unwrap_or_default();
    &mut guards[pos].1
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard leaves at worst one counter half-updated; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store for MemoryStore {
    async fn decide(&self, hits: &[Hit]) -> Result<Decision, StoreError> {
        let started = Instant::now();
        let d = self.decide_now(hits);
        self.metrics
            .observe_latency(StoreKind::Memory, started.elapsed().as_secs_f64());
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn hit(key: &str, limit: u64, per_s: u64) -> Hit {
        Hit {
            key: key.to_owned(),
            window: WindowSpec::new(limit, Duration::from_secs(per_s)),
            hits: 1,
        }
    }

    fn store(capacity: usize) -> (MemoryStore, ManualClock, Metrics) {
        let clock = ManualClock::new(1_700_000_000_000);
        let metrics = Metrics::default();
        (
            MemoryStore::new(capacity, Arc::new(clock.clone()), metrics.clone()),
            clock,
            metrics,
        )
    }

    #[test]
    fn ten_per_two_seconds() {
        let (s, clock, _) = store(1_000);
        let h = [hit("k", 10, 2)];
        let first = s.decide_now(&h);
        assert_eq!(
            (first.counters[0].counted, first.counters[0].remaining()),
            (1, 9)
        );
        assert!(first.counters[0].reset_after_ms >= 2_000);
        let passed = (0..29).filter(|_| s.decide_now(&h).admitted).count();
        assert_eq!(passed, 9);
        clock.advance(Duration::from_millis(1_999));
        assert!(!s.decide_now(&h).admitted, "the window has not passed yet");
        // The window plus at most one bucket of rounding (2000/60 -> 34 ms).
        clock.advance(Duration::from_millis(1 + 34));
        let passed = (0..30).filter(|_| s.decide_now(&h).admitted).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn a_refused_request_consumes_no_counter() {
        let (s, _, _) = store(1_000);
        // "tight" admits 2, "wide" 100: after "tight" is spent, "wide" must stay at 2.
        let both = [hit("wide", 100, 60), hit("tight", 2, 60)];
        assert!(s.decide_now(&both).admitted);
        assert!(s.decide_now(&both).admitted);
        for _ in 0..5 {
            let d = s.decide_now(&both);
            assert!(!d.admitted);
            assert!(d.counters[0].fits && !d.counters[1].fits);
        }
        let wide = s.decide_now(&[hit("wide", 100, 60)]);
        assert!(wide.admitted);
        // 2 admitted before plus this one: the 5 refusals left no trace.
        assert_eq!(
            wide.counters[0].counted, 3,
            "refused requests consumed 'wide'"
        );
    }

    #[test]
    fn memory_stays_bounded_and_evictions_are_counted() {
        let (s, _, metrics) = store(640); // 10 counters per shard
        for i in 0..5_000 {
            s.decide_now(&[hit(&format!("flood-{i}"), 5, 60)]);
        }
        assert!(s.len() <= s.capacity(), "{} > {}", s.len(), s.capacity());
        assert!(metrics.evicted_live.get() > 0);
    }

    #[test]
    fn a_full_shard_drops_expired_counters_before_live_ones() {
        let (s, clock, metrics) = store(SHARDS); // one counter per shard
        let same_shard = |key: &str| {
            (0..)
                .map(|i| format!("other-{i}"))
                .find(|k| s.shard_of(k) == s.shard_of(key))
                .unwrap()
        };
        // An expired counter makes room without any live eviction...
        s.decide_now(&[hit("old", 5, 1)]);
        clock.advance(Duration::from_secs(2));
        s.decide_now(&[hit(&same_shard("old"), 5, 1)]);
        assert_eq!(metrics.evicted_live.get(), 0);
        assert_eq!(s.len(), 1);
        // ...while a live one has to be evicted, and is counted. (First let everything so far
        // expire, so only the two counters below can be live.)
        clock.advance(Duration::from_secs(2));
        s.decide_now(&[hit("live", 5, 60)]);
        s.decide_now(&[hit(&same_shard("live"), 5, 60)]);
        assert_eq!(metrics.evicted_live.get(), 1);
    }

    #[test]
    fn expired_counters_are_swept_as_new_ones_arrive() {
        let (s, clock, metrics) = store(SHARDS * 100); // 100 per shard: a sweep every 25 new
        let mut one_shard = (0..)
            .map(|i| format!("k-{i}"))
            .filter(|k| s.shard_of(k) == s.shard_of("k-0"));
        for _ in 0..30 {
            s.decide_now(&[hit(&one_shard.next().unwrap(), 5, 1)]);
        }
        clock.advance(Duration::from_secs(2));
        // The 30 are expired but stay until the shard's next sweep: 25 new counters after the
        // last one, which came at the 25th of the 30.
        for _ in 0..19 {
            s.decide_now(&[hit(&one_shard.next().unwrap(), 5, 1)]);
        }
        assert_eq!(s.len(), 49);
        s.decide_now(&[hit(&one_shard.next().unwrap(), 5, 1)]);
        assert_eq!(s.len(), 20, "the sweep dropped the 30 expired counters");
        assert_eq!(metrics.evicted_live.get(), 0);
    }

    #[test]
    fn concurrent_decisions_never_over_admit() {
        let (s, _, _) = store(10_000);
        let s = Arc::new(s);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|i| {
                            // Two counters per decision, taken in different orders by the
                            // threads: shard locking must neither deadlock nor over-admit.
                            let h = if i % 2 == 0 {
                                [hit("a", 100, 60), hit("b", 1_000, 60)]
                            } else {
                                [hit("b", 1_000, 60), hit("a", 100, 60)]
                            };
                            s.decide_now(&h).admitted
                        })
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 100);
    }
}
