//! The reload pipeline xds-server runs for every saved file, stage by stage, on the
//! push-latency benchmark's gateway files (`vrata_e2e::configs::many_routes`): loading and
//! validating the files, translating the model to Envoy resources, and building the snapshot
//! against the previous one (one route changed). Envoy's own part is measured end to end by
//! `bench/src/bin/push_latency.rs`.
//! Run: `cargo bench -p vrata-xds --bench reload`. Figures: docs/performance.md.

// Bench-only code: a panic is a broken benchmark setup, reported with its location.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use vrata_xds::control::resources_of;
use vrata_xds::snapshot::Snapshot;
use vrata_xds::{config, translate};

fn gateway_file(routes: usize, rev: usize) -> String {
    let endpoints: Vec<String> = (0..10).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect();
    vrata_e2e::configs::many_routes(&endpoints, routes, 5, rev).replace("{port}", "10000")
}

fn reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for routes in [1_000, 10_000] {
        let path = dir.path().join(format!("gateway-{routes}.yaml"));
        std::fs::write(&path, gateway_file(routes, 0)).unwrap();
        let before = config::load(&path).unwrap();
        let prev = Snapshot::build(
            "bench",
            1,
            None,
            resources_of(translate::translate(&before.gateway)),
        )
        .unwrap();
        let edited = dir.path().join(format!("gateway-{routes}-edited.yaml"));
        std::fs::write(&edited, gateway_file(routes, 1)).unwrap();
        let after = config::load(&edited).unwrap();

        group.bench_function(format!("load/{routes}"), |b| {
            b.iter(|| config::load(black_box(&edited)).unwrap())
        });
        group.bench_function(format!("translate/{routes}"), |b| {
            b.iter(|| translate::translate(black_box(&after.gateway)))
        });
        group.bench_function(format!("snapshot/{routes}"), |b| {
            b.iter_batched(
                || resources_of(translate::translate(&after.gateway)),
                |resources| Snapshot::build("bench", 2, Some(&prev), resources).unwrap(),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("all/{routes}"), |b| {
            b.iter(|| {
                let loaded = config::load(black_box(&edited)).unwrap();
                let resources = translate::translate(&loaded.gateway);
                Snapshot::build("bench", 2, Some(&prev), resources_of(resources)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
