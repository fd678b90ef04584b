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
