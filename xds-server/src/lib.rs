//! vrata's control plane. Owns the gateway file format (`config`), the typed model (`model`),
//! the pure translation into Envoy resources (`translate`), versioned snapshots per node
//! (`snapshot`), the ADS gRPC server (`ads`), file watching (`watch`) and the admin API (`admin`).
//! It never proxies traffic: Envoy does.

pub mod config;
pub mod model;
pub mod translate;

pub mod admin;
pub mod ads;
pub mod control;
pub mod metrics;
pub mod nodes;
pub mod snapshot;
pub mod unix_seconds;
pub mod watch;
