//! `envoy.service.auth.v3.Authorization/Check`: takes the route, the `Authorization` header
//! and the request id out of Envoy's CheckRequest and hands them to [`Authz::check`].

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use envoy_types::pb::google::protobuf::value::Kind;
use vrata_common::trace::Tracer;

use crate::authz::{Authz, CheckInput};
use crate::policy::ROUTE_CONTEXT_KEY;
use crate::response::METADATA_RESULT;

/// The gRPC service; `into_server` gives the tonic server to add to a router.
#[derive(Debug, Clone)]
pub struct CheckService {
    authz: Arc<Authz>,
    tracer: Arc<Tracer>,
}

impl CheckService {
    pub fn new(authz: Arc<Authz>) -> Self {
        Self {
            authz,
            tracer: Arc::new(Tracer::disabled()),
        }
    }

    /// Spans for sampled Checks (default: none).
    pub fn with_tracer(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }
}

/// A request header from the CheckRequest. Envoy lower-cases names in `headers`; with
/// `encode_raw_headers` it fills `header_map` instead, so both are read.
fn header<'a>(req: &'a CheckRequest, name: &str) -> Option<&'a str> {
    let http = req.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
    if let Some(v) = http.headers.get(name) {
        return Some(v.as_str());
    }
    http.header_map.as_ref()?.headers.iter().find_map(|h| {
        h.key
            .eq_ignore_ascii_case(name)
            .then(|| {
                if h.raw_value.is_empty() {
                    Some(h.value.as_str())
                } else {
                    std::str::from_utf8(&h.raw_value).ok()
                }
            })
            .flatten()
    })
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // Continues Envoy's trace when it sampled this request (see `vrata_common::trace`).
        let mut span = self.tracer.start("ext_authz Check", request.metadata());
        let req = request.into_inner();
        let route = req
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get(ROUTE_CONTEXT_KEY))
            .map(String::as_str);
        let input = CheckInput {
            route,
            authorization: header(&req, "authorization"),
            request_id: header(&req, "x-request-id"),
        };
        if let (Some(span), Some(route)) = (span.as_mut(), route) {
            span.set("vrata.route", route);
        }
        let response = self.authz.check(input).await;
        if let Some(span) = span.as_mut() {
            let result = response
                .dynamic_metadata
                .as_ref()
                .and_then(|m| m.fields.get(METADATA_RESULT))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            span.set("vrata.authz.result", result);
        }
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

    fn with_http(http: attribute_context::HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn headers_from_the_map_or_the_raw_header_map() {
        let mut http = attribute_context::HttpRequest::default();
        http.headers
            .insert("authorization".into(), "Bearer a".into());
        assert_eq!(header(&with_http(http), "authorization"), Some("Bearer a"));

        // encode_raw_headers: values arrive as bytes in header_map.
        let http = attribute_context::HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![
                    HeaderValue {
                        key: "x-request-id".into(),
                        raw_value: b"r-1".to_vec(),
                        ..Default::default()
                    },
                    HeaderValue {
                        key: "Authorization".into(),
                        value: "Bearer b".into(),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        let req = with_http(http);
        assert_eq!(header(&req, "x-request-id"), Some("r-1"));
        assert_eq!(header(&req, "authorization"), Some("Bearer b"));
        assert_eq!(header(&req, "cookie"), None);
        assert_eq!(header(&CheckRequest::default(), "authorization"), None);
    }
}
