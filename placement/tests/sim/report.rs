//! Counters of a simulation run, the lower bounds a case is measured against, and the report
//! printed at the end of each case (run with `--nocapture` to see it).

use std::collections::BTreeMap;
use std::time::Duration;

use placement::{ClusterView, NodeId, OpKind};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Default)]
pub(crate) struct SimStats {
    pub(crate) rounds: u64,
    pub(crate) heartbeats: u64,
    pub(crate) steps_applied: u64,
    pub(crate) steps_rejected: u64,
    pub(crate) commands_dropped: u64,
    pub(crate) learners_caught_up: u64,
    pub(crate) learners_stuck: u64,
    pub(crate) bytes_moved: u64,
    pub(crate) leader_transfers: u64,
    pub(crate) splits: u64,
    pub(crate) merges: u64,
    pub(crate) admitted: BTreeMap<OpKind, u64>,
    pub(crate) finished: BTreeMap<OpKind, u64>,
    pub(crate) cancelled: BTreeMap<OpKind, u64>,
    pub(crate) timed_out: BTreeMap<OpKind, u64>,
    pub(crate) schedule_wall: Duration,
}

/// Lower bounds for rebalancing `nodes` from the view's current counts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bounds {
    /// Sum over nodes of max(0, replicas - mean): replica moves to reach the exact mean.
    pub(crate) replica_moves: u64,
    /// The same, but only to within `tolerance_pct` of the mean (what the checker demands).
    pub(crate) replica_moves_at_tolerance: u64,
    /// Sum over nodes of max(0, leaders - mean).
    pub(crate) leader_surplus: u64,
    /// Bytes if each surplus node shed its smallest replicas.
    pub(crate) bytes_min: u64,
    /// Bytes at the mean range size: `replica_moves * mean size`.
    pub(crate) bytes_mean: u64,
}

pub(crate) fn bounds(view: &ClusterView, nodes: &[NodeId], tolerance_pct: f64) -> Bounds {
    let n = nodes.len() as f64;
    let counts: Vec<(NodeId, f64, f64)> =
        nodes.iter().map(|&id| (id, view.replica_count(id) as f64, view.leader_count(id) as f64)).collect();
    let total: f64 = counts.iter().map(|c| c.1).sum();
    let mean = total / n;
    let mean_leaders = counts.iter().map(|c| c.2).sum::<f64>() / n;
    let surplus = |over: f64| counts.iter().map(|c| (c.1 - over).max(0.0)).sum::<f64>();
    let deficit = |under: f64| counts.iter().map(|c| (under - c.1).max(0.0)).sum::<f64>();
    let tol = tolerance_pct / 100.0;
    let replica_moves = surplus(mean).floor() as u64;
    let at_tol = surplus(mean * (1.0 + tol)).max(deficit(mean * (1.0 - tol))).ceil() as u64;
    let leader_surplus = counts.iter().map(|c| (c.2 - mean_leaders).max(0.0)).sum::<f64>().floor() as u64;
    let mut bytes_min = 0u64;
    let mut all_sizes = 0u128;
    let mut all_count = 0u128;
    for &(id, count, _) in &counts {
        let mut sizes: Vec<u64> =
            view.node_ranges(id).iter().filter_map(|r| view.range(r)).map(|r| r.size_bytes).collect();
        all_sizes += sizes.iter().map(|s| u128::from(*s)).sum::<u128>();
        all_count += sizes.len() as u128;
        let shed = (count - mean).max(0.0).floor() as usize;
        sizes.sort_unstable();
        bytes_min += sizes.iter().take(shed).sum::<u64>();
    }
    let mean_size = all_sizes.checked_div(all_count).unwrap_or(0) as u64;
    Bounds {
        replica_moves,
        replica_moves_at_tolerance: at_tol,
        leader_surplus,
        bytes_min,
        bytes_mean: replica_moves * mean_size,
    }
}

fn sum(map: &BTreeMap<OpKind, u64>) -> u64 {
    map.values().sum()
}

fn kinds(map: &BTreeMap<OpKind, u64>) -> String {
    map.iter().map(|(k, v)| format!("{}={v}", k.name())).collect::<Vec<_>>().join(" ")
}

pub(crate) fn print(
    case: &str,
    seed: u64,
    sim_ms: u64,
    wall: Duration,
    stats: &SimStats,
    moves: u64,
    bounds: Option<&Bounds>,
) {
    println!(
        "== sim {case} seed={seed}: quiescent at {:.1} s simulated, {:.2} s wall ({:.2} s in schedule), {} rounds",
        sim_ms as f64 / 1000.0,
        wall.as_secs_f64(),
        stats.schedule_wall.as_secs_f64(),
        stats.rounds
    );
    println!("   operators admitted {} [{}]", sum(&stats.admitted), kinds(&stats.admitted));
    println!(
        "   finished {} / cancelled {} / timed out {}  [timeouts: {}] [cancels: {}]",
        sum(&stats.finished),
        sum(&stats.cancelled),
        sum(&stats.timed_out),
        kinds(&stats.timed_out),
        kinds(&stats.cancelled)
    );
    println!(
        "   steps applied {} rejected {} dropped {}; heartbeats {}; leader transfers {}; splits {}; merges {}",
        stats.steps_applied,
        stats.steps_rejected,
        stats.commands_dropped,
        stats.heartbeats,
        stats.leader_transfers,
        stats.splits,
        stats.merges
    );
    println!(
        "   learners caught up {} (stuck {}); data moved {:.1} GiB",
        stats.learners_caught_up,
        stats.learners_stuck,
        stats.bytes_moved as f64 / MIB / 1024.0
    );
    if let Some(b) = bounds {
        let ratio = |x: u64, lb: u64| if lb == 0 { f64::NAN } else { x as f64 / lb as f64 };
        println!(
            "   replica-moving operators {moves} vs lower bound {} ({:.3}x; bound to within tolerance {})",
            b.replica_moves,
            ratio(moves, b.replica_moves),
            b.replica_moves_at_tolerance
        );
        println!(
            "   data moved {:.1} GiB vs lower bound {:.1} GiB smallest-first ({:.2}x), {:.1} GiB at mean size ({:.2}x)",
            stats.bytes_moved as f64 / MIB / 1024.0,
            b.bytes_min as f64 / MIB / 1024.0,
            ratio(stats.bytes_moved, b.bytes_min),
            b.bytes_mean as f64 / MIB / 1024.0,
            ratio(stats.bytes_moved, b.bytes_mean)
        );
        println!(
            "   leader surplus at start {}; leader transfers applied {}",
            b.leader_surplus, stats.leader_transfers
        );
    }
}
