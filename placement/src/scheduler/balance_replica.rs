//! CORE. Replica balancing (PD `balance-region`, count-based): repeatedly takes the node with
//! the highest replica score, samples a healthy idle range on it (followers before leaders, as
//! moving a leader costs an extra transfer), and moves that replica to the lowest-score node
//! that passes the target filters, if the gap is worth it (the rule in [`super`]).
//!
//! Only up, serving, non-busy nodes take part; draining nodes are emptied by
//! [`super::evict::Evict`], down nodes by [`super::repair::Repair`].

use rand::rngs::SmallRng;
use rustc_hash::FxHashSet;

use super::{ScheduleContext, Scheduler, Scored, sort_descending, tolerance, worth_moving};
use crate::controller::SlotKind;
use crate::filter::{FailureDomain, NoReplicaOf, NodeFilter, PendingBelowLimit, SlotFree, check_all};
use crate::operator::{OpClass, OpKind, Operator, build};
use crate::view::{NodeId, RangeInfo};

/// Count-based replica balancer.
#[derive(Debug, Clone, Copy, Default)]
pub struct BalanceReplica;

impl Scheduler for BalanceReplica {
    fn name(&self) -> &'static str {
        "balance-replica"
    }

    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, rng: &mut SmallRng) {
        let mut nodes: Vec<Scored> = cx
            .nodes
            .iter()
            .filter(|n| n.up && !n.draining && !n.busy)
            .map(|n| Scored { id: n.id, score: cx.replica_score(n.id), weight: n.weight })
            .collect();
        if nodes.len() < 2 {
            return;
        }
        let tolerance = tolerance(cx.config(), &nodes);
        let budget = cx.config().ops_per_scheduler_round_max;
        let mut exhausted = FxHashSet::default();
        let mut admitted = 0;
        while admitted < budget && cx.controller().class_free(OpClass::Replica) {
            sort_descending(&mut nodes);
            let has_slot = |id| cx.controller().slot_free(id, SlotKind::ReplicaMove);
            let Some(src) = nodes.iter().copied().find(|n| !exhausted.contains(&n.id) && has_slot(n.id))
            else {
                break;
            };
            let Some(lowest) = nodes.iter().rev().copied().find(|n| n.id != src.id && has_slot(n.id)) else {
                break;
            };
            if !worth_moving(src, lowest, tolerance) {
                break;
            }
            let Some(op) = pick_move(cx, rng, src, &nodes, tolerance) else {
                exhausted.insert(src.id);
                continue;
            };
            let target = added_node(&op);
            if cx.admit(op).is_err() {
                exhausted.insert(src.id);
                continue;
            }
            admitted += 1;
            for n in nodes.iter_mut().filter(|n| n.id == src.id || Some(n.id) == target) {
                n.score = cx.replica_score(n.id);
            }
        }
    }
}

/// Samples ranges on `src` and returns a move to the best target for the first that has one.
fn pick_move(
    cx: &ScheduleContext<'_>,
    rng: &mut SmallRng,
    src: Scored,
    nodes: &[Scored],
    tolerance: f64,
) -> Option<Operator> {
    let mut leader_fallback: Option<&RangeInfo> = None;
    for _ in 0..cx.config().range_samples_per_node {
        let id = cx.view.node_ranges(src.id).sample(rng)?;
        let Some(range) = cx.view.range(id) else { continue };
        if cx.is_busy(id) || !cx.is_healthy(range) {
            continue;
        }
        if range.is_leader(src.id) {
            leader_fallback = leader_fallback.or(Some(range));
            continue;
        }
        if let Some(op) = move_from(cx, range, src, nodes, tolerance) {
            return Some(op);
        }
    }
    leader_fallback.and_then(|range| move_from(cx, range, src, nodes, tolerance))
}

/// Moves `range`'s replica on `src` to the lowest-score node that passes the target filters,
/// if that is worth it.
fn move_from(
    cx: &ScheduleContext<'_>,
    range: &RangeInfo,
    src: Scored,
    nodes: &[Scored],
    tolerance: f64,
) -> Option<Operator> {
    let fcx = cx.filter_context();
    let no_replica = NoReplicaOf(range);
    let domain = FailureDomain { range, replaced: Some(src.id) };
    // Liveness, drain and busy were applied when `nodes` was built.
    let filters: [&dyn NodeFilter; 4] =
        [&SlotFree(SlotKind::ReplicaMove), &PendingBelowLimit, &no_replica, &domain];
    let target = nodes.iter().rev().copied().find(|n| {
        n.id != src.id && cx.nodes.get(n.id).is_some_and(|status| check_all(&filters, &fcx, status).is_ok())
    })?;
    if !worth_moving(src, target, tolerance) {
        return None;
    }
    let leader_to = if range.is_leader(src.id) {
        Some(cx.pick_leader_target(range, &[src.id], Some(target.id))?)
    } else {
        None
    };
    Some(build::move_replica(OpKind::BalanceReplica, range, src.id, target.id, leader_to, cx.now_ms))
}

fn added_node(op: &Operator) -> Option<NodeId> {
    op.steps.iter().find_map(|s| match s {
        crate::operator::Step::AddLearner { node } => Some(*node),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Step;
    use crate::scheduler::testkit::{range, run, view, zone_config};

    #[test]
    fn moves_from_crowded_node_to_empty_one_in_an_allowed_zone() {
        // Nodes 1-3 in zones a, b, c hold everything; node 4 (zone a) and 5 (zone d) are empty.
        let mut v = view(&["a", "b", "c", "a", "d"]);
        for id in 1..=30 {
            v.put_range(range(id, &[1, 2, 3])).unwrap();
        }
        let (coordinator, ops) = run(&v, zone_config(), Box::new(BalanceReplica), 0);
        assert!(!ops.is_empty());
        for op in &ops {
            assert_eq!(op.kind, OpKind::BalanceReplica);
            let Step::AddLearner { node: to } = op.steps[0] else { panic!("starts with an add: {op:?}") };
            let Some(Step::RemovePeer { node: from }) = op.steps.last().cloned() else {
                panic!("ends with a removal")
            };
            // Node 4 shares zone a with node 1, so it may only replace node 1's replica.
            if to.0 == 4 {
                assert_eq!(from.0, 1, "{op:?}");
            }
            assert!(from.0 <= 3 && to.0 >= 4);
        }
        // Per-node move limit (8) bounds the adds per target.
        let per_target =
            |n| ops.iter().filter(|op| op.steps[0] == Step::AddLearner { node: NodeId(n) }).count();
        assert!(per_target(4) <= 8 && per_target(5) <= 8);
        assert_eq!(coordinator.controller().in_flight(), ops.len());
    }

    #[test]
    fn balanced_cluster_gets_no_moves() {
        let mut v = view(&["a", "b", "c"]);
        for id in 1..=30 {
            v.put_range(range(id, &[1, 2, 3])).unwrap();
        }
        let (_, ops) = run(&v, zone_config(), Box::new(BalanceReplica), 0);
        assert!(ops.is_empty());
    }
}
