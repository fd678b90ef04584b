//! vrata's ext-authz: Envoy's external authorization gRPC service. It owns JWT validation
//! (OIDC discovery, JWKS caching and refresh, the pure validator), role/scope authorization
//! per route, the refusals clients see (RFC 6750 challenge, RFC 9457 problem+json) and the
//! headers and dynamic metadata it gives Envoy on success. It does not read gateway files
//! (policies arrive as a [`PolicySpec`] converted from xDS by the binary), does not speak xDS
//! itself, and does not re-implement anything Envoy does (routing, TLS, header rules).
//!
//! Flow: [`Authz::apply`] compiles a [`PolicySpec`] into [`Policies`] and swaps it in;
//! [`CheckService`] reads a CheckRequest and calls [`Authz::check`]: route by context
//! extension [`ROUTE_CONTEXT_KEY`] → bearer token → token cache or (parse → JWKS key →
//! verify) → roles/scopes → CheckResponse.

pub mod authz;
pub mod cache;
pub mod clock;
pub mod grpc;
pub mod jwks;
pub mod metrics;
pub mod policy;
pub mod response;
pub mod validate;
pub mod xds_config;

pub use authz::{Authz, AuthzError, CheckInput, Options};
pub use clock::{Clock, ManualClock, SystemClock};
pub use grpc::CheckService;
pub use metrics::Metrics;
pub use policy::{
    Algorithm, Policies, PolicyError, PolicySpec, ProviderSpec, ROUTE_CONTEXT_KEY, RequirementSpec,
    RouteAuthSpec, RouteSpec,
};
pub use response::{METADATA_CLAIMS, METADATA_RESULT};
