//! xds-server's admin API (SPEC §7), on top of the common `/healthz`, `/readyz`, `/metrics`:
//! - `GET /admin/status`: config version, load time, last error, every connected node with the
//!   version it ACKed per type and any NACK;
//! - `GET /admin/config`: the running gateway config as JSON;
//! - `GET /`: the same status as a small human-readable page.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;

use crate::control::{ControlPlane, Current, LastError};
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
        .route("/", get(page))
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

async fn page(State(cp): State<Arc<ControlPlane>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(render_page(&status(&cp))),
    )
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn render_page(s: &Status) -> String {
    use std::fmt::Write;
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2><title>vrata xds-server</title><style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f4f4f4}.ok{color:#16794a}.bad{color:#b3261e}pre{background:#fff4f4;padding:8px;white-space:pre-wrap}</style></head><body><h1>vrata xds-server</h1>");
    let _ = write!(h, "<p>config: <code>{}</code></p>", esc(&s.config_path));
    match &s.current {
        Some(c) => {
            let _ = write!(
                h,
                "<p class=ok>serving version <b>{}</b> (generation {})</p><table><tr>",
                esc(&c.version),
                c.generation
            );
            for k in c.resources.keys() {
                let _ = write!(h, "<th>{k}</th>");
            }
            h.push_str("</tr><tr>");
            for v in c.resources.values() {
                let _ = write!(h, "<td>{v}</td>");
            }
            h.push_str("</tr></table>");
        }
        None => h.push_str("<p class=bad>no valid config loaded yet</p>"),
    }
    if let Some(e) = &s.last_error {
        h.push_str("<h2 class=bad>last reload rejected</h2><pre>");
        for p in &e.problems {
            let _ = writeln!(h, "{}", esc(p));
        }
        h.push_str("</pre>");
    }
    let _ = write!(
        h,
        "<h2>connected nodes ({})</h2><table><tr><th>node</th><th>cluster</th><th>protocol</th><th>type</th><th>sent</th><th>acked</th><th>last NACK</th></tr>",
        s.nodes.len()
    );
    for n in &s.nodes {
        for (t, st) in &n.types {
            let in_sync = st.sent_version.is_some() && st.sent_version == st.acked_version;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td></tr>",
                esc(&n.node_id),
                esc(&n.cluster),
                n.protocol,
                t,
                esc(st.sent_version.as_deref().unwrap_or("-")),
                if in_sync { "ok" } else { "bad" },
                esc(st.acked_version.as_deref().unwrap_or("-")),
                esc(st
                    .last_nack
                    .as_ref()
                    .map(|n| n.message.as_str())
                    .unwrap_or(""))
            );
        }
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_clients_control() {
        let s = Status {
            config_path: "/etc/vrata".into(),
            current: None,
            last_error: Some(LastError {
                at: std::time::SystemTime::now(),
                problems: vec!["a.yaml:1:1: <script>".into()],
            }),
            nodes: vec![],
            recent_nacks: vec![],
        };
        let page = render_page(&s);
        assert!(page.contains("a.yaml:1:1: &lt;script&gt;"));
        assert!(!page.contains("<script>"));
    }
}
