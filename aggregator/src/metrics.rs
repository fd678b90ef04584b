//! The aggregator's Prometheus metrics. Labels are bounded by the config (route and backend
//! names) or by code (result, failure kind); a route name Envoy sends that the config does not
//! know is counted without its name.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateLabels {
    pub route: String,
    /// `ok`, `incomplete` (an optional backend failed), `failed`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub route: String,
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub route: String,
    pub backend: String,
    /// A [`crate::failure::Failure::label`].
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `no_route_header`, `unknown_route`, `path_mismatch`, `not_configured`.
    pub reason: &'static str,
}

/// Latency buckets in seconds: 1 ms to 10 s.
fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<AggregateLabels, Counter>,
    pub request_seconds: Family<BackendLabels, Histogram>,
    pub backend_calls: Family<BackendLabels, Counter>,
    pub backend_failures: Family<FailureLabels, Counter>,
    pub backend_seconds: Family<BackendLabels, Histogram>,
    pub rejected: Family<RejectLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Histogram::new(buckets());
        Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(histogram),
            backend_calls: Family::default(),
            backend_failures: Family::default(),
            backend_seconds: Family::new_with_constructor(histogram),
            rejected: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("vrata_aggregator");
        r.register(
            "requests",
            "Requests served, by route and result (ok, incomplete, failed)",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer a request, by route (backend label: all)",
            self.request_seconds.clone(),
        );
        r.register(
            "backend_calls",
            "Backend calls made, by route and backend",
            self.backend_calls.clone(),
        );
        r.register(
            "backend_failures",
            "Backend calls that gave no usable answer, by route, backend and reason",
            self.backend_failures.clone(),
        );
        r.register(
            "backend_duration_seconds",
            "Backend call latency, by route and backend",
            self.backend_seconds.clone(),
        );
        r.register(
            "rejected",
            "Requests refused before any backend call, by reason",
            self.rejected.clone(),
        );
    }

    pub fn backend(
        &self,
        route: &str,
        backend: &str,
        elapsed: Duration,
        failure: Option<&'static str>,
    ) {
        let labels = BackendLabels {
            route: route.to_owned(),
            backend: backend.to_owned(),
        };
        self.backend_calls.get_or_create(&labels).inc();
        self.backend_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.backend_failures
                .get_or_create(&FailureLabels {
                    route: route.to_owned(),
                    backend: backend.to_owned(),
                    reason,
                })
                .inc();
        }
    }

    pub fn request(&self, route: &str, result: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&AggregateLabels {
                route: route.to_owned(),
                result,
            })
            .inc();
        self.request_seconds
            .get_or_create(&BackendLabels {
                route: route.to_owned(),
                backend: "all".to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}
