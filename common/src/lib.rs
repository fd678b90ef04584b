//! Small pieces every vrata binary shares: telemetry set-up, the admin HTTP server
//! (`/healthz`, `/readyz`, `/metrics`), exit codes. No business logic lives here.
