//! `envoy.service.auth.v3.Authorization/Check`: takes the route, the `Authorization` header
//! and the request id out of Envoy's CheckRequest and hands them to [`Authz::check`].

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::authz::{Authz, CheckInput};
use crate::policy::ROUTE_CONTEXT_KEY;

/// The gRPC service; `into_server` gives the tonic server to add to a router.
#[derive(Debug, Clone)]
pub struct CheckService {
    authz: Arc<Authz>,
}

impl CheckService {
    pub fn new(authz: Arc<Authz>) -> Self {
        Self { authz }
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
        Ok(Response::new(self.authz.check(input).await))
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
