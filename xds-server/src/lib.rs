//! vrata's control plane. Owns the gateway file format (`config`), the typed model (`model`),
//! the pure translation into Envoy resources (`translate`), versioned snapshots per node
//! (`snapshot`), the ADS gRPC server (`ads`), file watching (`watch`), the admin API (`admin`)
//! and the fleet view: Envoys' stats received over the metrics-service sink (`sink`), kept as a
//! short history (`fleet`) for the dashboard.
//! It never proxies traffic: Envoy does.

pub mod config;
pub mod model;
pub mod translate;

pub mod admin;
pub mod ads;
pub mod control;
pub mod fleet;
pub mod metrics;
pub mod nodes;
pub mod sink;
pub mod snapshot;
pub mod unix_seconds;
pub mod watch;
