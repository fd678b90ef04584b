//! TLS through a real Envoy with real clients (curl, openssl s_client, rustls, tonic):
//! HTTP/2 and HTTP/1.1 over TLS, certificate selection by SNI, protocol versions, rotation
//! without restart, mTLS with forwarded client-certificate details, HTTPS upstreams, gRPC, and
//! the plaintext listener's redirect to https.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use vrata_e2e::pki::{Ca, Leaf};
use vrata_e2e::ports::free_port;
use vrata_e2e::{Stack, Upstream, eventually};

/// Time allowed for a renewed certificate to reach new connections (issue: within 5 s).
const ROTATION: Duration = Duration::from_secs(5);

async fn run(program: &str, args: &[&str], stdin: &[u8]) -> anyhow::Result<Output> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await?;
    }
    Ok(tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await??)
}

/// `openssl s_client` against 127.0.0.1:`port`: the handshake's output (stdout + stderr) and
/// whether it succeeded. `servername: None` sends no SNI.
async fn s_client(
    port: u16,
    servername: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<(bool, String)> {
    let connect = format!("127.0.0.1:{port}");
    let mut args = vec!["s_client", "-connect", &connect];
    match servername {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    args.extend(extra);
    let out = run("openssl", &args, b"").await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // s_client exits 0 after a handshake; "Cipher is (NONE)" / an alert means none happened.
    let ok = out.status.success() && !text.contains("Cipher is (NONE)");
    Ok((ok, text))
}

/// The subject line of the certificate the server sent.
async fn served_subject(port: u16, servername: Option<&str>) -> anyhow::Result<String> {
    let (ok, text) = s_client(port, servername, &[]).await?;
    anyhow::ensure!(ok, "handshake failed:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no subject in s_client output:\n{text}"))
}

/// curl over TLS to `https://<host>:<port><path>` resolved to 127.0.0.1: (http_version, status,
/// body).
async fn curl(
    host: &str,
    port: u16,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> anyhow::Result<(String, u16, String)> {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let ca = ca.display().to_string();
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version} %{http_code}",
    ];
    args.extend(extra);
    args.push(&url);
    let out = run("curl", &args, b"").await?;
    anyhow::ensure!(
        out.status.success(),
        "curl {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text
        .rsplit_once('\n')
        .ok_or_else(|| anyhow::anyhow!("no status line: {text}"))?;
    let (version, status) = last
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("bad status line: {last}"))?;
    Ok((version.to_owned(), status.parse()?, body.to_owned()))
}

struct Certs {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: PathBuf,
}

impl Certs {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("vrata test CA")?;
        let ca_file = ca.write(dir.path(), "ca.pem")?;
        Ok(Self { dir, ca, ca_file })
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn server(&self, stem: &str, names: &[&str]) -> anyhow::Result<Leaf> {
        let leaf = self.ca.server(names)?;
        leaf.write(self.dir.path(), stem)?;
        Ok(leaf)
    }
}

#[tokio::test]
async fn https_over_http2_and_http1_with_sni_selection_and_protocol_versions() -> anyhow::Result<()>
{
    let certs = Certs::new()?;
    certs.server("api", &["api.test"])?;
    certs.server("other", &["other.test"])?;
    certs.server("apps", &["*.apps.test"])?;
    let up = Upstream::start("svc").await?;
    let strict = free_port();
    let yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
    tls:
      certificates:
        - {{cert: "{api}.pem", key: "{api}.key"}}
        - {{cert: "{other}.pem", key: "{other}.key"}}
        - {{cert: "{apps}.pem", key: "{apps}.key"}}
  - name: strict
    address: "127.0.0.1:{strict}"
    tls:
      certificates: [{{cert: "{api}.pem", key: "{api}.key"}}]
      min_version: "1.3"
upstreams:
  svc: {{endpoints: ["{up}"]}}
routes:
  - name: all
    upstream: svc
"#,
        api = certs.path("api"),
        other = certs.path("other"),
        apps = certs.path("apps"),
        up = up.endpoint(),
    );
    let s = Stack::start(&yaml).await?;
    s.envoys[0].wait_listener("strict").await?;
    let port = s.listen_port;

    let (version, status, body) =
        curl("api.test", port, "/h2", &certs.ca_file, &["--http2"]).await?;
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let echo: Value = serde_json::from_str(&body)?;
    assert_eq!(echo["path"], "/h2");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    let (version, status, _) =
        curl("api.test", port, "/h1", &certs.ca_file, &["--http1.1"]).await?;
    assert_eq!((version.as_str(), status), ("1.1", 200));

    // SNI picks the certificate: exact names, a wildcard, and the first one without SNI or for
    // an unknown name.
    assert!(
        served_subject(port, Some("api.test"))
            .await?
            .contains("CN = api.test")
    );
    assert!(
        served_subject(port, Some("other.test"))
            .await?
            .contains("CN = other.test")
    );
    assert!(
        served_subject(port, Some("x.apps.test"))
            .await?
            .contains("CN = *.apps.test")
    );
    assert!(served_subject(port, None).await?.contains("CN = api.test"));
    assert!(
        served_subject(port, Some("unknown.test"))
            .await?
            .contains("CN = api.test")
    );
    // The name curl checks is the one SNI selected.
    let (_, status, _) = curl("x.apps.test", port, "/", &certs.ca_file, &[]).await?;
    assert_eq!(status, 200);

    // Versions. The client is allowed old protocols (SECLEVEL=0) so that the refusal is the
    // gateway's: a protocol-version alert from the server.
    let (ok, text) = s_client(
        port,
        Some("api.test"),
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    )
    .await?;
    assert!(!ok, "TLS 1.1 accepted:\n{text}");
    assert!(text.contains("alert protocol version"), "{text}");
    let (ok, text) = s_client(port, Some("api.test"), &["-tls1_2"]).await?;
    assert!(ok, "TLS 1.2 refused on the default listener:\n{text}");
    let (ok, text) = s_client(strict, Some("api.test"), &["-tls1_2"]).await?;
    assert!(!ok, "TLS 1.2 accepted with min_version 1.3:\n{text}");
    assert!(text.contains("alert protocol version"), "{text}");
    let (ok, text) = s_client(strict, Some("api.test"), &["-tls1_3"]).await?;
    assert!(ok, "TLS 1.3 refused:\n{text}");
    Ok(())
}

/// A client with its own connection pool, trusting `ca`, resolving `host` to the listener.
fn rustls_client(ca: &str, host: &str, port: u16) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()?)
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_open_ones_keep_working()
-> anyhow::Result<()> {
    let certs = Certs::new()?;
    let first = certs.server("api", &["api.test"])?;
    let up = Upstream::start("svc").await?;
    let yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
    tls: {{certificates: [{{cert: "{api}.pem", key: "{api}.key"}}]}}
upstreams:
  svc: {{endpoints: ["{up}"]}}
routes:
  - name: all
    upstream: svc
"#,
        api = certs.path("api"),
        up = up.endpoint(),
    );
    let s = Stack::start(&yaml).await?;
    let port = s.listen_port;
    let envoy = &s.envoys[0];
    let fingerprint = |pem: &str| pem.lines().nth(1).unwrap_or_default().to_owned();

    // An HTTP/2 connection opened before the renewal.
    let open = rustls_client(&certs.ca.pem, "api.test", port)?;
    let r = open
        .get(format!("https://api.test:{port}/before"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);

    let before = served_pem(port, "api.test").await?;
    assert_eq!(fingerprint(&before), fingerprint(&first.cert_pem));
    let renewed = certs.ca.server(&["api.test"])?;
    renewed.write(certs.dir.path(), "api")?;
    eventually(
        "the renewed certificate on a new connection",
        ROTATION,
        || async {
            let now = served_pem(port, "api.test").await?;
            anyhow::ensure!(
                fingerprint(&now) == fingerprint(&renewed.cert_pem),
                "still the old certificate"
            );
            Ok(())
        },
    )
    .await?;
    assert_eq!(
        s.envoys[0].proc.pid(),
        envoy.proc.pid(),
        "Envoy was not restarted"
    );

    // The connection opened before still serves, and it is the same connection (the s_client
    // connections above are closed; no new one is counted).
    let connections = envoy.stat("http.public.downstream_cx_total").await?;
    let r = open
        .get(format!("https://api.test:{port}/after"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        envoy.stat("http.public.downstream_cx_total").await?,
        connections,
        "the request must reuse the connection opened before the renewal"
    );
    assert_eq!(envoy.stat("listener_manager.listener_modified").await?, 0);

    // A corrupt renewal keeps the last good certificate and is reported.
    vrata_e2e::pki::replace(
        &certs.dir.path().join("api.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )?;
    let problems = s.xds.wait_rejected(vrata_e2e::stack::SYNC).await?;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("api.pem") && p.contains("not PEM")),
        "{problems:?}"
    );
    let still = served_pem(port, "api.test").await?;
    assert_eq!(fingerprint(&still), fingerprint(&renewed.cert_pem));
    let r = open
        .get(format!("https://api.test:{port}/still"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // Private keys appear nowhere in the admin API.
    let config = s.xds.get("/admin/config").await?.text().await?;
    let status = s.xds.get("/admin/status").await?.text().await?;
    for text in [&config, &status] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
    Ok(())
}

/// The leaf certificate (PEM) the server sends for `servername`.
async fn served_pem(port: u16, servername: &str) -> anyhow::Result<String> {
    let (ok, text) = s_client(port, Some(servername), &[]).await?;
    anyhow::ensure!(ok, "handshake failed:\n{text}");
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| anyhow::anyhow!("no certificate:\n{text}"))?;
    let end = text[start..]
        .find("-----END CERTIFICATE-----")
        .ok_or_else(|| anyhow::anyhow!("cut certificate:\n{text}"))?;
    Ok(text[start..start + end + "-----END CERTIFICATE-----".len()].to_owned())
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_and_forwards_its_subject_unspoofably()
-> anyhow::Result<()> {
    let certs = Certs::new()?;
    certs.server("api", &["api.test"])?;
    let clients = Ca::new("client CA")?;
    let clients_file = clients.write(certs.dir.path(), "clients.pem")?;
    clients
        .client("client-1")?
        .write(certs.dir.path(), "client-1")?;
    // A certificate from another CA is refused too.
    Ca::new("rogue CA")?
        .client("rogue")?
        .write(certs.dir.path(), "rogue")?;
    let up = Upstream::start("svc").await?;
    let yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
    tls:
      certificates: [{{cert: "{api}.pem", key: "{api}.key"}}]
      client_auth: {{ca: "{clients}"}}
upstreams:
  svc: {{endpoints: ["{up}"]}}
routes:
  - name: all
    upstream: svc
"#,
        api = certs.path("api"),
        clients = clients_file.display(),
        up = up.endpoint(),
    );
    let s = Stack::start(&yaml).await?;
    let port = s.listen_port;

    let without = curl("api.test", port, "/", &certs.ca_file, &[]).await;
    assert!(
        without.is_err(),
        "a client without certificate got through: {without:?}"
    );
    let rogue = curl(
        "api.test",
        port,
        "/",
        &certs.ca_file,
        &[
            "--cert",
            &certs.path("rogue.pem"),
            "--key",
            &certs.path("rogue.key"),
        ],
    )
    .await;
    assert!(
        rogue.is_err(),
        "a certificate from another CA got through: {rogue:?}"
    );

    let client = [
        "--cert",
        &certs.path("client-1.pem"),
        "--key",
        &certs.path("client-1.key"),
    ];
    let (_, status, body) = curl("api.test", port, "/", &certs.ca_file, &client).await?;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body)?;
    let xfcc = echo["headers"]["x-forwarded-client-cert"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no x-forwarded-client-cert upstream: {echo}"))?;
    assert!(xfcc.contains("CN=client-1"), "{xfcc}");

    // A client sending the header itself cannot make the upstream believe it.
    let mut spoofing = client.to_vec();
    spoofing.extend(["-H", "x-forwarded-client-cert: Subject=\"CN=admin\""]);
    let (_, status, body) = curl("api.test", port, "/", &certs.ca_file, &spoofing).await?;
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_str(&body)?;
    let xfcc = echo["headers"]["x-forwarded-client-cert"].clone();
    let xfcc = xfcc
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("one header expected: {xfcc}"))?;
    assert!(
        xfcc.contains("CN=client-1") && !xfcc.contains("admin"),
        "{xfcc}"
    );
    Ok(())
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_its_ca() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    let internal = Ca::new("internal CA")?;
    let internal_file = internal.write(certs.dir.path(), "internal.pem")?;
    let secure = Upstream::start_tls("secure", &internal.server(&["billing.internal"])?).await?;
    let config = |ca: &str| {
        format!(
            r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
upstreams:
  billing:
    endpoints: ["{up}"]
    tls: {{sni: billing.internal{ca}}}
routes:
  - name: all
    upstream: billing
"#,
            up = secure.endpoint(),
        )
    };
    // Trusting the wrong CA (the test CA): the upstream's certificate fails verification.
    let s = Stack::start(&config(&format!(", ca: \"{}\"", certs.ca_file.display()))).await?;
    let r = s.get("/").await?;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await?;
    assert_eq!(problem["type"], "urn:vrata:error:upstream-unavailable");
    assert_eq!(secure.hits(), 0);
    assert!(
        s.envoys[0]
            .stat("cluster.billing.ssl.fail_verify_error")
            .await?
            > 0
    );

    // With the upstream's CA it works.
    s.reload(&config(&format!(", ca: \"{}\"", internal_file.display())))
        .await?;
    let r = s.get("/").await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await?["upstream"], "secure");

    // The certificate must also carry the name: the right CA but another SNI fails.
    s.reload(
        &config(&format!(", ca: \"{}\"", internal_file.display()))
            .replace("sni: billing.internal", "sni: other.internal"),
    )
    .await?;
    let r = s.get("/").await?;
    assert_eq!(r.status(), 503);
    Ok(())
}

#[tokio::test]
async fn redirect_https_answers_308_to_the_tls_listener() -> anyhow::Result<()> {
    let certs = Certs::new()?;
    certs.server("api", &["api.test"])?;
    let tls_port = free_port();
    let yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
    redirect_https: true
  - name: secure
    address: "127.0.0.1:{tls_port}"
    tls: {{certificates: [{{cert: "{api}.pem", key: "{api}.key"}}]}}
routes:
  - name: hello
    respond: {{status: 200, body: "hello"}}
"#,
        api = certs.path("api"),
    );
    let s = Stack::start(&yaml).await?;
    s.envoys[0].wait_listener("secure").await?;
    let r = s
        .http()
        .get(s.url("/a/b?c=d"))
        .header("host", format!("api.test:{}", s.listen_port))
        .send()
        .await?;
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://api.test:{tls_port}/a/b?c=d").as_str()
    );
    let (_, status, body) = curl("api.test", tls_port, "/", &certs.ca_file, &[]).await?;
    assert_eq!((status, body.as_str()), (200, "hello"));
    Ok(())
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_over_the_tls_listener() -> anyhow::Result<()> {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;

    // A real gRPC server (tonic's health service: unary Check, server-streaming Watch) over h2c.
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("greeter", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let certs = Certs::new()?;
    certs.server("api", &["api.test"])?;
    let yaml = format!(
        r#"listeners:
  - name: public
    address: "127.0.0.1:{{port}}"
    tls: {{certificates: [{{cert: "{api}.pem", key: "{api}.key"}}]}}
upstreams:
  health: {{endpoints: ["{grpc_addr}"], http2: true}}
routes:
  - name: grpc-health
    match: {{path_prefix: /grpc.health.v1.Health/}}
    upstream: health
    timeout: 1h
"#,
        api = certs.path("api"),
    );
    let s = Stack::start(&yaml).await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", s.listen_port))?
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&certs.ca.pem))
                    .domain_name("api.test"),
            )?
            .connect()
            .await?;
    let mut client = HealthClient::new(channel);

    // Unary, OK and an error status (carried in the trailers).
    let ok = client
        .check(HealthCheckRequest {
            service: "greeter".into(),
        })
        .await?;
    assert_eq!(ok.get_ref().status, Wire::Serving as i32);
    let err = client
        .check(HealthCheckRequest {
            service: "nobody".into(),
        })
        .await
        .expect_err("an unknown service is NOT_FOUND");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // Server streaming: the first status, then a change pushed by the server.
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "greeter".into(),
        })
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
    assert_eq!(first.status, Wire::Serving as i32);
    reporter
        .set_service_status("greeter", ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
    assert_eq!(second.status, Wire::NotServing as i32);
    assert!(s.envoys[0].stat("cluster.health.upstream_rq_total").await? >= 3);
    server.abort();
    Ok(())
}
