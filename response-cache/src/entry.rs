//! What the stores hold: an [`Entry`] (a stored response) or a [`Marker`] (the upstream's
//! `Vary` names for a base key), in one [`Record`] type.
//!
//! The encoding is protobuf (prost messages defined here, not in `proto/`: nobody but
//! response-cache reads them). It is compact, bodies stay raw bytes, and unknown fields are
//! skipped, so a later version may add fields without a key-version bump.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

/// One value in a store.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(oneof = "record::Kind", tags = "1, 2")]
    pub kind: Option<record::Kind>,
}

pub mod record {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Entry(super::Entry),
        #[prost(message, tag = "2")]
        Marker(super::Marker),
    }
}

/// A stored response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(uint32, tag = "1")]
    pub status: u32,
    /// End-to-end headers only (hop-by-hop ones, `content-length`, `age` and `x-cache` are
    /// never stored: Envoy and this service set them when serving).
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<StoredHeader>,
    #[prost(bytes = "bytes", tag = "3")]
    pub body: Bytes,
    /// Unix milliseconds.
    #[prost(uint64, tag = "4")]
    pub stored_at_ms: u64,
    #[prost(uint64, tag = "5")]
    pub fresh_until_ms: u64,
    /// `fresh_until_ms` plus the route's `stale_if_error`; the store drops the entry then.
    #[prost(uint64, tag = "6")]
    pub stale_until_ms: u64,
    /// The upstream's `Age` when the response arrived, seconds.
    #[prost(uint64, tag = "7")]
    pub age_at_store_s: u64,
    /// The highest purge id the storing instance knew when the request started: purges
    /// above it that match the entry make it unusable.
    #[prost(uint64, tag = "8")]
    pub purge_epoch: u64,
    /// The request path (no query), for purges by prefix.
    #[prost(string, tag = "9")]
    pub path: String,
    /// The request's values of the upstream's `Vary` names (absent headers have no value).
    #[prost(message, repeated, tag = "10")]
    pub vary: Vec<VaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredHeader {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VaryValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// Stored under a base key when the upstream answered with `Vary`: the entries are under
/// the variant keys made from these names.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Marker {
    #[prost(string, repeated, tag = "1")]
    pub vary: Vec<String>,
    #[prost(uint64, tag = "2")]
    pub stale_until_ms: u64,
}

impl Entry {
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// Still within `stale_if_error` (whether fresh or not).
    pub fn is_usable_stale(&self, now_ms: u64) -> bool {
        now_ms < self.stale_until_ms
    }

    /// The `Age` to send, seconds: the age it arrived with plus its time in the cache
    /// (RFC 9111 §4.2.3 without the response-delay correction, which a cache next to its
    /// upstream cannot measure meaningfully).
    pub fn age_s(&self, now_ms: u64) -> u64 {
        self.age_at_store_s
            .saturating_add(now_ms.saturating_sub(self.stored_at_ms) / 1_000)
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// Roughly the bytes the entry takes in memory, for the memory store's bound.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 48)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|v| v.name.len() + v.value.as_ref().map_or(0, String::len) + 56)
            .sum();
        u64::try_from(self.body.len() + headers + vary + self.path.len() + 160).unwrap_or(u64::MAX)
    }
}

/// An entry as the stores hold it, shared without copying: a [`Record`] known to hold an
/// [`Entry`] (both constructors make sure of it). A memory-tier hit, a coalesced follower and a
/// stale fallback all read the one record the store has.
#[derive(Debug, Clone)]
pub struct SharedEntry(Arc<Record>);

impl SharedEntry {
    pub fn new(entry: Entry) -> Self {
        Self(Arc::new(Record::entry(entry)))
    }

    /// `None` for a marker or an empty record.
    pub fn from_record(record: Arc<Record>) -> Option<Self> {
        matches!(record.kind, Some(record::Kind::Entry(_))).then_some(Self(record))
    }

    /// The record to put in a store.
    pub fn record(&self) -> Arc<Record> {
        self.0.clone()
    }
}

impl Deref for SharedEntry {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        match &self.0.kind {
            Some(record::Kind::Entry(e)) => e,
            _ => unreachable!("a SharedEntry is only made from an entry record"),
        }
    }
}

impl Record {
    pub fn entry(entry: Entry) -> Self {
        Self {
            kind: Some(record::Kind::Entry(entry)),
        }
    }

    pub fn marker(marker: Marker) -> Self {
        Self {
            kind: Some(record::Kind::Marker(marker)),
        }
    }

    pub fn stale_until_ms(&self) -> u64 {
        match &self.kind {
            Some(record::Kind::Entry(e)) => e.stale_until_ms,
            Some(record::Kind::Marker(m)) => m.stale_until_ms,
            None => 0,
        }
    }

    pub fn weight(&self) -> u64 {
        match &self.kind {
            Some(record::Kind::Entry(e)) => e.weight(),
            Some(record::Kind::Marker(m)) => {
                u64::try_from(m.vary.iter().map(|v| v.len() + 24).sum::<usize>() + 64)
                    .unwrap_or(u64::MAX)
            }
            None => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_shared_entry_is_the_stores_record_not_a_copy() {
        let entry = SharedEntry::new(Entry {
            status: 203,
            ..Default::default()
        });
        let record = entry.record();
        let again = SharedEntry::from_record(record.clone()).expect("an entry record");
        assert_eq!(again.status, 203);
        assert!(std::ptr::eq(&*again, &*entry), "one allocation shared");
        let marker = Arc::new(Record::marker(Marker::default()));
        assert!(SharedEntry::from_record(marker).is_none());
        assert!(SharedEntry::from_record(Arc::new(Record::default())).is_none());
    }

    #[test]
    fn records_round_trip_and_age_grows_with_residence() {
        let entry = Entry {
            status: 200,
            headers: vec![StoredHeader {
                name: "etag".into(),
                value: b"\"x\"".to_vec(),
            }],
            body: Bytes::from_static(b"hello"),
            stored_at_ms: 10_000,
            fresh_until_ms: 70_000,
            stale_until_ms: 370_000,
            age_at_store_s: 5,
            purge_epoch: 7,
            path: "/a".into(),
            vary: vec![VaryValue {
                name: "accept-language".into(),
                value: None,
            }],
        };
        let record = Record::entry(entry.clone());
        let decoded = Record::decode(record.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, record);
        assert_eq!(entry.age_s(10_999), 5);
        assert_eq!(entry.age_s(12_000), 7);
        assert!(entry.is_fresh(69_999) && !entry.is_fresh(70_000));
        assert!(entry.is_usable_stale(369_999) && !entry.is_usable_stale(370_000));
        assert_eq!(entry.header("etag"), Some(b"\"x\"".as_slice()));
    }
}
