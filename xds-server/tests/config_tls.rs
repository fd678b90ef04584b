//! Certificate files through `config::load` and `xds-server check`: every broken file is a
//! FILE:LINE:COL problem at the key naming it, an expired certificate is a warning, and private
//! keys appear in no output.

use std::path::Path;
use std::process::Command;

use vrata_e2e::pki::Ca;
use vrata_xds::config::{self, Diagnostic};

fn no_env(_: &str) -> Option<String> {
    None
}

fn short(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

#[test]
fn every_broken_certificate_file_is_reported_at_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new("test CA").expect("ca");
    let good = ca.server(&["a.test"]).expect("leaf");
    let other = ca.server(&["b.test"]).expect("leaf");
    write(d, "good.pem", &good.chain_pem);
    write(d, "good.key", &good.key_pem);
    write(d, "other.key", &other.key_pem);
    write(d, "garbage.pem", "this is not a certificate\n");
    write(d, "reversed.pem", &format!("{}{}", ca.pem, good.cert_pem));
    write(d, "ca.pem", &ca.pem);
    let yaml = r#"listeners:
  - name: mismatch
    address: "127.0.0.1:8441"
    tls: {certificates: [{cert: good.pem, key: other.key}]}
  - name: garbage
    address: "127.0.0.1:8442"
    tls: {certificates: [{cert: garbage.pem, key: good.key}]}
  - name: missing
    address: "127.0.0.1:8443"
    tls: {certificates: [{cert: nowhere.pem, key: good.key}]}
  - name: reversed
    address: "127.0.0.1:8444"
    tls: {certificates: [{cert: reversed.pem, key: good.key}]}
  - name: swapped
    address: "127.0.0.1:8445"
    tls: {certificates: [{cert: good.key, key: good.pem}]}
upstreams:
  half:
    dns: "half.internal:443"
    tls: {ca: ca.pem, cert: good.pem}
"#;
    write(d, "gw.yaml", yaml);
    let problems = config::load_with_env(&d.join("gw.yaml"), &no_env).expect_err("broken");
    let lines = short(&problems);
    let path = |f: &str| d.join(f).display().to_string();
    let expect = [
        format!(
            "4:48: `{}`: the private key does not belong to the certificate (O=vrata tests, CN=a.test)",
            path("other.key")
        ),
        format!(
            "7:33: `{}`: not PEM: expected a certificate (-----BEGIN CERTIFICATE-----)",
            path("garbage.pem")
        ),
        format!(
            "10:33: cannot read `{}`: No such file or directory (os error 2)",
            path("nowhere.pem")
        ),
        format!(
            "13:33: `{}`: the chain is out of order: certificate 1 (O=vrata tests, CN=test CA) was not issued by certificate 2 (O=vrata tests, CN=a.test); put the leaf first, then each issuer",
            path("reversed.pem")
        ),
        format!(
            "16:33: `{}`: holds a private key where a certificate was expected",
            path("good.key")
        ),
        "20:29: a client certificate needs both `cert` and `key`".to_owned(),
    ];
    assert_eq!(lines, expect);
}

#[test]
fn an_expired_certificate_is_a_warning_and_keys_stay_secret() {
    use rcgen::{CertificateParams, KeyPair};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["old.test".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).expect("cert");
    write(d, "old.pem", &cert.pem());
    write(d, "old.key", &key.serialize_pem());
    write(
        d,
        "gw.yaml",
        r#"listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls: {certificates: [{cert: old.pem, key: old.key}]}
"#,
    );
    let loaded = config::load_with_env(&d.join("gw.yaml"), &no_env).expect("loads");
    let warnings = short(&loaded.warnings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("4:33: ") && warnings[0].contains("expired on"),
        "{warnings:?}"
    );
    // The watcher follows the certificate files.
    assert!(loaded.files.contains(&d.join("old.pem")));
    assert!(loaded.files.contains(&d.join("old.key")));

    let document = loaded.document.to_json().to_string();
    assert!(!document.contains("PRIVATE KEY"), "{document}");
    let resources = vrata_xds::translate::translate(&loaded.gateway);
    assert_eq!(resources.secrets.len(), 1);
    let rendered = vrata_xds::translate::render_yaml(&resources).expect("renders");
    assert!(!rendered.contains("PRIVATE KEY"), "{rendered}");
    assert!(rendered.contains("BEGIN CERTIFICATE"));
    assert!(!format!("{:?}", loaded.gateway).contains("PRIVATE KEY"));

    // `xds-server check`: the warning printed, exit 0.
    let out = Command::new(vrata_e2e::xds::binary("xds-server"))
        .args(["check", "--config"])
        .arg(d.join("gw.yaml"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(":4:33: warning: "), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"));
}

#[test]
fn an_upstream_without_ca_trusts_the_system_bundle_and_checks_the_dns_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "gw.yaml",
        r#"upstreams:
  payments:
    dns: "payments.example.com:443"
    tls: {}
"#,
    );
    let loaded = config::load_with_env(&d.join("gw.yaml"), &no_env).expect("loads");
    let tls = loaded
        .gateway
        .upstreams
        .values()
        .next()
        .and_then(|u| u.tls.clone())
        .expect("tls");
    assert_eq!(tls.sni, "payments.example.com");
    assert_eq!(tls.ca.secret.0, "ca.system");
    assert!(
        tls.ca.pem.matches("BEGIN CERTIFICATE").count() > 10,
        "a real bundle"
    );
    let resources = vrata_xds::translate::translate(&loaded.gateway);
    let rendered = vrata_xds::translate::render_yaml(&resources).expect("renders");
    assert!(rendered.contains("sni: payments.example.com"), "{rendered}");
    assert!(
        rendered.contains("exact: payments.example.com"),
        "SAN check: {rendered}"
    );
}
