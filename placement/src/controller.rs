//! CORE. The operator controller: admits operators within limits, sends their steps one at a
//! time to range leaders, follows their progress in heartbeats, and ends them on success,
//! cancellation or timeout (PD's `OperatorController`).
//!
//! Call order (the shell drives it; see also [`crate::Coordinator`]):
//! 1. [`Controller::admit`] an operator: it is checked ([`crate::filter::check_plan`]),
//!    registered, and its first step queued as a [`Command`].
//! 2. After each range heartbeat is applied to the view, [`Controller::on_range_heartbeat`]:
//!    finished steps are recognised, the next step is queued.
//! 3. Periodically [`Controller::tick`]: timeouts, and re-sends of steps with no progress.
//! 4. Drain [`Controller::poll_command`] (send each to `Command::leader`) and
//!    [`Controller::poll_event`] (operators that ended).
//!
//! Invariants:
//! * at most one operator per range (a merge holds its source and target);
//! * per node, at most `replica_moves_per_node_max` operators hold a replica-move slot and at
//!   most `leader_transfers_per_node_max` a leader-transfer slot; per class at most the class
//!   limit run; slots and class counts are released exactly once, when the operator ends;
//! * the influence table equals the influence of unfinished steps (see [`crate::influence`]);
//! * a step is sent only after [`crate::filter::check_step`] passes on the current view; a
//!   failing check cancels the operator, so nothing unsafe is sent.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::filter::{self, Unsafe};
use crate::influence::{InfluenceTable, NodeInfluence, step_influence};
use crate::operator::{OpClass, OpKind, Operator, OperatorId, Step};
use crate::view::{ClusterView, Epoch, NodeId, RangeId};

/// Per-node concurrency slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKind {
    /// A replica being added to (snapshot in) or removed from the node.
    ReplicaMove,
    /// A leader transfer from or to the node.
    LeaderTransfer,
}

/// A step for a range leader to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The operator it belongs to.
    pub operator: OperatorId,
    /// The range.
    pub range: RangeId,
    /// The range epoch the step was planned against; the node refuses it on mismatch.
    pub epoch: Epoch,
    /// The node to send it to (the current leader).
    pub leader: NodeId,
    /// What to do.
    pub step: Step,
}

/// Why an operator was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The range left the view (merged away or tombstoned).
    RangeGone,
    /// The range was split or merged under a membership or leader operator.
    EpochChanged,
    /// The next step failed its safety check.
    Unsafe(Unsafe),
    /// The caller cancelled it.
    Requested,
}

/// How an operator ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step finished.
    Finished,
    /// Stopped before finishing.
    Cancelled(CancelReason),
    /// A step did not finish within its timeout.
    TimedOut,
}

/// An operator that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEvent {
    /// The operator, as admitted.
    pub operator: Operator,
    /// How it ended.
    pub outcome: Outcome,
    /// Steps that finished.
    pub steps_done: usize,
    /// When it ended.
    pub ended_ms: u64,
}

/// Why an operator was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The operator has no steps.
    #[error("operator has no steps")]
    Empty,
    /// The range is not in the view.
    #[error("range {0} is not in the view")]
    RangeUnknown(RangeId),
    /// Another operator holds the range.
    #[error("range {range} is held by {holder}")]
    RangeBusy {
        /// The range.
        range: RangeId,
        /// The operator holding it.
        holder: OperatorId,
    },
    /// The class limit is reached.
    #[error("{0:?} operator limit reached")]
    ClassLimit(OpClass),
    /// A node has no free slot of the kind needed.
    #[error("node {node} has no free {kind:?} slot")]
    SlotLimit {
        /// The node.
        node: NodeId,
        /// The slot kind.
        kind: SlotKind,
    },
    /// The plan is unsafe.
    #[error("unsafe plan: {0}")]
    Unsafe(Unsafe),
}

#[derive(Debug, Clone, Copy, Default)]
struct NodeSlots {
    replica_moves: u32,
    leader_transfers: u32,
}

#[derive(Debug, Clone)]
struct Inflight {
    op: Operator,
    cursor: usize,
    step_started_ms: u64,
    last_sent_ms: Option<u64>,
    step_influence: Vec<Vec<(NodeId, NodeInfluence)>>,
    slots: Vec<(NodeId, SlotKind)>,
}

/// Tracks in-flight operators; see the module doc.
#[derive(Debug, Clone)]
pub struct Controller {
    config: Config,
    next_id: u64,
    ops: BTreeMap<OperatorId, Inflight>,
    by_range: FxHashMap<RangeId, OperatorId>,
    influence: InfluenceTable,
    slots: FxHashMap<NodeId, NodeSlots>,
    class_counts: [u32; OpClass::ALL.len()],
    commands: VecDeque<Command>,
    events: VecDeque<OperatorEvent>,
}

impl Controller {
    /// A controller with no operators. `config` should have passed [`Config::validate`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            next_id: 1,
            ops: BTreeMap::new(),
            by_range: FxHashMap::default(),
            influence: InfluenceTable::default(),
            slots: FxHashMap::default(),
            class_counts: [0; OpClass::ALL.len()],
            commands: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- queries ----

    /// Number of in-flight operators.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// In-flight operators, by id.
    pub fn operators(&self) -> impl Iterator<Item = &Operator> + '_ {
        self.ops.values().map(|i| &i.op)
    }

    /// The in-flight operator holding `range` (as its range or merge target).
    pub fn operator_for_range(&self, range: RangeId) -> Option<&Operator> {
        self.by_range.get(&range).map(|id| &self.ops[id].op)
    }

    /// True if an operator holds `range`.
    pub fn is_range_busy(&self, range: RangeId) -> bool {
        self.by_range.contains_key(&range)
    }

    /// Pending deltas for `node` from unfinished steps.
    pub fn influence(&self, node: NodeId) -> NodeInfluence {
        self.influence.get(node)
    }

    /// True if `node` has a free slot of `kind`.
    pub fn slot_free(&self, node: NodeId, kind: SlotKind) -> bool {
        let used = self.slots.get(&node).copied().unwrap_or_default();
        match kind {
            SlotKind::ReplicaMove => used.replica_moves < self.config.replica_moves_per_node_max,
            SlotKind::LeaderTransfer => used.leader_transfers < self.config.leader_transfers_per_node_max,
        }
    }

    /// In-flight operators of `class`.
    pub fn class_count(&self, class: OpClass) -> u32 {
        self.class_counts[class.index()]
    }

    /// True if another operator of `class` may start.
    pub fn class_free(&self, class: OpClass) -> bool {
        let limit = match class {
            OpClass::Replica => self.config.replica_ops_max,
            OpClass::Leader => self.config.leader_ops_max,
            OpClass::Split => self.config.split_ops_max,
            OpClass::Merge => self.config.merge_ops_max,
        };
        self.class_count(class) < limit
    }

    // ---- admission ----

    /// Admits `op` planned against `view` at `now_ms`, and queues its first step.
    pub fn admit(
        &mut self,
        view: &ClusterView,
        mut op: Operator,
        now_ms: u64,
    ) -> Result<OperatorId, AdmitError> {
        if op.steps.is_empty() {
            return Err(AdmitError::Empty);
        }
        let range = view.range(op.range).ok_or(AdmitError::RangeUnknown(op.range))?;
        for id in std::iter::once(op.range).chain(op.related) {
            if let Some(&holder) = self.by_range.get(&id) {
                return Err(AdmitError::RangeBusy { range: id, holder });
            }
        }
        if let Some(target) = op.related
            && view.range(target).is_none()
        {
            return Err(AdmitError::RangeUnknown(target));
        }
        let class = op.kind.class();
        if !self.class_free(class) {
            return Err(AdmitError::ClassLimit(class));
        }
        let down_after_ms = self.config.node_down_after_ms;
        let is_up = |n: NodeId| view.is_node_up(n, now_ms, down_after_ms);
        let slots = slots_of(&op.steps, &is_up);
        if let Some(&(node, kind)) = slots.iter().find(|(n, k)| !self.slot_free(*n, *k)) {
            return Err(AdmitError::SlotLimit { node, kind });
        }
        filter::check_plan(view, &self.config, range, &op.steps, &is_up).map_err(AdmitError::Unsafe)?;

        op.id = OperatorId(self.next_id);
        self.next_id += 1;
        let id = op.id;
        let step_influence: Vec<_> = op.steps.iter().map(|s| step_influence(s, op.size_bytes)).collect();
        for deltas in &step_influence {
            self.influence.add(deltas);
        }
        for &(node, kind) in &slots {
            let used = self.slots.entry(node).or_default();
            match kind {
                SlotKind::ReplicaMove => used.replica_moves += 1,
                SlotKind::LeaderTransfer => used.leader_transfers += 1,
            }
        }
        self.class_counts[class.index()] += 1;
        for range in std::iter::once(op.range).chain(op.related) {
            self.by_range.insert(range, id);
        }
        let inflight =
            Inflight { op, cursor: 0, step_started_ms: now_ms, last_sent_ms: None, step_influence, slots };
        self.ops.insert(id, inflight);
        self.advance(view, id, now_ms);
        Ok(id)
    }

    /// Cancels an in-flight operator (e.g. on an admin request). No-op if it already ended.
    pub fn cancel(&mut self, id: OperatorId, now_ms: u64) {
        if self.ops.contains_key(&id) {
            self.end(id, Outcome::Cancelled(CancelReason::Requested), now_ms);
        }
    }

    // ---- progress ----

    /// The view now holds a fresh heartbeat of `range`: advance its operator, if any.
    pub fn on_range_heartbeat(&mut self, view: &ClusterView, range: RangeId, now_ms: u64) {
        if let Some(&id) = self.by_range.get(&range) {
            self.advance(view, id, now_ms);
        }
    }

    /// `range` left the view: finish (merge source) or cancel its operator.
    pub fn on_range_removed(&mut self, view: &ClusterView, range: RangeId, now_ms: u64) {
        self.on_range_heartbeat(view, range, now_ms);
    }

    /// Times out stuck steps and re-sends steps without progress. Call periodically.
    pub fn tick(&mut self, view: &ClusterView, now_ms: u64) {
        let ids: Vec<OperatorId> = self.ops.keys().copied().collect();
        for id in ids {
            // Progress first: a step the view shows finished is not late.
            self.advance(view, id, now_ms);
            let Some(inflight) = self.ops.get(&id) else { continue };
            let step = &inflight.op.steps[inflight.cursor];
            let timeout_ms = step.timeout_ms(&self.config, inflight.op.size_bytes);
            if now_ms >= inflight.step_started_ms.saturating_add(timeout_ms) {
                self.end(id, Outcome::TimedOut, now_ms);
            }
        }
    }

    /// Next step to send, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Next ended operator, if any.
    pub fn poll_event(&mut self) -> Option<OperatorEvent> {
        self.events.pop_front()
    }

    /// Moves the operator past every step the view shows finished; queues the current step
    /// if it was never sent or is due for a re-send; cancels if the range is gone, changed
    /// epoch underneath, or the step is no longer safe.
    fn advance(&mut self, view: &ClusterView, id: OperatorId, now_ms: u64) {
        let down_after_ms = self.config.node_down_after_ms;
        let resend_ms = self.config.step_resend_ms;
        loop {
            let Some(inflight) = self.ops.get_mut(&id) else { return };
            let op = &inflight.op;
            let step = &op.steps[inflight.cursor];
            if step.is_finished(op, view) {
                let deltas = std::mem::take(&mut inflight.step_influence[inflight.cursor]);
                self.influence.sub(&deltas);
                inflight.cursor += 1;
                inflight.step_started_ms = now_ms;
                inflight.last_sent_ms = None;
                if inflight.cursor == inflight.op.steps.len() {
                    self.end(id, Outcome::Finished, now_ms);
                    return;
                }
                continue;
            }
            let is_split = matches!(op.kind, OpKind::SplitSize | OpKind::SplitLoad);
            let Some(range) = view.range(op.range) else {
                // A split's new half may report before the old range does and push it out of
                // the view; the old range comes back with its own report (shrunk, newer
                // version), which finishes the step. The step's timeout bounds the wait.
                if is_split && inflight.last_sent_ms.is_some() {
                    return;
                }
                self.end(id, Outcome::Cancelled(CancelReason::RangeGone), now_ms);
                return;
            };
            if !is_split && range.epoch.version != op.start_epoch.version {
                self.end(id, Outcome::Cancelled(CancelReason::EpochChanged), now_ms);
                return;
            }
            let waiting = inflight.last_sent_ms.is_some_and(|sent| now_ms.saturating_sub(sent) < resend_ms);
            if waiting || step.is_in_progress(range) {
                return;
            }
            let Some(leader) = range.leader else { return };
            let is_up = |n: NodeId| view.is_node_up(n, now_ms, down_after_ms);
            if let Err(reason) = filter::check_step(range, step, &is_up) {
                self.end(id, Outcome::Cancelled(CancelReason::Unsafe(reason)), now_ms);
                return;
            }
            self.commands.push_back(Command {
                operator: id,
                range: range.id,
                epoch: range.epoch,
                leader,
                step: step.clone(),
            });
            inflight.last_sent_ms = Some(now_ms);
            return;
        }
    }

    fn end(&mut self, id: OperatorId, outcome: Outcome, now_ms: u64) {
        let Some(inflight) = self.ops.remove(&id) else { return };
        for deltas in &inflight.step_influence[inflight.cursor..] {
            self.influence.sub(deltas);
        }
        for &(node, kind) in &inflight.slots {
            let used = self.slots.get_mut(&node).expect("slot taken on admission");
            match kind {
                SlotKind::ReplicaMove => used.replica_moves -= 1,
                SlotKind::LeaderTransfer => used.leader_transfers -= 1,
            }
            if used.replica_moves == 0 && used.leader_transfers == 0 {
                self.slots.remove(&node);
            }
        }
        self.class_counts[inflight.op.kind.class().index()] -= 1;
        for range in std::iter::once(inflight.op.range).chain(inflight.op.related) {
            if self.by_range.get(&range) == Some(&id) {
                self.by_range.remove(&range);
            }
        }
        let steps_done = inflight.cursor;
        self.events.push_back(OperatorEvent { operator: inflight.op, outcome, steps_done, ended_ms: now_ms });
    }
}

/// Slots an operator holds: an add on the target, a removal on a live source, a leader
/// transfer on both ends. A down node does no work, so removing its replica takes no slot.
fn slots_of(steps: &[Step], is_up: &dyn Fn(NodeId) -> bool) -> Vec<(NodeId, SlotKind)> {
    let mut slots = Vec::new();
    for step in steps {
        match *step {
            Step::AddLearner { node } => slots.push((node, SlotKind::ReplicaMove)),
            Step::RemovePeer { node } if is_up(node) => slots.push((node, SlotKind::ReplicaMove)),
            Step::TransferLeader { from, to } => {
                slots.push((from, SlotKind::LeaderTransfer));
                slots.push((to, SlotKind::LeaderTransfer));
            }
            _ => {}
        }
    }
    slots.sort_unstable();
    slots.dedup();
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build;
    use crate::scheduler::testkit::{range, touch, view};
    use crate::view::{NodeHeartbeat, RangeInfo, Replica, Role};

    fn config() -> Config {
        Config { replica_moves_per_node_max: 2, replica_ops_max: 3, ..Config::default() }
    }

    fn setup() -> (ClusterView, Controller) {
        let mut v = view(&["a", "b", "c", "d", "e"]);
        for id in 1..=10 {
            v.put_range(range(id, &[1, 2, 3])).unwrap();
        }
        (v, Controller::new(config()))
    }

    fn mv(v: &ClusterView, range: u64, from: u64, to: u64) -> Operator {
        let r = v.range(RangeId(range)).unwrap();
        build::move_replica(OpKind::BalanceReplica, r, NodeId(from), NodeId(to), None, 0)
    }

    fn report(v: &mut ClusterView, c: &mut Controller, r: RangeInfo, now_ms: u64) {
        let id = r.id;
        v.put_range(r).unwrap();
        c.on_range_heartbeat(v, id, now_ms);
    }

    #[test]
    fn admission_respects_busy_range_slot_and_class_limits() {
        let (v, mut c) = setup();
        c.admit(&v, mv(&v, 1, 3, 4), 0).unwrap();
        assert!(matches!(
            c.admit(&v, mv(&v, 1, 2, 5), 0),
            Err(AdmitError::RangeBusy { range: RangeId(1), .. })
        ));
        c.admit(&v, mv(&v, 2, 3, 4), 0).unwrap();
        // Node 4 has 2 adds in flight: its move slots are full (and so are node 3's).
        assert_eq!(
            c.admit(&v, mv(&v, 3, 2, 4), 0),
            Err(AdmitError::SlotLimit { node: NodeId(4), kind: SlotKind::ReplicaMove })
        );
        c.admit(&v, mv(&v, 3, 2, 5), 0).unwrap();
        assert_eq!(c.admit(&v, mv(&v, 4, 1, 5), 0), Err(AdmitError::ClassLimit(OpClass::Replica)));
        assert_eq!(c.in_flight(), 3);
        assert_eq!(c.influence(NodeId(4)).replicas, 2);
        assert_eq!(c.influence(NodeId(3)).replicas, -2);
    }

    #[test]
    fn steps_follow_heartbeats_and_everything_is_released_at_the_end() {
        let (mut v, mut c) = setup();
        let id = c.admit(&v, mv(&v, 1, 3, 4), 0).unwrap();
        let cmd = c.poll_command().unwrap();
        assert_eq!(
            (cmd.operator, cmd.leader, cmd.step.clone()),
            (id, NodeId(1), Step::AddLearner { node: NodeId(4) })
        );

        let mut r = v.range(RangeId(1)).unwrap().clone();
        r.replicas.push(Replica::learner(NodeId(4)));
        r.pending.push(NodeId(4));
        r.epoch.conf_ver += 1;
        report(&mut v, &mut c, r.clone(), 10);
        assert_eq!(c.poll_command(), None, "learner still catching up: nothing to send");
        c.tick(&v, 10_000);
        assert_eq!(c.poll_command(), None, "an add in progress is not re-sent");

        r.pending.clear();
        report(&mut v, &mut c, r.clone(), 20);
        assert_eq!(c.poll_command().unwrap().step, Step::PromoteLearner { node: NodeId(4) });
        r.replicas[3].role = Role::Voter;
        r.epoch.conf_ver += 1;
        report(&mut v, &mut c, r.clone(), 30);
        assert_eq!(c.poll_command().unwrap().step, Step::RemovePeer { node: NodeId(3) });
        r.replicas.retain(|p| p.node != NodeId(3));
        r.epoch.conf_ver += 1;
        report(&mut v, &mut c, r, 40);

        let event = c.poll_event().unwrap();
        assert_eq!((event.outcome, event.steps_done, event.ended_ms), (Outcome::Finished, 3, 40));
        assert_eq!(c.in_flight(), 0);
        assert!(c.influence.is_empty());
        assert!(c.slots.is_empty());
        assert_eq!(c.class_count(OpClass::Replica), 0);
        assert!(!c.is_range_busy(RangeId(1)));
    }

    #[test]
    fn stuck_step_is_resent_then_times_out() {
        let (mut v, mut c) = setup();
        let r = v.range(RangeId(1)).unwrap();
        let op = build::transfer_leader(OpKind::BalanceLeader, r, NodeId(2), 0).unwrap();
        c.admit(&v, op, 0).unwrap();
        assert!(c.poll_command().is_some());
        c.tick(&v, c.config.step_resend_ms);
        assert!(c.poll_command().is_some(), "re-sent after step_resend_ms");
        let timeout_ms = c.config.leader_transfer_timeout_ms;
        touch(&mut v, timeout_ms);
        c.tick(&v, timeout_ms);
        assert_eq!(c.poll_event().unwrap().outcome, Outcome::TimedOut);
        assert!(c.slot_free(NodeId(1), SlotKind::LeaderTransfer));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn split_under_a_membership_operator_cancels_it() {
        let (mut v, mut c) = setup();
        c.admit(&v, mv(&v, 1, 3, 4), 0).unwrap();
        let mut r = v.range(RangeId(1)).unwrap().clone();
        r.epoch.version += 1;
        report(&mut v, &mut c, r, 5);
        assert_eq!(c.poll_event().unwrap().outcome, Outcome::Cancelled(CancelReason::EpochChanged));
        assert!(c.influence.is_empty());
    }

    #[test]
    fn step_that_became_unsafe_is_cancelled_not_sent() {
        let (mut v, mut c) = setup();
        let id = c.admit(&v, mv(&v, 1, 2, 4), 0).unwrap();
        let _add = c.poll_command().unwrap();
        // Learner 4 catches up and is promoted; meanwhile nodes 3 and 4 stop heartbeating.
        let mut r = v.range(RangeId(1)).unwrap().clone();
        r.replicas.push(Replica::voter(NodeId(4)));
        r.epoch.conf_ver += 2;
        let now = 20_000;
        for n in [1, 2] {
            let hb = NodeHeartbeat {
                id: NodeId(n),
                capacity_bytes: 1 << 40,
                available_bytes: 1 << 40,
                busy: false,
            };
            v.handle_node_heartbeat(hb, now).unwrap();
        }
        report(&mut v, &mut c, r, now);
        // Removing 2 would leave {1, 3, 4} with only node 1 live.
        let event = c.poll_event().unwrap();
        assert_eq!(event.operator.id, id);
        assert_eq!(
            event.outcome,
            Outcome::Cancelled(CancelReason::Unsafe(Unsafe::LosesQuorum { after_step: 0 }))
        );
        assert_eq!(c.poll_command(), None);
    }
}
