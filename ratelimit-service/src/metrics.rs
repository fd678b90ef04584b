//! ratelimit-service's Prometheus metrics. Labels are bounded by the config (route and limit
//! names) or by code (store, result); never a key value such as an address or a user.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DecisionResult {
    Ok,
    OverLimit,
}

impl EncodeLabelValue for DecisionResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            DecisionResult::Ok => "ok",
            DecisionResult::OverLimit => "over_limit",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub route: String,
    pub limit: String,
    pub result: DecisionResult,
}

/// Which store answered (or failed).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

impl EncodeLabelValue for StoreKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: StoreKind,
}

/// Why a descriptor was not matched to a limit.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Unmatched {
    /// The domain is not [`crate::limits::DOMAIN`].
    Domain,
    /// Route or limit unknown to this config version.
    Limit,
    /// The third entry does not fit the limit's key.
    Key,
}

impl EncodeLabelValue for Unmatched {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Unmatched::Domain => "domain",
            Unmatched::Limit => "limit",
            Unmatched::Key => "key",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnmatchedLabels {
    pub reason: Unmatched,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~100 ms: a memory decision is microseconds, a Redis round trip a fraction of a
    // millisecond on a LAN, and anything near the call timeout is a failure in the making.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 12,
    ))
}

/// All of the service's metrics; clones share the same series.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub decisions: Family<DecisionLabels, Counter>,
    pub unmatched: Family<UnmatchedLabels, Counter>,
    pub store_errors: Family<StoreLabels, Counter>,
    pub store_latency: Family<StoreLabels, Histogram>,
    /// 1 while decisions are made without the shared store (Redis down), else 0.
    pub fallback: Gauge,
    /// Counters dropped from the memory store before they expired, to stay within its capacity.
    pub evicted_live: Counter,
    pub limits_routes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            unmatched: Family::default(),
            store_errors: Family::default(),
            store_latency: Family::new_with_constructor(latency_histogram),
            fallback: Gauge::default(),
            evicted_live: Counter::default(),
            limits_routes: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("vrata_ratelimit");
        r.register(
            "decisions",
            "Limit decisions by route, limit and result (a request checked against two limits counts twice)",
            self.decisions.clone(),
        );
        r.register(
            "unmatched_descriptors",
            "Descriptors answered OK because no limit matched them, by reason",
            self.unmatched.clone(),
        );
        r.register(
            "store_errors",
            "Failed store calls (each one switches to the on_error mode)",
            self.store_errors.clone(),
        );
        r.register(
            "store_latency_seconds",
            "Time of one decision in a counter store",
            self.store_latency.clone(),
        );
        r.register(
            "fallback",
            "1 while the shared store is down and decisions follow on_error, else 0",
            self.fallback.clone(),
        );
        r.register(
            "memory_evicted_live",
            "Live counters evicted from the memory store because it was full",
            self.evicted_live.clone(),
        );
        r.register(
            "limits_routes",
            "Routes with limits in the config in force",
            self.limits_routes.clone(),
        );
    }

    /// The counter for one (route, limit, result); limits take theirs once when compiled.
    pub fn decision(&self, route: &str, limit: &str, admitted: bool) -> Counter {
        self.decisions
            .get_or_create(&DecisionLabels {
                route: route.to_owned(),
                limit: limit.to_owned(),
                result: if admitted {
                    DecisionResult::Ok
                } else {
                    DecisionResult::OverLimit
                },
            })
            .clone()
    }

    pub fn unmatched(&self, reason: Unmatched) {
        self.unmatched
            .get_or_create(&UnmatchedLabels { reason })
            .inc();
    }

    pub fn store_error(&self, store: StoreKind) {
        self.store_errors
            .get_or_create(&StoreLabels { store })
            .inc();
    }

    pub fn observe_latency(&self, store: StoreKind, seconds: f64) {
        self.store_latency
            .get_or_create(&StoreLabels { store })
            .observe(seconds);
    }
}
