//! CORE. [`Driver`]: the placement driver's leader state. It turns node heartbeats into the
//! scheduler core's [`ClusterView`], runs the [`Coordinator`], and hands back the operator
//! steps to send, the node state changes to persist, and a report for the admin API.
//!
//! Lives only on the node whose replica leads the PD group, and only while it leads: a new
//! leader builds a fresh `Driver` from the persisted node states and the heartbeats that
//! follow (every node re-sends all its led ranges to a new PD leader). Until
//! `warmup_ms` has passed it only listens, so it never schedules from a half-filled view.
//!
//! Call order (one thread; `now_ms` and the rng come from the shell):
//! 1. [`Driver::set_node_states`] with what the PD group stores (again whenever it changes);
//! 2. [`Driver::on_heartbeat`] for every heartbeat;
//! 3. periodically [`Driver::tick`]: send its `steps`, persist its `removed` nodes.
//!
//! Invariants: a node in state `Removed` is never in the view and its heartbeats are
//! ignored; `Draining` and `Removing` nodes are draining in the view (no new replicas or
//! leaders; theirs are moved off); a `Removing` node becomes `Removed` only once the view
//! holds no replica on it and the node itself reports none (or has stopped reporting).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use placement::{ClusterView, Coordinator, NodeHeartbeat, NodeInfo, NodeState, Outcome};
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use super::message::{NodeReport, StepAction, StepCommand};
use super::range_view::{range_info, routing_descriptor};
use crate::group::{Epoch, GroupId, NodeId, RangeDescriptor};

/// Finished operators kept for the admin API.
pub const FINISHED_KEPT: usize = 1000;

/// A node's admin state, as the PD group stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAdminState {
    /// Holds and receives replicas and leaders.
    #[default]
    Serving,
    /// Its leaders and replicas are moved off; it receives none. Reversible (`resume`).
    Draining,
    /// Draining, then `Removed` once empty.
    Removing,
    /// Gone for good: never scheduled again, its heartbeats ignored.
    Removed,
}

impl NodeAdminState {
    /// The byte stored in the PD group (`Serving` is stored as no key).
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Serving => b's',
            Self::Draining => b'd',
            Self::Removing => b'r',
            Self::Removed => b'x',
        }
    }

    /// The state a stored byte names.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b's' => Self::Serving,
            b'd' => Self::Draining,
            b'r' => Self::Removing,
            b'x' => Self::Removed,
            _ => return None,
        })
    }
}

/// Tunables of the driver shell-side (the scheduler core has its own [`placement::Config`]).
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The scheduler core's configuration.
    pub placement: placement::Config,
    /// Listen only, for this long after becoming leader.
    pub warmup_ms: u64,
    /// Capacity assumed for a node that reports none.
    pub default_capacity_bytes: u64,
}

/// An operator, for the admin API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorInfo {
    /// Its id.
    pub id: u64,
    /// Why it exists (e.g. `balance-replica`).
    pub kind: String,
    /// The range (group).
    pub group: GroupId,
    /// Its steps, in order.
    pub steps: Vec<String>,
    /// Steps finished (for ended operators).
    pub steps_done: usize,
    /// `running`, `finished`, `cancelled: ...` or `timed-out`.
    pub outcome: String,
    /// When it was created, ms on the PD leader's clock.
    pub created_ms: u64,
    /// When it ended.
    pub ended_ms: Option<u64>,
}

/// A node as the PD sees it, for the admin API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub node: NodeId,
    /// Its admin state.
    pub state: NodeAdminState,
    /// Whether its heartbeats are current.
    pub up: bool,
    /// Replicas the view places on it.
    pub replicas: usize,
    /// Leaders the view places on it.
    pub leaders: usize,
    /// Replicas the node itself last reported hosting (the PD group's included).
    pub reported_replicas: u64,
    /// Its admin endpoint.
    pub admin: Option<SocketAddr>,
}

/// What the PD leader shows: nodes and operators.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PdReport {
    /// The PD leader.
    pub leader: NodeId,
    /// Ranges in the view.
    pub ranges: usize,
    /// Whether it schedules (warm-up over).
    pub scheduling: bool,
    /// Nodes, by id.
    pub nodes: Vec<NodeView>,
    /// Operators in flight.
    pub pending: Vec<OperatorInfo>,
    /// Operators that ended, newest last (at most [`FINISHED_KEPT`]).
    pub finished: Vec<OperatorInfo>,
    /// Operators admitted since this node became leader.
    pub admitted: u64,
    /// The MQTT keyspace bootstrap: `unknown`, `absent`, `planned` or `done`.
    #[serde(default)]
    pub mqtt_bootstrap: String,
}

/// What one tick asks of the shell.
#[derive(Debug, Default)]
pub struct Tick {
    /// Steps to send, with the node to send each to.
    pub steps: Vec<(NodeId, StepCommand)>,
    /// Nodes that finished draining in state `Removing`: persist them as `Removed`.
    pub removed: Vec<NodeId>,
}

/// The PD leader's state.
pub struct Driver {
    me: NodeId,
    cfg: DriverConfig,
    view: ClusterView,
    coord: Coordinator,
    states: BTreeMap<NodeId, NodeAdminState>,
    admins: BTreeMap<NodeId, SocketAddr>,
    reported: BTreeMap<NodeId, u64>,
    finished: VecDeque<OperatorInfo>,
    since_ms: u64,
    /// New group ids for split operators, by operator (a re-sent step reuses its id).
    split_ids: BTreeMap<u64, GroupId>,
    ids: IdMinter,
}

/// Mints group ids for splits without a write: `2^62 | term << 24 | n`. Raft gives each term
/// at most one PD leader and a driver lives within one term, so ids never repeat across
/// leaders; `2^62` keeps them clear of ids created through the admin API.
#[derive(Debug)]
struct IdMinter {
    base: u64,
    next: u64,
}

impl IdMinter {
    const PER_TERM: u64 = 1 << 24;

    fn new(term: u64) -> Self {
        Self { base: (1 << 62) | ((term & ((1 << 37) - 1)) << 24), next: 0 }
    }

    fn mint(&mut self) -> Option<GroupId> {
        (self.next < Self::PER_TERM).then(|| {
            self.next += 1;
            self.base | (self.next - 1)
        })
    }
}

impl Driver {
    /// The view's ranges as descriptors with their leaders, and a version: a content hash
    /// of them (never 0), equal on every leader that sees the same ranges.
    pub fn range_table(&self) -> (u64, Vec<(RangeDescriptor, Option<NodeId>)>) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut out = Vec::with_capacity(self.view.range_count());
        for r in self.view.ranges() {
            let desc = routing_descriptor(r);
            let leader = r.leader.map(|n| n.0);
            (desc.id, &desc.start, desc.epoch.version, desc.epoch.conf_ver, leader).hash(&mut h);
            out.push((desc, leader));
        }
        (h.finish() | 1, out)
    }

    /// A driver on node `me`, leading the PD group in `term` since `now_ms`.
    pub fn new(
        me: NodeId,
        term: u64,
        cfg: DriverConfig,
        schedulers: Vec<Box<dyn placement::scheduler::Scheduler>>,
        now_ms: u64,
    ) -> Result<Self, placement::ConfigError> {
        let coord = Coordinator::with_schedulers(cfg.placement.clone(), schedulers)?;
        Ok(Self {
            me,
            cfg,
            view: ClusterView::new(),
            coord,
            states: BTreeMap::new(),
            admins: BTreeMap::new(),
            reported: BTreeMap::new(),
            finished: VecDeque::new(),
            since_ms: now_ms,
            split_ids: BTreeMap::new(),
            ids: IdMinter::new(term),
        })
    }

    /// The view (for tests and reports).
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Applies the node states the PD group stores (nodes not named are `Serving`).
    pub fn set_node_states(&mut self, states: BTreeMap<NodeId, NodeAdminState>) {
        for (&node, &state) in &states {
            let view_state = match state {
                NodeAdminState::Serving => NodeState::Serving,
                NodeAdminState::Draining | NodeAdminState::Removing | NodeAdminState::Removed => {
                    NodeState::Draining
                }
            };
            let _ = self.view.set_node_state(placement::NodeId(node), view_state);
        }
        for (&node, _) in self.states.iter().filter(|(n, _)| !states.contains_key(n)) {
            let _ = self.view.set_node_state(placement::NodeId(node), NodeState::Serving);
        }
        self.states = states;
    }

    fn state(&self, node: NodeId) -> NodeAdminState {
        self.states.get(&node).copied().unwrap_or_default()
    }

    /// Applies a node's heartbeat; false if the node is removed (ignored).
    pub fn on_heartbeat(&mut self, r: NodeReport, now_ms: u64) -> bool {
        if self.state(r.node) == NodeAdminState::Removed {
            return false;
        }
        let id = placement::NodeId(r.node);
        let capacity = if r.capacity_bytes == 0 { self.cfg.default_capacity_bytes } else { r.capacity_bytes };
        let labels: BTreeMap<String, String> = r.labels.iter().cloned().collect();
        match self.view.node(id) {
            None => self.register(r.node, &labels, capacity, now_ms),
            Some(info) if info.labels != labels => self.register(r.node, &labels, capacity, now_ms),
            Some(_) => {}
        }
        let hb =
            NodeHeartbeat { id, capacity_bytes: capacity, available_bytes: r.available_bytes, busy: r.busy };
        let _ = self.view.handle_node_heartbeat(hb, now_ms);
        if let Some(addr) = r.admin {
            self.admins.insert(r.node, addr);
        }
        self.reported.insert(r.node, r.replicas);
        // Ranges the view knows first: a split's old range (shrunk) before its new half,
        // which would otherwise overlap the old span and push it out of the view.
        let mut ranges = r.ranges;
        ranges.sort_by_key(|x| self.view.range(placement::RangeId(x.desc.id)).is_none());
        for range in ranges {
            // A member that has not sent its own heartbeat yet (a new PD leader hears from
            // nodes in any order) is registered as heard from now, so the range is not
            // dropped from the view; if it never reports, it goes down on the usual clock.
            for n in range.desc.members() {
                if self.view.node(placement::NodeId(n)).is_none() && self.state(n) != NodeAdminState::Removed
                {
                    self.register(n, &BTreeMap::new(), self.cfg.default_capacity_bytes, now_ms);
                }
            }
            let info = range_info(&range, r.node);
            // A stale or malformed report is dropped; the next one corrects the view.
            if let Err(e) = self.coord.handle_range_heartbeat(&mut self.view, info, now_ms) {
                tracing::debug!(node = r.node, group = range.desc.id, error = %e, "range report ignored");
            }
        }
        true
    }

    /// Puts `node` in the view (again, keeping its admin state), e.g. with new labels.
    fn register(&mut self, node: NodeId, labels: &BTreeMap<String, String>, capacity: u64, now_ms: u64) {
        let id = placement::NodeId(node);
        let mut info = NodeInfo::new(id, labels.clone(), capacity, now_ms);
        if self.state(node) != NodeAdminState::Serving {
            info.state = NodeState::Draining;
        }
        self.view.put_node(info);
    }

    /// One scheduling round (after warm-up): the steps to send and nodes now removed.
    pub fn tick(&mut self, now_ms: u64, rng: &mut SmallRng) -> Tick {
        let mut out = Tick::default();
        if now_ms.saturating_sub(self.since_ms) < self.cfg.warmup_ms {
            return out;
        }
        self.coord.schedule(&self.view, now_ms, rng);
        while let Some(c) = self.coord.poll_command() {
            let mut action = action(&c.step);
            if let StepAction::Split { new_group, .. } = &mut action {
                let id = match self.split_ids.get(&c.operator.0) {
                    Some(&id) => Some(id),
                    None => self.ids.mint(),
                };
                let Some(id) = id else {
                    tracing::warn!(
                        "this PD term minted every split id it may; splits wait for the next term"
                    );
                    continue;
                };
                self.split_ids.insert(c.operator.0, id);
                *new_group = id;
            }
            let step = StepCommand {
                operator: c.operator.0,
                group: c.range.0,
                epoch: Epoch { version: c.epoch.version, conf_ver: c.epoch.conf_ver },
                action,
            };
            out.steps.push((c.leader.0, step));
        }
        while let Some(e) = self.coord.poll_event() {
            self.split_ids.remove(&e.operator.id.0);
            let mut info = operator_info(&e.operator);
            info.steps_done = e.steps_done;
            info.ended_ms = Some(e.ended_ms);
            info.outcome = match e.outcome {
                Outcome::Finished => "finished".into(),
                Outcome::Cancelled(why) => format!("cancelled: {why:?}"),
                Outcome::TimedOut => "timed-out".into(),
            };
            tracing::info!(op = info.id, kind = %info.kind, group = info.group, outcome = %info.outcome, "operator ended");
            if self.finished.len() == FINISHED_KEPT {
                self.finished.pop_front();
            }
            self.finished.push_back(info);
        }
        let down_after = self.cfg.placement.node_down_after_ms;
        for (&node, _) in self.states.iter().filter(|(_, s)| **s == NodeAdminState::Removing) {
            let id = placement::NodeId(node);
            let empty_in_view = self.view.replica_count(id) == 0;
            let reports_empty = self.reported.get(&node).is_none_or(|&n| n == 0);
            let silent = !self.view.is_node_up(id, now_ms, down_after);
            if empty_in_view && (reports_empty || silent) {
                out.removed.push(node);
            }
        }
        out
    }

    /// The admin report.
    pub fn report(&self, now_ms: u64) -> PdReport {
        let down_after = self.cfg.placement.node_down_after_ms;
        let mut ids: Vec<NodeId> = self.view.nodes().map(|n| n.id.0).collect();
        ids.extend(self.states.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids
            .into_iter()
            .map(|node| {
                let id = placement::NodeId(node);
                NodeView {
                    node,
                    state: self.state(node),
                    up: self.view.is_node_up(id, now_ms, down_after),
                    replicas: self.view.node(id).map_or(0, |_| self.view.replica_count(id)),
                    leaders: self.view.node(id).map_or(0, |_| self.view.leader_count(id)),
                    reported_replicas: self.reported.get(&node).copied().unwrap_or(0),
                    admin: self.admins.get(&node).copied(),
                }
            })
            .collect();
        let mut pending: Vec<OperatorInfo> = self.coord.controller().operators().map(operator_info).collect();
        pending.sort_by_key(|o| o.id);
        PdReport {
            leader: self.me,
            ranges: self.view.range_count(),
            scheduling: now_ms.saturating_sub(self.since_ms) >= self.cfg.warmup_ms,
            nodes,
            pending,
            finished: self.finished.iter().cloned().collect(),
            admitted: self.coord.stats().admitted,
            mqtt_bootstrap: String::new(),
        }
    }
}

fn action(step: &placement::Step) -> StepAction {
    use placement::{SplitPolicy, Step};
    match step {
        Step::AddLearner { node } => StepAction::AddLearner(node.0),
        Step::PromoteLearner { node } => StepAction::Promote(node.0),
        Step::RemovePeer { node } => StepAction::Remove(node.0),
        Step::TransferLeader { to, .. } => StepAction::TransferLeader(to.0),
        Step::Split { policy: SplitPolicy::Middle } => StepAction::Split { key: None, new_group: 0 },
        Step::Split { policy: SplitPolicy::AtKey(k) } => {
            StepAction::Split { key: Some(k.clone()), new_group: 0 }
        }
        Step::Merge { target, .. } => StepAction::Merge(target.0),
    }
}

fn operator_info(op: &placement::Operator) -> OperatorInfo {
    OperatorInfo {
        id: op.id.0,
        kind: op.kind.name().to_string(),
        group: op.range.0,
        steps: op.steps.iter().map(|s| format!("{:?}", action(s))).collect(),
        steps_done: 0,
        outcome: "running".into(),
        created_ms: op.created_ms,
        ended_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::pd::message::RangeReport;

    fn driver() -> Driver {
        let cfg = DriverConfig {
            placement: placement::Config::default(),
            warmup_ms: 3000,
            default_capacity_bytes: 1 << 40,
        };
        Driver::new(1, 7, cfg, crate::pd::schedulers(), 0).expect("driver")
    }

    fn range(id: GroupId, voters: &[NodeId]) -> RangeReport {
        let (start, end) = (format!("r/{id:03}").into_bytes(), format!("r/{:03}", id + 1).into_bytes());
        RangeReport { desc: RangeDescriptor::new(id, start, end, voters), ..RangeReport::default() }
    }

    fn beat(node: NodeId, ranges: Vec<RangeReport>) -> NodeReport {
        let replicas = ranges.len() as u64;
        NodeReport {
            node,
            capacity_bytes: 1 << 40,
            available_bytes: 1 << 40,
            replicas,
            ranges,
            ..NodeReport::default()
        }
    }

    /// Nodes 1-3 lead 12 ranges (4 each) on nodes 1-3; nodes 4 and 5 are empty.
    fn skewed(d: &mut Driver, now_ms: u64) {
        for leader in 1..=3u64 {
            let ranges = (0..4).map(|i| range(leader * 10 + i, &[1, 2, 3])).collect();
            d.on_heartbeat(beat(leader, ranges), now_ms);
        }
        for node in 4..=5 {
            d.on_heartbeat(beat(node, Vec::new()), now_ms);
        }
    }

    #[test]
    fn nothing_is_scheduled_during_warmup_then_replicas_move_to_empty_nodes() {
        let mut d = driver();
        let mut rng = SmallRng::seed_from_u64(1);
        skewed(&mut d, 0);
        assert_eq!(d.view().range_count(), 12);
        assert!(d.tick(1000, &mut rng).steps.is_empty(), "warm-up");
        skewed(&mut d, 3000);
        let steps = d.tick(3000, &mut rng).steps;
        assert!(!steps.is_empty());
        for (to, step) in &steps {
            assert!((1..=3).contains(to), "steps go to range leaders: {to}");
            assert_eq!(step.group / 10, *to, "group {} is led by {to}", step.group);
            assert!(matches!(step.action, StepAction::AddLearner(4 | 5)), "{:?}", step.action);
        }
        let report = d.report(3000);
        assert!(report.scheduling);
        assert_eq!(report.pending.len(), steps.len());
    }

    #[test]
    fn a_draining_node_gets_nothing_and_is_emptied() {
        let mut d = driver();
        let mut rng = SmallRng::seed_from_u64(2);
        d.set_node_states(BTreeMap::from([(3, NodeAdminState::Draining)]));
        skewed(&mut d, 3000);
        let steps = d.tick(3000, &mut rng).steps;
        assert!(!steps.is_empty());
        for (_, step) in &steps {
            match step.action {
                StepAction::AddLearner(n) => assert_ne!(n, 3),
                StepAction::TransferLeader(n) => assert_ne!(n, 3),
                _ => {}
            }
        }
        assert!(steps.iter().any(|(to, s)| *to == 3 && matches!(s.action, StepAction::TransferLeader(_))));
    }

    #[test]
    fn a_removing_node_is_removed_once_empty_and_then_ignored() {
        let mut d = driver();
        let mut rng = SmallRng::seed_from_u64(3);
        d.set_node_states(BTreeMap::from([(5, NodeAdminState::Removing), (4, NodeAdminState::Removing)]));
        for leader in 1..=3u64 {
            d.on_heartbeat(beat(leader, vec![range(leader, &[1, 2, 3])]), 0);
        }
        d.on_heartbeat(beat(5, Vec::new()), 0);
        // Node 4 still reports a replica (the view has none: a stale replica to destroy).
        d.on_heartbeat(NodeReport { replicas: 1, ..beat(4, Vec::new()) }, 0);
        let tick = d.tick(3000, &mut rng);
        assert_eq!(tick.removed, vec![5]);
        d.set_node_states(BTreeMap::from([(5, NodeAdminState::Removed)]));
        assert!(!d.on_heartbeat(beat(5, Vec::new()), 4000), "heartbeats of a removed node are ignored");
        let five = d.report(4000).nodes.into_iter().find(|n| n.node == 5).expect("node 5 listed");
        assert_eq!(five.state, NodeAdminState::Removed);
    }

    #[test]
    fn the_range_table_carries_reported_descriptors() {
        let mut d = driver();
        let mut r = range(7, &[1, 2, 3]);
        r.desc.learners = vec![4];
        d.on_heartbeat(beat(1, vec![r.clone()]), 0);
        let (version, table) = d.range_table();
        assert_ne!(version, 0);
        assert_eq!(table, vec![(r.desc, Some(1))]);
    }
}
