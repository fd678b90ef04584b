//! Distributed tracing for the services: a Check or ShouldRateLimit call continues the W3C
//! trace context (`traceparent`) Envoy puts in the gRPC metadata, and its span is exported to
//! an OTLP/HTTP collector.
//!
//! Envoy decides what is sampled (`observability.tracing.sample_ratio`): a service records a
//! span only under a sampled parent, and never starts a trace of its own. Spans are exported in
//! batches from a background thread with a bounded queue: a slow or unreachable collector
//! loses spans, never delays a decision.
//!
//! The collector comes from the command line (`--otlp-endpoint`, or `VRATA_OTLP_ENDPOINT`),
//! not from xds-server: tracing must work before the first config arrives and is a property of
//! where a process runs (its collector), like its log format.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

/// An export that takes longer is abandoned (its spans are lost).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Spans waiting for export at most; beyond, new spans are dropped.
const MAX_QUEUE: usize = 4096;
/// How often queued spans are sent.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// `--otlp-endpoint` and `--trace-service-name`, shared by the services' command lines.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// OTLP/HTTP collector base URL (spans go to `/v1/traces` under it), e.g.
    /// `http://otel-collector:4318`. Unset: no spans.
    #[arg(long, env = "VRATA_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of this process's spans. Default: the binary's name.
    #[arg(long, env = "VRATA_TRACE_SERVICE_NAME", value_name = "NAME")]
    pub trace_service_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--otlp-endpoint {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    Endpoint(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The process's tracer; [`Tracer::disabled`] costs one branch per call.
#[derive(Debug)]
pub struct Tracer {
    provider: Option<SdkTracerProvider>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

/// A span in progress; ends (and is queued for export) when dropped.
pub struct Span(opentelemetry_sdk::trace::Span);

impl Span {
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.0.set_attribute(KeyValue::new(key, value.into()));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.0.end();
    }
}

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

impl Tracer {
    pub fn disabled() -> Self {
        Self {
            provider: None,
            tracer: None,
        }
    }

    /// From the command line: disabled without `--otlp-endpoint`. Call before starting a
    /// tokio runtime (the exporter's HTTP client runs its own).
    pub fn from_args(args: &TraceArgs, default_name: &str) -> Result<Self, TraceError> {
        match &args.otlp_endpoint {
            None => Ok(Self::disabled()),
            Some(url) => Self::otlp(
                url,
                args.trace_service_name.as_deref().unwrap_or(default_name),
            ),
        }
    }

    pub fn otlp(endpoint: &str, service_name: &str) -> Result<Self, TraceError> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TraceError::Endpoint(endpoint.to_owned()));
        }
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces)
            .with_timeout(EXPORT_TIMEOUT)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUE)
                    .with_scheduled_delay(EXPORT_INTERVAL)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            // Only Envoy starts traces; a call without a sampled parent records nothing.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .with_span_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("vrata");
        tracing::info!(endpoint, service_name, "exporting spans over OTLP/HTTP");
        Ok(Self {
            provider: Some(provider),
            tracer: Some(tracer),
        })
    }

    /// A span named `name` continuing the trace in `metadata`; `None` when tracing is off or
    /// the call carries no sampled `traceparent`.
    pub fn start(
        &self,
        name: &'static str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Option<Span> {
        let tracer = self.tracer.as_ref()?;
        metadata.get("traceparent")?;
        let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
        let sampled = parent.span().span_context().is_sampled();
        if !sampled {
            return None;
        }
        let span = tracer
            .span_builder(name)
            .with_kind(opentelemetry::trace::SpanKind::Server)
            .start_with_context(tracer, &parent);
        Some(Span(span))
    }

    /// Exports what is queued (bounded by the export timeout) and stops the exporter.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "spans not exported at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(traceparent: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("traceparent", traceparent.parse().expect("ascii"));
        m
    }

    #[test]
    fn disabled_and_unsampled_calls_record_nothing() {
        let off = Tracer::disabled();
        let sampled = metadata("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert!(off.start("x", &sampled).is_none());

        let on = Tracer::otlp("http://127.0.0.1:9", "test").expect("tracer");
        assert!(
            on.start("x", &tonic::metadata::MetadataMap::new())
                .is_none()
        );
        let unsampled = metadata("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        assert!(on.start("x", &unsampled).is_none());
        let garbage = metadata("not a traceparent");
        assert!(on.start("x", &garbage).is_none());
        let span = on
            .start("x", &sampled)
            .expect("a span under a sampled parent");
        assert_eq!(
            span.0.span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        drop(span);
        // Nobody listens on port 9: shutting down loses the span and returns.
        on.shutdown();
    }

    #[test]
    fn endpoints_need_a_scheme() {
        assert!(matches!(
            Tracer::otlp("collector:4318", "x"),
            Err(TraceError::Endpoint(_))
        ));
    }
}
