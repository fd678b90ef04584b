//! RFC 9457 problem+json bodies for the responses the gateway itself produces.
//!
//! Envoy passes every local reply through the HCM's `local_reply_config` — including a route's
//! `direct_response` (vrata's `respond`), measured on Envoy 1.40. So the mappers select Envoy's
//! own replies by *response flag* (no route, no healthy upstream, timeout...), never by status:
//! a user's `respond: {status: 503, body: ...}` carries no flag and keeps its body.
//!
//! Measured on Envoy 1.40: HTTP/1 codec rejections (malformed requests, Content-Length with
//! chunked, header names with underscores) bypass the mappers and keep Envoy's plain-text
//! "Bad Request" body; there is nothing to configure for them.
//!
//! The 405 and ambiguous-Host answers are not Envoy local replies but routes of vrata's; their
//! bodies are built here too ([`route_problem`]) so every problem body has the same shape:
//! `{"type": "urn:vrata:error:<code>", "title", "status", "detail", "request_id"}`.

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLogFilter, AndFilter, ComparisonFilter, ResponseFlagFilter, StatusCodeFilter,
    access_log_filter, comparison_filter,
};
use envoy_types::pb::envoy::config::core::v3::{RuntimeUInt32, SubstitutionFormatString};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    LocalReplyConfig, ResponseMapper,
};

use super::pb::{self, FormatValue};

/// Media type of every problem body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of the `type` member: `urn:vrata:error:<code>`.
pub const TYPE_PREFIX: &str = "urn:vrata:error:";

/// One kind of gateway-generated error. `code` is part of the public contract (clients may
/// branch on `type`): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub title: &'static str,
    pub detail: &'static str,
    /// Envoy response flags (short form) whose local replies get this body.
    pub flags: &'static [&'static str],
}

/// Envoy's local replies vrata rewrites, in mapper order (the first matching mapper wins; the
/// flag sets are disjoint). The status code stays Envoy's (404, 503, 504...); the body reports
/// it with `%RESPONSE_CODE%`, which a JSON format renders as a number.
pub const PROBLEMS: &[Problem] = &[
    Problem {
        code: "not-found",
        title: "Not Found",
        detail: "No route matches the request.",
        // NR: no route for the request (or no virtual host for its authority).
        flags: &["NR"],
    },
    Problem {
        code: "no-healthy-upstream",
        title: "Service Unavailable",
        detail: "The upstream has no healthy endpoint.",
        flags: &["UH"],
    },
    Problem {
        code: "upstream-timeout",
        title: "Gateway Timeout",
        detail: "The upstream did not answer in time.",
        flags: &["UT"],
    },
    Problem {
        code: "upstream-unavailable",
        title: "Service Unavailable",
        detail: "The upstream could not be reached or reset the request.",
        // UF connect failure, UO overflow (circuit breaker), URX retries exhausted,
        // UC connection terminated, UR remote reset, LR local reset, NC no such cluster,
        // DF DNS resolution failed.
        flags: &["UF", "UO", "URX", "UC", "UR", "LR", "NC", "DF"],
    },
    Problem {
        code: "rate-limited",
        title: "Too Many Requests",
        detail: "The request exceeds a rate limit.",
        // RL: Envoy's ratelimit filter refused the request. The mapper only replaces the
        // body: the service's RateLimit, RateLimit-Policy and Retry-After headers stay.
        flags: &["RL"],
    },
    Problem {
        code: "rate-limit-unavailable",
        title: "Service Unavailable",
        detail: "The rate limit service could not be reached.",
        // RLSE: ratelimit-service failed or timed out and `ratelimit_failure: deny`.
        flags: &["RLSE"],
    },
];

/// The problem answering a request whose path matches but whose method does not (a route).
pub const METHOD_NOT_ALLOWED: Problem = Problem {
    code: "method-not-allowed",
    title: "Method Not Allowed",
    detail: "The method is not allowed for this resource; see the Allow header.",
    flags: &[],
};

/// The problem answering a request with several Host values (a route): Envoy's HTTP/1 codec
/// joins duplicate Host headers into `a,b`, which upstreams and caches may read differently.
pub const AMBIGUOUS_HOST: Problem = Problem {
    code: "bad-request",
    title: "Bad Request",
    detail: "The request has more than one Host.",
    flags: &[],
};

/// ext_authz's answer when ext-authz cannot be asked (unreachable, timed out): Envoy sends 503
/// (`status_on_error`) without a body, flag UAEX. ext-authz's own refusals carry the same flag
/// and their own problem bodies (401, 403, 500 pass untouched); its 503 ("provider never
/// reached") is indistinguishable here and gets this body, which has the same `type`.
pub const AUTHZ_UNAVAILABLE: Problem = Problem {
    code: "auth_unavailable",
    title: "Service Unavailable",
    detail: "Authentication is temporarily unavailable; try again later.",
    flags: &["UAEX"],
};

/// Runtime key of the status comparison (Envoy requires one; nothing sets it).
const AUTHZ_UNAVAILABLE_RUNTIME_KEY: &str = "vrata.local_reply.auth_unavailable_status";

/// Request id, as generated or propagated by the HCM.
const REQUEST_ID: &str = "%REQ(X-REQUEST-ID)%";

/// The HCM's `local_reply_config`. No top-level `body_format`: that would rewrite every local
/// reply, `respond` bodies included. `with_authz`: the HCM has the ext_authz filter.
pub(super) fn config(with_authz: bool) -> LocalReplyConfig {
    let mut mappers: Vec<ResponseMapper> = PROBLEMS.iter().map(mapper).collect();
    if with_authz {
        mappers.push(authz_unavailable_mapper());
    }
    LocalReplyConfig {
        mappers,
        body_format: None,
    }
}

/// UAEX *and* 503: only ext_authz's error answer (see [`AUTHZ_UNAVAILABLE`]).
fn authz_unavailable_mapper() -> ResponseMapper {
    let flag = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
            ResponseFlagFilter {
                flags: AUTHZ_UNAVAILABLE
                    .flags
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect(),
            },
        )),
    };
    let status = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
            StatusCodeFilter {
                comparison: Some(ComparisonFilter {
                    op: comparison_filter::Op::Eq as i32,
                    value: Some(RuntimeUInt32 {
                        default_value: 503,
                        runtime_key: AUTHZ_UNAVAILABLE_RUNTIME_KEY.to_owned(),
                    }),
                }),
            },
        )),
    };
    ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::AndFilter(AndFilter {
                filters: vec![flag, status],
            })),
        }),
        body_format_override: Some(body(&AUTHZ_UNAVAILABLE, FormatValue::Number(503.0))),
        ..Default::default()
    }
}

fn mapper(problem: &Problem) -> ResponseMapper {
    ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
                ResponseFlagFilter {
                    flags: problem.flags.iter().map(|f| (*f).to_owned()).collect(),
                },
            )),
        }),
        body_format_override: Some(body(problem, FormatValue::Text("%RESPONSE_CODE%"))),
        ..Default::default()
    }
}

/// The problem+json body of a route-generated error (a direct response's `body_format`, where
/// `%RESPONSE_CODE%` is not known yet: the status is a constant).
pub(super) fn route_problem(problem: &Problem, status: u16) -> SubstitutionFormatString {
    body(problem, FormatValue::Number(f64::from(status)))
}

fn body(problem: &Problem, status: FormatValue<'_>) -> SubstitutionFormatString {
    let problem_type = format!("{TYPE_PREFIX}{}", problem.code);
    pb::json_format(
        &[
            ("type", FormatValue::Text(&problem_type)),
            ("title", FormatValue::Text(problem.title)),
            ("status", status),
            ("detail", FormatValue::Text(problem.detail)),
            ("request_id", FormatValue::Text(REQUEST_ID)),
        ],
        PROBLEM_JSON,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::google::protobuf::value::Kind;

    use super::*;

    fn field(format: &SubstitutionFormatString, key: &str) -> Option<Kind> {
        let Some(Format::JsonFormat(s)) = &format.format else {
            return None;
        };
        s.fields.get(key).and_then(|v| v.kind.clone())
    }

    #[test]
    fn mappers_select_envoy_replies_by_flag_only() {
        let config = config(false);
        assert!(config.body_format.is_none());
        assert_eq!(config.mappers.len(), PROBLEMS.len());
        for m in &config.mappers {
            assert!(m.status_code.is_none(), "Envoy's status is kept");
            assert!(matches!(
                m.filter.as_ref().and_then(|f| f.filter_specifier.as_ref()),
                Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(_))
            ));
            let body = m.body_format_override.as_ref().expect("body");
            assert_eq!(body.content_type, PROBLEM_JSON);
            assert_eq!(
                field(body, "status"),
                Some(Kind::StringValue("%RESPONSE_CODE%".into()))
            );
        }
    }

    #[test]
    fn authz_errors_get_a_problem_body_only_with_ext_authz() {
        let with = config(true);
        assert_eq!(with.mappers.len(), PROBLEMS.len() + 1);
        let last = with.mappers.last().expect("mapper");
        assert!(matches!(
            last.filter.as_ref().and_then(|f| f.filter_specifier.as_ref()),
            Some(access_log_filter::FilterSpecifier::AndFilter(and)) if and.filters.len() == 2
        ));
        let body = last.body_format_override.as_ref().expect("body");
        assert_eq!(
            field(body, "type"),
            Some(Kind::StringValue("urn:vrata:error:auth_unavailable".into()))
        );
        assert_eq!(field(body, "status"), Some(Kind::NumberValue(503.0)));
    }

    #[test]
    fn flag_sets_are_disjoint_and_codes_unique() {
        let mut flags = HashSet::new();
        let mut codes = HashSet::new();
        for p in PROBLEMS {
            assert!(codes.insert(p.code), "duplicate code {}", p.code);
            for f in p.flags {
                assert!(flags.insert(*f), "flag {f} mapped twice");
            }
        }
        assert!(!codes.contains(METHOD_NOT_ALLOWED.code));
        assert!(!codes.contains(AMBIGUOUS_HOST.code));
    }

    #[test]
    fn method_not_allowed_body_has_a_numeric_status() {
        let body = route_problem(&METHOD_NOT_ALLOWED, 405);
        assert_eq!(body.content_type, PROBLEM_JSON);
        assert_eq!(field(&body, "status"), Some(Kind::NumberValue(405.0)));
        assert_eq!(
            field(&body, "type"),
            Some(Kind::StringValue(
                "urn:vrata:error:method-not-allowed".into()
            ))
        );
        assert_eq!(
            field(&body, "request_id"),
            Some(Kind::StringValue(REQUEST_ID.into()))
        );
    }
}
