//! Every answer the aggregator makes itself: RFC 9457 `application/problem+json`, in the form
//! of the gateway's own errors (SPEC §3). Decided here and nowhere else.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One kind of error; `code` is public (`urn:vrata:error:<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub title: &'static str,
    pub status: StatusCode,
}

/// A required backend failed or answered unusably.
pub const BACKEND_FAILED: Problem = Problem {
    code: "backend-failed",
    title: "Bad Gateway",
    status: StatusCode::BAD_GATEWAY,
};
/// A required backend ran out of time (its own or the aggregate's).
pub const BACKEND_TIMEOUT: Problem = Problem {
    code: "backend-timeout",
    title: "Gateway Timeout",
    status: StatusCode::GATEWAY_TIMEOUT,
};
/// The merged answer is larger than the aggregator sends.
pub const RESPONSE_TOO_LARGE: Problem = Problem {
    code: "response-too-large",
    title: "Bad Gateway",
    status: StatusCode::BAD_GATEWAY,
};
/// The route is not (yet) known to this aggregator: a config version still on its way.
pub const AGGREGATE_UNAVAILABLE: Problem = Problem {
    code: "aggregate-unavailable",
    title: "Service Unavailable",
    status: StatusCode::SERVICE_UNAVAILABLE,
};
/// A request that did not come from a gateway route (no route header) or a path the route's
/// template does not match.
pub const NOT_FOUND: Problem = Problem {
    code: "not-found",
    title: "Not Found",
    status: StatusCode::NOT_FOUND,
};
/// A passthrough request body larger than the aggregator buffers.
pub const REQUEST_TOO_LARGE: Problem = Problem {
    code: "request-too-large",
    title: "Content Too Large",
    status: StatusCode::PAYLOAD_TOO_LARGE,
};

pub fn respond(problem: Problem, detail: &str, request_id: Option<&str>) -> Response {
    let body = json!({
        "type": format!("urn:vrata:error:{}", problem.code),
        "title": problem.title,
        "status": problem.status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    let mut response = (problem.status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
