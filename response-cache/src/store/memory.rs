//! The `local` tier: records in this process, bounded by `--memory-max` bytes.
//!
//! `quick_cache` weighs each record by its approximate size ([`Record::weight`] plus the key)
//! and evicts by CLOCK-Pro (recency and frequency) when the bound is reached; a record heavier
//! than one of its shards' share of the bound is not kept at all. Expired records are dropped
//! when read; until then they are ordinary eviction candidates.

use std::cell::Cell;
use std::sync::Arc;

use quick_cache::Weighter;

use super::{Store, StoreError};
use crate::clock::Clock;
use crate::entry::{Record, record};
use crate::metrics::Metrics;
use crate::purge::PurgeRule;

/// A record with what purges match on.
struct Item {
    route: String,
    path: String,
    record: Arc<Record>,
    weight: u64,
}

#[derive(Clone)]
struct ByteWeight;

impl Weighter<String, Arc<Item>> for ByteWeight {
    fn weight(&self, key: &String, item: &Arc<Item>) -> u64 {
        item.weight
            .saturating_add(u64::try_from(key.len()).unwrap_or(u64::MAX))
    }
}

/// Clones share the records.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Arc<quick_cache::sync::Cache<String, Arc<Item>, ByteWeight>>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

/// Average record size assumed to size the cache's tables (only a hint).
const TYPICAL_RECORD_BYTES: u64 = 4_096;
/// Bytes per shard at least: a record heavier than its shard's share is never kept, so shards
/// must stay well above the largest `max_body` anyone configures (16 shards of 16 MiB for the
/// default 256 MiB).
const MIN_SHARD_BYTES: u64 = 16 << 20;
/// Enough shards that concurrent requests rarely contend on one lock.
const MAX_SHARDS: u64 = 16;

impl MemoryStore {
    pub fn new(max_bytes: u64, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        let items = usize::try_from(max_bytes / TYPICAL_RECORD_BYTES)
            .unwrap_or(usize::MAX)
            .max(64);
        let shards =
            usize::try_from((max_bytes / MIN_SHARD_BYTES).clamp(1, MAX_SHARDS)).unwrap_or(1);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(max_bytes.max(1))
            .shards(shards)
            .build();
        let cache = match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                ByteWeight,
                Default::default(),
                Default::default(),
            ),
            // Every required option is set above; keep a working cache even so.
            Err(e) => {
                tracing::error!(error = %e, "memory store options refused; using defaults");
                quick_cache::sync::Cache::with_weighter(items, max_bytes.max(1), ByteWeight)
            }
        };
        Self {
            cache: Arc::new(cache),
            clock,
            metrics,
        }
    }

    /// Bytes held (approximate).
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn update_gauges(&self) {
        self.metrics
            .memory_bytes
            .set(i64::try_from(self.cache.weight()).unwrap_or(i64::MAX));
        self.metrics
            .memory_entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
    }

    /// Deletes every record `rule` matches; returns how many entries (not markers) went.
    pub fn purge(&self, rule: &PurgeRule) -> u64 {
        let entries = Cell::new(0u64);
        self.cache.retain(|_, item| {
            if !rule.matches(&item.route, &item.path) {
                return true;
            }
            if matches!(item.record.kind, Some(record::Kind::Entry(_))) {
                entries.set(entries.get() + 1);
            }
            false
        });
        self.update_gauges();
        entries.get()
    }

    fn get_now(&self, key: &str) -> Option<Arc<Record>> {
        let item = self.cache.get(key)?;
        if self.clock.now_ms() >= item.record.stale_until_ms() {
            self.cache.remove(key);
            self.update_gauges();
            return None;
        }
        Some(item.record.clone())
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Record>>, StoreError> {
        Ok(self.get_now(key))
    }

    async fn put(
        &self,
        route: &str,
        path: &str,
        records: Vec<(String, Arc<Record>)>,
    ) -> Result<(), StoreError> {
        for (key, record) in records {
            let weight = record.weight();
            self.cache.insert(
                key,
                Arc::new(Item {
                    route: route.to_owned(),
                    path: path.to_owned(),
                    record,
                    weight,
                }),
            );
        }
        self.update_gauges();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::clock::ManualClock;
    use crate::entry::{Entry, Marker};

    fn entry(body: usize, stale_until_ms: u64) -> Arc<Record> {
        Arc::new(Record::entry(Entry {
            status: 200,
            body: Bytes::from(vec![b'x'; body]),
            stale_until_ms,
            fresh_until_ms: stale_until_ms,
            ..Default::default()
        }))
    }

    fn store(max: u64) -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_000);
        (
            MemoryStore::new(max, Arc::new(clock.clone()), Metrics::default()),
            clock,
        )
    }

    #[tokio::test]
    async fn records_expire_at_stale_until() {
        let (s, clock) = store(1 << 20);
        s.put("r", "/a", vec![("k".into(), entry(10, 2_000))])
            .await
            .expect("memory never fails");
        assert!(s.get("k").await.expect("ok").is_some());
        clock.advance(Duration::from_millis(1_000));
        assert!(s.get("k").await.expect("ok").is_none());
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn the_byte_bound_holds() {
        let max = 256 * 1024;
        let (s, _) = store(max);
        for i in 0..200 {
            s.put(
                "r",
                "/a",
                vec![(format!("k{i}"), entry(8 * 1024, u64::MAX))],
            )
            .await
            .expect("memory never fails");
            assert!(s.bytes() <= max, "{} > {max} after {i}", s.bytes());
        }
        // About 30 records of 8 KiB fit; the rest were evicted.
        assert!(s.len() < 40 && s.len() > 10, "{}", s.len());
        // A record larger than the whole store is not kept.
        s.put(
            "r",
            "/big",
            vec![("big".into(), entry(2 * 1024 * 1024, u64::MAX))],
        )
        .await
        .expect("memory never fails");
        assert!(s.get("big").await.expect("ok").is_none());
    }

    #[tokio::test]
    async fn purges_remove_matching_records_only() {
        let (s, _) = store(1 << 20);
        let marker = Arc::new(Record::marker(Marker {
            vary: vec!["accept".into()],
            stale_until_ms: u64::MAX,
        }));
        s.put(
            "r",
            "/a/1",
            vec![("m".into(), marker), ("e1".into(), entry(1, u64::MAX))],
        )
        .await
        .expect("memory never fails");
        s.put("r", "/b", vec![("e2".into(), entry(1, u64::MAX))])
            .await
            .expect("memory never fails");
        s.put("s", "/a/1", vec![("e3".into(), entry(1, u64::MAX))])
            .await
            .expect("memory never fails");
        let rule = PurgeRule {
            id: 1,
            route: "r".into(),
            path_prefix: "/a".into(),
        };
        assert_eq!(s.purge(&rule), 1);
        assert!(s.get("m").await.expect("ok").is_none());
        assert!(s.get("e1").await.expect("ok").is_none());
        assert!(s.get("e2").await.expect("ok").is_some());
        assert!(s.get("e3").await.expect("ok").is_some());
    }
}
