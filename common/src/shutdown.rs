//! Graceful shutdown: SIGTERM (containers, systemd) and SIGINT (Ctrl-C) both start draining.

/// Resolves on the first SIGTERM or SIGINT. If a handler cannot be installed (no signal support
/// on the platform) the error is logged and that signal is simply not awaited.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, draining"),
        () = term => tracing::info!("SIGTERM received, draining"),
    }
}

/// After the stop signal: waits up to `within` for the gRPC and admin servers (and `others`,
/// e.g. the xDS client) to finish, and returns the process exit code — 0 when both servers
/// ended cleanly or the wait timed out (the process exits anyway), 1 when one failed.
pub async fn drain<G, A>(
    within: std::time::Duration,
    grpc: tokio::task::JoinHandle<Result<(), G>>,
    admin: tokio::task::JoinHandle<Result<(), A>>,
    others: Vec<tokio::task::JoinHandle<()>>,
) -> u8
where
    G: std::fmt::Debug,
    A: std::fmt::Debug,
{
    let drained = tokio::time::timeout(within, async {
        let g = grpc.await;
        let a = admin.await;
        for other in others {
            // Helper tasks have nothing to report; a panic there was already logged.
            let _ = other.await;
        }
        (g, a)
    })
    .await;
    match drained {
        Ok((Ok(Ok(())), Ok(Ok(())))) => {
            tracing::info!("drained, exiting");
            0
        }
        Ok((g, a)) => {
            tracing::error!(grpc = ?g, admin = ?a, "error while draining");
            1
        }
        Err(_) => {
            tracing::warn!("drain timed out; exiting anyway");
            0
        }
    }
}

/// Resolves once `true` is sent on the stop channel, or its sender is dropped (which also means
/// stop): the shutdown future handed to each server of a binary.
pub async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    // Err: the sender is gone.
    let _ = rx.wait_for(|s| *s).await;
}
