//! `ext-authz` (SPEC §1): Envoy's external authorization service, configured by xds-server.
//!
//! Start-up: flags are checked (exit 64 when unusable), the admin server binds (`/healthz`,
//! `/readyz`, `/metrics`), the xDS client subscribes to `vrata.config.v1.AuthzPolicy`, and the
//! gRPC port opens at once: until the first policy arrives, Checks fail closed (unknown route,
//! 500) and `/readyz` says why. Every accepted version is applied with `Authz::apply`; one it
//! cannot compile is NACKed by the xDS client and the previous policy stays. Ready = a policy
//! is applied and every provider's keys were fetched once; `/readyz` names the providers not
//! reached yet. SIGTERM: not ready, in-flight Checks drain, exit 0.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use vrata_common::admin::Readiness;
use vrata_common::exit::INVALID_CONFIG;
use vrata_common::telemetry::{self, LogFormat};
use vrata_common::trace::{TraceArgs, Tracer};
use vrata_common::xds::{Latest, XdsClient, XdsClientConfig};
use vrata_ext_authz::{Authz, CheckService, Metrics, Options, PolicySpec, xds_config};
use vrata_proto::vrata::config::v1::AuthzPolicy;

/// How long in-flight Checks get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);
/// How often due JWKS refreshes run and readiness is re-evaluated: a provider coming back is
/// noticed within a second.
const REFRESH_TICK: Duration = Duration::from_secs(1);
/// The xDS node cluster every ext-authz reports.
const NODE_CLUSTER: &str = "vrata-ext-authz";

#[derive(Debug, Parser)]
#[command(
    name = "ext-authz",
    version,
    about = "vrata's ext-authz: Envoy's external authorization service validating OIDC/JWT bearer tokens per route; policies come from xds-server"
)]
struct Cli {
    /// xds-server's gRPC address, where the policies come from.
    #[arg(long, value_name = "URL")]
    xds: String,
    /// gRPC listen address (Envoy's `services.ext_authz`).
    #[arg(long, default_value = "127.0.0.1:18001")]
    listen: SocketAddr,
    /// Admin HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:19001")]
    admin: SocketAddr,
    /// This instance's xDS node id (shown on xds-server's /admin/status). Default:
    /// `ext-authz-<listen address>`.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    trace: TraceArgs,
}

fn main() -> ExitCode {
    let cli: Cli = match vrata_common::exit::parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Err(e) = telemetry::init(cli.log_format) {
        eprintln!("ext-authz: {e:#}");
        return ExitCode::FAILURE;
    }
    if let Err(code) = vrata_common::exit::check_xds_url("ext-authz", &cli.xds) {
        return code;
    }
    // Before the runtime: the exporter's blocking HTTP client must not start inside it.
    let tracer = match Tracer::from_args(&cli.trace, "ext-authz") {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("ext-authz: {e}");
            return ExitCode::from(INVALID_CONFIG as u8);
        }
    };
    let code = vrata_common::exit::run_service("ext-authz", serve(cli, tracer.clone()));
    // Queued spans get one bounded export attempt (outside the runtime, which is gone).
    tracer.shutdown();
    code
}

async fn serve(cli: Cli, tracer: Arc<Tracer>) -> anyhow::Result<u8> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let authz =
        Arc::new(Authz::new(Options::default(), metrics).context("cannot start the authorizer")?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = vrata_common::shutdown::stopped;

    let ready = Readiness::default();
    ready.set_with_reason(false, "no policy from xds-server yet");
    let admin_app = vrata_common::admin::router(ready.clone(), Arc::new(registry));
    let admin = vrata_common::admin::bind(cli.admin, admin_app, stopped(stop_rx.clone())).await?;
    let admin = tokio::spawn(admin);

    let grpc = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot bind the gRPC address {}", cli.listen))?;

    let node_id = cli
        .node_id
        .clone()
        .unwrap_or_else(|| format!("ext-authz-{}", cli.listen));
    let mut client = XdsClient::new(XdsClientConfig::new(
        cli.xds.clone(),
        node_id.clone(),
        NODE_CLUSTER,
        "vrata-ext-authz",
    ));
    let policies = client.subscribe::<AuthzPolicy, _, _>(xds_config::from_resources);
    let xds = tokio::spawn(client.run(stopped(stop_rx.clone())));
    tracing::info!(xds = %cli.xds, node = %node_id, "waiting for policies from xds-server");

    let applier = tokio::spawn(apply_updates(policies, authz.clone()));
    let refresher = tokio::spawn({
        let authz = authz.clone();
        let ready = ready.clone();
        let authz_for_reason = authz.clone();
        authz.run_refresher(REFRESH_TICK, move |is_ready| {
            ready.set_with_reason(is_ready, not_ready_reason(&authz_for_reason));
        })
    });

    tracing::info!(addr = %cli.listen, "Authorization service listening");
    let incoming = vrata_common::grpc::incoming(grpc);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(
                CheckService::new(authz.clone())
                    .with_tracer(tracer)
                    .into_server(),
            )
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );

    vrata_common::shutdown::signal().await;
    ready.set_with_reason(false, "shutting down");
    let _ = stop_tx.send(true);
    applier.abort();
    refresher.abort();
    Ok(vrata_common::shutdown::drain(DRAIN, grpc, admin, vec![xds]).await)
}

/// What `/readyz` says while not ready.
fn not_ready_reason(authz: &Authz) -> String {
    if authz.version().is_none() {
        return "no policy from xds-server yet".to_owned();
    }
    let unreached = authz.unreached_providers();
    if unreached.is_empty() {
        String::new()
    } else {
        format!("keys of provider(s) {} never fetched", unreached.join(", "))
    }
}

/// Applies every accepted version. The xDS client has already compiled it (a version that does
/// not compile is NACKed there), so `apply` failing here is a bug worth an error log, and the
/// previous policy stays.
async fn apply_updates(mut policies: watch::Receiver<Latest<PolicySpec>>, authz: Arc<Authz>) {
    loop {
        let latest = policies.borrow_and_update().clone();
        if let Some(latest) = latest {
            let mut spec = latest.config.clone();
            spec.version.clone_from(&latest.version);
            if let Err(e) = authz.apply(&spec) {
                tracing::error!(version = %latest.version, error = %e, "policy version not applied");
            }
        }
        if policies.changed().await.is_err() {
            return;
        }
    }
}
