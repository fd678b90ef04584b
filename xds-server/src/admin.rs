//! xds-server's admin API (SPEC §7), on top of the common `/healthz`, `/readyz`, `/metrics`:
//! - `GET /admin/status`: config version, load time, last error, every connected node with the
//!   version it ACKed per type and any NACK;
//! - `GET /admin/config`: the running gateway config as JSON;
//! - `GET /admin/fleet`: the fleet view (see `fleet`): nodes reporting stats, and per listener,
//!   upstream and route the request rate, latency, 4xx/5xx, authz denials and rate-limit
//!   rejections, with a short history;
//! - `GET /`: the dashboard, a self-contained page (assets compiled in) polling both.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;

use crate::control::{ControlPlane, Current, LastError};
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
        Some(c) => Json(c.document).into_response(),
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

async fn fleet_json(State(cp): State<Arc<ControlPlane>>) -> Json<Summary> {
    Json(cp.fleet.summary(std::time::SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
