//! Envoy's metrics-service sink (`envoy.service.metrics.v3.MetricsService/StreamMetrics`),
//! served on the ADS port: each Envoy's bootstrap streams its stats here every flush interval
//! (`stats_flush_interval`), and they go into the [`Fleet`]. Envoy expects no answer; a stream
//! that breaks is simply reopened by Envoy.

use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::MetricsService;
use envoy_types::pb::envoy::service::metrics::v3::{StreamMetricsMessage, StreamMetricsResponse};
use tonic::{Request, Response, Status, Streaming};

use crate::fleet::Fleet;

/// Largest flush accepted: Envoy sends every used stat at once (tens of KiB per thousand
/// stats); a config with tens of thousands of routes needs more than tonic's 4 MiB default.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub struct Sink {
    fleet: Arc<Fleet>,
}

impl Sink {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        Self { fleet }
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let peer = request.remote_addr();
        let mut stream = request.into_inner();
        let mut node: Option<String> = None;
        let result = loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    // The identifier comes with the first message of a stream.
                    if let Some(n) = msg.identifier.as_ref().and_then(|i| i.node.as_ref()) {
                        tracing::info!(node = %n.id, ?peer, "metrics stream opened");
                        self.fleet
                            .connected(&n.id, &crate::nodes::agent(n), SystemTime::now());
                        node = Some(n.id.clone());
                    }
                    match &node {
                        Some(id) => self.fleet.report(id, &msg.envoy_metrics, SystemTime::now()),
                        None => {
                            break Err(Status::invalid_argument(
                                "the first message of a metrics stream must carry the node identifier",
                            ));
                        }
                    }
                }
                Ok(None) => break Ok(Response::new(StreamMetricsResponse {})),
                Err(status) => {
                    tracing::debug!(?peer, %status, "metrics stream ended");
                    break Err(status);
                }
            }
        };
        if let Some(id) = &node {
            self.fleet.disconnected(id);
        }
        result
    }
}
