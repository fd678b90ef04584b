//! xds-server's Prometheus metrics. Labels are bounded: xDS type (4 values), reload result
//! (2 values); never a node id or a resource name.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Error,
}

/// Lower-case label values, as Prometheus conventions have them (`result="error"`).
impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            ReloadResult::Success => "success",
            ReloadResult::Error => "error",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// CDS, EDS, LDS, RDS
    pub r#type: String,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub config_reloads: Family<ReloadLabels, Counter>,
    pub config_generation: Gauge,
    pub config_last_success_seconds: Gauge,
    pub connected_streams: Gauge,
    pub pushes: Family<TypeLabels, Counter>,
    pub acks: Family<TypeLabels, Counter>,
    pub nacks: Family<TypeLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("vrata");
        r.register(
            "config_reloads",
            "Gateway config loads by result (the first load counts too)",
            self.config_reloads.clone(),
        );
        r.register(
            "config_generation",
            "Generation of the config being served",
            self.config_generation.clone(),
        );
        r.register(
            "config_last_success_timestamp_seconds",
            "Unix time of the last successful config load",
            self.config_last_success_seconds.clone(),
        );
        r.register(
            "xds_connected_streams",
            "ADS streams currently open (Envoys and services)",
            self.connected_streams.clone(),
        );
        r.register(
            "xds_pushes",
            "xDS responses sent, by type",
            self.pushes.clone(),
        );
        r.register(
            "xds_acks",
            "xDS responses acknowledged, by type",
            self.acks.clone(),
        );
        r.register(
            "xds_nacks",
            "xDS responses rejected by a client, by type",
            self.nacks.clone(),
        );
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok {
            ReloadResult::Success
        } else {
            ReloadResult::Error
        };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    pub fn typed(family: &Family<TypeLabels, Counter>, kind: &str) {
        family
            .get_or_create(&TypeLabels {
                r#type: kind.to_owned(),
            })
            .inc();
    }
}
