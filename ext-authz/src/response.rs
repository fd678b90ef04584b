//! The one place where a decision becomes what the client and Envoy see: HTTP status,
//! `WWW-Authenticate` (RFC 6750), the RFC 9457 problem+json body, and the CheckResponse.
//! Clients get a generic detail per status; the precise [`Reason`] stays in logs and metrics.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status;
use http::HeaderName;

use crate::policy::ClaimPath;
use crate::validate::Reason;

/// Dynamic-metadata field holding the validated token's claims (see `docs/auth.md`).
pub const METADATA_CLAIMS: &str = "vrata.authz";
/// Dynamic-metadata field holding the outcome (`allowed`, `anonymous`, or the refusal reason),
/// for access logs.
pub const METADATA_RESULT: &str = "vrata.authz.result";

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// gRPC status codes (google.rpc.Code) Envoy reads: OK allows, anything else denies.
const GRPC_OK: i32 = 0;
const GRPC_UNAUTHENTICATED: i32 = 16;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_UNAVAILABLE: i32 = 14;
const GRPC_INTERNAL: i32 = 13;

/// How a refusal looks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: &'static str,
    /// `WWW-Authenticate` value, for 401 and 403.
    pub www_authenticate: Option<&'static str>,
    grpc: i32,
}

impl Refusal {
    pub fn for_reason(reason: Reason) -> Self {
        match reason {
            // RFC 6750 §3.1: a request without credentials gets the challenge without an
            // error code.
            Reason::MissingToken => Refusal {
                status: 401,
                code: "unauthorized",
                title: "Unauthorized",
                detail: "This resource requires a bearer token.",
                www_authenticate: Some("Bearer"),
                grpc: GRPC_UNAUTHENTICATED,
            },
            Reason::MissingRole | Reason::MissingScope => Refusal {
                status: 403,
                code: "forbidden",
                title: "Forbidden",
                detail: "The token does not grant access to this resource.",
                www_authenticate: Some("Bearer error=\"insufficient_scope\""),
                grpc: GRPC_PERMISSION_DENIED,
            },
            Reason::ProviderUnavailable => Refusal {
                status: 503,
                code: "auth_unavailable",
                title: "Service Unavailable",
                detail: "The identity provider cannot be reached; try again later.",
                www_authenticate: None,
                grpc: GRPC_UNAVAILABLE,
            },
            Reason::UnknownRoute => Refusal {
                status: 500,
                code: "internal",
                title: "Internal Server Error",
                detail: "The request could not be authorized.",
                www_authenticate: None,
                grpc: GRPC_INTERNAL,
            },
            _ => Refusal {
                status: 401,
                code: "invalid_token",
                title: "Unauthorized",
                detail: "The bearer token is not valid.",
                www_authenticate: Some("Bearer error=\"invalid_token\""),
                grpc: GRPC_UNAUTHENTICATED,
            },
        }
    }

    /// The RFC 9457 body.
    pub fn body(&self, request_id: Option<&str>) -> String {
        let mut doc = serde_json::json!({
            "type": format!("urn:vrata:error:{}", self.code),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        });
        if let (Some(id), Some(obj)) = (request_id, doc.as_object_mut()) {
            obj.insert(
                "request_id".into(),
                serde_json::Value::String(id.to_owned()),
            );
        }
        doc.to_string()
    }
}

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn result_metadata(result: &str, claims: Option<Struct>) -> Struct {
    let mut s = Struct::default();
    s.fields.insert(
        METADATA_RESULT.to_owned(),
        Value {
            kind: Some(Kind::StringValue(result.to_owned())),
        },
    );
    if let Some(c) = claims {
        s.fields.insert(
            METADATA_CLAIMS.to_owned(),
            Value {
                kind: Some(Kind::StructValue(c)),
            },
        );
    }
    s
}

pub fn deny(reason: Reason, request_id: Option<&str>) -> CheckResponse {
    let r = Refusal::for_reason(reason);
    let mut headers = vec![header("content-type", PROBLEM_CONTENT_TYPE.to_owned())];
    if let Some(w) = r.www_authenticate {
        headers.push(header("www-authenticate", w.to_owned()));
    }
    CheckResponse {
        status: Some(Status {
            code: r.grpc,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(r.status),
            }),
            headers,
            body: r.body(request_id),
        })),
        dynamic_metadata: Some(result_metadata(reason.as_str(), None)),
    }
}

/// An allowed request: `set` headers overwrite any client copy; `remove` must not name a set
/// header, because Envoy applies removals after sets.
pub fn allow(
    result: &str,
    set: Vec<(HeaderName, String)>,
    remove: Vec<String>,
    claims: Option<Struct>,
) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: GRPC_OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: set
                .into_iter()
                .map(|(k, v)| header(k.as_str(), v))
                .collect(),
            headers_to_remove: remove,
            ..Default::default()
        })),
        dynamic_metadata: Some(result_metadata(result, claims)),
    }
}

/// The claims at `paths` as a protobuf Struct, nested as in the token (`tenant.id` becomes
/// `{tenant: {id: ...}}`, which Envoy's metadata path `[tenant, id]` finds); absent ones are
/// left out.
pub fn claims_subset(
    claims: &serde_json::Map<String, serde_json::Value>,
    paths: &[ClaimPath],
) -> Struct {
    let mut out = Struct::default();
    for path in paths {
        if let Some(value) = path.lookup(claims) {
            insert_at(&mut out, path.segments(), json_to_value(value));
        }
    }
    out
}

fn insert_at(at: &mut Struct, segments: &[String], value: Value) {
    match segments {
        [] => {}
        [last] => {
            at.fields.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let slot = at.fields.entry(first.clone()).or_default();
            if let Some(Kind::StructValue(inner)) = &mut slot.kind {
                insert_at(inner, rest, value);
            } else {
                let mut inner = Struct::default();
                insert_at(&mut inner, rest, value);
                slot.kind = Some(Kind::StructValue(inner));
            }
        }
    }
}

/// JSON claims as a protobuf Struct (numbers become doubles, as in proto3 JSON).
pub fn json_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_a_documented_status() {
        for reason in Reason::ALL {
            let r = Refusal::for_reason(reason);
            assert!([401, 403, 500, 503].contains(&r.status), "{reason}");
            let body: serde_json::Value = serde_json::from_str(&r.body(Some("rid"))).unwrap();
            assert_eq!(body["status"], r.status);
            assert_eq!(body["request_id"], "rid");
            // The client never learns the precise reason.
            assert!(!body.to_string().contains(reason.as_str()) || reason.as_str() == r.code);
        }
        assert_eq!(
            Refusal::for_reason(Reason::Expired).www_authenticate,
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            Refusal::for_reason(Reason::MissingToken).www_authenticate,
            Some("Bearer")
        );
    }

    #[test]
    fn body_without_request_id_omits_it() {
        let body: serde_json::Value =
            serde_json::from_str(&Refusal::for_reason(Reason::Expired).body(None)).unwrap();
        assert_eq!(body["type"], "urn:vrata:error:invalid_token");
        assert!(body.get("request_id").is_none());
    }
}
