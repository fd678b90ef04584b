//! Process exit codes shared by every vrata binary.

/// The configuration is invalid (sysexits.h `EX_USAGE`; SPEC §1: "exits 64").
pub const INVALID_CONFIG: i32 = 64;

/// The process's command line as `C`, or the exit code to end with: help and version print and
/// exit 0, bad flags print the usage error and exit [`INVALID_CONFIG`].
pub fn parse_cli<C: clap::Parser>() -> Result<C, std::process::ExitCode> {
    C::try_parse().map_err(|e| {
        // Printing to a closed stdout/stderr has nowhere to report to.
        let _ = e.print();
        if e.use_stderr() {
            std::process::ExitCode::from(INVALID_CONFIG as u8)
        } else {
            std::process::ExitCode::SUCCESS
        }
    })
}

/// `--xds` must be an `http://` or `https://` URL; else the message is printed as `binary:
/// ...` and the exit code is [`INVALID_CONFIG`].
pub fn check_xds_url(binary: &str, url: &str) -> Result<(), std::process::ExitCode> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        eprintln!("{binary}: --xds {url:?}: expected http://HOST:PORT");
        Err(std::process::ExitCode::from(INVALID_CONFIG as u8))
    }
}

/// Runs a service's `serve` on a multi-threaded tokio runtime (dropped before this returns) and
/// turns the outcome into the process's exit code: `serve`'s own, or 1 when it fails (logged
/// as `<binary> failed`) or when the runtime cannot start.
pub fn run_service(
    binary: &str,
    serve: impl std::future::Future<Output = anyhow::Result<u8>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{binary} failed");
            std::process::ExitCode::FAILURE
        }
    }
}
