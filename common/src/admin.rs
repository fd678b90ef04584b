//! The admin HTTP server every vrata service runs on its `--admin` address:
//! `/healthz` (the process is alive), `/readyz` (it can do its job), `/metrics` (Prometheus text).
//! Services add their own routes by passing a router to [`serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Readiness flag shared between a service and its admin server, with an optional reason shown
/// by `/readyz` while not ready (e.g. which dependency is missing).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>, Arc<std::sync::Mutex<String>>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sets readiness and, when not ready, why (one line; empty: no reason given).
    pub fn set_with_reason(&self, ready: bool, reason: impl Into<String>) {
        *self.1.lock().unwrap_or_else(|p| p.into_inner()) = reason.into();
        self.set(ready);
    }

    fn reason(&self) -> String {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
struct AdminState {
    ready: Readiness,
    registry: Arc<Registry>,
}

/// The common routes, to merge with a service's own.
pub fn router(ready: Readiness, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { ready, registry })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let reason = s.ready.reason();
        if reason.is_empty() {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
        }
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Binds `addr` now (so a taken port fails start-up) and returns the server future, which runs
/// until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin address {addr}: {e}"))?;
    tracing::info!(%addr, "admin server listening");
    Ok(axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .into_future())
}
