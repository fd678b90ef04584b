//! End-to-end test harness: starts real Envoy processes, xds-server, ratelimit-service, the
//! aggregator, Redis and
//! upstream servers on free loopback ports, and waits on Envoy's admin API instead of sleeping.
//!
//! Everything a test starts is stopped when its handle drops; logs of every process go to a
//! per-test temporary folder and are printed when a wait times out, so a failure explains
//! itself.

pub mod admin;
pub mod aggregator;
pub mod browser;
pub mod configs;
pub mod envoy;
pub mod ext_authz;
pub mod oidc;
pub mod otlp;
pub mod paths;
pub mod pki;
pub mod ports;
pub mod process;
pub mod prom;
pub mod ratelimit;
pub mod redis;
pub mod response_cache;
mod service;
pub mod stack;
pub mod upstream;
pub mod wait;
pub mod xds;

pub use aggregator::Aggregator;
pub use envoy::{Ads, Envoy};
pub use ext_authz::ExtAuthz;
pub use ratelimit::RateLimitService;
pub use response_cache::ResponseCache;
pub use stack::Stack;
pub use upstream::Upstream;
pub use wait::eventually;
pub use xds::XdsServer;
