//! The physical limit the service benchmarks compare against: a gRPC server that answers every
//! `Authorization/Check` with OK and every `RateLimitService/ShouldRateLimit` with OK, doing
//! nothing else. Same tonic and runtime settings class as vrata's services (multi-threaded
//! tokio; pin it with `taskset` like them), so the difference to ext-authz or
//! ratelimit-service is their own work.
//!
//! `noop-grpc --listen 127.0.0.1:PORT`

use std::net::SocketAddr;

use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

#[derive(Parser)]
#[command(about = "A do-nothing Check and ShouldRateLimit server (benchmark baseline)")]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
}

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            // google.rpc.Code OK
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl RateLimitService for Noop {
    async fn should_rate_limit(
        &self,
        _: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        Ok(Response::new(RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Noop))
        .add_service(RateLimitServiceServer::new(Noop))
        .serve_with_shutdown(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
