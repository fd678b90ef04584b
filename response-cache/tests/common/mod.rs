//! A simulated Envoy for service-level tests: drives [`Cache::exchange`] with the messages
//! Envoy's ext_proc filter sends under vrata's processing mode, and a scripted upstream.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Req;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vrata_proto::vrata::config::v1 as pb;
use vrata_response_cache::{Cache, Settings};

/// Bound of every wait in these tests: far above anything that works.
pub const BOUND: Duration = Duration::from_secs(10);

pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).to_owned(),
                // As Envoy 1.40 sends them: raw_value set, value empty.
                value: String::new(),
                raw_value: v.as_bytes().to_vec(),
            })
            .collect(),
    }
}

/// ext-authz's claims as Envoy forwards them.
pub fn claims(pairs: &[(&str, &str)]) -> Metadata {
    let claims = Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Value {
                        kind: Some(Kind::StringValue((*v).to_owned())),
                    },
                )
            })
            .collect(),
    };
    let namespace = Struct {
        fields: std::iter::once((
            "vrata.authz".to_owned(),
            Value {
                kind: Some(Kind::StructValue(claims)),
            },
        ))
        .collect(),
    };
    Metadata {
        filter_metadata: std::iter::once(("envoy.filters.http.ext_authz".to_owned(), namespace))
            .collect(),
        ..Default::default()
    }
}

pub fn route(name: &str, store: pb::CacheStore) -> pb::RouteCache {
    pb::RouteCache {
        route: name.into(),
        store: store as i32,
        ttl_ms: 0,
        vary: vec![],
        key_extra: vec![],
        max_body: 1 << 20,
        stale_if_error_ms: 0,
        timeout_ms: 5_000,
    }
}

pub async fn apply(cache: &Arc<Cache>, config: pb::CacheConfig) {
    cache
        .apply(Settings::from_proto(config, None).expect("valid config"))
        .await;
}

/// What the upstream answers; counts its calls. `gate` holds answers until opened.
pub struct Upstream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub calls: AtomicUsize,
    gate: watch::Sender<bool>,
}

impl Upstream {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Arc<Self> {
        Arc::new(Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
            calls: AtomicUsize::new(0),
            gate: watch::channel(true).0,
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    async fn answer(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut rx = self.gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// What the client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub status: u16,
    /// Headers the cache added or served (an upstream answer's own headers are not repeated).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the upstream answered this one.
    pub from_upstream: bool,
}

impl Served {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn x_cache(&self) -> Option<&str> {
        self.header("x-cache")
    }
}

/// One request through the simulated Envoy.
pub struct Exchange {
    tx: mpsc::Sender<Result<ProcessingRequest, Status>>,
    rx: mpsc::Receiver<Result<ProcessingResponse, Status>>,
}

impl Exchange {
    pub fn open(cache: &Arc<Cache>, route: Option<&str>) -> Self {
        let (tx, in_rx) = mpsc::channel(8);
        let (out_tx, rx) = mpsc::channel(8);
        tokio::spawn(cache.clone().exchange(
            route.map(str::to_owned),
            ReceiverStream::new(in_rx),
            out_tx,
        ));
        Self { tx, rx }
    }

    pub async fn send(&self, request: Req, metadata: Option<Metadata>) {
        self.tx
            .send(Ok(ProcessingRequest {
                request: Some(request),
                metadata_context: metadata,
                ..Default::default()
            }))
            .await
            .expect("the exchange is running");
    }

    pub async fn recv(&mut self) -> ProcessingResponse {
        tokio::time::timeout(BOUND, self.rx.recv())
            .await
            .expect("an answer within the bound")
            .expect("the stream is open")
            .expect("not an error")
    }

    /// Whether the service ended its side of the stream.
    pub async fn closed(&mut self) -> bool {
        matches!(tokio::time::timeout(BOUND, self.rx.recv()).await, Ok(None))
    }

    /// Resets the stream as Envoy does when the client goes away.
    pub async fn reset(self) {
        let _ = self.tx.send(Err(Status::cancelled("client gone"))).await;
    }
}

fn mutation_headers(r: &Resp) -> Vec<(String, String)> {
    let mutation = match r {
        Resp::ImmediateResponse(i) => i.headers.as_ref(),
        Resp::ResponseHeaders(h) => h.response.as_ref().and_then(|c| c.header_mutation.as_ref()),
        _ => None,
    };
    mutation
        .map(|m| {
            m.set_headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| {
                    (
                        h.key.clone(),
                        String::from_utf8_lossy(&h.raw_value).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn immediate(r: &Resp) -> Option<Served> {
    let Resp::ImmediateResponse(i) = r else {
        return None;
    };
    Some(Served {
        status: i.status.as_ref().map_or(200, |s| s.code as u16),
        headers: mutation_headers(r),
        body: i.body.clone(),
        from_upstream: false,
    })
}

/// One client request: `:method`, `:path`, `:authority` plus `extra` headers, ext-authz's
/// metadata, and the size of the body chunks Envoy streams.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub extra: &'a [(&'a str, &'a str)],
    pub metadata: Option<Metadata>,
    pub chunk: usize,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            extra: &[],
            metadata: None,
            chunk: 1 << 20,
        }
    }
}

/// `call` through the cache and, when it lets it through, `upstream`.
pub async fn request_chunked(
    cache: &Arc<Cache>,
    route: &str,
    call: Call<'_>,
    upstream: &Upstream,
) -> Served {
    let Call {
        method,
        path,
        extra,
        metadata,
        chunk,
    } = call;
    let mut ex = Exchange::open(cache, Some(route));
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.test"),
    ];
    headers.extend_from_slice(extra);
    ex.send(
        Req::RequestHeaders(HttpHeaders {
            headers: Some(header_map(&headers)),
            end_of_stream: true,
            ..Default::default()
        }),
        metadata.clone(),
    )
    .await;
    let mut answer = ex.recv().await;
    if answer.override_message_timeout.is_some() {
        assert!(
            answer.response.is_none(),
            "an override carries nothing else"
        );
        answer = ex.recv().await;
    }
    let answer = answer.response.expect("a response");
    if let Some(served) = immediate(&answer) {
        assert!(
            ex.closed().await,
            "the stream ends after an immediate response"
        );
        return served;
    }
    assert!(
        matches!(answer, Resp::RequestHeaders(_)),
        "CONTINUE on request headers: {answer:?}"
    );
    upstream.answer().await;
    let status = upstream.status.to_string();
    let mut response: Vec<(&str, &str)> = vec![(":status", &status)];
    response.extend(
        upstream
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let no_body = method == "HEAD" || upstream.body.is_empty();
    ex.send(
        Req::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&response)),
            end_of_stream: no_body,
            ..Default::default()
        }),
        metadata.clone(),
    )
    .await;
    let reply = ex.recv().await;
    let streamed = reply
        .mode_override
        .as_ref()
        .is_some_and(|m| m.response_body_mode == BodySendMode::Streamed as i32);
    let reply = reply.response.expect("a response");
    if let Some(served) = immediate(&reply) {
        return served;
    }
    assert!(
        matches!(reply, Resp::ResponseHeaders(_)),
        "an answer to the response headers: {reply:?}"
    );
    let served = Served {
        status: upstream.status,
        headers: mutation_headers(&reply),
        body: if method == "HEAD" {
            Vec::new()
        } else {
            upstream.body.clone()
        },
        from_upstream: true,
    };
    if streamed && !no_body {
        let chunks: Vec<&[u8]> = upstream.body.chunks(chunk.max(1)).collect();
        for (i, c) in chunks.iter().enumerate() {
            ex.send(
                Req::ResponseBody(HttpBody {
                    body: c.to_vec(),
                    end_of_stream: i + 1 == chunks.len(),
                    ..Default::default()
                }),
                None,
            )
            .await;
            let r = ex.recv().await.response.expect("a response");
            assert!(matches!(r, Resp::ResponseBody(_)), "CONTINUE per chunk");
        }
    }
    // Envoy closes its side when the request is over; the exchange then ends (and stores).
    drop(ex.tx);
    let mut rx = ex.rx;
    let _ = tokio::time::timeout(BOUND, rx.recv()).await;
    served
}

pub async fn request(
    cache: &Arc<Cache>,
    route: &str,
    path: &str,
    extra: &[(&str, &str)],
    upstream: &Upstream,
) -> Served {
    let call = Call {
        extra,
        ..Call::new("GET", path)
    };
    request_chunked(cache, route, call, upstream).await
}
