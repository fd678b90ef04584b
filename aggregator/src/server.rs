//! The HTTP handler Envoy's aggregate routes reach: finds the route's plan by the
//! `x-vrata-aggregate` header, runs it, merges, shapes and answers.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tokio::time::{Instant, timeout_at};

use crate::config::{Plan, Plans};
use crate::execute::{self, Call, Fetch};
use crate::failure::Failure;
use crate::merge::{self, Slot};
use crate::metrics::Metrics;
use crate::problem;

/// The request header naming the route (set by Envoy, a client's copy overwritten); the
/// `AGGREGATE_HEADER` xds-server writes into the routes.
pub const AGGREGATE_HEADER: &str = "x-vrata-aggregate";
/// `true` when every backend answered, `false` when an optional one did not.
pub const COMPLETED_HEADER: &str = "x-vrata-completed";
/// Headers every backend gets when the client sent them: the request id and trace context
/// (one trace across the fan-out) and the forwarding headers (the client's address).
const FORWARDED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-forwarded-for",
    "x-forwarded-proto",
    "accept-language",
];
/// Never copied on a passthrough: hop-by-hop headers (RFC 9110 §7.6.1) and what the client
/// must not reach the loopback listener with.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    AGGREGATE_HEADER,
];

/// Size bounds, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A passthrough request body.
    pub request_body: usize,
    /// The merged (and shaped) answer.
    pub response_body: usize,
}

pub struct App {
    pub plans: Arc<ArcSwap<Plans>>,
    pub fetch: Arc<dyn Fetch>,
    pub metrics: Metrics,
    pub limits: Limits,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let rid = request_id.as_deref();
    let Some(route) = req
        .headers()
        .get(AGGREGATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        app.metrics.reject("no_route_header");
        return problem::respond(
            problem::NOT_FOUND,
            "this service only answers requests routed by the gateway",
            rid,
        );
    };
    let plans = app.plans.load();
    let Some(plan) = plans.routes.get(&route).cloned() else {
        app.metrics.reject("unknown_route");
        return problem::respond(
            problem::AGGREGATE_UNAVAILABLE,
            &format!("route `{route}` is not configured on the aggregator yet; retry shortly"),
            rid,
        );
    };
    if plans.loopback.is_none() {
        app.metrics.reject("not_configured");
        return problem::respond(
            problem::AGGREGATE_UNAVAILABLE,
            "the aggregator has no route to the backends",
            rid,
        );
    }
    drop(plans);
    if plan.passthrough {
        passthrough(&app, &plan, req, started, rid).await
    } else {
        aggregate(
            &app,
            plan.clone(),
            req.headers(),
            req.uri().path(),
            started,
            rid,
        )
        .await
    }
}

/// The headers every backend of `plan` gets from the client's request.
fn backend_headers(plan: &Plan, client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut copy = |name: &HeaderName| {
        for v in client.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    };
    for name in FORWARDED {
        copy(&HeaderName::from_static(name));
    }
    for name in &plan.forward_headers {
        copy(name);
    }
    if plan.forward_authorization {
        copy(&header::AUTHORIZATION);
    }
    if let Some(host) = client.get(header::HOST) {
        out.insert(header::HOST, host.clone());
    }
    out.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    out
}

async fn aggregate(
    app: &App,
    plan: Arc<Plan>,
    client_headers: &HeaderMap,
    path: &str,
    started: Instant,
    rid: Option<&str>,
) -> Response {
    let vars = match &plan.template {
        Some(t) => match t.captures(path) {
            Some(v) => v,
            None => {
                app.metrics.reject("path_mismatch");
                return problem::respond(
                    problem::NOT_FOUND,
                    "the path does not match the route's path template",
                    rid,
                );
            }
        },
        None => Vec::new(),
    };
    let headers = Arc::new(backend_headers(&plan, client_headers));
    let outcomes = execute::run(
        plan.clone(),
        Arc::new(vars),
        headers,
        app.fetch.clone(),
        started,
    )
    .await;
    for (b, o) in plan.backends.iter().zip(&outcomes) {
        if o.called {
            app.metrics.backend(
                &plan.route,
                &b.name,
                o.elapsed,
                o.result.as_ref().err().map(Failure::label),
            );
        } else if let Err(f) = &o.result {
            app.metrics
                .backend_failures
                .get_or_create(&crate::metrics::FailureLabels {
                    route: plan.route.clone(),
                    backend: b.name.clone(),
                    reason: f.label(),
                })
                .inc();
        }
    }
    let slots: Vec<Slot<'_>> = plan
        .backends
        .iter()
        .zip(&outcomes)
        .map(|(b, o)| Slot {
            name: &b.name,
            group: b.group.as_deref(),
            optional: b.optional,
            outcome: &o.result,
        })
        .collect();
    let merged = match merge::merge(&slots) {
        Ok(m) => m,
        Err(failed) => {
            app.metrics
                .request(&plan.route, "failed", started.elapsed());
            let p = if failed.failure.is_timeout() {
                problem::BACKEND_TIMEOUT
            } else {
                problem::BACKEND_FAILED
            };
            tracing::info!(route = %plan.route, backend = %failed.backend, reason = %failed.failure, request_id = ?rid, "aggregate failed");
            return problem::respond(
                p,
                &format!("backend `{}` {}", failed.backend, failed.failure),
                rid,
            );
        }
    };
    let body = match &plan.shape {
        Some(shape) => shape.apply(merged.body),
        None => merged.body,
    };
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) if b.len() <= app.limits.response_body => b,
        _ => {
            app.metrics
                .request(&plan.route, "failed", started.elapsed());
            return problem::respond(
                problem::RESPONSE_TOO_LARGE,
                &format!(
                    "the merged answer exceeds {} bytes",
                    app.limits.response_body
                ),
                rid,
            );
        }
    };
    let result = if merged.completed { "ok" } else { "incomplete" };
    app.metrics.request(&plan.route, result, started.elapsed());
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        HeaderName::from_static(COMPLETED_HEADER),
        HeaderValue::from_static(if merged.completed { "true" } else { "false" }),
    );
    response
}

/// A plain route with `response.json`: the request goes on as it came; a JSON answer is
/// shaped, anything else is passed through untouched.
async fn passthrough(
    app: &App,
    plan: &Plan,
    req: Request,
    started: Instant,
    rid: Option<&str>,
) -> Response {
    let Some(backend) = plan.backends.first() else {
        return problem::respond(problem::AGGREGATE_UNAVAILABLE, "no backend", rid);
    };
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, app.limits.request_body).await {
        Ok(b) => b,
        Err(_) => {
            return problem::respond(
                problem::REQUEST_TOO_LARGE,
                &format!("the request body exceeds {} bytes", app.limits.request_body),
                rid,
            );
        }
    };
    let mut headers = parts.headers.clone();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let call = Call {
        upstream: backend.upstream.clone(),
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers,
        body,
    };
    let deadline = started + plan.timeout;
    let call_started = Instant::now();
    let reply = match timeout_at(deadline, app.fetch.fetch(call)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(r) => r,
    };
    let failure = reply.as_ref().err().map(Failure::label);
    app.metrics
        .backend(&plan.route, &backend.name, call_started.elapsed(), failure);
    let reply = match reply {
        Ok(r) => r,
        Err(f) => {
            app.metrics
                .request(&plan.route, "failed", started.elapsed());
            let p = if f.is_timeout() {
                problem::BACKEND_TIMEOUT
            } else {
                problem::BACKEND_FAILED
            };
            return problem::respond(p, &format!("upstream `{}` {f}", backend.upstream), rid);
        }
    };
    let mut headers = reply.headers;
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let body = match (
        &plan.shape,
        serde_json::from_slice::<serde_json::Value>(&reply.body),
    ) {
        (Some(shape), Ok(json)) => match serde_json::to_vec(&shape.apply(json)) {
            Ok(b) => Bytes::from(b),
            Err(_) => reply.body,
        },
        _ => reply.body,
    };
    app.metrics.request(&plan.route, "ok", started.elapsed());
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = headers;
    response
}
