//! `xds-server`: serve, `check`, `render`, `schema` (SPEC §1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::MetricsServiceServer;
use prometheus_client::registry::Registry;
use vrata_common::admin::Readiness;
use vrata_common::exit::INVALID_CONFIG;
use vrata_common::telemetry::{self, LogFormat};
use vrata_xds::ads::Ads;
use vrata_xds::control::{ControlPlane, Outcome};
use vrata_xds::metrics::Metrics;
use vrata_xds::{config, translate, watch};

/// How long open ADS streams and admin requests get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "xds-server",
    version,
    about = "vrata's control plane: turns gateway files into Envoy configuration and pushes every change over ADS",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Gateway config: a YAML file, or a folder whose *.yaml files are merged. Watched.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// gRPC (ADS) listen address.
    #[arg(long, default_value = "127.0.0.1:18000")]
    listen: SocketAddr,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics, /admin/status, /admin/config, /).
    #[arg(long, default_value = "127.0.0.1:19000")]
    admin: SocketAddr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate without serving: print every problem as FILE:LINE:COL: message, exit 64 if any.
    Check {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Print the Envoy resources that would be pushed, as YAML.
    Render {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The node to render for. Every Envoy node currently receives the same resources;
        /// the id is printed in the output header.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
    },
    /// Print the JSON Schema of the gateway config file.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format) {
        eprintln!("xds-server: {e:#}");
        return ExitCode::FAILURE;
    }
    let code = match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Render { config, node }) => render(&config, node.as_deref()),
        Some(Command::Schema) => match serde_json::to_string_pretty(&config::json_schema()) {
            Ok(s) => {
                println!("{s}");
                0
            }
            Err(e) => {
                eprintln!("xds-server: cannot print the schema: {e}");
                1
            }
        },
        None => match cli.serve.config.clone() {
            None => {
                eprintln!("xds-server: --config PATH is required (see --help)");
                2
            }
            Some(path) => run_server(path, &cli.serve),
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn check(path: &std::path::Path) -> i32 {
    match config::load(path) {
        Ok(loaded) => {
            // Warnings (an expired certificate) do not make the config invalid.
            for w in &loaded.warnings {
                println!("{}", w.warning());
            }
            println!(
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                path.display(),
                loaded.gateway.listeners.len(),
                loaded.gateway.upstreams.len(),
                loaded.gateway.routes.len()
            );
            0
        }
        Err(diags) => {
            for d in &diags {
                println!("{d}");
            }
            eprintln!("{} problem(s) found", diags.len());
            INVALID_CONFIG
        }
    }
}

fn render(path: &std::path::Path, node: Option<&str>) -> i32 {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}", w.warning());
            }
            let resources = translate::translate(&loaded.gateway);
            match translate::render_yaml(&resources) {
                Ok(yaml) => {
                    if let Some(node) = node {
                        println!("# node: {node}");
                    }
                    print!("{yaml}");
                    0
                }
                Err(e) => {
                    eprintln!("xds-server: cannot render the resources: {e}");
                    1
                }
            }
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            INVALID_CONFIG
        }
    }
}

fn run_server(path: PathBuf, args: &ServeArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xds-server: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(path, args)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "xds-server failed");
            1
        }
    }
}

async fn serve(path: PathBuf, args: &ServeArgs) -> anyhow::Result<i32> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let cp = Arc::new(ControlPlane::new(path.clone(), metrics.clone()));

    // An invalid config at start exits 64 before any port is bound (SPEC §1).
    if let Outcome::Rejected { problems } = cp.reload() {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("xds-server: invalid config, not starting");
        return Ok(INVALID_CONFIG);
    }

    let grpc = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot bind the gRPC address {}", args.listen))?;
    tracing::info!(addr = %args.listen, config = %path.display(), "ADS server listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = vrata_common::shutdown::stopped;

    let ready = Readiness::default();
    let app = vrata_common::admin::router(ready.clone(), Arc::new(registry))
        .merge(vrata_xds::admin::router(cp.clone()));
    let admin = vrata_common::admin::bind(args.admin, app, stopped(stop_rx.clone())).await?;
    let admin = tokio::spawn(admin);

    let _watch = watch::spawn(cp.clone(), watch::DEBOUNCE)
        .with_context(|| format!("cannot watch {}", path.display()))?;

    let ads = AggregatedDiscoveryServiceServer::new(Ads::new(
        cp.snapshots(),
        cp.nodes.clone(),
        metrics.clone(),
    ))
    .max_decoding_message_size(64 * 1024 * 1024);
    let incoming = vrata_common::grpc::incoming(grpc);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(ads)
            .add_service(
                MetricsServiceServer::new(vrata_xds::sink::Sink::new(cp.fleet.clone()))
                    .max_decoding_message_size(vrata_xds::sink::MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );
    ready.set(true);

    vrata_common::shutdown::signal().await;
    ready.set(false);
    cp.close();
    let _ = stop_tx.send(true);
    Ok(i32::from(
        vrata_common::shutdown::drain(DRAIN, grpc, admin, Vec::new()).await,
    ))
}
