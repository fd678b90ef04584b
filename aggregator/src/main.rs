//! `aggregator` (SPEC §1 pattern): the HTTP service behind Envoy's aggregate routes, configured
//! by xds-server.
//!
//! Start-up: flags are checked (exit 64 when unusable), the admin server binds (`/healthz`,
//! `/readyz`, `/metrics`), the xDS client subscribes to `vrata.config.v1.AggregatorConfig`;
//! after the first accepted version the HTTP port opens and `/readyz` turns 200. Every later
//! version swaps the plans (and the loopback address) in at once. SIGTERM drains.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use axum::serve::ListenerExt;
use clap::Parser;
use prometheus_client::registry::Registry;
use vrata_aggregator::client::{LoopbackClient, Target};
use vrata_aggregator::server::{App, Limits};
use vrata_aggregator::{Metrics, Plans};
use vrata_common::exit::INVALID_CONFIG;
use vrata_common::telemetry::{self, LogFormat};

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);
/// The xDS node cluster every aggregator reports.
const NODE_CLUSTER: &str = "vrata-aggregator";

#[derive(Debug, Parser)]
#[command(
    name = "aggregator",
    version,
    about = "vrata's aggregator: fans a request out to several backends through Envoy and merges their JSON answers; definitions come from xds-server"
)]
struct Cli {
    /// xds-server's gRPC address, where the definitions come from.
    #[arg(long, value_name = "URL")]
    xds: String,
    /// HTTP listen address (Envoy's `services.aggregator`).
    #[arg(long, default_value = "127.0.0.1:18003")]
    listen: SocketAddr,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:19003")]
    admin: SocketAddr,
    /// Where to reach Envoy's loopback listener, `HOST:PORT`, instead of the
    /// `services.aggregator_loopback` address from the config (containers: `envoy:18004`).
    #[arg(long, value_name = "HOST:PORT")]
    envoy: Option<String>,
    /// Largest backend answer read (bytes, or with KiB/MiB/GiB); larger is a failure of that
    /// backend.
    #[arg(long, default_value = "2MiB", value_parser = vrata_common::size::parse_usize)]
    max_backend_body: usize,
    /// Largest merged answer sent; larger is a 502.
    #[arg(long, default_value = "8MiB", value_parser = vrata_common::size::parse_usize)]
    max_response_body: usize,
    /// Largest request body passed through on a shaped plain route; larger is a 413.
    #[arg(long, default_value = "8MiB", value_parser = vrata_common::size::parse_usize)]
    max_request_body: usize,
    /// This instance's xDS node id (shown on xds-server's /admin/status). Default:
    /// `aggregator-<listen address>`.
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
        eprintln!("aggregator: {e:#}");
        return ExitCode::FAILURE;
    }
    if let Err(code) = vrata_common::exit::check_xds_url("aggregator", &cli.xds) {
        return code;
    }
    let envoy = match cli.envoy.as_deref().map(resolve) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!("aggregator: --envoy: {e}");
            return ExitCode::from(INVALID_CONFIG as u8);
        }
    };
    vrata_common::exit::run_service("aggregator", serve(cli, envoy))
}

/// `HOST:PORT` to one address, resolved once at start.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

async fn serve(cli: Cli, envoy: Option<SocketAddr>) -> anyhow::Result<u8> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let node_id = cli
        .node_id
        .clone()
        .unwrap_or_else(|| format!("aggregator-{}", cli.listen));
    let who = vrata_common::service::Identity {
        admin: cli.admin,
        xds: &cli.xds,
        node_id,
        node_cluster: NODE_CLUSTER,
        user_agent: "vrata-aggregator",
    };
    let Some(vrata_common::service::Started {
        first,
        mut configs,
        running,
    }) = vrata_common::service::start(who, registry, Plans::from_resources).await?
    else {
        return Ok(0);
    };
    let stop_rx = running.stop_rx();
    let stopped = vrata_common::shutdown::stopped;

    let target = Arc::new(ArcSwapOption::empty());
    let plans = Arc::new(ArcSwap::from_pointee(first.config.clone()));
    apply(&first.config, &target, envoy);
    tracing::info!(version = %first.version, routes = first.config.routes.len(), "definitions applied");

    let fetch = LoopbackClient::new(target.clone(), cli.max_backend_body)
        .context("cannot build the HTTP client")?;
    let app = Arc::new(App {
        plans: plans.clone(),
        fetch: Arc::new(fetch),
        metrics: metrics.clone(),
        limits: Limits {
            request_body: cli.max_request_body,
            response_body: cli.max_response_body,
        },
    });
    let applier = tokio::spawn(async move {
        while configs.changed().await.is_ok() {
            let Some(latest) = configs.borrow_and_update().clone() else {
                continue;
            };
            apply(&latest.config, &target, envoy);
            plans.store(Arc::new(latest.config.clone()));
            tracing::info!(version = %latest.version, routes = latest.config.routes.len(), "definitions applied");
        }
    });

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot bind the HTTP address {}", cli.listen))?;
    tracing::info!(addr = %cli.listen, "aggregator listening");
    // Small answers on kept-alive connections from Envoy: never wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let http = tokio::spawn(
        axum::serve(listener, vrata_aggregator::server::router(app))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    Ok(running.serve_until_term(http, applier, DRAIN).await)
}

/// Points the client at the loopback listener of `plans` (or `--envoy`).
fn apply(plans: &Plans, target: &ArcSwapOption<Target>, envoy: Option<SocketAddr>) {
    let next = match (plans.loopback, &plans.upstream_header) {
        (Some(loopback), Some(header)) => Some(Arc::new(Target {
            loopback: envoy.unwrap_or(loopback),
            upstream_header: header.clone(),
        })),
        _ => None,
    };
    target.store(next);
}
