//! vrata's aggregator: Envoy sends it the requests of aggregate routes (and of plain routes
//! with `response.json`), after TLS, ext_authz and rate limits; it calls the route's backends
//! concurrently — back through Envoy's loopback listener, so every call keeps its upstream's
//! policies — merges their JSON answers deterministically, shapes the result and answers. It
//! owns the compiled plans ([`config`]), path templates ([`template`]), the scheduling and time
//! budgets ([`execute`]), the pure merge ([`merge`]) and shaping ([`shape`]), the problem
//! answers ([`problem`]), the HTTP handler ([`server`]) and client ([`client`]) and its metrics.
//!
//! It must not read the gateway files or know their format: its definitions arrive from
//! xds-server as a `vrata.config.v1.AggregatorConfig` resource (over the xDS client in
//! `vrata-common`). It must not re-implement what Envoy does: balancing, health, retries,
//! TLS to upstreams, auth and rate limits stay Envoy's.

pub mod client;
pub mod config;
pub mod execute;
pub mod failure;
pub mod merge;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod shape;
pub mod template;

pub use config::{ConfigError, Plan, Plans};
pub use failure::Failure;
pub use metrics::Metrics;
pub use server::{AGGREGATE_HEADER, COMPLETED_HEADER};
