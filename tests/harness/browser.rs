//! The dashboard check in headless Chromium (`tests/browser/dashboard.mjs`, npm
//! `playwright-core` driving Debian's `/usr/bin/chromium`). `scripts/test` installs both.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// One `npm ci` at a time in this process.
static NPM: Mutex<()> = Mutex::new(());

/// `tests/browser` with its npm dependencies installed (`npm ci` when missing).
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    let dir = crate::paths::repo_root().join("tests").join("browser");
    let _guard = NPM.lock().unwrap_or_else(|p| p.into_inner());
    if !dir.join("node_modules").join("playwright-core").is_dir() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run npm ({e}): ./scripts/test installs it"))?;
        anyhow::ensure!(
            out.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let chromium = std::env::var("VRATA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    anyhow::ensure!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: ./scripts/test installs Debian's chromium"
    );
    Ok(dir)
}

/// Where test artifacts (screenshots) go: `target/test-artifacts/`, ignored by git.
pub fn artifacts() -> anyhow::Result<PathBuf> {
    let dir = crate::paths::repo_root()
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
