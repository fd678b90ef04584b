//! `routes[].cache` -> Envoy's ext_proc HTTP filter, calling response-cache over gRPC.
//!
//! The contract with response-cache (`docs/caching.md`, "How it runs"):
//! - one ext_proc filter in every HCM, present only when some route has `cache`, after
//!   ext_authz and the ratelimit filter (a cached answer still needs the caller's rights and
//!   spends quota) and before the router; it calls the cluster [`RESPONSE_CACHE_CLUSTER`]
//!   (`services.response_cache`, HTTP/2);
//! - the filter is *disabled* in the chain and turned on only by the per-route config of routes
//!   with `cache`, which names the route in the gRPC metadata [`ROUTE_METADATA`]. Other routes
//!   never call response-cache;
//! - Envoy sends the request headers and the response headers; response-cache asks for the
//!   response body (`mode_override`, STREAMED) only when it will store it, and answers hits
//!   with an immediate response;
//! - ext-authz's `vrata.authz` metadata (the claims of `key_extra`) is forwarded;
//! - `failure_mode_allow`: when response-cache is down or slow, requests go to the upstream
//!   uncached rather than fail;
//! - response-cache's settings are one `vrata.config.v1.CacheConfig` resource.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{GrpcService, HeaderValue, grpc_service};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ExtProcOverrides, ExtProcPerRoute, ExternalProcessor, MetadataOptions, ProcessingMode,
    ext_proc_per_route, metadata_options::MetadataNamespaces, processing_mode,
};

use vrata_proto::vrata::config::v1 as pbv;

use super::{cluster, pb, rate_limit};
use crate::model::{self, Action, CacheKeyPart, CacheStore, Gateway, Name, Services, Upstream};

pub const CACHE_FILTER: &str = "envoy.filters.http.ext_proc";
/// The Envoy cluster of response-cache (upstream names starting with `vrata_` are reserved).
pub const RESPONSE_CACHE_CLUSTER: &str = "vrata_response_cache";
/// The gRPC metadata naming the route on each ext_proc stream; response-cache's
/// `ROUTE_METADATA` (not imported: xds-server does not depend on the service; the end-to-end
/// tests hold both to it).
pub const ROUTE_METADATA: &str = "x-vrata-route";
/// The name of the one `CacheConfig` resource.
pub const CACHE_CONFIG_NAME: &str = "vrata";
/// Each message to response-cache must be answered within this (a lookup is one Redis round
/// trip; its own Redis timeout is far shorter). Past it, the request goes on uncached.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);
/// response-cache may extend the wait, up to this, while a request waits for another one's
/// fill of the same key (request coalescing, bounded by the route's timeout).
const MAX_MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// A route without `timeout` gets Envoy's default of 15 s.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// The HCM filter (disabled; routes with `cache` turn it on).
pub(super) fn filter(_services: &Services) -> ExternalProcessor {
    use processing_mode::{BodySendMode, HeaderSendMode};
    ExternalProcessor {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: RESPONSE_CACHE_CLUSTER.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        failure_mode_allow: true,
        processing_mode: Some(ProcessingMode {
            request_header_mode: HeaderSendMode::Send as i32,
            response_header_mode: HeaderSendMode::Send as i32,
            request_body_mode: BodySendMode::None as i32,
            response_body_mode: BodySendMode::None as i32,
            request_trailer_mode: HeaderSendMode::Skip as i32,
            response_trailer_mode: HeaderSendMode::Skip as i32,
        }),
        message_timeout: Some(pb::duration(MESSAGE_TIMEOUT)),
        max_message_timeout: Some(pb::duration(MAX_MESSAGE_TIMEOUT)),
        allow_mode_override: true,
        metadata_options: Some(MetadataOptions {
            forwarding_namespaces: Some(MetadataNamespaces {
                untyped: vec![rate_limit::AUTHZ_METADATA_NAMESPACE.to_owned()],
                typed: Vec::new(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The response-cache cluster and its endpoint, built like an `http2: true` upstream.
pub(super) fn cluster(services: &Services) -> (Cluster, Option<ClusterLoadAssignment>) {
    let mut upstream = Upstream::new(
        Name::builtin(RESPONSE_CACHE_CLUSTER),
        services.response_cache.endpoints(),
    );
    upstream.http2 = true;
    (
        cluster::cluster(&upstream),
        cluster::load_assignment(&upstream),
    )
}

/// Turns the filter on for the Envoy routes made from a route with `cache`.
pub(super) fn apply(route: &model::Route, envoy_routes: &mut [Route]) {
    if route.cache.is_none() {
        return;
    }
    let config = pb::any(ExtProcPerRoute {
        r#override: Some(ext_proc_per_route::Override::Overrides(ExtProcOverrides {
            grpc_initial_metadata: vec![HeaderValue {
                key: ROUTE_METADATA.to_owned(),
                value: route.name.as_str().to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    });
    for r in envoy_routes {
        if matches!(
            r.action,
            Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(_))
        ) {
            r.typed_per_filter_config
                .insert(CACHE_FILTER.to_owned(), config.clone());
        }
    }
}

/// response-cache's config resource: every route with `cache`, sorted by name. Purges are
/// added by the control plane (they are not part of the files).
pub(super) fn service_config(gw: &Gateway) -> pbv::CacheConfig {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut routes: Vec<pbv::RouteCache> = gw
        .routes
        .iter()
        .filter_map(|r| {
            let c = r.cache.as_ref()?;
            let timeout = match &r.action {
                Action::Aggregate(a) => a.timeout,
                _ => r.timeout.unwrap_or(DEFAULT_ROUTE_TIMEOUT),
            };
            Some(pbv::RouteCache {
                route: r.name.as_str().to_owned(),
                store: match c.store {
                    CacheStore::Local => pbv::CacheStore::Local,
                    CacheStore::Redis => pbv::CacheStore::Redis,
                } as i32,
                ttl_ms: ms(c.ttl),
                vary: c.vary.iter().map(|h| h.as_str().to_owned()).collect(),
                key_extra: c.key_extra.iter().map(key_part).collect(),
                max_body: c.max_body,
                stale_if_error_ms: ms(c.stale_if_error),
                timeout_ms: ms(timeout),
            })
        })
        .collect();
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    let uses_redis = routes
        .iter()
        .any(|r| r.store == pbv::CacheStore::Redis as i32);
    pbv::CacheConfig {
        redis: if uses_redis {
            gw.cache_redis.clone()
        } else {
            Vec::new()
        },
        routes,
        purges: Vec::new(),
    }
}

fn key_part(part: &CacheKeyPart) -> String {
    match part {
        CacheKeyPart::Claim(c) => format!("claim:{}", c.as_str()),
        CacheKeyPart::Header(h) => format!("header:{}", h.as_str()),
    }
}

/// The claims a route's cache key reads from ext-authz's metadata.
pub(super) fn key_claims(route: &model::Route) -> impl Iterator<Item = &str> {
    route
        .cache
        .iter()
        .flat_map(|c| &c.key_extra)
        .filter_map(|p| match p {
            CacheKeyPart::Claim(c) => Some(c.as_str()),
            CacheKeyPart::Header(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_is_a_valid_name() {
        assert_eq!(
            Name::new(RESPONSE_CACHE_CLUSTER).expect("valid"),
            Name::builtin(RESPONSE_CACHE_CLUSTER)
        );
    }
}
