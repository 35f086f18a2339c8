//! CORE. Operator constructors: the only way schedulers build step lists, so the step-order
//! invariants of [`crate::operator`] hold by construction. Constructors do not check the
//! cluster (liveness, limits, failure domains); the filters and the controller's admission
//! check do.

use crate::operator::{OpKind, Operator, SplitPolicy, Step};
use crate::view::{NodeId, RangeInfo, Role};

/// Moves the replica on `from` to `to`: add a learner on `to`, promote it if `from` votes,
/// hand leadership to `leader_to` (default `to`) if `from` leads, then remove `from`.
pub fn move_replica(
    kind: OpKind,
    range: &RangeInfo,
    from: NodeId,
    to: NodeId,
    leader_to: Option<NodeId>,
    now_ms: u64,
) -> Operator {
    let mut steps = vec![Step::AddLearner { node: to }];
    let from_votes = range.replica(from).is_some_and(|r| r.role != Role::Learner);
    if from_votes {
        steps.push(Step::PromoteLearner { node: to });
    }
    if range.is_leader(from) {
        steps.push(Step::TransferLeader { from, to: leader_to.unwrap_or(to) });
    }
    steps.push(Step::RemovePeer { node: from });
    Operator::new(kind, range, steps, now_ms)
}

/// Adds a voter on `to` (learner first, then promotion).
pub fn add_voter(kind: OpKind, range: &RangeInfo, to: NodeId, now_ms: u64) -> Operator {
    let steps = vec![Step::AddLearner { node: to }, Step::PromoteLearner { node: to }];
    Operator::new(kind, range, steps, now_ms)
}

/// Removes the replica on `node`, first moving leadership to `leader_to` if `node` leads.
/// Returns `None` if `node` leads and no `leader_to` is given.
pub fn remove_replica(
    kind: OpKind,
    range: &RangeInfo,
    node: NodeId,
    leader_to: Option<NodeId>,
    now_ms: u64,
) -> Option<Operator> {
    let mut steps = Vec::with_capacity(2);
    if range.is_leader(node) {
        steps.push(Step::TransferLeader { from: node, to: leader_to? });
    }
    steps.push(Step::RemovePeer { node });
    Some(Operator::new(kind, range, steps, now_ms))
}

/// Moves leadership to the voter on `to`. Returns `None` if the range has no known leader.
pub fn transfer_leader(kind: OpKind, range: &RangeInfo, to: NodeId, now_ms: u64) -> Option<Operator> {
    let from = range.leader?;
    Some(Operator::new(kind, range, vec![Step::TransferLeader { from, to }], now_ms))
}

/// Splits the range.
pub fn split(kind: OpKind, range: &RangeInfo, policy: SplitPolicy, now_ms: u64) -> Operator {
    Operator::new(kind, range, vec![Step::Split { policy }], now_ms)
}

/// Merges `source` into the adjacent `target`: first moves `source`'s replicas onto
/// `target`'s voter nodes (pairing each removal with an add in the same failure domain when
/// `same_domain` finds one, and moving leadership ahead of a leader's removal), then merges.
pub fn merge(
    source: &RangeInfo,
    target: &RangeInfo,
    same_domain: impl Fn(NodeId, NodeId) -> bool,
    now_ms: u64,
) -> Operator {
    let target_nodes: Vec<NodeId> = target.voter_nodes().collect();
    let to_add: Vec<NodeId> = target_nodes.iter().copied().filter(|n| !source.has_replica(*n)).collect();
    let mut to_remove: Vec<NodeId> =
        source.replicas.iter().map(|r| r.node).filter(|n| !target_nodes.contains(n)).collect();
    let mut leader = source.leader;
    let mut steps = Vec::new();
    let mut remove = |steps: &mut Vec<Step>, node: NodeId, heir: NodeId| {
        if leader == Some(node) {
            steps.push(Step::TransferLeader { from: node, to: heir });
            leader = Some(heir);
        }
        steps.push(Step::RemovePeer { node });
    };
    for add in to_add {
        steps.push(Step::AddLearner { node: add });
        steps.push(Step::PromoteLearner { node: add });
        if to_remove.is_empty() {
            continue;
        }
        let pick = to_remove.iter().position(|r| same_domain(*r, add)).unwrap_or(0);
        let node = to_remove.remove(pick);
        remove(&mut steps, node, add);
    }
    for node in to_remove {
        remove(&mut steps, node, target_nodes[0]);
    }
    steps.push(Step::Merge { target: target.id, target_version: target.epoch.version });
    let mut op = Operator::new(OpKind::Merge, source, steps, now_ms);
    op.related = Some(target.id);
    op
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{Epoch, RangeId, Replica};

    fn range(id: u64, nodes: &[u64], leader: u64) -> RangeInfo {
        RangeInfo {
            id: RangeId(id),
            start_key: vec![id as u8],
            end_key: vec![id as u8 + 1],
            epoch: Epoch { version: 7, conf_ver: 3 },
            replicas: nodes.iter().map(|n| Replica::voter(NodeId(*n))).collect(),
            leader: Some(NodeId(leader)),
            pending: Vec::new(),
            size_bytes: 1,
            keys: 1,
            write_bytes_per_sec: 0,
            write_keys_per_sec: 0,
            split_key_hint: None,
        }
    }

    #[test]
    fn moving_the_leader_transfers_before_removal() {
        let r = range(1, &[1, 2, 3], 1);
        let op = move_replica(OpKind::BalanceReplica, &r, NodeId(1), NodeId(4), Some(NodeId(2)), 0);
        assert_eq!(
            op.steps,
            vec![
                Step::AddLearner { node: NodeId(4) },
                Step::PromoteLearner { node: NodeId(4) },
                Step::TransferLeader { from: NodeId(1), to: NodeId(2) },
                Step::RemovePeer { node: NodeId(1) },
            ]
        );
    }

    #[test]
    fn merge_aligns_peers_then_merges() {
        let source = range(1, &[1, 2, 3], 3);
        let target = range(2, &[2, 4, 5], 4);
        let op = merge(&source, &target, |a, b| a.0 % 2 == b.0 % 2, 0);
        assert_eq!(op.related, Some(RangeId(2)));
        assert_eq!(
            op.steps,
            vec![
                Step::AddLearner { node: NodeId(4) },
                Step::PromoteLearner { node: NodeId(4) },
                Step::RemovePeer { node: NodeId(1) },
                Step::AddLearner { node: NodeId(5) },
                Step::PromoteLearner { node: NodeId(5) },
                Step::TransferLeader { from: NodeId(3), to: NodeId(5) },
                Step::RemovePeer { node: NodeId(3) },
                Step::Merge { target: RangeId(2), target_version: 7 },
            ]
        );
    }
}
