//! Hot reload of files that change the ways real deployments change them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vrata_xds::control::{ControlPlane, Outcome};
use vrata_xds::metrics::Metrics;
use vrata_xds::watch;

fn config(prefix: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: \"127.0.0.1:8080\"\nupstreams:\n  a: {{endpoints: [\"127.0.0.1:9000\"]}}\nroutes:\n  - name: r\n    match: {{path_prefix: {prefix}}}\n    upstream: a\n"
    )
}

async fn wait_for_new_version(cp: &ControlPlane, old: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = cp.current().map(|c| c.version).unwrap_or_default();
        if now != old {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Kubernetes ConfigMap volume: `gateway.yaml -> ..data/gateway.yaml`,
/// `..data -> ..<timestamp>/`; an update writes a new timestamped folder and swaps `..data`.
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let write_version = |name: &str, prefix: &str| {
        std::fs::create_dir(d.join(name)).expect("mkdir");
        std::fs::write(d.join(name).join("gateway.yaml"), config(prefix)).expect("write");
    };
    write_version("..2026_11_26_a", "/v1");
    std::os::unix::fs::symlink("..2026_11_26_a", d.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/gateway.yaml", d.join("gateway.yaml")).expect("symlink");

    let cp = Arc::new(ControlPlane::new(
        d.join("gateway.yaml"),
        Metrics::default(),
    ));
    assert!(matches!(cp.reload(), Outcome::Applied { .. }));
    let first = cp.current().expect("loaded").version;
    let _watch = watch::spawn(cp.clone(), watch::DEBOUNCE).expect("watch");

    write_version("..2026_11_26_b", "/v2");
    std::os::unix::fs::symlink("..2026_11_26_b", d.join("..data_tmp")).expect("symlink");
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");

    let second = wait_for_new_version(&cp, &first).await;
    assert_ne!(first, second);
    let doc = cp.current().expect("loaded").document.to_json();
    assert!(doc.to_string().contains("/v2"), "{doc}");
}

/// An editor's save: write a temporary file, rename it over the config.
#[tokio::test]
async fn an_editor_style_rename_is_reloaded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, config("/v1")).expect("write");
    let metrics = Metrics::default();
    let cp = Arc::new(ControlPlane::new(file.clone(), metrics.clone()));
    assert!(matches!(cp.reload(), Outcome::Applied { .. }));
    let first = cp.current().expect("loaded").version;
    let _watch = watch::spawn(cp.clone(), watch::DEBOUNCE).expect("watch");

    let tmp = dir.path().join(".gateway.yaml.swp");
    std::fs::write(&tmp, config("/v2")).expect("write");
    std::fs::rename(&tmp, Path::new(&file)).expect("rename");
    wait_for_new_version(&cp, &first).await;
    // The burst of events (write, rename) became one reload: generation 2.
    assert_eq!(cp.current().expect("loaded").generation, 2);
}
