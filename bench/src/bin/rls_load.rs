//! A closed-loop gRPC load generator for `RateLimitService/ShouldRateLimit`: the decisions per
//! second and latency of a rate-limit service alone (vrata's ratelimit-service, Kuadrant
//! Limitador, the do-nothing baseline), without Envoy in the way.
//!
//! `rls-load --target http://127.0.0.1:PORT --seconds 10 --concurrency 32 --route bench --limit per-route`
//!
//! Each of `--concurrency` tasks sends one request, awaits the answer, and sends the next, over
//! `--connections` HTTP/2 connections (Envoy holds one per worker). Every request carries the
//! descriptor Envoy sends for a vrata limit: `[("route", R), ("limit", L)]`, plus
//! `("header", <value>)` when `--keys N` spreads the load over N distinct counters.
//! Prints one JSON object: decisions, decisions/s, OK / OVER_LIMIT / error counts, latency
//! percentiles in µs.

use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use serde_json::json;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Closed-loop load on a RateLimitService (benchmark)")]
struct Args {
    /// http://HOST:PORT of the service.
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long, default_value = "vrata")]
    domain: String,
    #[arg(long, default_value = "bench")]
    route: String,
    #[arg(long, default_value = "per-route")]
    limit: String,
    /// 0: one counter for all requests; N: a third `header` entry cycling over N values.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Seconds of load before measuring (connections, caches, JIT-free but warm).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    over: u64,
    errors: u64,
}

fn request(args: &Args, n: u64) -> RateLimitRequest {
    let mut entries = vec![
        Entry {
            key: "route".into(),
            value: args.route.clone(),
        },
        Entry {
            key: "limit".into(),
            value: args.limit.clone(),
        },
    ];
    if args.keys > 0 {
        entries.push(Entry {
            key: "header".into(),
            value: format!("k{}", n % args.keys),
        });
    }
    RateLimitRequest {
        domain: args.domain.clone(),
        descriptors: vec![RateLimitDescriptor {
            entries,
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

async fn worker(
    args: std::sync::Arc<Args>,
    channel: Channel,
    id: u64,
    measure_from: Instant,
    until: Instant,
) -> Tally {
    let mut client = RateLimitServiceClient::new(channel);
    let mut tally = Tally::default();
    let mut n = id;
    loop {
        let start = Instant::now();
        if start >= until {
            return tally;
        }
        let result = client.should_rate_limit(request(&args, n)).await;
        n += args.concurrency as u64;
        if start < measure_from {
            continue;
        }
        let took = start.elapsed();
        match result {
            Ok(r) if r.get_ref().overall_code == Code::Ok as i32 => tally.ok += 1,
            Ok(_) => tally.over += 1,
            Err(_) => {
                tally.errors += 1;
                continue;
            }
        }
        tally
            .latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Channel::from_shared(args.target.clone())?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await?,
        );
    }
    let measure_from = Instant::now() + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for id in 0..args.concurrency {
        let channel = channels[id % channels.len()].clone();
        tasks.push(tokio::spawn(worker(
            args.clone(),
            channel,
            id as u64,
            measure_from,
            until,
        )));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies_us.extend(t.latencies_us);
        all.ok += t.ok;
        all.over += t.over;
        all.errors += t.errors;
    }
    all.latencies_us.sort_unstable();
    let l = &all.latencies_us;
    let decisions = all.ok + all.over;
    println!(
        "{}",
        json!({
            "decisions": decisions,
            "decisions_per_s": decisions as f64 / args.seconds as f64,
            "ok": all.ok,
            "over_limit": all.over,
            "errors": all.errors,
            "p50_us": percentile(l, 50.0),
            "p90_us": percentile(l, 90.0),
            "p99_us": percentile(l, 99.0),
            "p999_us": percentile(l, 99.9),
            "max_us": l.last().copied().unwrap_or(0),
            "concurrency": args.concurrency,
            "connections": args.connections,
        })
    );
    Ok(())
}
