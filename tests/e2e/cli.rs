//! The xds-server command line (SPEC §1): check, render, start-up failures, SIGTERM.

use std::process::Command;
use std::time::Duration;

use vrata_e2e::ports::free_port;
use vrata_e2e::xds::binary;

const THREE_MISTAKES: &str = r#"listeners:
  - name: public
    address: "127.0.0.1:8080"
upstreams:
  orders:
    endpoints: ["127.0.0.1:9000"]
    conect_timeout: 1s
routes:
  - name: a
    upstream: orders
    timeout: 5 seconds
  - name: b
    upstream: billing
"#;

#[test]
fn check_prints_every_problem_with_its_position_and_exits_64() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, THREE_MISTAKES)?;
    let out = Command::new(binary("xds-server"))
        .args(["check", "--config"])
        .arg(&file)
        .output()?;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stdout = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let f = file.display();
    assert!(
        lines[0].starts_with(&format!("{f}:7:5: ")) && lines[0].contains("conect_timeout"),
        "{stdout}"
    );
    assert!(lines[1].starts_with(&format!("{f}:11:14: ")), "{stdout}");
    assert!(
        lines[2].starts_with(&format!("{f}:13:15: ")) && lines[2].contains("billing"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn check_accepts_every_example() -> anyhow::Result<()> {
    let examples = vrata_e2e::paths::repo_root().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(binary("xds-server"))
                .args(["check", "--config"])
                .arg(&path)
                .output()?;
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stdout)
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no examples found");
    Ok(())
}

#[test]
fn render_prints_the_envoy_resources_as_yaml() -> anyhow::Result<()> {
    let quickstart = vrata_e2e::paths::repo_root().join("examples/quickstart.yaml");
    let out = Command::new(binary("xds-server"))
        .args(["render", "--node", "edge-1", "--config"])
        .arg(&quickstart)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout)?;
    assert!(yaml.starts_with("# node: edge-1"), "{yaml}");
    for needle in [
        "clusters:",
        "listeners:",
        "route_configs:",
        "name: orders",
        "name: public",
        "orders-read",
    ] {
        assert!(yaml.contains(needle), "render output lacks {needle:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_invalid_config_exits_64_before_binding_ports() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, THREE_MISTAKES)?;
    let (grpc, admin) = (free_port(), free_port());
    let out = Command::new(binary("xds-server"))
        .arg("--config")
        .arg(&file)
        .args([
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("billing"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_and_exits_0() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let quickstart = vrata_e2e::paths::repo_root().join("examples/quickstart.yaml");
    let mut xds = vrata_e2e::XdsServer::start(&quickstart, dir.path()).await?;
    // An open ADS stream must not keep the process alive.
    let _envoy = vrata_e2e::Envoy::start(
        "drain-test",
        xds.grpc_port,
        dir.path(),
        vrata_e2e::Ads::Delta,
    )
    .await?;
    xds.wait_in_sync(1, Duration::from_secs(20)).await?;
    let status = xds.proc.terminate(Duration::from_secs(10)).await?;
    assert_eq!(status.code(), Some(0), "{}", xds.proc.logs());
    Ok(())
}

#[test]
fn version_and_help() -> anyhow::Result<()> {
    let v = Command::new(binary("xds-server"))
        .arg("--version")
        .output()?;
    assert!(String::from_utf8(v.stdout)?.starts_with("xds-server "));
    let h = Command::new(binary("xds-server")).arg("--help").output()?;
    let help = String::from_utf8(h.stdout)?;
    for word in [
        "check",
        "render",
        "--config",
        "--listen",
        "--admin",
        "--log-format",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    Ok(())
}

/// The README's first command: `scripts/up --check` brings the quickstart up (Envoy, xds-server,
/// demo upstreams on their fixed local ports), sends a request through the gateway, and stops.
#[test]
fn scripts_up_serves_the_quickstart() -> anyhow::Result<()> {
    let root = vrata_e2e::paths::repo_root();
    let _ = binary("xds-server"); // built once, like every test here
    // scripts/up runs `cargo build --bins` itself: with the environment the harness builds in.
    let out = vrata_e2e::xds::without_package_env(&mut Command::new("bash"))
        .arg(root.join("scripts/up"))
        .arg("--check")
        .current_dir(&root)
        .env("ENVOY_BIN", vrata_e2e::paths::envoy_bin())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/up --check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\"path\":\"/orders/42\""), "{stdout}");
    Ok(())
}
