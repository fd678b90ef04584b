//! response-cache's Prometheus metrics (`vrata_cache_*`). Labels are bounded by the config
//! (route names) or by code (result, store, reason); never a key, path or user. A route name
//! Envoy sends that the config does not know is counted without its name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::Tier;

/// What a request got, the value of its `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
    Stale,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
            Outcome::Stale => "stale",
        }
    }

    /// The `X-Cache` value.
    pub fn header(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
            Outcome::Stale => "STALE",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub route: String,
    pub store: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub route: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnroutedLabels {
    /// `missing` (no `x-vrata-route` metadata) or `unknown` (not in the config).
    pub reason: &'static str,
}

/// All of the service's metrics; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub coalesced: Family<RouteLabels, Counter>,
    pub store_errors: Family<StoreLabels, Counter>,
    pub stored: Family<RouteLabels, Counter>,
    pub not_stored: Family<ReasonLabels, Counter>,
    pub purged: Counter,
    pub purge_errors: Counter,
    pub unrouted: Family<UnroutedLabels, Counter>,
    pub memory_bytes: Gauge,
    pub memory_entries: Gauge,
    /// 1 while the Redis store is considered down (requests on Redis routes bypass).
    pub redis_down: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("vrata_cache");
        r.register(
            "requests",
            "Requests on cached routes by route and result (hit, miss, bypass, stale: the X-Cache value sent)",
            self.requests.clone(),
        );
        r.register(
            "coalesced",
            "Requests that waited for another request's fill of the same key",
            self.coalesced.clone(),
        );
        r.register(
            "store_errors",
            "Requests that could not use their store (failed or timed-out call, or the store known down) and bypassed, plus failed writes",
            self.store_errors.clone(),
        );
        r.register("stored", "Responses stored", self.stored.clone());
        r.register(
            "not_stored",
            "Responses on the miss path not stored, by reason",
            self.not_stored.clone(),
        );
        r.register(
            "purged",
            "Keys deleted by purges (memory entries, and Redis keys by the instance that ran the purge)",
            self.purged.clone(),
        );
        r.register(
            "purge_errors",
            "Purges whose Redis deletion failed (their entries stay invalidated by epoch until they expire)",
            self.purge_errors.clone(),
        );
        r.register(
            "unrouted",
            "Streams without a usable x-vrata-route (answered CONTINUE, nothing cached)",
            self.unrouted.clone(),
        );
        r.register(
            "memory_bytes",
            "Bytes held by the in-memory store (approximate)",
            self.memory_bytes.clone(),
        );
        r.register(
            "memory_entries",
            "Entries and Vary markers held by the in-memory store",
            self.memory_entries.clone(),
        );
        r.register(
            "redis_down",
            "1 while Redis is unavailable and Redis routes bypass the cache, else 0",
            self.redis_down.clone(),
        );
    }

    pub fn request(&self, route: &str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                result: outcome.label(),
            })
            .inc();
    }

    pub fn coalesced(&self, route: &str) {
        self.coalesced
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .inc();
    }

    pub fn store_error(&self, route: &str, tier: Tier) {
        self.store_errors
            .get_or_create(&StoreLabels {
                route: route.to_owned(),
                store: tier.label(),
            })
            .inc();
    }

    pub fn stored(&self, route: &str) {
        self.stored
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .inc();
    }

    pub fn not_stored(&self, route: &str, reason: &'static str) {
        self.not_stored
            .get_or_create(&ReasonLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn unrouted(&self, reason: &'static str) {
        self.unrouted
            .get_or_create(&UnroutedLabels { reason })
            .inc();
    }
}
