//! `demo-upstream --name orders --listen 127.0.0.1:9101 [--listen ...]`: echo servers for the
//! local stack. Each answers every request with a JSON description of what it received, so the
//! gateway's routing, rewrites and header changes are visible with curl.

use std::time::Duration;

use vrata_e2e::Upstream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut name = String::from("demo");
    let mut listens = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => {
                name = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--name needs a value"))?
            }
            "--listen" => listens.push(
                args.next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs an address"))?
                    .parse::<std::net::SocketAddr>()?,
            ),
            "--help" | "-h" => {
                println!(
                    "usage: demo-upstream --name NAME --listen IP:PORT [--listen IP:PORT ...]"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    anyhow::ensure!(!listens.is_empty(), "give at least one --listen IP:PORT");
    let mut servers = Vec::new();
    for (i, addr) in listens.iter().enumerate() {
        let label = if listens.len() > 1 {
            format!("{name}-{}", i + 1)
        } else {
            name.clone()
        };
        let s = Upstream::start_on(&label, *addr).await?;
        eprintln!("demo-upstream {label} listening on {}", s.addr);
        servers.push(s);
    }
    tokio::signal::ctrl_c().await?;
    drop(servers);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
