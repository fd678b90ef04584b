//! The physical limit the service benchmarks compare against: a gRPC server that answers every
//! `Authorization/Check` with OK and every `RateLimitService/ShouldRateLimit` with OK, doing
//! nothing else. Same tonic and runtime settings class as vrata's services (multi-threaded
//! tokio; pin it with `taskset` like them), so the difference to ext-authz or
//! ratelimit-service is their own work.
//!
//! `noop-grpc --listen 127.0.0.1:PORT [--answer bare|like-vrata]`
//!
//! `--answer like-vrata` returns, still without doing any work, an answer of the shape vrata's
//! services give for an allowed request: for Check, one identity header set and dynamic metadata
//! `{vrata.authz.result: allowed, vrata.authz: {sub}}`; for ShouldRateLimit, one descriptor
//! status with its limit and the two IETF quota headers. It tells Envoy's cost of handling such
//! an answer apart from the service's cost of deciding it.

use std::net::SocketAddr;

use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

#[derive(Parser)]
#[command(about = "A do-nothing Check and ShouldRateLimit server (benchmark baseline)")]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value_t = Answer::Bare)]
    answer: Answer,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Answer {
    /// OK and nothing else.
    Bare,
    /// OK with what vrata's services put in an allowed answer (fixed values).
    LikeVrata,
    /// Check only: OK with the identity header of an allowed answer, no metadata.
    Header,
    /// Check only: OK with the dynamic metadata of an allowed answer, no header.
    Metadata,
}

struct Noop {
    answer: Answer,
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn header_value(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value: value.to_owned(),
        ..Default::default()
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(header_value(key, value)),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let mut r = CheckResponse {
            // google.rpc.Code OK
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        if matches!(self.answer, Answer::LikeVrata | Answer::Header) {
            r.http_response = Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![header("x-user-id", "bench-user")],
                ..Default::default()
            }));
        }
        if matches!(self.answer, Answer::LikeVrata | Answer::Metadata) {
            let claims = Struct {
                fields: [("sub".to_owned(), string("bench-user"))].into(),
            };
            r.dynamic_metadata = Some(Struct {
                fields: [
                    ("vrata.authz.result".to_owned(), string("allowed")),
                    (
                        "vrata.authz".to_owned(),
                        Value {
                            kind: Some(Kind::StructValue(claims)),
                        },
                    ),
                ]
                .into(),
            });
        }
        Ok(Response::new(r))
    }
}

#[tonic::async_trait]
impl RateLimitService for Noop {
    async fn should_rate_limit(
        &self,
        _: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let mut r = RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        };
        if self.answer == Answer::LikeVrata {
            r.statuses = vec![DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: Some(RateLimit {
                    name: "per-route".into(),
                    requests_per_unit: 1_000_000_000,
                    unit: Unit::Minute as i32,
                }),
                limit_remaining: 999_999_999,
                duration_until_reset: Some(PbDuration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }];
            r.response_headers_to_add = vec![
                header_value("ratelimit-policy", "\"per-route\";q=1000000000;w=60"),
                header_value("ratelimit", "\"per-route\";r=999999999;t=1"),
            ];
        }
        Ok(Response::new(r))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Noop {
            answer: args.answer,
        }))
        .add_service(RateLimitServiceServer::new(Noop {
            answer: args.answer,
        }))
        .serve_with_shutdown(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
