//! Small pieces every vrata binary shares: telemetry set-up, the admin HTTP server
//! (`/healthz`, `/readyz`, `/metrics`), shutdown signals and exit codes. No business logic
//! lives here, and nothing here knows the gateway file format.

pub mod admin;
pub mod exit;
pub mod shutdown;
pub mod telemetry;
