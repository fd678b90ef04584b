//! Real `redis-server` processes on free loopback ports: one standalone server, or a 3-master
//! Redis Cluster. Nothing is persisted (`--save "" --appendonly no`); every process dies with
//! its handle.
//!
//! Readiness is awaited by speaking RESP over TCP (`PING`, `CLUSTER INFO`), so the harness needs
//! no Redis client library. `redis-server` and `redis-cli` come from the Debian package
//! `redis-server`, which `scripts/test` installs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::ports::free_port;
use crate::process::Proc;

/// How long a fresh redis-server may take to answer: it starts in milliseconds, but a loaded
/// test machine can be slow.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Forming a cluster is a few gossip rounds.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

fn redis_server() -> PathBuf {
    binary("redis-server")
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("no {name}: run ./scripts/test (it installs the redis-server Debian package)");
}

/// Sends one command and returns the reply as text: the line of a simple reply or error
/// (with its `+`/`-`), or the payload of a bulk string.
pub async fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = BufReader::new(stream);
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let line = line.trim_end().to_owned();
    match line.strip_prefix('$') {
        Some(len) => {
            let len: i64 = len.parse()?;
            anyhow::ensure!(len >= 0, "nil reply to {args:?}");
            let mut body = vec![0; usize::try_from(len)? + 2];
            stream.read_exact(&mut body).await?;
            body.truncate(body.len() - 2);
            Ok(String::from_utf8(body)?)
        }
        None => Ok(line),
    }
}

async fn wait_for_pong(name: &str, port: u16, proc: &Proc) -> anyhow::Result<()> {
    crate::eventually(&format!("{name} to answer PING"), START_TIMEOUT, || async {
        match command(port, &["PING"]).await {
            Ok(r) if r == "+PONG" => Ok(()),
            Ok(r) => anyhow::bail!("PING answered {r}"),
            Err(e) => anyhow::bail!("{e}\n{}", proc.logs()),
        }
    })
    .await
}

/// One redis-server.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
    restarts: u32,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port()).await
    }

    /// On a given port (one a test has already handed to a client, say).
    pub async fn start_on(port: u16) -> anyhow::Result<Self> {
        let mut s = Self {
            port,
            dir: tempfile::tempdir()?,
            proc: None,
            restarts: 0,
        };
        s.launch().await?;
        Ok(s)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let name = format!("redis-{}-{}", self.port, self.restarts);
        let mut cmd = Command::new(redis_server());
        cmd.args(base_args(self.port, self.dir.path()));
        let proc = Proc::spawn(&name, cmd, self.dir.path())?;
        wait_for_pong(&name, self.port, &proc).await?;
        self.proc = Some(proc);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would) and waits until it is gone.
    pub fn kill(&mut self) {
        // Dropping a Proc kills and reaps it.
        self.proc = None;
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers — a hung Redis.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let proc = self
            .proc
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("redis on {} is not running", self.port))?;
        let status = Command::new("kill")
            .args([sig, &proc.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {} failed", proc.pid());
        Ok(())
    }

    /// Starts a fresh, empty server on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.restarts += 1;
        self.launch().await
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::logs).unwrap_or_default()
    }
}

fn base_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A Redis Cluster of three masters (no replicas), slots spread evenly by `redis-cli`.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
    procs: Vec<Proc>,
}

impl RedisCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::new();
        let mut procs = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            // The cluster bus port defaults to port + 10000, which may be taken or past 65535
            // for an ephemeral port: pick a free one explicitly.
            let bus = free_port();
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut cmd = Command::new(redis_server());
            cmd.args(base_args(port, &node_dir)).args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-node-timeout",
                "2000",
            ]);
            let name = format!("redis-cluster-{port}");
            let proc = Proc::spawn(&name, cmd, &node_dir)?;
            wait_for_pong(&name, port, &proc).await?;
            ports.push(port);
            procs.push(proc);
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(binary("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for &port in &ports {
            crate::eventually(
                &format!("cluster_state:ok on {port}"),
                CLUSTER_TIMEOUT,
                || async move {
                    let info = command(port, &["CLUSTER", "INFO"]).await?;
                    anyhow::ensure!(info.contains("cluster_state:ok"), "{info}");
                    Ok(())
                },
            )
            .await?;
        }
        Ok(Self {
            ports,
            _dir: dir,
            procs,
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }
}
