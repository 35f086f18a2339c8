//! The fault schedule, fixed by the seed before the run and written into the history
//! header, so a run's faults can be replayed and checked.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::partition::Shape;

/// A kind of fault.
#[derive(
    Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a node, restart it after the fault's duration.
    Kill,
    /// SIGSTOP a node, SIGCONT after the duration.
    Pause,
    /// Shift a node's wall clock (libfaketime) by `skew_s`, back to 0 after the duration.
    Clock,
    /// Cut the network between nodes with nftables (needs namespaces and 2+ nodes).
    Partition,
    /// Fill the node's data filesystem (a small tmpfs); on heal free it and restart the
    /// node (the broker stops journaling after a write error until it restarts).
    DiskFull,
}

impl FaultKind {
    /// The name used in the history (`start-kill`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Clock => "clock",
            Self::Partition => "partition",
            Self::DiskFull => "disk-full",
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// Start, milliseconds after the run's start.
    pub at_ms: u64,
    /// What.
    pub kind: FaultKind,
    /// Target node (kill, pause, clock).
    pub node: usize,
    /// How long until it heals, milliseconds.
    pub duration_ms: u64,
    /// Clock offset, seconds (clock only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skew_s: i64,
    /// Partition shape (partition only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A schedule of non-overlapping faults within `time_limit_ms`, from `seed`. The first
/// fault starts after 5 s, faults are separated by 3–8 s of healthy time, and the last
/// one heals at least 3 s before the end.
pub fn schedule(seed: u64, kinds: &[FaultKind], nodes: usize, time_limit_ms: u64) -> Vec<Fault> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let mut out = Vec::new();
    if kinds.is_empty() || nodes == 0 {
        return out;
    }
    let mut t = 5_000;
    for _ in 0..100_000 {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let duration_ms = match kind {
            FaultKind::Kill => rng.random_range(1_000..4_000),
            FaultKind::Pause => rng.random_range(2_000..6_000),
            FaultKind::Clock => rng.random_range(5_000..12_000),
            FaultKind::Partition => rng.random_range(5_000..10_000),
            FaultKind::DiskFull => rng.random_range(3_000..8_000),
        };
        if t + duration_ms + 3_000 > time_limit_ms {
            break;
        }
        let skew_s = if kind == FaultKind::Clock {
            let s = rng.random_range(1..=600);
            if rng.random_bool(0.5) { s } else { -s }
        } else {
            0
        };
        let shape = (kind == FaultKind::Partition).then(|| Shape::ALL[rng.random_range(0..Shape::ALL.len())]);
        out.push(Fault { at_ms: t, kind, node: rng.random_range(0..nodes), duration_ms, skew_s, shape });
        t += duration_ms + rng.random_range(3_000..8_000);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_and_no_overlap() {
        let kinds = [FaultKind::Kill, FaultKind::Pause, FaultKind::Clock];
        let a = schedule(7, &kinds, 1, 300_000);
        assert_eq!(a, schedule(7, &kinds, 1, 300_000));
        assert_ne!(a, schedule(8, &kinds, 1, 300_000));
        assert!(a.len() >= 15, "{}", a.len());
        for w in a.windows(2) {
            assert!(w[0].at_ms + w[0].duration_ms < w[1].at_ms);
        }
        let last = a.last().expect("faults");
        assert!(last.at_ms + last.duration_ms + 3_000 <= 300_000);
        for k in kinds {
            assert!(a.iter().any(|f| f.kind == k), "{k:?} never scheduled");
        }
    }
}
