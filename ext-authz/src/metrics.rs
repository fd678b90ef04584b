//! ext-authz's Prometheus metrics. Labels are bounded by the config (route and provider names)
//! or by enums (result, reason, fetch kind); never a subject, token or `kid`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::validate::Reason;

/// The outcome of one Check.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Token valid and authorized.
    Allowed,
    /// `optional: true` route, no token.
    Anonymous,
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 503: the provider was never reached.
    Unavailable,
    /// 500: the request names no known route (a config mismatch, not the client's fault).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Anonymous => "anonymous",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FetchKind {
    Discovery,
    Jwks,
}

impl EncodeLabelValue for FetchKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            FetchKind::Discovery => "discovery",
            FetchKind::Jwks => "jwks",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The route name, or `""` when the request named none.
    pub route: String,
    pub result: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Reason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub provider: String,
    pub kind: FetchKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: CacheResult,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
}

impl EncodeLabelValue for CacheResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
        })
    }
}

/// Check latency buckets, seconds: 10 µs .. ~80 ms. A cached decision is microseconds, a
/// signature check tens of µs, a JWKS refetch milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_01, 2.0, 14,
    ))
}

/// Cloning shares the underlying series.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub decisions: Family<DecisionLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub fetches: Family<FetchLabels, Counter>,
    pub fetch_errors: Family<FetchLabels, Counter>,
    pub refetch_suppressed: Family<ProviderLabels, Counter>,
    pub keys: Family<ProviderLabels, Gauge>,
    pub token_cache: Family<CacheLabels, Counter>,
    pub check_seconds: Histogram,
    pub policy_version_loads: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            failures: Family::default(),
            fetches: Family::default(),
            fetch_errors: Family::default(),
            refetch_suppressed: Family::default(),
            keys: Family::default(),
            token_cache: Family::default(),
            check_seconds: latency_histogram(),
            policy_version_loads: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("vrata_authz");
        r.register(
            "decisions",
            "Check decisions by route and result",
            self.decisions.clone(),
        );
        r.register(
            "failures",
            "Refused requests by reason (logs carry the same reason)",
            self.failures.clone(),
        );
        r.register(
            "jwks_fetches",
            "HTTP requests to identity providers, by provider and kind (discovery, jwks)",
            self.fetches.clone(),
        );
        r.register(
            "jwks_fetch_errors",
            "Failed HTTP requests to identity providers, by provider and kind",
            self.fetch_errors.clone(),
        );
        r.register(
            "jwks_refetch_suppressed",
            "Unknown-kid refetches skipped because of jwks_min_refetch",
            self.refetch_suppressed.clone(),
        );
        r.register(
            "jwks_keys",
            "Usable signing keys in the provider's current key set",
            self.keys.clone(),
        );
        r.register(
            "token_cache",
            "Validated-token cache lookups by result",
            self.token_cache.clone(),
        );
        r.register(
            "check_duration_seconds",
            "Time to answer one Check",
            self.check_seconds.clone(),
        );
        r.register(
            "policy_versions",
            "Policy versions applied",
            self.policy_version_loads.clone(),
        );
    }

    pub fn decision(&self, route: &str, result: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                route: route.to_owned(),
                result,
            })
            .inc();
    }

    pub fn failure(&self, reason: Reason) {
        self.failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn fetch(&self, provider: &str, kind: FetchKind) {
        self.fetches
            .get_or_create(&FetchLabels {
                provider: provider.to_owned(),
                kind,
            })
            .inc();
    }

    pub fn fetch_error(&self, provider: &str, kind: FetchKind) {
        self.fetch_errors
            .get_or_create(&FetchLabels {
                provider: provider.to_owned(),
                kind,
            })
            .inc();
    }

    pub fn refetch_suppressed(&self, provider: &str) {
        self.refetch_suppressed
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .inc();
    }

    pub fn keys_loaded(&self, provider: &str, n: usize) {
        self.keys
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn cache(&self, result: CacheResult) {
        self.token_cache
            .get_or_create(&CacheLabels { result })
            .inc();
    }
}
