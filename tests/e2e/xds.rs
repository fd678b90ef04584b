//! The xDS protocol side: several Envoys (state of the world and delta) on one xds-server,
//! late joiners, and NACK bookkeeping driven by a test client playing a rejecting Envoy.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use vrata_e2e::{Ads, Stack, Upstream, eventually};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

fn config(a: &Upstream, b: &Upstream, target: &str, b_timeout: u32) -> String {
    format!(
        "listeners:\n  - name: public\n    address: \"127.0.0.1:{{port}}\"\nupstreams:\n  a: {{endpoints: [\"{}\"]}}\n  b: {{endpoints: [\"{}\"], connect_timeout: {b_timeout}s}}\nroutes:\n  - name: main\n    upstream: {target}\n",
        a.endpoint(),
        b.endpoint()
    )
}

async fn upstream_of(s: &Stack) -> anyhow::Result<String> {
    let r = s.get("/").await?;
    let v: Value = r.json().await?;
    Ok(v["upstream"].as_str().unwrap_or_default().to_owned())
}

fn acked_versions(status: &Value) -> Vec<(String, Value)> {
    status["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["node_id"].as_str().unwrap_or_default().to_owned(),
                        n["types"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn sotw_and_delta_envoys_share_versions_and_a_late_envoy_catches_up() -> anyhow::Result<()> {
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let mut s =
        Stack::start_with(&config(&a, &b, "a", 1), &[Ads::StateOfTheWorld, Ads::Delta]).await?;
    let version = s.xds.wait_in_sync(2, Duration::from_secs(20)).await?;
    let status = s.xds.status().await?;
    let nodes = acked_versions(&status);
    assert_eq!(nodes.len(), 2, "{status}");
    for (node, types) in &nodes {
        for t in ["CDS", "EDS", "LDS", "RDS"] {
            assert_eq!(
                types[t]["acked_version"], status["current"]["type_versions"][t],
                "{node} {t}: {status}"
            );
        }
    }
    for e in &s.envoys {
        assert_eq!(e.stat("http.public.downstream_rq_total").await?, 0);
    }

    // A change reaches both, and both route by it.
    let v2 = s.reload(&config(&a, &b, "b", 2)).await?;
    assert_ne!(v2, version);
    assert_eq!(upstream_of(&s).await?, "b");

    // An Envoy started later gets the current version.
    s.add_envoy("late", Ads::Delta).await?;
    let status = s.xds.status().await?;
    let late = acked_versions(&status)
        .into_iter()
        .find(|(n, _)| n == "late")
        .ok_or_else(|| anyhow::anyhow!("late node missing: {status}"))?;
    assert_eq!(
        late.1["RDS"]["acked_version"],
        status["current"]["type_versions"]["RDS"]
    );
    Ok(())
}

/// A changed EDS cluster must get its endpoints again at once, over both protocols:
/// otherwise Envoy keeps it warming for the 15 s initial fetch timeout (ENVOY-NOTES).
#[tokio::test]
async fn a_changed_cluster_serves_again_without_a_stall() -> anyhow::Result<()> {
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let s = Stack::start_with(&config(&a, &b, "b", 1), &[Ads::StateOfTheWorld, Ads::Delta]).await?;
    for timeout in [2, 3, 4] {
        let started = std::time::Instant::now();
        s.reload(&config(&a, &b, "b", timeout)).await?;
        for e in &s.envoys {
            eventually("cluster b warm", Duration::from_secs(5), || async {
                let warming = e.stat("cluster_manager.warming_clusters").await?;
                anyhow::ensure!(warming == 0, "{warming} clusters warming");
                Ok(())
            })
            .await?;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cluster change stalled {:?}",
            started.elapsed()
        );
        assert_eq!(upstream_of(&s).await?, "b");
    }
    Ok(())
}

/// The next message of a stream, within 5 s.
async fn next<T>(stream: &mut tonic::Streaming<T>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .map_err(|_| anyhow::anyhow!("no response within 5 s"))?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?
        .map_err(anyhow::Error::from)
}

async fn sotw_client(
    port: u16,
) -> anyhow::Result<(
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
)> {
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let (tx, rx) = mpsc::channel(8);
    let responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, responses))
}

#[tokio::test]
async fn a_nack_is_recorded_with_node_type_and_redacted_error() -> anyhow::Result<()> {
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let s = Stack::start_with(&config(&a, &b, "a", 1), &[]).await?;
    let (tx, mut responses) = sotw_client(s.xds.grpc_port).await?;
    let node = Node {
        id: "nacker".into(),
        cluster: "test".into(),
        ..Default::default()
    };
    tx.send(DiscoveryRequest {
        node: Some(node.clone()),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await?;
    let first = next(&mut responses).await?;
    assert_eq!(first.type_url, CDS);
    assert_eq!(first.resources.len(), 2, "clusters a and b");
    tx.send(DiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: first.nonce.clone(),
        version_info: String::new(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster a: bad thing; private_key { inline_string: \"TOPSECRET\" }".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await?;
    let nack = eventually(
        "the NACK on /admin/status",
        Duration::from_secs(5),
        || async {
            let status = s.xds.status().await?;
            let nacks = status["recent_nacks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            nacks
                .into_iter()
                .find(|n| n["node"] == "nacker")
                .ok_or_else(|| anyhow::anyhow!("no NACK yet: {status}"))
        },
    )
    .await?;
    assert_eq!(nack["type"], "CDS");
    assert_eq!(nack["version"], first.version_info.as_str());
    let msg = nack["message"].as_str().unwrap_or_default();
    assert!(msg.contains("cluster a: bad thing"), "{msg}");
    assert!(!msg.contains("TOPSECRET"), "secret leaked: {msg}");
    let status = s.xds.status().await?;
    let me = status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node_id"] == "nacker").cloned())
        .ok_or_else(|| anyhow::anyhow!("node missing"))?;
    assert_eq!(
        me["types"]["CDS"]["last_nack"]["version"],
        first.version_info.as_str()
    );
    assert!(
        me["types"]["CDS"]["acked_version"].is_null(),
        "a NACK is not an ACK"
    );
    let metrics = s.xds.get("/metrics").await?.text().await?;
    assert!(
        metrics.contains("vrata_xds_nacks_total{type=\"CDS\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn sotw_answers_a_re_request_with_an_already_acked_nonce() -> anyhow::Result<()> {
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let s = Stack::start_with(&config(&a, &b, "a", 1), &[]).await?;
    let (tx, mut responses) = sotw_client(s.xds.grpc_port).await?;
    let req = |nonce: &str, version: &str| DiscoveryRequest {
        node: Some(Node {
            id: "re-requester".into(),
            ..Default::default()
        }),
        type_url: EDS.into(),
        resource_names: vec!["a".into()],
        response_nonce: nonce.into(),
        version_info: version.into(),
        ..Default::default()
    };
    tx.send(req("", "")).await?;
    let first = next(&mut responses).await?;
    assert_eq!(first.resources.len(), 1);
    // ACK: no answer expected.
    tx.send(req(&first.nonce, &first.version_info)).await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), responses.next())
            .await
            .is_err(),
        "an ACK was answered"
    );
    // The same request again (what Envoy sends when a changed cluster needs its endpoints).
    tx.send(req(&first.nonce, &first.version_info)).await?;
    let again = next(&mut responses).await?;
    assert_eq!(again.resources.len(), 1);
    assert_ne!(again.nonce, first.nonce);
    Ok(())
}

#[tokio::test]
async fn delta_sends_only_what_changed() -> anyhow::Result<()> {
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let s = Stack::start_with(&config(&a, &b, "a", 1), &[]).await?;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{}", s.xds.grpc_port))
            .await?;
    let (tx, rx) = mpsc::channel(8);
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: "delta-client".into(),
            ..Default::default()
        }),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await?;
    let all = next(&mut responses).await?;
    assert_eq!(all.resources.len(), 2);
    tx.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: all.nonce.clone(),
        ..Default::default()
    })
    .await?;
    tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec!["a".into(), "b".into()],
        ..Default::default()
    })
    .await?;
    let eds = next(&mut responses).await?;
    assert_eq!(eds.type_url, EDS);
    assert_eq!(eds.resources.len(), 2);
    tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        response_nonce: eds.nonce.clone(),
        ..Default::default()
    })
    .await?;

    // Change cluster b only: exactly b is sent, then b's endpoints again.
    let old = s.xds.version().await?;
    s.write_config(&config(&a, &b, "a", 7))?;
    s.xds
        .wait_version_change(&old, Duration::from_secs(10))
        .await?;
    let cds = next(&mut responses).await?;
    assert_eq!(cds.type_url, CDS);
    let names: Vec<&str> = cds.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    assert!(cds.removed_resources.is_empty());
    let eds = next(&mut responses).await?;
    assert_eq!(eds.type_url, EDS);
    let names: Vec<&str> = eds.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["b"],
        "the changed cluster's endpoints are re-pushed"
    );
    Ok(())
}
