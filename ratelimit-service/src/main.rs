//! `ratelimit-service` (SPEC §1): Envoy's RateLimitService, configured by xds-server.
//!
//! Start-up: flags are checked (exit 64 when unusable), the admin server binds (`/healthz`,
//! `/readyz`, `/metrics`), the xDS client subscribes to `vrata.config.v1.RateLimitConfig`, and
//! the first accepted version decides the store (`--redis` overrides the file's
//! `rate_limits.store.redis`); only then does the gRPC port open and `/readyz` turn 200. Every
//! later version swaps the limits in at once. A changed `store` is not applied while running:
//! counters cannot move between stores without losing them, so the service says so in its log
//! and keeps the store it started with until restarted.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use vrata_common::exit::INVALID_CONFIG;
use vrata_common::telemetry::{self, LogFormat};
use vrata_common::trace::{TraceArgs, Tracer};
use vrata_common::xds::Accepted;
use vrata_ratelimit::clock::SystemClock;
use vrata_ratelimit::{
    Backend, LimitTable, Metrics, RateLimiter, RedisTarget, ServiceConfig, StoreConfig,
};

/// How long in-flight decisions get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "ratelimit-service",
    version,
    about = "vrata's rate limit service: Envoy's RateLimitService with counters in memory, Redis or Redis Cluster; limits come from xds-server"
)]
struct Cli {
    /// xds-server's gRPC address, where the limits come from.
    #[arg(long, value_name = "URL")]
    xds: String,
    /// gRPC listen address (Envoy's `services.ratelimit`).
    #[arg(long, default_value = "127.0.0.1:18002")]
    listen: SocketAddr,
    /// Redis URL, or several separated by commas (Redis Cluster seeds). Overrides
    /// `rate_limits.store.redis` of the gateway files. Neither: in-memory counters.
    #[arg(long, value_name = "URL[,URL...]")]
    redis: Option<String>,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:19002")]
    admin: SocketAddr,
    /// This instance's xDS node id (shown on xds-server's /admin/status). Default:
    /// `ratelimit-<listen address>`.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    trace: TraceArgs,
}

/// The xDS node cluster every ratelimit-service reports.
const NODE_CLUSTER: &str = "vrata-ratelimit";

fn main() -> ExitCode {
    let cli: Cli = match vrata_common::exit::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Err(e) = telemetry::init(cli.log_format) {
        eprintln!("ratelimit-service: {e:#}");
        return ExitCode::FAILURE;
    }
    let redis_override = match parse_redis(cli.redis.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ratelimit-service: --redis: {e}");
            return ExitCode::from(INVALID_CONFIG as u8);
        }
    };
    if let Err(code) = vrata_common::exit::check_xds_url("ratelimit-service", &cli.xds) {
        return code;
    }
    // Before the runtime: the exporter's blocking HTTP client must not start inside it.
    let tracer = match Tracer::from_args(&cli.trace, "ratelimit-service") {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("ratelimit-service: {e}");
            return ExitCode::from(INVALID_CONFIG as u8);
        }
    };
    let code = vrata_common::exit::run_service(
        "ratelimit-service",
        serve(cli, redis_override, tracer.clone()),
    );
    // Queued spans get one bounded export attempt (outside the runtime, which is gone).
    tracer.shutdown();
    code
}

/// `Some(urls)` when `--redis` was given (checked now, so a typo stops start-up).
fn parse_redis(flag: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(flag) = flag else {
        return Ok(None);
    };
    let urls: Vec<String> = flag
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err("no URL given".into());
    }
    RedisTarget::from_urls(urls.clone()).map_err(|e| e.to_string())?;
    Ok(Some(urls))
}

async fn serve(
    cli: Cli,
    redis_override: Option<Vec<String>>,
    tracer: Arc<Tracer>,
) -> anyhow::Result<u8> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let node_id = cli
        .node_id
        .clone()
        .unwrap_or_else(|| format!("ratelimit-{}", cli.listen));
    let who = vrata_common::service::Identity {
        admin: cli.admin,
        xds: &cli.xds,
        node_id,
        node_cluster: NODE_CLUSTER,
        user_agent: "vrata-ratelimit",
    };
    let Some(vrata_common::service::Started {
        first,
        configs,
        running,
    }) = vrata_common::service::start(who, registry, ServiceConfig::from_resources).await?
    else {
        return Ok(0);
    };
    let stop_rx = running.stop_rx();
    let stopped = vrata_common::shutdown::stopped;

    let store = store_config(&first.config, redis_override.as_deref())?;
    tracing::info!(redis = ?store.redis, on_error = ?store.on_error, "counter store");
    let backend = Backend::start(&store, Arc::new(SystemClock), &metrics).await;
    let table = Arc::new(LimitTable::new(metrics.clone()));
    table.apply(&first.config.limits);
    tracing::info!(version = %first.version, "limits applied");
    let started_with = first.config.store.clone();

    let applier = tokio::spawn(apply_updates(
        configs.clone(),
        table.clone(),
        started_with,
        redis_override.is_some(),
    ));

    let grpc = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot bind the gRPC address {}", cli.listen))?;
    tracing::info!(addr = %cli.listen, "RateLimitService listening");
    let service = RateLimitServiceServer::new(
        RateLimiter::new(table, backend, metrics.clone()).with_tracer(tracer),
    );
    let incoming = vrata_common::grpc::incoming(grpc);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );
    Ok(running.serve_until_term(grpc, applier, DRAIN).await)
}

/// The store to start with: `--redis` over the file's `rate_limits.store.redis`.
fn store_config(
    config: &ServiceConfig,
    redis_override: Option<&[String]>,
) -> anyhow::Result<StoreConfig> {
    let urls = redis_override
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| config.store.redis.clone());
    let redis = RedisTarget::from_urls(urls).context("rate_limits.store.redis")?;
    Ok(StoreConfig {
        redis,
        on_error: config.store.on_error,
        ..StoreConfig::default()
    })
}

/// Applies every new version's limits; a store change is reported, not applied (see the
/// module documentation).
async fn apply_updates(
    mut configs: watch::Receiver<vrata_common::xds::Latest<ServiceConfig>>,
    table: Arc<LimitTable>,
    started_with: vrata_ratelimit::StoreSettings,
    redis_overridden: bool,
) {
    while configs.changed().await.is_ok() {
        let Some(latest): Option<Arc<Accepted<ServiceConfig>>> =
            configs.borrow_and_update().clone()
        else {
            continue;
        };
        table.apply(&latest.config.limits);
        tracing::info!(version = %latest.version, "limits applied");
        let store = &latest.config.store;
        let redis_changed = !redis_overridden && store.redis != started_with.redis;
        if redis_changed || store.on_error != started_with.on_error {
            tracing::warn!(
                running_redis = ?started_with.redis,
                running_on_error = ?started_with.on_error,
                configured_redis = ?store.redis,
                configured_on_error = ?store.on_error,
                "rate_limits.store changed in the gateway files: restart ratelimit-service to use it (the running store is kept)"
            );
        }
    }
}
