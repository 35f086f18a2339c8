//! CORE. Drain (PD `evict-leader` plus the offline-store part of the replica checker): for
//! each draining node, first transfer its leaders to the best follower, then move its
//! replicas to the best target (a move of a replica it still leads hands leadership over
//! inside the operator). Each walk uses a rotating cursor over the node's index, so a node
//! with thousands of ranges is covered across rounds without rescanning.
//!
//! A drained node ends with no replicas and no leaders; nothing is ever moved *to* it,
//! because [`crate::filter::Serving`] rejects it as a target everywhere.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;

use super::{ScheduleContext, Scheduler};
use crate::controller::SlotKind;
use crate::operator::{OpClass, OpKind, build};
use crate::view::{NodeId, RangeId};

/// Leader and replica eviction from draining nodes.
#[derive(Debug, Clone, Default)]
pub struct Evict {
    leader_cursors: BTreeMap<NodeId, usize>,
    replica_cursors: BTreeMap<NodeId, usize>,
}

impl Scheduler for Evict {
    fn name(&self) -> &'static str {
        "evict"
    }

    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, _rng: &mut SmallRng) {
        let budget = cx.config().ops_per_scheduler_round_max as usize;
        let draining: Vec<NodeId> = cx.nodes.iter().filter(|n| n.draining).map(|n| n.id).collect();
        let mut admitted = 0;
        for node in draining {
            // Every operator below needs a slot on the draining node itself (a down node does
            // no work, so its replicas need none): stop walking once they are taken.
            let up = cx.nodes.is_up(node);
            let leaders = cx.view.node_leaders(node);
            let cursor = self.leader_cursors.entry(node).or_default();
            for _ in 0..leaders.len().min(budget * 4) {
                let slot = cx.controller().slot_free(node, SlotKind::LeaderTransfer);
                if admitted >= budget || !slot || !cx.controller().class_free(OpClass::Leader) {
                    break;
                }
                *cursor = (*cursor + 1) % leaders.len();
                let Some(id) = leaders.get(*cursor) else { break };
                admitted += usize::from(evict_leader(cx, node, id));
            }
            let replicas = cx.view.node_ranges(node);
            let cursor = self.replica_cursors.entry(node).or_default();
            for _ in 0..replicas.len().min(budget * 4) {
                let slot = !up || cx.controller().slot_free(node, SlotKind::ReplicaMove);
                if admitted >= budget || !slot || !cx.controller().class_free(OpClass::Replica) {
                    break;
                }
                *cursor = (*cursor + 1) % replicas.len();
                let Some(id) = replicas.get(*cursor) else { break };
                admitted += usize::from(evict_replica(cx, node, id));
            }
        }
    }
}

fn evict_leader(cx: &mut ScheduleContext<'_>, node: NodeId, id: RangeId) -> bool {
    let Some(range) = cx.view.range(id) else { return false };
    if cx.is_busy(id) || range.is_joint() || !range.is_leader(node) {
        return false;
    }
    let Some(to) = cx.pick_leader_target(range, &[node], None) else { return false };
    build::transfer_leader(OpKind::EvictLeader, range, to, cx.now_ms).is_some_and(|op| cx.admit(op).is_ok())
}

fn evict_replica(cx: &mut ScheduleContext<'_>, node: NodeId, id: RangeId) -> bool {
    let Some(range) = cx.view.range(id) else { return false };
    if cx.is_busy(id) || range.is_joint() || range.leader.is_none() {
        return false;
    }
    let Some(to) = cx.pick_replica_target(range, Some(node)) else { return false };
    let leader_to = if range.is_leader(node) {
        match cx.pick_leader_target(range, &[node], Some(to)) {
            Some(heir) => Some(heir),
            None => return false,
        }
    } else {
        None
    };
    let op = build::move_replica(OpKind::EvictReplica, range, node, to, leader_to, cx.now_ms);
    cx.admit(op).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Step;
    use crate::scheduler::testkit::{range, view, zone_config};
    use crate::view::NodeState;

    #[test]
    fn draining_node_loses_leaders_and_replicas_never_gains() {
        let mut v = view(&["a", "b", "c", "a", "b", "c"]);
        for id in 1..=6 {
            v.put_range(range(id, &[1, 2, 3])).unwrap();
        }
        v.set_node_state(NodeId(1), NodeState::Draining).unwrap();
        let mut coordinator =
            crate::Coordinator::with_schedulers(zone_config(), vec![Box::new(Evict::default())]).unwrap();
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        let ops = coordinator.schedule(&v, 0, &mut rng);
        let leaders: Vec<_> = ops.iter().filter(|o| o.kind == OpKind::EvictLeader).collect();
        // Node 1 has 4 leader slots.
        assert_eq!(leaders.len(), 4);
        for op in &ops {
            for step in &op.steps {
                assert_ne!(step, &Step::AddLearner { node: NodeId(1) });
                if let Step::TransferLeader { to, .. } = step {
                    assert_ne!(*to, NodeId(1));
                }
            }
            if op.kind == OpKind::EvictReplica {
                // Node 1 is in zone a: only node 4 can replace it.
                assert_eq!(op.steps[0], Step::AddLearner { node: NodeId(4) });
            }
        }
    }
}
