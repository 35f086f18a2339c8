//! CORE. [`Operator`]: an ordered list of [`Step`]s on one range (a merge also locks its
//! target), with the epoch and span it was planned against. Schedulers build operators with
//! the constructors in [`build`]; the [`crate::controller::Controller`] admits them, sends one
//! step at a time to the range leader, and ends them on success, cancel or timeout.
//!
//! Invariants of every operator the constructors return:
//! * membership changes are single steps, add-learner before promote before remove, so the
//!   voter set never shrinks below its size at the start until the new voter is in;
//! * the leader's replica is never removed: a `TransferLeader` precedes such a removal;
//! * influence is computed from the steps (see [`crate::influence`]), so it is never stale
//!   with respect to what the operator will do.

pub mod build;
mod step;

use std::fmt;

pub use step::{SplitPolicy, Step};

use crate::view::{Epoch, RangeId, RangeInfo};

/// Identifies an admitted operator; ids are assigned in admission order and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperatorId(pub u64);

impl OperatorId {
    /// The id of an operator that has not been admitted yet.
    pub const UNASSIGNED: Self = Self(0);
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// Why an operator exists: which scheduler or checker made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Move a replica from a node above the mean to one below.
    BalanceReplica,
    /// Move a leader from a node above the mean to one below.
    BalanceLeader,
    /// Split a range over the size or key threshold.
    SplitSize,
    /// Split a range over the write-load threshold.
    SplitLoad,
    /// Merge a small cold range into its neighbour (with peer alignment first).
    Merge,
    /// Re-create the replica of a node down longer than the repair delay.
    RepairDown,
    /// Fix a range's membership: missing or extra voters, stray learners, failure domains.
    RepairReplicas,
    /// Move a leader off a draining node.
    EvictLeader,
    /// Move a replica off a draining node.
    EvictReplica,
}

impl OpKind {
    /// Every kind, for reports.
    pub const ALL: [Self; 9] = [
        Self::BalanceReplica,
        Self::BalanceLeader,
        Self::SplitSize,
        Self::SplitLoad,
        Self::Merge,
        Self::RepairDown,
        Self::RepairReplicas,
        Self::EvictLeader,
        Self::EvictReplica,
    ];

    /// The concurrency class this kind is limited by.
    pub fn class(self) -> OpClass {
        match self {
            Self::BalanceReplica | Self::RepairDown | Self::RepairReplicas | Self::EvictReplica => {
                OpClass::Replica
            }
            Self::BalanceLeader | Self::EvictLeader => OpClass::Leader,
            Self::SplitSize | Self::SplitLoad => OpClass::Split,
            Self::Merge => OpClass::Merge,
        }
    }

    /// A short name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::BalanceReplica => "balance-replica",
            Self::BalanceLeader => "balance-leader",
            Self::SplitSize => "split-size",
            Self::SplitLoad => "split-load",
            Self::Merge => "merge",
            Self::RepairDown => "repair-down",
            Self::RepairReplicas => "repair-replicas",
            Self::EvictLeader => "evict-leader",
            Self::EvictReplica => "evict-replica",
        }
    }
}

/// Cluster-wide concurrency classes (see the `*_ops_max` fields of the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// Operators that move replicas.
    Replica,
    /// Operators that only move leaders.
    Leader,
    /// Splits.
    Split,
    /// Merges.
    Merge,
}

impl OpClass {
    /// Every class, in index order.
    pub const ALL: [Self; 4] = [Self::Replica, Self::Leader, Self::Split, Self::Merge];

    /// Dense index, for per-class counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A planned change of one range: steps plus what it was planned against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Assigned on admission; [`OperatorId::UNASSIGNED`] before.
    pub id: OperatorId,
    /// Why it exists.
    pub kind: OpKind,
    /// The range it changes (the source, for a merge).
    pub range: RangeId,
    /// Another range it locks (the merge target).
    pub related: Option<RangeId>,
    /// The steps, run in order, one at a time.
    pub steps: Vec<Step>,
    /// The range's epoch when planned. A `version` change under a non-split, non-merge
    /// operator means the range was split or merged under it, and the operator is cancelled.
    pub start_epoch: Epoch,
    /// The range's start key when planned.
    pub start_key: Vec<u8>,
    /// The range's end key when planned.
    pub end_key: Vec<u8>,
    /// The range's size when planned (drives influence and add-learner timeouts).
    pub size_bytes: u64,
    /// When it was built.
    pub created_ms: u64,
}

impl Operator {
    /// An unadmitted operator of `kind` with `steps` on `range`, planned at `now_ms`.
    pub fn new(kind: OpKind, range: &RangeInfo, steps: Vec<Step>, now_ms: u64) -> Self {
        Self {
            id: OperatorId::UNASSIGNED,
            kind,
            range: range.id,
            related: None,
            steps,
            start_epoch: range.epoch,
            start_key: range.start_key.clone(),
            end_key: range.end_key.clone(),
            size_bytes: range.size_bytes,
            created_ms: now_ms,
        }
    }

    /// True if some step adds a replica (so the operator moves data).
    pub fn moves_data(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::AddLearner { .. }))
    }
}
