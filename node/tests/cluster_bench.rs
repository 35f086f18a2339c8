//! Measurements of a real cluster (ignored by default; run with the release binary):
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-quic cargo test --release -p node --test cluster_bench \
//!     -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `idle_cpu_of_hibernated_groups`: one node hosting 10,000 hibernated groups (replicas of
//!   3-node groups); its CPU time from `/proc/PID/stat` over 30 s.
//! - `proposals_per_second_with_and_without_batching`: 1,000 groups on 3 nodes, the
//!   in-node load generator on every leader; aggregate proposals/s and transport bytes per
//!   proposal, with transport coalescing (`[transport] coalesce`) on and off, and with poll
//!   round batching (`[raftstore] raft-batch-groups-max`) off too.
//!
//! `FLOTILLA_BENCH_IDLE_GROUPS` and `FLOTILLA_BENCH_GROUPS` override the group counts.

mod common_cluster;

use std::time::Duration;

use common_cluster::{ProcNode, TempDir, WAIT};
use hyper::Method;
use node::admin::bench::{BenchRequest, BenchResult};
use node::admin::client::call;
use node::group::GroupId;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

async fn three_nodes(tmp: &TempDir, extra: &[&str]) -> Vec<ProcNode> {
    let extra: Vec<String> = extra.iter().map(ToString::to_string).collect();
    let mut n1 = ProcNode::new(1, &tmp.0, Vec::new(), extra.clone());
    let seed = vec![n1.cluster];
    let mut n2 = ProcNode::new(2, &tmp.0, seed.clone(), extra.clone());
    let mut n3 = ProcNode::new(3, &tmp.0, seed, extra);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    vec![n1, n2, n3]
}

async fn create(nodes: &[ProcNode], groups: &[GroupId]) {
    for chunk in groups.chunks(5000) {
        for n in nodes {
            n.create_groups(chunk, &[1, 2, 3]).await;
        }
    }
}

/// Waits until every group has a leader (as seen by the nodes).
async fn wait_leaders(nodes: &[ProcNode], count: usize) {
    let start = tokio::time::Instant::now();
    loop {
        let mut led = 0;
        for n in nodes {
            led += n.groups().await.map_or(0, |g| g.iter().filter(|g| g.role == "leader").count());
        }
        if led >= count {
            return;
        }
        assert!(start.elapsed() < WAIT * 2, "only {led} of {count} groups have a leader");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored"]
async fn idle_cpu_of_hibernated_groups() {
    let count = env_or("FLOTILLA_BENCH_IDLE_GROUPS", 10_000);
    let tmp = TempDir::new("bench-idle");
    let nodes = three_nodes(&tmp, &[]).await;
    let groups: Vec<GroupId> = (1..=count).collect();
    create(&nodes, &groups).await;
    wait_leaders(&nodes, groups.len()).await;
    let start = tokio::time::Instant::now();
    loop {
        let hibernated = nodes[0].groups().await.map_or(0, |g| g.iter().filter(|g| g.hibernated).count());
        if hibernated == groups.len() {
            break;
        }
        assert!(start.elapsed() < WAIT * 2, "{hibernated} of {count} groups hibernated");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let pid = nodes[0].pid().expect("pid");
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let ticks = cpu_ticks(pid) - before;
    let cpu_pct = ticks as f64 / clk_tck() as f64 / window.as_secs_f64() * 100.0;
    eprintln!(
        "idle CPU of node 1 hosting {count} hibernated groups: {cpu_pct:.2}% of one core ({ticks} ticks in 30 s)"
    );
}

/// One measured load run.
struct Load {
    rate: f64,
    ok: u64,
    stream_bytes: u64,
    udp_bytes: u64,
    frames: u64,
}

async fn load(nodes: &[ProcNode], per_group: u64) -> Load {
    let before = transport_bytes(nodes).await;
    let mut tasks = Vec::new();
    for n in nodes {
        let addr = n.admin;
        tasks.push(tokio::spawn(async move {
            let req = BenchRequest {
                groups: None,
                proposals_per_group: per_group,
                window: 4,
                value_bytes: 64,
                timeout_ms: 120_000,
            };
            call::<_, BenchResult>(
                addr,
                Method::POST,
                "/v1/bench/propose",
                Some(&req),
                Duration::from_secs(300),
            )
            .await
            .expect("bench")
        }));
    }
    let mut ok = 0;
    let mut elapsed_ms: u64 = 0;
    for t in tasks {
        let r = t.await.expect("task");
        ok += r.succeeded;
        elapsed_ms = elapsed_ms.max(r.elapsed_ms);
    }
    let after = transport_bytes(nodes).await;
    Load {
        rate: ok as f64 / (elapsed_ms.max(1) as f64 / 1000.0),
        ok,
        stream_bytes: after.0 - before.0,
        udp_bytes: after.1 - before.1,
        frames: after.2 - before.2,
    }
}

/// Stream bytes, UDP bytes and frames sent, summed over the nodes.
async fn transport_bytes(nodes: &[ProcNode]) -> (u64, u64, u64) {
    let mut sum = (0, 0, 0);
    for n in nodes {
        let t = n.info().await.expect("info").transport;
        sum.0 += t.bytes_sent;
        sum.1 += t.udp_bytes_sent;
        sum.2 += t.frames_sent;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored"]
async fn proposals_per_second_with_and_without_batching() {
    let count = env_or("FLOTILLA_BENCH_GROUPS", 1000);
    let per_group = env_or("FLOTILLA_BENCH_PROPOSALS_PER_GROUP", 100);
    for (coalesce, batch) in [(true, 256), (false, 256), (false, 1)] {
        let tmp = TempDir::new("bench-load");
        let cfg = tmp.0.join("cluster.toml");
        let text =
            format!("[transport]\ncoalesce = {coalesce}\n\n[raftstore]\nraft-batch-groups-max = {batch}\n");
        std::fs::write(&cfg, text).expect("config");
        let cfg = cfg.display().to_string();
        let nodes = three_nodes(&tmp, &["--config", &cfg]).await;
        let groups: Vec<GroupId> = (1..=count).collect();
        create(&nodes, &groups).await;
        wait_leaders(&nodes, groups.len()).await;
        // Warm up (first proposals of a term, connections), then measure.
        let _ = load(&nodes, 5).await;
        let l = load(&nodes, per_group).await;
        let per = |x: u64| x as f64 / l.ok.max(1) as f64;
        eprintln!(
            "coalesce = {coalesce}, raft-batch-groups-max = {batch}: {} proposals over {count} groups, {:.0} proposals/s; \
             per proposal: {:.0} stream bytes, {:.0} UDP bytes, {:.2} frames",
            l.ok,
            l.rate,
            per(l.stream_bytes),
            per(l.udp_bytes),
            per(l.frames)
        );
    }
}
