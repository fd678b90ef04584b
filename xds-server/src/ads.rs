//! The Aggregated Discovery Service: state-of-the-world and delta xDS over one gRPC service.
//!
//! Each stream is a task that waits on two things: requests from the client and new snapshots.
//! Responses follow the push order of [`TypeKind::PUSH_ORDER`] (clusters, endpoints, secrets, listeners,
//! routes), so a route never reaches Envoy before the cluster it sends to.
//!
//! Protocol rules that matter (ENVOY-NOTES, measured against Envoy 1.40):
//! - SotW: a request whose nonce is not the last one sent for its type is stale and ignored.
//!   The first request carrying the last nonce is the ACK (or NACK, detected by `error_detail`,
//!   not by versions). A *second* request with a nonce already answered is a re-request — Envoy
//!   sends it when a changed EDS cluster needs its endpoints again — and must be answered, or the
//!   cluster stalls until its initial fetch timeout (15 s).
//! - Delta: the server tracks what the client holds (name -> version) and sends only the
//!   differences; when a cluster changes, its endpoints are pushed again too, for the same reason.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::snapshot::{Snapshot, TypeKind};

/// Responses buffered per stream before the sender waits for the client to read.
const STREAM_BUFFER: usize = 16;

pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

#[derive(Clone)]
pub struct Ads {
    snapshots: SnapshotRx,
    nodes: Arc<Nodes>,
    metrics: Metrics,
}

impl Ads {
    pub fn new(snapshots: SnapshotRx, nodes: Arc<Nodes>, metrics: Metrics) -> Self {
        Self {
            snapshots,
            nodes,
            metrics,
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = StreamCtx::new(self, peer, "sotw");
        tokio::spawn(sotw::run(stream, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = StreamCtx::new(self, peer, "delta");
        tokio::spawn(delta::run(stream, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What every stream task carries: its id, the shared registries, the snapshot feed.
struct StreamCtx {
    id: u64,
    peer: Option<String>,
    protocol: &'static str,
    node: Option<String>,
    snapshots: SnapshotRx,
    nodes: Arc<Nodes>,
    metrics: Metrics,
    nonce: u64,
}

impl StreamCtx {
    fn new(ads: &Ads, peer: Option<String>, protocol: &'static str) -> Self {
        ads.metrics.connected_streams.inc();
        Self {
            id: ads.nodes.next_stream_id(),
            peer,
            protocol,
            node: None,
            snapshots: ads.snapshots.clone(),
            nodes: ads.nodes.clone(),
            metrics: ads.metrics.clone(),
            nonce: 0,
        }
    }

    /// Registers the node on its first request that names one.
    fn identify(&mut self, node: Option<&envoy_types::pb::envoy::config::core::v3::Node>) {
        if self.node.is_some() {
            return;
        }
        let (id, cluster, agent) = node
            .map(|n| (n.id.clone(), n.cluster.clone(), crate::nodes::agent(n)))
            .unwrap_or_default();
        tracing::info!(stream = self.id, node = %id, cluster = %cluster, peer = ?self.peer, protocol = self.protocol, "xDS stream opened");
        self.nodes.connect(
            self.id,
            id.clone(),
            cluster,
            agent,
            self.protocol,
            self.peer.clone(),
        );
        self.node = Some(id);
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }

    fn record_ack(&self, kind: TypeKind, version: &str) {
        Metrics::typed(&self.metrics.acks, kind.short());
        self.nodes.acked(self.id, kind, version);
        tracing::debug!(stream = self.id, node = ?self.node, r#type = %kind, %version, "ACK");
    }

    fn record_nack(&self, kind: TypeKind, version: &str, message: &str) {
        Metrics::typed(&self.metrics.nacks, kind.short());
        let nack = self.nodes.nacked(self.id, kind, version, message);
        tracing::warn!(stream = self.id, node = %nack.node, r#type = %kind, rejected_version = %version, error = %nack.message, "NACK: the client rejected a config and keeps its last good one");
    }

    fn record_push(&self, kind: TypeKind, version: &str) {
        Metrics::typed(&self.metrics.pushes, kind.short());
        self.nodes.sent(self.id, kind, version);
    }
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        self.metrics.connected_streams.dec();
        self.nodes.disconnect(self.id);
        tracing::info!(stream = self.id, node = ?self.node, "xDS stream closed");
    }
}

/// What a stream task reacts to.
enum Event<R> {
    Request(TypeKind, R),
    NewSnapshot,
}

/// The two request kinds, as far as the event pump needs them.
trait XdsRequest {
    fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
    fn type_url(&self) -> &str;
}

impl XdsRequest for DiscoveryRequest {
    fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
}

impl XdsRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
}

/// Waits for the next request or snapshot. `None`: the stream is over (the client left or
/// the server is shutting down).
async fn next_event<R: XdsRequest>(
    ctx: &mut StreamCtx,
    requests: &mut Streaming<R>,
    snapshots: &mut SnapshotRx,
) -> Option<Event<R>> {
    loop {
        tokio::select! {
            req = requests.next() => {
                let req = match req? {
                    Ok(r) => r,
                    Err(status) => {
                        tracing::info!(stream = ctx.id, error = %status, "xDS stream ended by the client");
                        return None;
                    }
                };
                ctx.identify(req.node());
                match TypeKind::from_type_url(req.type_url()) {
                    Some(kind) => return Some(Event::Request(kind, req)),
                    None => tracing::warn!(stream = ctx.id, type_url = %req.type_url(), "request for a type vrata does not serve; ignored"),
                }
            }
            changed = snapshots.changed() => {
                return changed.ok().map(|()| Event::NewSnapshot);
            }
        }
    }
}

/// Names a client asks for; `*` or nothing on a wildcard type means everything.
fn wants(kind: TypeKind, names: &BTreeSet<String>, name: &str) -> bool {
    kind.is_wildcard() || names.contains(name)
}

mod sotw {
    use super::*;

    #[derive(Default)]
    struct TypeState {
        names: BTreeSet<String>,
        sent_version: Option<String>,
        nonce: Option<String>,
        /// The client already answered `nonce` (ACK or NACK).
        answered: bool,
    }

    pub(super) async fn run(
        mut ctx: StreamCtx,
        mut requests: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        let mut state: BTreeMap<TypeKind, TypeState> = BTreeMap::new();
        let mut snapshots = ctx.snapshots.clone();
        while let Some(event) = next_event(&mut ctx, &mut requests, &mut snapshots).await {
            match event {
                Event::Request(kind, req) => {
                    if handle(&mut ctx, &mut state, kind, req)
                        && !respond(&mut ctx, &mut state, kind, &tx).await
                    {
                        return;
                    }
                }
                Event::NewSnapshot => {
                    let Some(snapshot) = ctx.current() else {
                        continue;
                    };
                    for kind in TypeKind::PUSH_ORDER {
                        let stale = state.get(&kind).is_some_and(|s| {
                            s.sent_version.as_deref() != Some(snapshot.types(kind).version.as_str())
                        });
                        if stale && !respond(&mut ctx, &mut state, kind, &tx).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Updates the stream state from a request; true when a response is due now.
    fn handle(
        ctx: &mut StreamCtx,
        state: &mut BTreeMap<TypeKind, TypeState>,
        kind: TypeKind,
        req: DiscoveryRequest,
    ) -> bool {
        let st = state.entry(kind).or_default();
        let names: BTreeSet<String> = req
            .resource_names
            .into_iter()
            .filter(|n| n != "*")
            .collect();
        let names_changed = names != st.names;
        st.names = names;
        if req.response_nonce.is_empty() {
            return true; // first request for this type on this stream
        }
        if st.nonce.as_deref() != Some(req.response_nonce.as_str()) {
            tracing::debug!(stream = ctx.id, r#type = %kind, nonce = %req.response_nonce, "stale nonce ignored");
            return false;
        }
        if st.answered {
            // Re-request with an answered nonce: Envoy needs the resources again.
            return true;
        }
        st.answered = true;
        let sent = st.sent_version.clone().unwrap_or_default();
        if let Some(err) = req.error_detail {
            ctx.record_nack(kind, &sent, &err.message);
            return names_changed;
        }
        ctx.record_ack(kind, &req.version_info);
        let newer = ctx.current().is_some_and(|s| s.types(kind).version != sent);
        names_changed || newer
    }

    /// Sends the current resources of `kind`. False when the client is gone.
    async fn respond(
        ctx: &mut StreamCtx,
        state: &mut BTreeMap<TypeKind, TypeState>,
        kind: TypeKind,
        tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> bool {
        let Some(snapshot) = ctx.current() else {
            return true; // nothing to serve yet; the first snapshot will answer
        };
        let nonce = ctx.next_nonce();
        let st = state.entry(kind).or_default();
        let set = snapshot.types(kind);
        let resources = set
            .entries
            .iter()
            .filter(|(name, _)| wants(kind, &st.names, name))
            .map(|(_, e)| (*e.any).clone())
            .collect();
        st.sent_version = Some(set.version.clone());
        st.nonce = Some(nonce.clone());
        st.answered = false;
        ctx.record_push(kind, &set.version);
        tx.send(Ok(DiscoveryResponse {
            version_info: set.version.clone(),
            resources,
            type_url: kind.type_url().to_owned(),
            nonce,
            ..Default::default()
        }))
        .await
        .is_ok()
    }
}

mod delta {
    use super::*;

    #[derive(Default)]
    struct TypeState {
        wildcard: bool,
        names: BTreeSet<String>,
        /// What the client holds: name -> version.
        known: BTreeMap<String, String>,
        /// Versions of our responses by nonce, to report what a NACK rejected.
        in_flight: BTreeMap<u64, String>,
    }

    pub(super) async fn run(
        mut ctx: StreamCtx,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) {
        let mut state: BTreeMap<TypeKind, TypeState> = BTreeMap::new();
        let mut snapshots = ctx.snapshots.clone();
        while let Some(event) = next_event(&mut ctx, &mut requests, &mut snapshots).await {
            let kinds: Vec<TypeKind> = match event {
                Event::Request(kind, req) => {
                    handle(&mut ctx, &mut state, kind, req);
                    vec![kind]
                }
                Event::NewSnapshot => TypeKind::PUSH_ORDER
                    .into_iter()
                    .filter(|k| state.contains_key(k))
                    .collect(),
            };
            for kind in kinds {
                if !push(&mut ctx, &mut state, kind, &tx).await {
                    return;
                }
            }
        }
    }

    fn handle(
        ctx: &mut StreamCtx,
        state: &mut BTreeMap<TypeKind, TypeState>,
        kind: TypeKind,
        req: DeltaDiscoveryRequest,
    ) {
        let first = !state.contains_key(&kind);
        let st = state.entry(kind).or_default();
        if first {
            st.known = req.initial_resource_versions.into_iter().collect();
            // Legacy wildcard: a first request naming nothing asks for everything.
            st.wildcard = kind.is_wildcard() && req.resource_names_subscribe.is_empty();
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(&name);
                st.known.remove(&name);
            }
        }
        if req.response_nonce.is_empty() {
            return;
        }
        let version = req
            .response_nonce
            .parse::<u64>()
            .ok()
            .and_then(|n| st.in_flight.remove(&n))
            .unwrap_or_default();
        match req.error_detail {
            Some(err) => ctx.record_nack(kind, &version, &err.message),
            None => ctx.record_ack(kind, &version),
        }
    }

    /// Sends what the client lacks of `kind`, if anything. False when the client is gone.
    async fn push(
        ctx: &mut StreamCtx,
        state: &mut BTreeMap<TypeKind, TypeState>,
        kind: TypeKind,
        tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> bool {
        let Some(snapshot) = ctx.current() else {
            return true;
        };
        let Some(st) = state.get_mut(&kind) else {
            return true;
        };
        let set = snapshot.types(kind);
        let wanted = |name: &str| st.wildcard || st.names.contains(name);
        let mut resources = Vec::new();
        for (name, entry) in &set.entries {
            if wanted(name) && st.known.get(name) != Some(&entry.version) {
                resources.push(DeltaResource {
                    name: name.clone(),
                    version: entry.version.clone(),
                    resource: Some((*entry.any).clone()),
                    ..Default::default()
                });
            }
        }
        let removed: Vec<String> = st
            .known
            .keys()
            .filter(|n| !set.entries.contains_key(*n))
            .cloned()
            .collect();
        if resources.is_empty() && removed.is_empty() {
            return true;
        }
        for r in &resources {
            st.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            st.known.remove(n);
        }
        if kind == TypeKind::Cluster {
            // A changed cluster waits for its endpoints again: make sure they are re-sent.
            if let Some(eds) = state.get_mut(&TypeKind::Endpoint) {
                for r in &resources {
                    eds.known.remove(&r.name);
                }
            }
        }
        let nonce = ctx.next_nonce();
        if let Some(st) = state.get_mut(&kind) {
            // Recorded as the type's version, as state of the world does, so that "in sync"
            // means the same for both protocols.
            st.in_flight.insert(ctx.nonce, set.version.clone());
            // Bound the map if a client never answers.
            while st.in_flight.len() > STREAM_BUFFER {
                st.in_flight.pop_first();
            }
        }
        ctx.record_push(kind, &set.version);
        let sent = tx
            .send(Ok(DeltaDiscoveryResponse {
                system_version_info: snapshot.version.clone(),
                resources,
                type_url: kind.type_url().to_owned(),
                removed_resources: removed,
                nonce,
                ..Default::default()
            }))
            .await
            .is_ok();
        if sent && kind == TypeKind::Cluster {
            // Push the endpoints right behind the clusters that need them.
            return Box::pin(push(ctx, state, TypeKind::Endpoint, tx)).await;
        }
        sent
    }
}
