//! The listening side of vrata's gRPC servers.

use tonic::transport::server::TcpIncoming;

/// Connections accepted from `listener` with `TCP_NODELAY` set. tonic sets it only when it binds
/// the address itself; a server given its own listener (bound early, so a bad address fails
/// before anything starts) must ask. Without it, Nagle's algorithm holds each small answer
/// until the peer's delayed ACK: Envoy saw a ShouldRateLimit call take twice as long, and the
/// extra wake-ups cost ~10% of Envoy's req/s (docs/performance.md).
pub fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
