//! The start-up every config-driven service shares (aggregator, ratelimit-service,
//! response-cache): the admin endpoint up but not ready, an ADS client to xds-server subscribed to
//! the service's one resource type, then the first accepted config — or SIGTERM before it, which
//! ends the process cleanly with nothing to drain.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Readiness;
use crate::xds::{Accepted, Latest, XdsClient, XdsClientConfig};

/// Who the service is to xds-server, and where its admin endpoint listens.
pub struct Identity<'a> {
    pub admin: SocketAddr,
    pub xds: &'a str,
    pub node_id: String,
    pub node_cluster: &'a str,
    pub user_agent: &'a str,
}

/// A service that has its first config, with what it needs to run and to stop.
pub struct Started<C> {
    pub first: Arc<Accepted<C>>,
    /// Later versions (`changed()` fires for the ones after `first`).
    pub configs: watch::Receiver<Latest<C>>,
    pub running: Running,
}

/// The parts every service runs and stops the same way: readiness, the stop signal, the admin
/// server and the xDS client, and SIGTERM.
pub struct Running {
    /// Not ready yet: set by [`Running::serve_until_term`].
    ready: Readiness,
    /// `true` stops the admin server, the xDS client and whatever waits on `stopped()`.
    stop_tx: watch::Sender<bool>,
    admin: JoinHandle<std::io::Result<()>>,
    xds: JoinHandle<()>,
    /// SIGTERM or SIGINT.
    term: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Running {
    /// The stop signal, for the service's own server (`shutdown::stopped(rx)`).
    pub fn stop_rx(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Reports ready, serves until SIGTERM, then reports not ready, stops everything, aborts
    /// `applier` (the task applying later configs) and drains `server` and the rest within
    /// `drain`. Returns the exit code.
    pub async fn serve_until_term<E: std::fmt::Debug>(
        self,
        server: JoinHandle<Result<(), E>>,
        applier: JoinHandle<()>,
        drain: std::time::Duration,
    ) -> u8 {
        self.ready.set(true);
        self.term.await;
        self.ready.set(false);
        let _ = self.stop_tx.send(true);
        applier.abort();
        crate::shutdown::drain(drain, server, self.admin, vec![self.xds]).await
    }
}

/// Starts the admin endpoint and the xDS client and waits for the first config. `Ok(None)`:
/// SIGTERM came first, everything is already stopped.
pub async fn start<T, C, E>(
    who: Identity<'_>,
    registry: Registry,
    convert: impl FnMut(Vec<T>) -> Result<C, E> + Send + 'static,
) -> anyhow::Result<Option<Started<C>>>
where
    T: prost::Message + prost::Name + Default + 'static,
    C: Send + Sync + 'static,
    E: std::fmt::Display,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = crate::shutdown::stopped;

    let ready = Readiness::default();
    let admin_app = crate::admin::router(ready.clone(), Arc::new(registry));
    let admin = crate::admin::bind(who.admin, admin_app, stopped(stop_rx.clone())).await?;
    let admin = tokio::spawn(admin);

    let mut client = XdsClient::new(XdsClientConfig::new(
        who.xds.to_owned(),
        who.node_id.clone(),
        who.node_cluster,
        who.user_agent,
    ));
    let mut configs = client.subscribe::<T, C, E>(convert);
    let xds = tokio::spawn(client.run(stopped(stop_rx)));
    tracing::info!(xds = %who.xds, node = %who.node_id, "waiting for the first config from xds-server");

    let mut term: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(crate::shutdown::signal());
    let first = tokio::select! {
        first = configs.wait_for(Option::is_some) => first.ok().and_then(|c| c.clone()),
        () = &mut term => None,
    };
    let Some(first) = first else {
        // SIGTERM before any config: nothing to drain.
        let _ = stop_tx.send(true);
        let _ = admin.await;
        xds.abort();
        return Ok(None);
    };
    Ok(Some(Started {
        first,
        configs,
        running: Running {
            ready,
            stop_tx,
            admin,
            xds,
            term,
        },
    }))
}
