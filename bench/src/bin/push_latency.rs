//! Config push latency: save the gateway file, measure until every connected Envoy has ACKed
//! the new route configuration. Two Envoys are connected, one over state-of-the-world ADS and
//! one over delta. Release binaries, real Envoys, loopback.
//!
//! `cargo run --release -p vrata-bench --bin push-latency -- [--routes 10,1000,10000] [--iterations 30]`
//!
//! Reported per route count:
//! - save → all ACKed: from the rename of the edited file to the later of the two Envoys'
//!   ACKs of the new RDS version, as recorded by xds-server (includes the 50 ms debounce, the
//!   load, translation, push and Envoy applying it);
//! - push → ACK per protocol: from the snapshot's publication to that Envoy's ACK;
//! - xds-server resident memory after the run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vrata_e2e::{Ads, Stack, Upstream};

const UPSTREAMS: usize = 10;

fn config(upstreams: &[Upstream], routes: usize, edit: usize, rev: usize) -> String {
    let endpoints: Vec<String> = upstreams.iter().map(Upstream::endpoint).collect();
    vrata_e2e::configs::many_routes(&endpoints, routes, edit, rev)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Polls xds-server until every node has ACKed RDS version `rds`; returns the status.
async fn wait_acked(s: &Stack, old_version: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = s.xds.status().await?;
        let cur = &st["current"];
        if cur["version"].as_str() != Some(old_version) {
            let rds = &cur["type_versions"]["RDS"];
            let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.len() == s.envoys.len()
                && nodes
                    .iter()
                    .all(|n| n["types"]["RDS"]["acked_version"] == *rds)
            {
                return Ok(st);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no ACK within 60 s: {st}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut counts = vec![10usize, 1000, 10_000];
    let mut iterations = 30usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--routes" => {
                counts = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--routes needs a list"))?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--iterations" => {
                iterations = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--iterations needs a number"))?
                    .parse()?
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    if std::env::var_os("VRATA_PROFILE").is_none() {
        anyhow::bail!("run with VRATA_PROFILE=release so the benchmark uses release binaries");
    }
    let mut upstreams = Vec::new();
    for i in 0..UPSTREAMS {
        upstreams.push(Upstream::start(&format!("u{i}")).await?);
    }
    let mut results = Vec::new();
    for &routes in &counts {
        let s = Stack::start_with(
            &config(&upstreams, routes, 0, 0),
            &[Ads::StateOfTheWorld, Ads::Delta],
        )
        .await?;
        let (mut save_to_all, mut sotw, mut delta) = (Vec::new(), Vec::new(), Vec::new());
        let mut save_to_published = Vec::new();
        for it in 1..=iterations {
            let old = s.xds.version().await?;
            let yaml = config(&upstreams, routes, it % routes, it);
            let saved = now();
            s.write_config(&yaml)?;
            let st = wait_acked(&s, &old).await?;
            let published = st["current"]["loaded_at"].as_f64().unwrap_or(saved);
            save_to_published.push((published - saved) * 1000.0);
            let mut last_ack = 0f64;
            for n in st["nodes"].as_array().cloned().unwrap_or_default() {
                let acked = n["types"]["RDS"]["acked_at"].as_f64().unwrap_or(f64::NAN);
                last_ack = last_ack.max(acked);
                let push = (acked - published) * 1000.0;
                match n["protocol"].as_str() {
                    Some("delta") => delta.push(push),
                    _ => sotw.push(push),
                }
            }
            save_to_all.push((last_ack - saved) * 1000.0);
        }
        for v in [
            &mut save_to_all,
            &mut save_to_published,
            &mut sotw,
            &mut delta,
        ] {
            v.sort_by(f64::total_cmp);
        }
        let rss = rss_kib(s.xds.proc.pid());
        let row = json!({
            "routes": routes,
            "iterations": iterations,
            "save_to_all_acked_ms": {"p50": percentile(&save_to_all, 0.5), "p90": percentile(&save_to_all, 0.9), "max": percentile(&save_to_all, 1.0)},
            "save_to_published_ms": {"p50": percentile(&save_to_published, 0.5), "p90": percentile(&save_to_published, 0.9)},
            "push_to_ack_sotw_ms": {"p50": percentile(&sotw, 0.5), "p90": percentile(&sotw, 0.9)},
            "push_to_ack_delta_ms": {"p50": percentile(&delta, 0.5), "p90": percentile(&delta, 0.9)},
            "xds_server_rss_mib": rss as f64 / 1024.0,
        });
        println!(
            "routes={routes:>6}  save→all ACKed p50 {:>7.1} ms p90 {:>7.1} ms | save→published p50 {:>6.1} ms | push→ACK p50 sotw {:>7.1} ms delta {:>7.1} ms | xds-server RSS {:>6.1} MiB",
            percentile(&save_to_all, 0.5),
            percentile(&save_to_all, 0.9),
            percentile(&save_to_published, 0.5),
            percentile(&sotw, 0.5),
            percentile(&delta, 0.5),
            rss as f64 / 1024.0
        );
        results.push(row);
    }
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
