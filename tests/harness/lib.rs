//! End-to-end test harness: starts real Envoy processes, xds-server and upstream servers on free
//! loopback ports, and waits on Envoy's admin API instead of sleeping.

pub mod paths;
