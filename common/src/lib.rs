//! Small pieces every vrata binary shares: telemetry set-up (logs, and OTLP spans in [`trace`]), the admin HTTP server
//! (`/healthz`, `/readyz`, `/metrics`), shutdown signals, exit codes, byte sizes on the command line, gRPC listening, the xDS client the
//! services get their config with ([`xds`]), and the start-up the config-driven services share
//! ([`service`]). No business logic lives here, and nothing here
//! knows the gateway file format or any service's config messages.

pub mod admin;
pub mod clock;
pub mod exit;
pub mod grpc;
pub mod service;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod trace;
pub mod xds;
