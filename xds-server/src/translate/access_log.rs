//! The JSON access log: one line per request on Envoy's stdout.
//!
//! Field names are a public contract (log pipelines parse them); add fields, never rename:
//!
//! | field | value | Envoy operator |
//! |---|---|---|
//! | `time` | request start, RFC 3339 UTC with milliseconds | `%START_TIME%` |
//! | `request_id` | `x-request-id` (generated or propagated) | `%REQ(X-REQUEST-ID)%` |
//! | `client_address` | the trusted client IP (after `trusted_hops`), no port | `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` |
//! | `method` | request method | `%REQ(:METHOD)%` |
//! | `authority` | host as received (port stripped) | `%REQ(:AUTHORITY)%` |
//! | `path` | path and query as received, before rewrites | `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%` |
//! | `protocol` | `HTTP/1.1`, `HTTP/2`... | `%PROTOCOL%` |
//! | `route` | vrata route name (`null`: no route matched) | `%ROUTE_NAME%` |
//! | `upstream_cluster` | upstream name | `%UPSTREAM_CLUSTER%` |
//! | `upstream_host` | endpoint address that answered | `%UPSTREAM_HOST%` |
//! | `status` | response status (number; 0 if none was sent) | `%RESPONSE_CODE%` |
//! | `response_flags` | Envoy response flags (`-` when none; `NR`, `UH`, `UT`...) | `%RESPONSE_FLAGS%` |
//! | `bytes_received` | request body bytes (number) | `%BYTES_RECEIVED%` |
//! | `bytes_sent` | response body bytes (number) | `%BYTES_SENT%` |
//! | `duration_ms` | first request byte to last response byte (number) | `%DURATION%` |
//! | `upstream_service_time_ms` | upstream request sent to first response byte (number) | `%COMMON_DURATION(US_TX_BEG:US_RX_BEG:ms)%` |
//! | `trace_id` | W3C trace id (32 hex digits) when tracing is on | `%TRACE_ID%` |
//! | `authz` | ext-authz's decision: `allowed`, `anonymous`, or the refusal reason | `%DYNAMIC_METADATA(envoy.filters.http.ext_authz:vrata.authz.result)%` |
//! | `rate_limit` | ratelimit-service's decision: `ok` or `over_limit` | `%DYNAMIC_METADATA(envoy.filters.http.ratelimit:vrata.ratelimit.result)%` |
//!
//! Values Envoy does not have (no upstream for a direct response...) are JSON `null`.

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};

use super::pb::{self, FormatValue};

/// Envoy's stdout access logger.
pub const STDOUT_LOGGER: &str = "envoy.access_loggers.stdout";

/// `(field, command)` pairs of the log line (see the module documentation).
pub const FIELDS: &[(&str, &str)] = &[
    ("time", "%START_TIME%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("client_address", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("method", "%REQ(:METHOD)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("route", "%ROUTE_NAME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("status", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration_ms", "%DURATION%"),
    (
        "upstream_service_time_ms",
        "%COMMON_DURATION(US_TX_BEG:US_RX_BEG:ms)%",
    ),
    ("trace_id", "%TRACE_ID%"),
    (
        "authz",
        "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:vrata.authz.result)%",
    ),
    (
        "rate_limit",
        "%DYNAMIC_METADATA(envoy.filters.http.ratelimit:vrata.ratelimit.result)%",
    ),
];

pub(super) fn stdout_json() -> AccessLog {
    let fields: Vec<(&str, FormatValue<'_>)> = FIELDS
        .iter()
        .map(|(key, command)| (*key, FormatValue::Text(command)))
        .collect();
    let logger = StdoutAccessLog {
        access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
            // The content type only matters for HTTP bodies; a log line has none.
            pb::json_format(&fields, ""),
        )),
    };
    AccessLog {
        name: STDOUT_LOGGER.to_owned(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(pb::any(logger))),
    }
}
