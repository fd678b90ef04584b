//! response-cache: Envoy's external processing service (`envoy.service.ext_proc.v3`) caching
//! GET/HEAD responses of the routes that ask for it, in this process's memory (`store: local`)
//! or in a Redis shared by the fleet (`store: redis`). It owns the cache semantics (RFC 9111 for
//! a shared cache: [`freshness`], conditional requests, `Age`, `X-Cache`), the keys ([`key`]),
//! the stores and their failure handling ([`store`]), request coalescing ([`flight`]), purges
//! ([`purge`]), the per-stream state machine ([`service`]) and its metrics.
//!
//! It must not read the gateway files or know their format: routes' cache policies and purges
//! arrive from xds-server as one `vrata.config.v1.CacheConfig` resource, converted in
//! [`config`]. It must not re-implement Envoy: which requests reach it, the timeouts around it
//! and what happens when it fails (`failure_mode_allow`) are Envoy's, rendered by xds-server.

pub use vrata_common::clock;
pub mod config;
pub mod entry;
pub mod flight;
pub mod freshness;
pub mod headers;
pub mod key;
pub mod metrics;
pub mod purge;
pub mod service;
pub mod store;

pub use config::{ConfigError, RoutePolicy, Settings, Tier};
pub use metrics::Metrics;
pub use service::{Cache, CacheService};
