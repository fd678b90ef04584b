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
