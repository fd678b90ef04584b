//! The services' xDS client against a scripted ADS server on loopback: subscription, ACK,
//! NACK with the service's reason (last good config kept), reconnection announcing the last
//! accepted version.

use std::pin::Pin;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use prost::Name;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vrata_common::xds::{Backoff, XdsClient, XdsClientConfig};

type Responses = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Hands every new stream (its requests, and a sender for its responses) to the test.
struct ScriptedAds {
    streams: mpsc::Sender<(Streaming<DiscoveryRequest>, Responses)>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for ScriptedAds {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        self.streams
            .send((request.into_inner(), tx))
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("SotW only"))
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn next<T>(what: &str, s: &mut (impl Stream<Item = Result<T, Status>> + Unpin)) -> T {
    tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("stream ended before {what}"))
        .unwrap_or_else(|e| panic!("stream failed before {what}: {e}"))
}

fn response(version: &str, nonce: &str, names: &[&str]) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        type_url: Cluster::type_url(),
        resources: names
            .iter()
            .map(|n| envoy_types::pb::google::protobuf::Any {
                type_url: Cluster::type_url(),
                value: prost::Message::encode_to_vec(&Cluster {
                    name: (*n).into(),
                    ..Default::default()
                }),
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn acks_nacks_keeps_the_last_good_config_and_reconnects() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (streams_tx, mut streams) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ScriptedAds {
                streams: streams_tx,
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut config =
        XdsClientConfig::new(format!("http://{addr}"), "svc-1", "vrata-test-svc", "test");
    config.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    let mut client = XdsClient::new(config);
    // The service's conversion: names joined; an empty name is invalid.
    let mut latest = client.subscribe::<Cluster, String, String>(|clusters| {
        if clusters.iter().any(|c| c.name.is_empty()) {
            return Err("a cluster without a name".into());
        }
        Ok(clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(","))
    });
    let mut connected = client.connected();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(client.run(async {
        let _ = stop_rx.await;
    }));

    let (mut requests, responses) = tokio::time::timeout(WAIT, streams.recv())
        .await
        .expect("a stream in time")
        .expect("a stream");
    let subscribe = next("the subscription", &mut requests).await;
    assert_eq!(subscribe.type_url, Cluster::type_url());
    assert_eq!(subscribe.version_info, "");
    let node = subscribe.node.expect("the node on the first request");
    assert_eq!(
        (node.id.as_str(), node.cluster.as_str()),
        ("svc-1", "vrata-test-svc")
    );
    tokio::time::timeout(WAIT, connected.wait_for(|c| *c))
        .await
        .expect("connected in time")
        .expect("watch open");

    // A good version: published, then ACKed.
    responses
        .send(Ok(response("v1", "n1", &["a", "b"])))
        .await
        .expect("send");
    let ack = next("the ACK", &mut requests).await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v1", "n1")
    );
    assert!(ack.error_detail.is_none());
    tokio::time::timeout(WAIT, latest.wait_for(Option::is_some))
        .await
        .expect("published in time")
        .expect("watch open");
    let v1 = latest.borrow().clone().expect("accepted");
    assert_eq!((v1.version.as_str(), v1.config.as_str()), ("v1", "a,b"));

    // A version the service rejects: NACKed with its reason, the last good config stays.
    responses
        .send(Ok(response("v2", "n2", &["a", ""])))
        .await
        .expect("send");
    let nack = next("the NACK", &mut requests).await;
    assert_eq!(nack.response_nonce, "n2");
    assert_eq!(
        nack.version_info, "v1",
        "a NACK names the version still in use"
    );
    let detail = nack.error_detail.expect("error_detail");
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("a cluster without a name"),
        "{}",
        detail.message
    );
    assert_eq!(
        latest
            .borrow()
            .as_ref()
            .map(|a| a.version.clone())
            .as_deref(),
        Some("v1")
    );

    // The server goes away: the client comes back by itself and announces what it holds.
    drop(responses);
    drop(requests);
    let (mut requests, responses) = tokio::time::timeout(WAIT, streams.recv())
        .await
        .expect("a reconnection in time")
        .expect("a stream");
    let again = next("the new subscription", &mut requests).await;
    assert_eq!(again.version_info, "v1");
    assert_eq!(
        latest
            .borrow()
            .as_ref()
            .map(|a| a.config.clone())
            .as_deref(),
        Some("a,b")
    );
    responses
        .send(Ok(response("v3", "n1", &["c"])))
        .await
        .expect("send");
    let ack = next("the ACK of v3", &mut requests).await;
    assert_eq!(ack.version_info, "v3");
    tokio::time::timeout(
        WAIT,
        latest.wait_for(|l| l.as_ref().is_some_and(|a| a.version == "v3")),
    )
    .await
    .expect("v3 in time")
    .expect("watch open");

    let _ = stop_tx.send(());
    tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .expect("no panic");
}
