//! The xDS client vrata's services share: their config comes from xds-server over the same ADS
//! stream Envoy uses, as typed protobuf resources (`vrata.config.v1.*`).
//!
//! A service names its node, subscribes to one or more resource types and gets, for each, a
//! [`tokio::sync::watch`] of the last config it accepted:
//!
//! ```ignore
//! let config = XdsClientConfig::new("http://127.0.0.1:18000", "ratelimit-1", "vrata-ratelimit", "vrata-ratelimit");
//! let mut client = XdsClient::new(config);
//! // `convert` validates a whole version; its error becomes the NACK's message.
//! let mut configs = client.subscribe::<RateLimitConfig, _, _>(ServiceConfig::from_resources);
//! tokio::spawn(client.run(shutdown));
//! configs.changed().await?; // then configs.borrow(): Option<Arc<Accepted<ServiceConfig>>>
//! ```
//!
//! Each response is one complete version of its type. The service's `convert` turns the decoded
//! resources into its own typed config; if that succeeds the new value is published and the
//! version ACKed, otherwise the version is NACKed with the conversion's error as
//! `error_detail` (xds-server shows it on `/admin/status`) and the last good value stays.
//!
//! **State of the world, not delta.** Services receive one small resource per type, always whole:
//! delta's per-resource bookkeeping would buy nothing, and SotW makes every response a complete,
//! self-consistent version, which is exactly what a service swaps in.
//!
//! **Disconnections.** The stream is re-opened with bounded exponential backoff
//! ([`Backoff`]); meanwhile the watch keeps the last accepted value, so the service keeps
//! serving with it. On reconnect the last accepted version is sent as `version_info`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// gRPC status code carried in a NACK's `error_detail`: the config is invalid.
const INVALID_ARGUMENT: i32 = 3;

/// A config the service accepted, with the xDS version it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted<C> {
    pub version: String,
    pub config: C,
}

/// What a subscriber's watch holds: `None` until the first version is accepted.
pub type Latest<C> = Option<Arc<Accepted<C>>>;

/// Why a response could not be used (the NACK's message).
#[derive(Debug, thiserror::Error)]
pub enum RejectError {
    #[error("resource {index} has type {found}, expected {expected}")]
    WrongType {
        index: usize,
        found: String,
        expected: String,
    },
    #[error("resource {index} does not decode as {type_url}: {source}")]
    Decode {
        index: usize,
        type_url: String,
        source: prost::DecodeError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("bad xDS server address {0:?}: {1}")]
    Endpoint(String, tonic::transport::Error),
    #[error("cannot connect to the xDS server: {0}")]
    Connect(tonic::transport::Error),
    #[error("xDS stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("the xDS server closed the stream")]
    Closed,
}

/// Reconnection delays: doubling from `initial` up to `max`, back to `initial` once a stream
/// delivered a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Quick first retries (a restarting xds-server is back within a second), at most 5 s
    /// between attempts so a long outage costs little.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    fn next(&self, current: Duration) -> Duration {
        (current * 2).min(self.max)
    }
}

#[derive(Debug, Clone)]
pub struct XdsClientConfig {
    /// `http://HOST:PORT` of xds-server's gRPC listener.
    pub endpoint: String,
    /// How the service appears in xds-server's `/admin/status` (`node.id`, `node.cluster`).
    pub node_id: String,
    pub cluster: String,
    /// Shown as the node's user agent (`vrata-ratelimit`, `vrata-ext-authz`).
    pub user_agent: String,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
}

impl XdsClientConfig {
    pub fn new(
        endpoint: impl Into<String>,
        node_id: impl Into<String>,
        cluster: impl Into<String>,
        user_agent: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            node_id: node_id.into(),
            cluster: cluster.into(),
            user_agent: user_agent.into(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// One subscription: decodes and converts a type's resources, publishes accepted versions.
trait Handler: Send {
    /// The version accepted last ("" before the first).
    fn accepted_version(&self) -> String;
    fn accept(&mut self, response: &DiscoveryResponse) -> Result<(), RejectError>;
}

struct TypedHandler<T, C, F> {
    type_url: String,
    convert: F,
    tx: watch::Sender<Latest<C>>,
    _resource: std::marker::PhantomData<fn() -> T>,
}

impl<T, C, F, E> Handler for TypedHandler<T, C, F>
where
    T: prost::Message + Default + 'static,
    C: Send + Sync + 'static,
    E: Display,
    F: FnMut(Vec<T>) -> Result<C, E> + Send + 'static,
{
    fn accepted_version(&self) -> String {
        self.tx
            .borrow()
            .as_ref()
            .map(|a| a.version.clone())
            .unwrap_or_default()
    }

    fn accept(&mut self, response: &DiscoveryResponse) -> Result<(), RejectError> {
        let mut resources = Vec::with_capacity(response.resources.len());
        for (index, any) in response.resources.iter().enumerate() {
            if any.type_url != self.type_url {
                return Err(RejectError::WrongType {
                    index,
                    found: any.type_url.clone(),
                    expected: self.type_url.clone(),
                });
            }
            let resource =
                T::decode(any.value.as_slice()).map_err(|source| RejectError::Decode {
                    index,
                    type_url: self.type_url.clone(),
                    source,
                })?;
            resources.push(resource);
        }
        let config = (self.convert)(resources).map_err(|e| RejectError::Invalid(e.to_string()))?;
        self.tx.send_replace(Some(Arc::new(Accepted {
            version: response.version_info.clone(),
            config,
        })));
        Ok(())
    }
}

/// An ADS client for one service. Build it, [`XdsClient::subscribe`] to each type, then
/// [`XdsClient::run`] it.
pub struct XdsClient {
    config: XdsClientConfig,
    handlers: BTreeMap<String, Box<dyn Handler>>,
    connected: watch::Sender<bool>,
}

impl XdsClient {
    pub fn new(config: XdsClientConfig) -> Self {
        Self {
            config,
            handlers: BTreeMap::new(),
            connected: watch::channel(false).0,
        }
    }

    /// Subscribes to `T`'s type URL. `convert` validates a complete version (every resource of
    /// the type) and turns it into the service's config; an error NACKs the version. Returns
    /// the watch of accepted configs. Subscribing twice to one type replaces the first.
    pub fn subscribe<T, C, E>(
        &mut self,
        convert: impl FnMut(Vec<T>) -> Result<C, E> + Send + 'static,
    ) -> watch::Receiver<Latest<C>>
    where
        T: prost::Message + prost::Name + Default + 'static,
        C: Send + Sync + 'static,
        E: Display,
    {
        let (tx, rx) = watch::channel(None);
        let type_url = T::type_url();
        self.handlers.insert(
            type_url.clone(),
            Box::new(TypedHandler {
                type_url,
                convert,
                tx,
                _resource: std::marker::PhantomData,
            }),
        );
        rx
    }

    /// Whether a stream is open (for readiness and logs).
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Keeps a stream open until `shutdown` resolves, reconnecting after failures.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut delay = self.config.backoff.initial;
        loop {
            let mut got_response = false;
            let result = tokio::select! {
                r = self.stream(&mut got_response) => r,
                () = &mut shutdown => return,
            };
            self.connected.send_replace(false);
            if got_response {
                delay = self.config.backoff.initial;
            }
            match result {
                Ok(()) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "xDS stream down; serving the last accepted config meanwhile"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return,
            }
            delay = self.config.backoff.next(delay);
        }
    }

    fn request(&self, type_url: &str, version: String) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version,
            node: Some(Node {
                id: self.config.node_id.clone(),
                cluster: self.config.cluster.clone(),
                user_agent_name: self.config.user_agent.clone(),
                ..Default::default()
            }),
            type_url: type_url.to_owned(),
            ..Default::default()
        }
    }

    /// One stream: subscribe to every type, then ACK/NACK each response. Returns when the
    /// stream ends.
    async fn stream(&mut self, got_response: &mut bool) -> Result<(), StreamError> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.config.endpoint.clone())
            .map_err(|e| StreamError::Endpoint(self.config.endpoint.clone(), e))?
            .connect_timeout(self.config.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = endpoint.connect().await.map_err(StreamError::Connect)?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024);

        // Requests: the subscriptions now, then one ACK/NACK per response. Never more in
        // flight than types, so a small buffer cannot block.
        let (tx, rx) = mpsc::channel(self.handlers.len().max(1) * 2);
        // The last accepted version tells the server what this client already holds.
        let subscriptions: Vec<DiscoveryRequest> = self
            .handlers
            .iter()
            .map(|(type_url, handler)| self.request(type_url, handler.accepted_version()))
            .collect();
        for request in subscriptions {
            tx.send(request).await.map_err(|_| StreamError::Closed)?;
        }
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        self.connected.send_replace(true);
        tracing::info!(endpoint = %self.config.endpoint, types = ?self.handlers.keys().collect::<Vec<_>>(), "xDS stream open");

        while let Some(response) = responses.next().await {
            let response = response?;
            *got_response = true;
            let Some(handler) = self.handlers.get_mut(&response.type_url) else {
                tracing::warn!(type_url = %response.type_url, "response for a type this client did not ask for; ignored");
                continue;
            };
            let mut reply = match handler.accept(&response) {
                Ok(()) => {
                    tracing::info!(type_url = %response.type_url, version = %response.version_info, "config accepted");
                    let mut ack = DiscoveryRequest {
                        version_info: response.version_info.clone(),
                        ..Default::default()
                    };
                    ack.type_url = response.type_url.clone();
                    ack
                }
                Err(e) => {
                    tracing::error!(type_url = %response.type_url, version = %response.version_info, error = %e, "config rejected (NACK); keeping the last accepted one");
                    DiscoveryRequest {
                        version_info: handler.accepted_version(),
                        type_url: response.type_url.clone(),
                        error_detail: Some(RpcStatus {
                            code: INVALID_ARGUMENT,
                            message: e.to_string(),
                            details: Vec::new(),
                        }),
                        ..Default::default()
                    }
                }
            };
            reply.response_nonce = response.nonce;
            if tx.send(reply).await.is_err() {
                return Err(StreamError::Closed);
            }
        }
        Err(StreamError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(
            b.next(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
        assert_eq!(
            b.next(Duration::from_millis(200)),
            Duration::from_millis(350)
        );
        assert_eq!(
            b.next(Duration::from_millis(350)),
            Duration::from_millis(350)
        );
    }
}
