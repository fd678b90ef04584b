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

/// One node of a [`RedisCluster`]: what it needs to start again as the same node.
struct ClusterNode {
    port: u16,
    bus: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl ClusterNode {
    /// Starts (or restarts) the node; its `nodes.conf` in `dir` makes it rejoin as itself.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(redis_server());
        cmd.args(base_args(self.port, &self.dir)).args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            &self.bus.to_string(),
            "--cluster-node-timeout",
            "2000",
        ]);
        let name = format!("redis-cluster-{}-{}", self.port, self.starts);
        self.starts += 1;
        let proc = Proc::spawn(&name, cmd, &self.dir)?;
        wait_for_pong(&name, self.port, &proc).await?;
        self.proc = Some(proc);
        Ok(())
    }
}

/// A Redis Cluster of three masters (no replicas), slots spread evenly by `redis-cli`.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut node = ClusterNode {
                port,
                // The cluster bus port defaults to port + 10000, which may be taken or past
                // 65535 for an ephemeral port: pick a free one explicitly.
                bus: free_port(),
                dir: node_dir,
                proc: None,
                starts: 0,
            };
            node.launch().await?;
            nodes.push(node);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(binary("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self {
            ports,
            _dir: dir,
            nodes,
        };
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// Waits until every node sees every slot served.
    pub async fn wait_ok(&self) -> anyhow::Result<()> {
        for &port in &self.ports {
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
        Ok(())
    }

    /// The index (into `ports`) of the master serving `key`'s slot.
    pub async fn node_of(&self, key: &str) -> anyhow::Result<usize> {
        let any = *self
            .ports
            .first()
            .ok_or_else(|| anyhow::anyhow!("empty cluster"))?;
        let slot: u16 = command(any, &["CLUSTER", "KEYSLOT", key])
            .await?
            .trim_start_matches(':')
            .parse()?;
        for (i, &port) in self.ports.iter().enumerate() {
            let nodes = command(port, &["CLUSTER", "NODES"]).await?;
            let me = nodes
                .lines()
                .find(|l| l.contains("myself"))
                .ok_or_else(|| anyhow::anyhow!("no myself line on {port}: {nodes}"))?;
            // Fields 9.. are the node's slots: "0-5460" or "5461".
            for range in me.split_whitespace().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return Ok(i);
                }
            }
        }
        anyhow::bail!("no node serves slot {slot}")
    }

    /// Kills node `i` (SIGKILL). Its slots are unserved until it comes back.
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.proc = None;
        }
    }

    /// Starts node `i` again as the same cluster member (empty: nothing is persisted) and
    /// waits for the cluster to be whole.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let n = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| anyhow::anyhow!("no node {i}"))?;
        n.proc = None;
        n.launch().await?;
        self.wait_ok().await
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.proc.as_ref().map(Proc::logs))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
