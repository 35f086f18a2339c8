//! Topic matching micro-benchmarks on `node::broker::trie::Trie` holding 1,000,000
//! subscriptions, 10% of them with a `+` wildcard: four filters for each of 250,000 vehicles
//! (`fleet/{v}/cmd`, `fleet/{v}/ota`, `fleet/{v}/cfg/..`, `fleet/{v}/state/..`, with one
//! filter in ten replaced by the wildcard `fleet/{v}/+/ack`) plus a few fleet-wide backend
//! wildcards.
//!
//! `cargo bench -p bench --bench trie`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use node::broker::trie::Trie;

const SUBS: u64 = 1_000_000;

/// Filter number `i` of the set: 90% literal, 10% with one `+`.
fn filter(i: u64) -> String {
    let v = i / 4;
    match i % 40 {
        n if n % 10 == 9 => format!("fleet/{v}/+/ack"),
        n if n % 4 == 0 => format!("fleet/{v}/cmd"),
        n if n % 4 == 1 => format!("fleet/{v}/ota"),
        n if n % 4 == 2 => format!("fleet/{v}/cfg/{n}"),
        n => format!("fleet/{v}/state/{n}"),
    }
}

fn build() -> Trie<u64, ()> {
    let mut t = Trie::default();
    for i in 0..SUBS {
        t.insert(&filter(i), i, ());
    }
    // Backends: a handful of fleet-wide wildcards every publish is checked against.
    for (k, f) in ["fleet/+/telemetry", "fleet/+/alerts/#", "$share/ops/fleet/+/cmd"].iter().enumerate() {
        t.insert(f, SUBS + k as u64, ());
    }
    t
}

fn trie(c: &mut Criterion) {
    let t = build();
    let wild = (0..SUBS).filter(|&i| filter(i).contains('+')).count();
    assert_eq!(wild as u64 * 10, SUBS, "10% wildcards");
    let mut out = Vec::with_capacity(16);
    let mut g = c.benchmark_group("trie_1M_subs_10pct_wildcards");
    g.throughput(Throughput::Elements(1));
    let mut v = 0u64;
    g.bench_function("match_vehicle_cmd", |b| {
        b.iter(|| {
            v = (v + 7919) % (SUBS / 4);
            out.clear();
            t.matches(black_box(&format!("fleet/{v}/cmd")), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("match_wildcard_ack", |b| {
        b.iter(|| {
            v = (v + 7919) % (SUBS / 4);
            out.clear();
            t.matches(black_box(&format!("fleet/{v}/door/ack")), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("match_telemetry_no_vehicle_sub", |b| {
        b.iter(|| {
            v = (v + 7919) % (SUBS / 4);
            out.clear();
            t.matches(black_box(&format!("fleet/{v}/telemetry")), &mut out);
            black_box(out.len())
        })
    });
    let mut t2 = t.clone();
    g.bench_function("insert_then_remove", |b| {
        b.iter(|| {
            v = (v + 7919) % (SUBS / 4);
            let f = format!("fleet/{v}/new/{v}");
            t2.insert(&f, u64::MAX, ());
            black_box(t2.remove(&f, u64::MAX))
        })
    });
    g.finish();
    let mut g = c.benchmark_group("trie_build");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SUBS));
    g.bench_function("insert_1M", |b| b.iter(|| black_box(build().len())));
    g.finish();
}

criterion_group!(benches, trie);
criterion_main!(benches);
