//! xds-server's admin API (SPEC §7), on top of the common `/healthz`, `/readyz`, `/metrics`:
//! - `GET /admin/status`: config version, load time, last error, every connected node with the
//!   version it ACKed per type and any NACK;
//! - `GET /admin/config`: the running gateway config as JSON;
//! - `GET /admin/fleet`: the fleet view (see `fleet`): nodes reporting stats, and per listener,
//!   upstream and route the request rate, latency, 4xx/5xx, authz denials and rate-limit
//!   rejections, with a short history;
//! - `POST /admin/cache/purge?route=R&path_prefix=/P`: purges response-cache entries (both
//!   parameters optional) on every response-cache instance and in Redis; answers when every
//!   connected instance applied it (200), or after [`PURGE_WAIT`] with those still pending (202);
//! - `GET /`: the dashboard, a self-contained page (assets compiled in) polling both.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::{get, post};
use serde::Serialize;

use crate::control::{ControlPlane, Current, LastError, PurgeError};
use crate::fleet::Summary;
use crate::nodes::{Nack, NodeStatus};

#[derive(Debug, Serialize)]
pub struct Status {
    pub config_path: String,
    pub current: Option<Current>,
    pub last_error: Option<LastError>,
    pub nodes: Vec<NodeStatus>,
    pub recent_nacks: Vec<Nack>,
}

pub fn status(cp: &ControlPlane) -> Status {
    Status {
        config_path: cp.config_path().display().to_string(),
        current: cp.current(),
        last_error: cp.last_error(),
        nodes: cp.nodes.list(),
        recent_nacks: cp.nodes.recent_nacks(),
    }
}

pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/admin/status", get(status_json))
        .route("/admin/config", get(config_json))
        .route("/admin/fleet", get(fleet_json))
        .route("/admin/cache/purge", post(purge))
        .route("/", get(page))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .with_state(cp)
}

async fn status_json(State(cp): State<Arc<ControlPlane>>) -> Json<Status> {
    Json(status(&cp))
}

async fn config_json(State(cp): State<Arc<ControlPlane>>) -> impl IntoResponse {
    match cp.current() {
        Some(c) => Json(c.document.to_json()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n").into_response(),
    }
}

/// The dashboard: a self-contained page (no CDN) that polls `/admin/status` and `/admin/fleet`.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            // Only its own script and styles: a value a client managed to put into a stat or
            // node name can never run as code (the script also only ever sets textContent).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:",
            ),
        ],
        Html(DASHBOARD_HTML),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
    )
}

/// How long a purge waits for the response-cache instances to apply it.
pub const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The xDS node cluster response-cache instances report.
pub const RESPONSE_CACHE_NODE_CLUSTER: &str = "vrata-response-cache";

#[derive(Debug, serde::Deserialize)]
struct PurgeQuery {
    route: Option<String>,
    path_prefix: Option<String>,
}

#[derive(Debug, Serialize)]
struct PurgeAnswer {
    id: u64,
    /// Empty: every route.
    route: String,
    /// Empty: every path.
    path_prefix: String,
    /// The response-cache config version carrying the purge.
    version: String,
    /// Connected response-cache instances.
    instances: usize,
    /// Those that applied it.
    applied: usize,
    /// Node ids of those that did not (yet).
    pending: Vec<String>,
}

async fn purge(
    State(cp): State<Arc<ControlPlane>>,
    Query(q): Query<PurgeQuery>,
) -> impl IntoResponse {
    let empty_is_none = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (route, prefix) = (empty_is_none(q.route), empty_is_none(q.path_prefix));
    let publisher = cp.clone();
    let published = match tokio::task::spawn_blocking(move || publisher.purge(route, prefix)).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let status = match e {
                PurgeError::NoConfig => StatusCode::SERVICE_UNAVAILABLE,
                PurgeError::UnknownRoute(..) => StatusCode::NOT_FOUND,
                PurgeError::BadPrefix(_) => StatusCode::BAD_REQUEST,
                PurgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return problem(status, &e.to_string());
        }
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let deadline = tokio::time::Instant::now() + PURGE_WAIT;
    let (instances, pending) = loop {
        let nodes: Vec<NodeStatus> = cp
            .nodes
            .list()
            .into_iter()
            .filter(|n| n.cluster == RESPONSE_CACHE_NODE_CLUSTER)
            .collect();
        let pending: Vec<String> = nodes
            .iter()
            .filter(|n| {
                !n.types
                    .get(crate::snapshot::TypeKind::Cache.short())
                    .and_then(|t| t.acked_version.as_deref())
                    .is_some_and(|v| version_at_least(v, &published.version))
            })
            .map(|n| n.node_id.clone())
            .collect();
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            break (nodes.len(), pending);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let answer = PurgeAnswer {
        id: published.purge.id,
        route: published.purge.route,
        path_prefix: published.purge.path_prefix,
        version: published.version,
        instances,
        applied: instances - pending.len(),
        pending,
    };
    let status = if answer.pending.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(answer)).into_response()
}

/// Versions are `<boot id>.<generation>`: a node that ACKed a later generation of the same
/// boot has the purge too.
fn version_at_least(acked: &str, target: &str) -> bool {
    let split = |v: &str| {
        v.rsplit_once('.')
            .and_then(|(boot, g)| Some((boot.to_owned(), g.parse::<u64>().ok()?)))
    };
    match (split(acked), split(target)) {
        (Some((b1, g1)), Some((b2, g2))) => b1 == b2 && g1 >= g2,
        _ => acked == target,
    }
}

fn problem(status: StatusCode, detail: &str) -> axum::response::Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(serde_json::json!({
            "type": "urn:vrata:error:purge",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        })),
    )
        .into_response()
}

async fn fleet_json(State(cp): State<Arc<ControlPlane>>) -> Json<Summary> {
    Json(cp.fleet.summary(std::time::SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_generation_within_a_boot() {
        assert!(version_at_least("b1.7", "b1.7"));
        assert!(version_at_least("b1.12", "b1.7"));
        assert!(!version_at_least("b1.6", "b1.7"));
        assert!(
            !version_at_least("b0.99", "b1.7"),
            "another boot never counts"
        );
    }

    #[test]
    fn the_dashboard_is_self_contained() {
        // Every asset is served by this router: no CDN, no inline script (CSP forbids it).
        assert!(DASHBOARD_HTML.contains("src=\"/dashboard.js\""));
        assert!(DASHBOARD_HTML.contains("href=\"/dashboard.css\""));
        for asset in [DASHBOARD_HTML, DASHBOARD_CSS] {
            assert!(!asset.contains("://"), "no absolute URL");
        }
        // The script's only absolute URL is the SVG namespace name, which is never fetched.
        assert!(
            !DASHBOARD_JS
                .replace("\"http://www.w3.org/2000/svg\"", "")
                .contains("://")
        );
        assert!(
            !DASHBOARD_JS.contains("innerHTML"),
            "text only, never markup"
        );
    }
}
