//! vrata's rate limit service: Envoy's `RateLimitService/ShouldRateLimit` over counters shared
//! by the fleet. It owns the typed limits model and its compiled, hot-swapped form
//! ([`limits`]), the counting algorithm ([`window`]), the counter stores — memory, Redis,
//! Redis Cluster — and what happens when Redis fails ([`store`]), the gRPC handler and the
//! quota headers it returns ([`service`], [`headers`]), and its metrics.
//!
//! It must not read the gateway files or know their format: limits arrive from xds-server as a
//! `vrata.config.v1.RateLimitConfig` resource (over the xDS client in `vrata-common`), become
//! [`limits::Limits`] in [`xds_config`] and are swapped in with [`limits::LimitTable::apply`]. It must not re-implement what Envoy does: which requests carry
//! which descriptors is Envoy's route configuration, written by xds-server.

pub use vrata_common::clock;
pub mod headers;
pub mod limits;
pub mod metrics;
pub mod service;
pub mod store;
pub mod window;
pub mod xds_config;

pub use limits::{DOMAIN, Limit, LimitKey, LimitTable, Limits, LimitsError};
pub use metrics::Metrics;
pub use service::RateLimiter;
pub use store::failover::{Failover, Health, OnError};
pub use store::memory::MemoryStore;
pub use store::redis::{BadRedisUrl, RedisStore, RedisTarget};
pub use store::{Backend, Store, StoreConfig};
pub use xds_config::{ConfigError, ServiceConfig, StoreSettings};
