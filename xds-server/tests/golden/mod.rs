//! Golden-file helpers for translation tests: `check_golden` compares `render_yaml` output with
//! `tests/golden/<name>.yaml` (`VRATA_BLESS=1` rewrites the file instead), `envoy_validate` runs
//! the real Envoy in `--mode validate` on the resources as a static bootstrap.
//!
//! Use from a test crate with `mod golden;`.

#![allow(dead_code)] // each test crate uses a different subset

pub mod models;

use std::path::{Path, PathBuf};
use std::process::Command;

use vrata_xds::translate::{Resources, render_yaml, static_bootstrap};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

/// Compares the rendered resources with `tests/golden/<name>.yaml`.
pub fn check_golden(name: &str, resources: &Resources) {
    let rendered = render_yaml(resources).expect("resources render");
    let path = golden_dir().join(format!("{name}.yaml"));
    if std::env::var_os("VRATA_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &rendered)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with VRATA_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != rendered {
        panic!(
            "{} differs from the rendered resources (VRATA_BLESS=1 rewrites it after review):\n{}",
            path.display(),
            first_difference(&expected, &rendered)
        );
    }
}

/// The first differing line, with a little context, for a readable failure.
fn first_difference(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let at = expected
        .iter()
        .zip(&actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let from = at.saturating_sub(3);
    let mut out = String::new();
    for (i, line) in expected.iter().enumerate().skip(from).take(at + 4 - from) {
        out.push_str(&format!("{:>5} - {line}\n", i + 1));
    }
    for (i, line) in actual.iter().enumerate().skip(from).take(at + 4 - from) {
        out.push_str(&format!("{:>5} + {line}\n", i + 1));
    }
    out
}

/// Runs `envoy --mode validate` on the resources as a static bootstrap; panics with Envoy's
/// output when Envoy rejects them or warns (deprecated fields included).
pub fn envoy_validate(name: &str, resources: &Resources) {
    let bootstrap = static_bootstrap(resources, 0).expect("bootstrap renders");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{name}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&bootstrap).expect("JSON serializes"),
    )
    .expect("bootstrap written");
    envoy_validate_file(&path);
}

/// Runs `envoy --mode validate` on a bootstrap file; panics with Envoy's output when Envoy
/// rejects it or warns.
pub fn envoy_validate_file(path: &Path) {
    let envoy = vrata_e2e::paths::envoy_bin();
    let output = Command::new(&envoy)
        .arg("--mode")
        .arg("validate")
        .arg("--config-path")
        .arg(path)
        .arg("--log-level")
        .arg("warning")
        .arg("--disable-hot-restart")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", envoy.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Envoy rejects {}:\n{stdout}\n{stderr}\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains("[warning]") || l.contains("[error]"))
        .collect();
    assert!(
        warnings.is_empty(),
        "Envoy warns about {}:\n{}",
        path.display(),
        warnings.join("\n")
    );
}
