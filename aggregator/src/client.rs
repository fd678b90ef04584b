//! The HTTP client that sends backend calls to Envoy's loopback listener, naming the upstream
//! in the header xds-server's loopback routes match. Bodies are read up to a bound: a larger
//! answer is a failure of that backend, never buffered whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue};

use crate::execute::{Call, Fetch, Reply};
use crate::failure::Failure;

/// Where calls go, swapped in with each config version.
#[derive(Debug, Clone)]
pub struct Target {
    pub loopback: SocketAddr,
    pub upstream_header: HeaderName,
}

#[derive(Clone)]
pub struct LoopbackClient {
    http: reqwest::Client,
    target: Arc<ArcSwapOption<Target>>,
    max_body: usize,
}

/// Idle pooled connections to Envoy are closed after this (Envoy keeps them an hour).
const POOL_IDLE: Duration = Duration::from_secs(60);

impl LoopbackClient {
    pub fn new(
        target: Arc<ArcSwapOption<Target>>,
        max_body: usize,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            // Every call goes to one local Envoy: no proxy from the environment.
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            target,
            max_body,
        })
    }
}

impl Fetch for LoopbackClient {
    fn fetch(&self, call: Call) -> BoxFuture<'static, Result<Reply, Failure>> {
        let http = self.http.clone();
        let target = self.target.load_full();
        let max_body = self.max_body;
        async move {
            let Some(target) = target else {
                return Err(Failure::Unreachable);
            };
            let upstream =
                HeaderValue::from_str(&call.upstream).map_err(|_| Failure::Unreachable)?;
            let url = format!("http://{}{}", target.loopback, call.path);
            let mut headers = call.headers;
            headers.insert(target.upstream_header.clone(), upstream);
            let mut response = http
                .request(call.method, url)
                .headers(headers)
                .body(call.body)
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "backend call failed");
                    Failure::Unreachable
                })?;
            if response
                .content_length()
                .is_some_and(|l| l > max_body as u64)
            {
                return Err(Failure::TooLarge(max_body));
            }
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = response.chunk().await.map_err(|_| Failure::Unreachable)? {
                if body.len() + chunk.len() > max_body {
                    return Err(Failure::TooLarge(max_body));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Reply {
                status,
                headers,
                body: body.freeze(),
            })
        }
        .boxed()
    }
}
