//! CORE. Leader balancing (PD `balance-leader`, count policy). Source first: take the node
//! with the highest leader score, sample ranges it leads, and transfer one to its
//! lowest-score follower if the gap is worth it. If the top source has no such range, try
//! target first: take the lowest-score node, sample ranges it follows, and pull leadership
//! from a leader whose score is far enough above.
//!
//! Busy nodes may give leaders away but receive none; draining nodes are left to
//! [`super::evict::Evict`].

use rand::rngs::SmallRng;
use rustc_hash::FxHashSet;

use super::{ScheduleContext, Scheduler, Scored, sort_descending, tolerance, worth_moving};
use crate::controller::SlotKind;
use crate::operator::{OpClass, OpKind, Operator, Step, build};
use crate::view::{NodeId, Role};

/// Count-based leader balancer.
#[derive(Debug, Clone, Copy, Default)]
pub struct BalanceLeader;

impl Scheduler for BalanceLeader {
    fn name(&self) -> &'static str {
        "balance-leader"
    }

    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, rng: &mut SmallRng) {
        let mut nodes: Vec<Scored> = cx
            .nodes
            .iter()
            .filter(|n| n.up && !n.draining)
            .map(|n| Scored { id: n.id, score: cx.leader_score(n.id), weight: n.weight })
            .collect();
        if nodes.len() < 2 {
            return;
        }
        let tolerance = tolerance(cx.config(), &nodes);
        let budget = cx.config().ops_per_scheduler_round_max;
        let (mut spent_sources, mut spent_targets) = (FxHashSet::default(), FxHashSet::default());
        let mut admitted = 0;
        while admitted < budget && cx.controller().class_free(OpClass::Leader) {
            sort_descending(&mut nodes);
            let has_slot = |id| cx.controller().slot_free(id, SlotKind::LeaderTransfer);
            let receives = |n: &Scored| has_slot(n.id) && cx.nodes.get(n.id).is_some_and(|s| !s.busy);
            let src = nodes.iter().copied().find(|n| !spent_sources.contains(&n.id) && has_slot(n.id));
            let dst = nodes.iter().rev().copied().find(|n| !spent_targets.contains(&n.id) && receives(n));
            let (Some(src), Some(dst)) = (src, dst) else { break };
            if !worth_moving(src, dst, tolerance) {
                break;
            }
            let op = match source_first(cx, rng, src, &nodes, tolerance) {
                Some(op) => Some(op),
                None => {
                    spent_sources.insert(src.id);
                    target_first(cx, rng, dst, &nodes, tolerance).or_else(|| {
                        spent_targets.insert(dst.id);
                        None
                    })
                }
            };
            let Some((op, from, to)) = op.and_then(|op| match op.steps[..] {
                [Step::TransferLeader { from, to }] => Some((op, from, to)),
                _ => None,
            }) else {
                continue;
            };
            if cx.admit(op).is_err() {
                spent_sources.insert(from);
                continue;
            }
            admitted += 1;
            for n in nodes.iter_mut().filter(|n| n.id == from || n.id == to) {
                n.score = cx.leader_score(n.id);
            }
        }
    }
}

fn scored(nodes: &[Scored], id: NodeId) -> Option<Scored> {
    nodes.iter().copied().find(|n| n.id == id)
}

fn source_first(
    cx: &ScheduleContext<'_>,
    rng: &mut SmallRng,
    src: Scored,
    nodes: &[Scored],
    tolerance: f64,
) -> Option<Operator> {
    for _ in 0..cx.config().range_samples_per_node {
        let id = cx.view.node_leaders(src.id).sample(rng)?;
        let Some(range) = cx.view.range(id) else { continue };
        if cx.is_busy(id) || range.is_joint() {
            continue;
        }
        let Some(to) = cx.pick_leader_target(range, &[src.id], None) else { continue };
        let Some(dst) = scored(nodes, to) else { continue };
        if worth_moving(src, dst, tolerance) {
            return build::transfer_leader(OpKind::BalanceLeader, range, to, cx.now_ms);
        }
    }
    None
}

fn target_first(
    cx: &ScheduleContext<'_>,
    rng: &mut SmallRng,
    dst: Scored,
    nodes: &[Scored],
    tolerance: f64,
) -> Option<Operator> {
    for _ in 0..cx.config().range_samples_per_node {
        let id = cx.view.node_ranges(dst.id).sample(rng)?;
        let Some(range) = cx.view.range(id) else { continue };
        let Some(leader) = range.leader else { continue };
        let follower =
            range.replica(dst.id).is_some_and(|r| r.role == Role::Voter) && !range.is_pending(dst.id);
        if cx.is_busy(id) || range.is_joint() || !follower || leader == dst.id {
            continue;
        }
        let Some(src) = scored(nodes, leader) else { continue };
        if cx.controller().slot_free(leader, SlotKind::LeaderTransfer) && worth_moving(src, dst, tolerance) {
            return build::transfer_leader(OpKind::BalanceLeader, range, dst.id, cx.now_ms);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testkit::{range, run, view, zone_config};

    #[test]
    fn spreads_leaders_within_per_node_limit() {
        let mut v = view(&["a", "b", "c"]);
        for id in 1..=30 {
            v.put_range(range(id, &[1, 2, 3])).unwrap();
        }
        let (_, ops) = run(&v, zone_config(), Box::new(BalanceLeader), 0);
        // Node 1 leads all 30; its 4 leader-transfer slots bound this round.
        assert_eq!(ops.len(), 4);
        for op in &ops {
            assert!(
                matches!(op.steps[..], [Step::TransferLeader { from: NodeId(1), to }] if to != NodeId(1))
            );
        }
    }

    #[test]
    fn busy_and_draining_nodes_receive_no_leaders() {
        let mut v = view(&["a", "b", "c"]);
        for id in 1..=30 {
            v.put_range(range(id, &[1, 2, 3])).unwrap();
        }
        v.handle_node_heartbeat(
            crate::view::NodeHeartbeat {
                id: NodeId(2),
                capacity_bytes: 1 << 40,
                available_bytes: 1 << 40,
                busy: true,
            },
            0,
        )
        .unwrap();
        v.set_node_state(NodeId(3), crate::view::NodeState::Draining).unwrap();
        let (_, ops) = run(&v, zone_config(), Box::new(BalanceLeader), 0);
        assert!(ops.is_empty(), "{ops:?}");
    }
}
