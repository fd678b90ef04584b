//! The bootstrap files in `envoy/` are accepted by the real Envoy, without warnings.

mod golden;

use std::path::PathBuf;

fn envoy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("envoy")
}

#[test]
fn local_bootstrap_is_valid() {
    golden::envoy_validate_file(&envoy_dir().join("bootstrap.yaml"));
}

#[test]
fn compose_bootstrap_is_valid() {
    golden::envoy_validate_file(&envoy_dir().join("bootstrap-compose.yaml"));
}
