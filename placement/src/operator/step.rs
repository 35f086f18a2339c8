//! CORE. [`Step`]: one action an operator asks a range leader to take, how the controller
//! recognises from a heartbeat that it has happened, and how long it may take.
//!
//! Steps are idempotent from the node's side: a step re-sent after a lost reply, or one that
//! has already taken effect, is recognised by [`Step::is_finished`] and skipped.

use crate::config::Config;
use crate::operator::Operator;
use crate::view::{ClusterView, NodeId, RangeId, RangeInfo, Role};

/// Where a split cuts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SplitPolicy {
    /// The leader picks the key at the approximate middle of the data (TiKV's approximate
    /// split: only the leader can see the data).
    Middle,
    /// At this key (e.g. the leader's load-split hint). Must lie strictly inside the range.
    AtKey(Vec<u8>),
}

/// One membership, leadership or key-span change of a range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Add a learner on `node`; finished once it has caught up (not pending).
    AddLearner {
        /// Where the new replica goes.
        node: NodeId,
    },
    /// Make the caught-up learner on `node` a voter.
    PromoteLearner {
        /// The learner's node.
        node: NodeId,
    },
    /// Remove the replica on `node` (never the leader's).
    RemovePeer {
        /// The replica's node.
        node: NodeId,
    },
    /// Move leadership from `from` to the voter on `to`.
    TransferLeader {
        /// The current leader's node when the step was planned.
        from: NodeId,
        /// The new leader's node.
        to: NodeId,
    },
    /// Split the range in two.
    Split {
        /// Where to cut.
        policy: SplitPolicy,
    },
    /// Merge the operator's range (the source) into the adjacent `target`. Source and target
    /// replicas must sit on the same nodes; the operator's earlier steps arrange that.
    Merge {
        /// The range that absorbs the source.
        target: RangeId,
        /// Target version when planned; the merge is done when the target's version moves on
        /// and its span covers the source's.
        target_version: u64,
    },
}

impl Step {
    /// True if the view shows that this step of `op` has taken effect.
    pub fn is_finished(&self, op: &Operator, view: &ClusterView) -> bool {
        let range = view.range(op.range);
        match *self {
            Self::AddLearner { node } => range.is_some_and(|r| r.has_replica(node) && !r.is_pending(node)),
            Self::PromoteLearner { node } => {
                range.and_then(|r| r.replica(node)).is_some_and(|r| r.role == Role::Voter)
            }
            Self::RemovePeer { node } => range.is_some_and(|r| !r.has_replica(node)),
            Self::TransferLeader { to, .. } => range.is_some_and(|r| r.leader == Some(to)),
            Self::Split { .. } => range.is_some_and(|r| r.epoch.version > op.start_epoch.version),
            Self::Merge { target, target_version } => view
                .range(target)
                .is_some_and(|t| t.epoch.version > target_version && covers(t, &op.start_key, &op.end_key)),
        }
    }

    /// True if the view shows the step under way but not finished (a learner that is still
    /// catching up): re-sending it would be refused, so the controller only waits.
    pub fn is_in_progress(&self, range: &RangeInfo) -> bool {
        match *self {
            Self::AddLearner { node } => range.replica(node).is_some_and(|r| r.role == Role::Learner),
            _ => false,
        }
    }

    /// How long the step may take once sent, for a range of `size_bytes`.
    pub fn timeout_ms(&self, config: &Config, size_bytes: u64) -> u64 {
        match self {
            Self::AddLearner { .. } => {
                let transfer_ms = size_bytes.saturating_mul(1000) / config.snapshot_bytes_per_sec_min;
                config.conf_change_timeout_ms.saturating_add(transfer_ms)
            }
            Self::PromoteLearner { .. } | Self::RemovePeer { .. } => config.conf_change_timeout_ms,
            Self::TransferLeader { .. } => config.leader_transfer_timeout_ms,
            Self::Split { .. } => config.split_timeout_ms,
            Self::Merge { .. } => config.merge_timeout_ms,
        }
    }

    /// True for steps that change membership (and so the epoch's `conf_ver`).
    pub fn is_conf_change(&self) -> bool {
        matches!(self, Self::AddLearner { .. } | Self::PromoteLearner { .. } | Self::RemovePeer { .. })
    }
}

/// True if `outer`'s span contains `[start, end)` (empty `end` = unbounded).
fn covers(outer: &RangeInfo, start: &[u8], end: &[u8]) -> bool {
    let starts_before = outer.start_key.as_slice() <= start;
    let ends_after = !outer.has_end() || (!end.is_empty() && end <= outer.end_key.as_slice());
    starts_before && ends_after
}
