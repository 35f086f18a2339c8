//! CORE. Repair (PD's replica checker plus the down-store part of the rule checker).
//!
//! Two sweeps per round:
//! * **down nodes**: for each node silent for at least `node_repair_after_ms`, walk its ranges
//!   (a rotating cursor, so a long list is covered over several rounds) and re-create each
//!   replica elsewhere: add a learner on the best target, promote it, then remove the dead
//!   replica (the dead node takes no slot);
//! * **candidates** (suspects and the patrol slice): fix membership, in this order: a replica
//!   on a long-down node; a stray learner (left by a cancelled operator); fewer voters than
//!   `replicas_per_range`; more voters than that; two replicas in one failure domain.
//!
//! A range whose leader is unknown, or that is in a joint state, is left alone until its
//! heartbeat says otherwise. A replica on a node down for less than the repair delay is not
//! touched: the node may come back, and moving its data early is the expensive mistake.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;

use super::{ScheduleContext, Scheduler};
use crate::filter::NodeStatus;
use crate::operator::{OpClass, OpKind, Operator, build};
use crate::view::{NodeId, RangeId, RangeInfo, Role};

/// Re-replication of dead replicas and membership fixes.
#[derive(Debug, Clone, Default)]
pub struct Repair {
    cursors: BTreeMap<NodeId, usize>,
}

impl Scheduler for Repair {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, _rng: &mut SmallRng) {
        let budget = cx.config().ops_per_scheduler_round_max as usize;
        let mut admitted = 0;
        let repair_after_ms = cx.config().node_repair_after_ms;
        let dead: Vec<NodeId> =
            cx.nodes.iter().filter(|n| !n.up && n.down_for_ms >= repair_after_ms).map(|n| n.id).collect();
        for node in dead {
            let ranges = cx.view.node_ranges(node);
            let len = ranges.len();
            let cursor = self.cursors.entry(node).or_default();
            for _ in 0..len.min(budget * 4) {
                if admitted >= budget || !cx.controller().class_free(OpClass::Replica) {
                    return;
                }
                *cursor = (*cursor + 1) % len;
                let Some(id) = ranges.get(*cursor) else { break };
                admitted += usize::from(try_fix(cx, id));
            }
        }
        for &id in cx.candidates {
            if admitted >= budget || !cx.controller().class_free(OpClass::Replica) {
                if cx.view.range(id).is_some_and(|r| !cx.is_busy(id) && needs_fix(cx, r)) {
                    cx.defer(id);
                }
                continue;
            }
            admitted += usize::from(try_fix(cx, id));
        }
    }
}

fn try_fix(cx: &mut ScheduleContext<'_>, id: RangeId) -> bool {
    let Some(range) = cx.view.range(id) else { return false };
    if cx.is_busy(id) {
        return false;
    }
    match fix(cx, range) {
        Some(op) => cx.admit(op).is_ok(),
        None => {
            if needs_fix(cx, range) {
                // No target with a free slot now, or a limit: try again next round.
                cx.defer(id);
            }
            false
        }
    }
}

/// True if `range` has something [`fix`] would repair (whether or not it can right now).
fn needs_fix(cx: &ScheduleContext<'_>, range: &RangeInfo) -> bool {
    let repair_after_ms = cx.config().node_repair_after_ms;
    let dead = range
        .replicas
        .iter()
        .any(|r| cx.nodes.get(r.node).is_none_or(|s| !s.up && s.down_for_ms >= repair_after_ms));
    dead || range.replicas.iter().any(|r| r.role == Role::Learner)
        || range.voter_count() != cx.config().replicas_per_range
        || isolation_victim(cx, range).is_some()
}

/// The first membership fix `range` needs, as an operator.
pub fn fix(cx: &ScheduleContext<'_>, range: &RangeInfo) -> Option<Operator> {
    let leader = range.leader?;
    if range.is_joint() || !cx.nodes.is_up(leader) {
        return None;
    }
    let status = |n: NodeId| cx.nodes.get(n).copied();
    let dead =
        |s: Option<NodeStatus>| s.is_none_or(|s| !s.up && s.down_for_ms >= cx.config().node_repair_after_ms);
    let now = cx.now_ms;

    let wanted = cx.config().replicas_per_range;
    if let Some(victim) = range.replicas.iter().find(|r| dead(status(r.node))) {
        // A dead learner, or a dead voter of a range with voters to spare (a move that was
        // cut short by the death): removing it is the whole repair.
        if victim.role == Role::Learner || range.voter_count() > wanted {
            return build::remove_replica(OpKind::RepairDown, range, victim.node, None, now);
        }
        let target = cx.pick_replica_target(range, Some(victim.node))?;
        return Some(build::move_replica(OpKind::RepairDown, range, victim.node, target, None, now));
    }
    if let Some(learner) = range.replicas.iter().find(|r| r.role == Role::Learner) {
        return build::remove_replica(OpKind::RepairReplicas, range, learner.node, None, now);
    }
    let voters = range.voter_count();
    if voters < wanted {
        let target = cx.pick_replica_target(range, None)?;
        return Some(build::add_voter(OpKind::RepairReplicas, range, target, now));
    }
    if voters > wanted {
        let victim = surplus_victim(cx, range)?;
        return build::remove_replica(OpKind::RepairReplicas, range, victim, None, now);
    }
    let victim = isolation_victim(cx, range)?;
    let target = cx.pick_replica_target(range, Some(victim))?;
    Some(build::move_replica(OpKind::RepairReplicas, range, victim, target, None, now))
}

/// The non-leader voter to drop from a range with too many: one on a down node, else on a
/// draining node, else on the node with the highest replica score.
fn surplus_victim(cx: &ScheduleContext<'_>, range: &RangeInfo) -> Option<NodeId> {
    let rank = |n: NodeId| {
        let status = cx.nodes.get(n);
        let down = status.is_none_or(|s| !s.up);
        let draining = status.is_some_and(|s| s.draining);
        (down, draining, cx.replica_score(n))
    };
    range.voter_nodes().filter(|n| !range.is_leader(*n)).max_by(|a, b| {
        let (ra, rb) = (rank(*a), rank(*b));
        ra.0.cmp(&rb.0).then(ra.1.cmp(&rb.1)).then(ra.2.total_cmp(&rb.2)).then(b.cmp(a))
    })
}

/// A non-leader replica that shares a failure domain with another replica, if any.
fn isolation_victim(cx: &ScheduleContext<'_>, range: &RangeInfo) -> Option<NodeId> {
    let nodes: Vec<NodeId> = range.replicas.iter().map(|r| r.node).collect();
    for (i, &a) in nodes.iter().enumerate() {
        for &b in &nodes[..i] {
            if cx.nodes.shares_domain(a, b) {
                return Some(if range.is_leader(a) { b } else { a });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Step;
    use crate::scheduler::testkit::{range, touch, view, zone_config};
    use crate::view::{ClusterView, NodeHeartbeat, Replica};

    fn schedule(v: &ClusterView, now_ms: u64) -> Vec<Operator> {
        let mut coordinator =
            crate::Coordinator::with_schedulers(zone_config(), vec![Box::new(Repair::default())]).unwrap();
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        coordinator.schedule(v, now_ms, &mut rng)
    }

    /// Everyone but `dead` heartbeats at `now_ms`.
    fn age(v: &mut ClusterView, dead: u64, now_ms: u64) {
        let ids: Vec<_> = v.nodes().map(|n| n.id).filter(|n| n.0 != dead).collect();
        for id in ids {
            let hb = NodeHeartbeat { id, capacity_bytes: 1 << 40, available_bytes: 1 << 40, busy: false };
            v.handle_node_heartbeat(hb, now_ms).unwrap();
        }
    }

    #[test]
    fn dead_replica_is_replaced_in_its_own_zone_only_after_the_delay() {
        // Zones: 1,4 in a; 2,5 in b; 3,6 in c.
        let mut v = view(&["a", "b", "c", "a", "b", "c"]);
        v.put_range(range(1, &[1, 2, 3])).unwrap();
        let delay = zone_config().node_repair_after_ms;
        age(&mut v, 3, delay - 1);
        assert!(schedule(&v, delay - 1).is_empty(), "too early");
        age(&mut v, 3, delay);
        let ops = schedule(&v, delay);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].kind, OpKind::RepairDown);
        assert_eq!(
            ops[0].steps,
            vec![
                Step::AddLearner { node: NodeId(6) },
                Step::PromoteLearner { node: NodeId(6) },
                Step::RemovePeer { node: NodeId(3) },
            ]
        );
    }

    #[test]
    fn stray_learner_removed_then_missing_voter_added_then_extra_removed() {
        let mut v = view(&["a", "b", "c", "d"]);
        let mut r = range(1, &[1, 2, 3]);
        r.replicas.push(Replica::learner(NodeId(4)));
        v.put_range(r).unwrap();
        let ops = schedule(&v, 0);
        assert_eq!(ops[0].steps, vec![Step::RemovePeer { node: NodeId(4) }]);

        let mut r = range(1, &[1, 2]);
        r.epoch.conf_ver = 9;
        v.put_range(r).unwrap();
        let ops = schedule(&v, 0);
        assert_eq!(ops[0].steps[0], Step::AddLearner { node: NodeId(3) }, "lowest score in a free zone");

        let mut r = range(1, &[1, 2, 3, 4]);
        r.epoch.conf_ver = 10;
        v.put_range(r).unwrap();
        touch(&mut v, 0);
        let ops = schedule(&v, 0);
        assert_eq!(ops[0].steps.len(), 1);
        assert!(matches!(ops[0].steps[0], Step::RemovePeer { node } if node != NodeId(1)));
    }

    #[test]
    fn a_dead_voter_of_a_range_with_a_voter_to_spare_is_just_removed() {
        // Four voters on the only four nodes (a move cut short), node 4 dead: no target is
        // free, and none is needed.
        let mut v = view(&["a", "b", "c", "d"]);
        v.put_range(range(1, &[1, 2, 3, 4])).unwrap();
        let delay = zone_config().node_repair_after_ms;
        age(&mut v, 4, delay);
        let ops = schedule(&v, delay);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].kind, OpKind::RepairDown);
        assert_eq!(ops[0].steps, vec![Step::RemovePeer { node: NodeId(4) }]);
    }

    #[test]
    fn two_replicas_in_one_zone_are_separated() {
        let mut v = view(&["a", "a", "b", "c"]);
        v.put_range(range(1, &[1, 2, 3])).unwrap();
        let ops = schedule(&v, 0);
        assert_eq!(
            ops[0].steps,
            vec![
                Step::AddLearner { node: NodeId(4) },
                Step::PromoteLearner { node: NodeId(4) },
                Step::RemovePeer { node: NodeId(2) },
            ]
        );
    }
}
