//! CORE. Operator influence (PD's `OpInfluence`): how the counts of each node will change once
//! the unfinished steps of every in-flight operator complete. Schedulers score nodes by the
//! view *plus* influence, so a round does not pile moves onto a node that is already receiving.
//!
//! Invariant: the [`InfluenceTable`] equals the sum of [`step_influence`] over the unfinished
//! steps of the in-flight operators. A step's contribution is removed exactly once, when it
//! finishes or when its operator ends; entries that reach zero are dropped.

use std::ops::{AddAssign, Neg, SubAssign};

use rustc_hash::FxHashMap;

use crate::operator::Step;
use crate::view::NodeId;

/// Pending change of one node's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeInfluence {
    /// Replicas gained (negative: lost).
    pub replicas: i64,
    /// Leaders gained (negative: lost).
    pub leaders: i64,
    /// Bytes of replica data gained (negative: lost).
    pub size_bytes: i64,
}

impl NodeInfluence {
    /// True if all deltas are zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl AddAssign for NodeInfluence {
    fn add_assign(&mut self, rhs: Self) {
        self.replicas += rhs.replicas;
        self.leaders += rhs.leaders;
        self.size_bytes += rhs.size_bytes;
    }
}

impl SubAssign for NodeInfluence {
    fn sub_assign(&mut self, rhs: Self) {
        *self += -rhs;
    }
}

impl Neg for NodeInfluence {
    type Output = Self;
    fn neg(self) -> Self {
        Self { replicas: -self.replicas, leaders: -self.leaders, size_bytes: -self.size_bytes }
    }
}

/// Per-node deltas of one step; `size_bytes` is the range's size when the operator was built.
pub fn step_influence(step: &Step, size_bytes: u64) -> Vec<(NodeId, NodeInfluence)> {
    let size = i64::try_from(size_bytes).unwrap_or(i64::MAX);
    match *step {
        Step::AddLearner { node } => {
            vec![(node, NodeInfluence { replicas: 1, size_bytes: size, ..NodeInfluence::default() })]
        }
        Step::RemovePeer { node } => {
            vec![(node, NodeInfluence { replicas: -1, size_bytes: -size, ..NodeInfluence::default() })]
        }
        Step::TransferLeader { from, to } => vec![
            (from, NodeInfluence { leaders: -1, ..NodeInfluence::default() }),
            (to, NodeInfluence { leaders: 1, ..NodeInfluence::default() }),
        ],
        Step::PromoteLearner { .. } | Step::Split { .. } | Step::Merge { .. } => Vec::new(),
    }
}

/// Sum of the influence of all unfinished steps, per node.
#[derive(Debug, Clone, Default)]
pub struct InfluenceTable {
    per_node: FxHashMap<NodeId, NodeInfluence>,
}

impl InfluenceTable {
    /// The pending delta for `node` (zero if none).
    pub fn get(&self, node: NodeId) -> NodeInfluence {
        self.per_node.get(&node).copied().unwrap_or_default()
    }

    /// True if no step is pending anywhere.
    pub fn is_empty(&self) -> bool {
        self.per_node.is_empty()
    }

    pub(crate) fn add(&mut self, deltas: &[(NodeId, NodeInfluence)]) {
        for (node, delta) in deltas {
            *self.per_node.entry(*node).or_default() += *delta;
        }
        self.prune(deltas);
    }

    pub(crate) fn sub(&mut self, deltas: &[(NodeId, NodeInfluence)]) {
        for (node, delta) in deltas {
            *self.per_node.entry(*node).or_default() -= *delta;
        }
        self.prune(deltas);
    }

    fn prune(&mut self, deltas: &[(NodeId, NodeInfluence)]) {
        for (node, _) in deltas {
            if self.per_node.get(node).is_some_and(NodeInfluence::is_zero) {
                self.per_node.remove(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_sub_returns_to_empty() {
        let mut table = InfluenceTable::default();
        let add = step_influence(&Step::AddLearner { node: NodeId(1) }, 100);
        let transfer = step_influence(&Step::TransferLeader { from: NodeId(1), to: NodeId(2) }, 100);
        table.add(&add);
        table.add(&transfer);
        assert_eq!(table.get(NodeId(1)), NodeInfluence { replicas: 1, leaders: -1, size_bytes: 100 });
        assert_eq!(table.get(NodeId(2)).leaders, 1);
        table.sub(&add);
        table.sub(&transfer);
        assert!(table.is_empty());
    }
}
