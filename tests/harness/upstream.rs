//! In-process upstream servers: they answer every request with a JSON echo of what they
//! received, so tests can assert on what Envoy forwarded (path, headers, method).
//!
//! Test controls: request header `x-test-status: 503` sets the answer's status,
//! `x-test-delay-ms: 500` delays it (so do the query parameters `status=503` and
//! `delay_ms=500`, for callers that cannot set headers, such as aggregate backends); each
//! `x-test-response-header: Name: value` request header adds that header to the answer (cache
//! tests: `Cache-Control`, `Vary`, `Set-Cookie`); [`Upstream::set_status`] makes every answer fail;
//! `GET /healthz` answers 200 or 503 by [`Upstream::set_healthy`] and is not counted as a hit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[derive(Default)]
struct Shared {
    name: String,
    unhealthy: AtomicBool,
    /// 0: normal answers.
    forced_status: AtomicU16,
    hits: AtomicU64,
    health_checks: AtomicU64,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream named `name` on a free loopback port (HTTP/1.1 and h2c).
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts an upstream named `name` on `addr`.
    pub async fn start_on(name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let (shared, app) = echo_app(name);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("upstream server error: {e}");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Starts an HTTPS upstream named `name` on a free loopback port, presenting `leaf`
    /// (HTTP/1.1 and HTTP/2 by ALPN).
    pub async fn start_tls(name: &str, leaf: &crate::pki::Leaf) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let chain = CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (shared, app) = echo_app(name);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    // A client refusing our certificate ends its handshake here: expected in
                    // the tests that check verification.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    if let Err(e) = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                    {
                        eprintln!("tls upstream connection error: {e}");
                    }
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// `127.0.0.1:PORT`, as the gateway config wants it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> u64 {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.shared.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// Every (non-health-check) answer gets this status; `None` restores normal answers.
    pub fn set_status(&self, status: Option<u16>) {
        self.shared
            .forced_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The echo service named `name` and its shared state.
fn echo_app(name: &str) -> (Arc<Shared>, Router) {
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        ..Default::default()
    });
    let app = Router::new().fallback(handle).with_state(shared.clone());
    (shared, app)
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/healthz" {
        s.health_checks.fetch_add(1, Ordering::SeqCst);
        return if s.unhealthy.load(Ordering::SeqCst) {
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy").into_response()
        } else {
            (StatusCode::OK, "healthy").into_response()
        };
    }
    s.hits.fetch_add(1, Ordering::SeqCst);
    let body: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let query: Map<String, Value> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    let query_u64 = |name: &str| query.get(name).and_then(Value::as_str)?.parse::<u64>().ok();
    if let Some(ms) = header_u64(&parts.headers, "x-test-delay-ms").or(query_u64("delay_ms")) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let forced = s.forced_status.load(Ordering::SeqCst);
    let status = match forced {
        0 => header_u64(&parts.headers, "x-test-status")
            .or(query_u64("status"))
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK),
        c => StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut headers = Map::new();
    for (k, v) in &parts.headers {
        let v = Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.clone(), v]),
            None => {
                headers.insert(k.as_str().to_owned(), v);
            }
        }
    }
    let mut echo = json!({
        "upstream": s.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    if !query.is_empty() {
        echo["query"] = Value::Object(query);
    }
    let mut response = (
        status,
        [
            ("content-type", "application/json"),
            ("x-upstream", s.name.as_str()),
            ("server", "test-upstream"),
            ("x-powered-by", "harness"),
        ],
        echo.to_string(),
    )
        .into_response();
    for asked in parts.headers.get_all("x-test-response-header") {
        let parsed = asked.to_str().ok().and_then(|t| {
            let (name, value) = t.split_once(':')?;
            Some((
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                axum::http::HeaderValue::from_str(value.trim()).ok()?,
            ))
        });
        match parsed {
            Some((name, value)) => {
                response.headers_mut().append(name, value);
            }
            None => return (StatusCode::BAD_REQUEST, "bad x-test-response-header").into_response(),
        }
    }
    response
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}
