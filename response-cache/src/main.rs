//! `response-cache` (issue 7): Envoy's external processing service caching responses,
//! configured by xds-server.
//!
//! Start-up: flags are checked (exit 64 when unusable), the admin server binds (`/healthz`,
//! `/readyz`, `/metrics`), the xDS client subscribes to `vrata.config.v1.CacheConfig`; the
//! first accepted version connects the Redis store when a route uses it (a Redis that is down
//! is not fatal: those routes bypass until it answers), then the gRPC port opens and `/readyz`
//! turns 200. Every later version swaps the policies in at once, rebuilds the Redis client if
//! its URL changed and runs new purges. SIGTERM drains.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use prometheus_client::registry::Registry;
use vrata_common::exit::INVALID_CONFIG;
use vrata_common::telemetry::{self, LogFormat};
use vrata_response_cache::clock::SystemClock;
use vrata_response_cache::config::check_redis_url;
use vrata_response_cache::{Cache, CacheService, Metrics, Settings};

/// How long in-flight streams get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);
/// The xDS node cluster every response-cache reports.
const NODE_CLUSTER: &str = "vrata-response-cache";

#[derive(Debug, Parser)]
#[command(
    name = "response-cache",
    version,
    about = "vrata's response cache: Envoy's external processing service caching GET/HEAD responses in memory or in a Redis shared by the fleet; policies come from xds-server"
)]
struct Cli {
    /// xds-server's gRPC address, where the cache policies come from.
    #[arg(long, value_name = "URL")]
    xds: String,
    /// gRPC listen address (Envoy's `services.response_cache`).
    #[arg(long, default_value = "127.0.0.1:18005")]
    listen: SocketAddr,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:19005")]
    admin: SocketAddr,
    /// Redis URL (one standalone Redis) for `store: redis` routes. Overrides the gateway
    /// files' `cache_store.redis` / `rate_limits.store.redis`.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Bound of the in-memory store (`store: local` routes), bytes or with KiB/MiB/GiB.
    #[arg(long, default_value = "256MiB", value_parser = vrata_common::size::parse)]
    memory_max: u64,
    /// This instance's xDS node id (shown on xds-server's /admin/status). Default:
    /// `response-cache-<listen address>`.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli: Cli = match vrata_common::exit::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Err(e) = telemetry::init(cli.log_format) {
        eprintln!("response-cache: {e:#}");
        return ExitCode::FAILURE;
    }
    if let Some(url) = cli.redis.as_deref()
        && let Err(e) = check_redis_url(url)
    {
        eprintln!("response-cache: --redis: {e}");
        return ExitCode::from(INVALID_CONFIG as u8);
    }
    if let Err(code) = vrata_common::exit::check_xds_url("response-cache", &cli.xds) {
        return code;
    }
    vrata_common::exit::run_service("response-cache", serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<u8> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let redis_override = cli.redis.clone();
    let node_id = cli
        .node_id
        .clone()
        .unwrap_or_else(|| format!("response-cache-{}", cli.listen));
    let who = vrata_common::service::Identity {
        admin: cli.admin,
        xds: &cli.xds,
        node_id,
        node_cluster: NODE_CLUSTER,
        user_agent: "vrata-response-cache",
    };
    let Some(vrata_common::service::Started {
        first,
        configs,
        running,
    }) = vrata_common::service::start(who, registry, move |resources| {
        Settings::from_resources(resources, redis_override.as_deref())
    })
    .await?
    else {
        return Ok(0);
    };
    let stop_rx = running.stop_rx();
    let stopped = vrata_common::shutdown::stopped;

    let cache = Cache::new(cli.memory_max, Arc::new(SystemClock), metrics.clone());
    cache.apply(first.config.clone()).await;
    tracing::info!(version = %first.version, routes = first.config.routes.len(), memory_max = cli.memory_max, "cache policies applied");

    let applier = {
        let cache = cache.clone();
        let mut configs = configs.clone();
        tokio::spawn(async move {
            while configs.changed().await.is_ok() {
                let Some(latest) = configs.borrow_and_update().clone() else {
                    continue;
                };
                cache.apply(latest.config.clone()).await;
                tracing::info!(version = %latest.version, routes = latest.config.routes.len(), "cache policies applied");
            }
        })
    };

    let grpc = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot bind the gRPC address {}", cli.listen))?;
    tracing::info!(addr = %cli.listen, "ExternalProcessor listening");
    let incoming = vrata_common::grpc::incoming(grpc);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ExternalProcessorServer::new(CacheService::new(cache)))
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );
    Ok(running.serve_until_term(grpc, applier, DRAIN).await)
}
