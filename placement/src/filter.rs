//! CORE. Filters: the rules every operator passes before and while it runs (PD's
//! `pkg/schedule/filter`).
//!
//! * **Node filters** ([`NodeFilter`]) pick sources and targets: [`Alive`], [`Serving`] (not
//!   draining), [`NotBusy`], [`PendingBelowLimit`], [`SlotFree`] (per-node concurrency),
//!   [`NoReplicaOf`] (never two replicas of a range on one node) and [`FailureDomain`] (never
//!   two on one failure-domain label). They compose as slices of `&dyn NodeFilter`.
//! * **Safety checks** ([`check_plan`] at admission, [`check_step`] before each step is sent)
//!   replay the steps over the range's replica list and refuse any state in which the live
//!   voters would not form a quorum (joint-aware, see [`crate::view::quorum_of`]), the leader
//!   would be removed, or an added replica would share a failure domain with another replica.
//!
//! Invariant: an operator the controller runs never takes a range below quorum with the
//! liveness known when each step is sent; liveness changes while a step is in flight are the
//! only way a scheduled change can meet a dead majority, and then no further step is sent.

use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::controller::{Controller, SlotKind};
use crate::operator::Step;
use crate::view::{ClusterView, NodeId, NodeState, RangeInfo, Replica, Role, quorum_of};

/// Facts about one node for one scheduling round (computed once per round).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Liveness lease not expired.
    pub up: bool,
    /// Time since the last heartbeat.
    pub down_for_ms: u64,
    /// Admin state is draining.
    pub draining: bool,
    /// The node asked for no new work.
    pub busy: bool,
    /// Capacity relative to the mean of up nodes (1.0 when all are equal); scores divide by it.
    pub weight: f64,
}

/// [`NodeStatus`] of every registered node, by id, plus each node's failure domains as
/// interned ids (one per isolation label), so domain checks in hot loops compare integers.
#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    nodes: Vec<NodeStatus>,
    /// `dense[id]` is the slot of node `id` (`u32::MAX` if absent), for small ids.
    dense: Vec<u32>,
    /// Slots of nodes whose id is too large for `dense`.
    sparse: FxHashMap<NodeId, usize>,
    /// `domains[slot * labels + l]`: interned value of isolation label `l` on that node.
    domains: Vec<u32>,
    labels: usize,
}

impl NodeTable {
    /// Snapshot of the view's nodes at `now_ms`.
    pub fn build(view: &ClusterView, config: &Config, now_ms: u64) -> Self {
        let up = |n: &crate::view::NodeInfo| n.is_up(now_ms, config.node_down_after_ms);
        let (sum, count) = view
            .nodes()
            .filter(|n| up(n))
            .fold((0u128, 0u128), |(s, c), n| (s + u128::from(n.capacity_bytes), c + 1));
        let mean = if count == 0 || sum == 0 { 1.0 } else { sum as f64 / count as f64 };
        let nodes: Vec<NodeStatus> = view
            .nodes()
            .map(|n| NodeStatus {
                id: n.id,
                up: up(n),
                down_for_ms: n.silent_for_ms(now_ms),
                draining: n.state == NodeState::Draining,
                busy: n.busy,
                weight: if n.capacity_bytes == 0 { 1.0 } else { n.capacity_bytes as f64 / mean },
            })
            .collect();
        let dense_len = nodes.len() * 4 + 1024;
        let mut dense = vec![u32::MAX; dense_len];
        let mut sparse = FxHashMap::default();
        for (slot, n) in nodes.iter().enumerate() {
            match usize::try_from(n.id.0) {
                Ok(i) if i < dense_len => dense[i] = slot as u32,
                _ => {
                    sparse.insert(n.id, slot);
                }
            }
        }
        let labels = config.isolation_labels.len();
        let mut interned: FxHashMap<&str, u32> = FxHashMap::default();
        let mut domains = Vec::with_capacity(nodes.len() * labels);
        for info in view.nodes() {
            for label in &config.isolation_labels {
                let next = interned.len() as u32;
                domains.push(*interned.entry(info.label(label)).or_insert(next));
            }
        }
        Self { nodes, dense, sparse, domains, labels }
    }

    fn slot(&self, id: NodeId) -> Option<usize> {
        match usize::try_from(id.0) {
            Ok(i) if i < self.dense.len() => {
                Some(self.dense[i]).filter(|s| *s != u32::MAX).map(|s| s as usize)
            }
            _ => self.sparse.get(&id).copied(),
        }
    }

    /// The status of `id`, if registered.
    pub fn get(&self, id: NodeId) -> Option<&NodeStatus> {
        self.slot(id).map(|s| &self.nodes[s])
    }

    /// True if `id` is registered and up.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|n| n.up)
    }

    /// True if `a` and `b` share the value of some isolation label. Unknown nodes share
    /// nothing; with no isolation labels configured nothing is shared.
    pub fn shares_domain(&self, a: NodeId, b: NodeId) -> bool {
        let (Some(sa), Some(sb)) = (self.slot(a), self.slot(b)) else { return false };
        let l = self.labels;
        (0..l).any(|i| self.domains[sa * l + i] == self.domains[sb * l + i])
    }

    /// All nodes, by id.
    pub fn iter(&self) -> impl Iterator<Item = &NodeStatus> + '_ {
        self.nodes.iter()
    }
}

/// Why a node filter refused a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Liveness lease expired.
    #[error("node is down")]
    Down,
    /// Being drained.
    #[error("node is draining")]
    Draining,
    /// Reported busy.
    #[error("node is busy")]
    Busy,
    /// Too many replicas catching up.
    #[error("node has too many pending replicas")]
    PendingLimit,
    /// No free concurrency slot of the kind needed.
    #[error("node has no free {0:?} slot")]
    SlotLimit(SlotKind),
    /// Already holds a replica of the range.
    #[error("node already holds a replica of the range")]
    HasReplica,
    /// Shares a failure domain with another replica of the range.
    #[error("node shares a failure domain with another replica")]
    SameFailureDomain,
    /// Not a caught-up follower voter of the range (cannot take leadership).
    #[error("node is not a caught-up follower voter")]
    NotFollowerVoter,
}

/// What node filters may look at.
#[derive(Clone, Copy)]
pub struct FilterContext<'a> {
    /// The cluster.
    pub view: &'a ClusterView,
    /// In-flight operators, slots and influence.
    pub controller: &'a Controller,
    /// This round's node facts.
    pub nodes: &'a NodeTable,
}

/// One composable rule about a candidate source or target node.
pub trait NodeFilter {
    /// Name, for logs.
    fn name(&self) -> &'static str;
    /// `Ok` if `node` passes.
    fn check(&self, cx: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection>;
}

/// Runs `filters` in order; the first rejection wins.
pub fn check_all(
    filters: &[&dyn NodeFilter],
    cx: &FilterContext<'_>,
    node: &NodeStatus,
) -> Result<(), Rejection> {
    filters.iter().try_for_each(|f| f.check(cx, node))
}

/// The node is up.
#[derive(Debug, Clone, Copy)]
pub struct Alive;
impl NodeFilter for Alive {
    fn name(&self) -> &'static str {
        "alive"
    }
    fn check(&self, _: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        if node.up { Ok(()) } else { Err(Rejection::Down) }
    }
}

/// The node is not draining (a drained node receives nothing).
#[derive(Debug, Clone, Copy)]
pub struct Serving;
impl NodeFilter for Serving {
    fn name(&self) -> &'static str {
        "serving"
    }
    fn check(&self, _: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        if node.draining { Err(Rejection::Draining) } else { Ok(()) }
    }
}

/// The node did not report itself busy.
#[derive(Debug, Clone, Copy)]
pub struct NotBusy;
impl NodeFilter for NotBusy {
    fn name(&self) -> &'static str {
        "not-busy"
    }
    fn check(&self, _: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        if node.busy { Err(Rejection::Busy) } else { Ok(()) }
    }
}

/// Fewer than `pending_replicas_per_node_max` replicas on the node are catching up.
#[derive(Debug, Clone, Copy)]
pub struct PendingBelowLimit;
impl NodeFilter for PendingBelowLimit {
    fn name(&self) -> &'static str {
        "pending-below-limit"
    }
    fn check(&self, cx: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        let limit = cx.controller.config().pending_replicas_per_node_max;
        if cx.view.pending_count(node.id) < limit { Ok(()) } else { Err(Rejection::PendingLimit) }
    }
}

/// The node has a free concurrency slot of this kind.
#[derive(Debug, Clone, Copy)]
pub struct SlotFree(pub SlotKind);
impl NodeFilter for SlotFree {
    fn name(&self) -> &'static str {
        "slot-free"
    }
    fn check(&self, cx: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        if cx.controller.slot_free(node.id, self.0) { Ok(()) } else { Err(Rejection::SlotLimit(self.0)) }
    }
}

/// The node holds no replica of the range.
#[derive(Debug, Clone, Copy)]
pub struct NoReplicaOf<'a>(pub &'a RangeInfo);
impl NodeFilter for NoReplicaOf<'_> {
    fn name(&self) -> &'static str {
        "no-replica-of"
    }
    fn check(&self, _: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        if self.0.has_replica(node.id) { Err(Rejection::HasReplica) } else { Ok(()) }
    }
}

/// Placing a replica of `range` on the node (in place of `replaced`, if any) keeps every
/// isolation label distinct across the range's replicas.
#[derive(Debug, Clone, Copy)]
pub struct FailureDomain<'a> {
    /// The range receiving a replica.
    pub range: &'a RangeInfo,
    /// The replica being replaced, which does not count.
    pub replaced: Option<NodeId>,
}
impl NodeFilter for FailureDomain<'_> {
    fn name(&self) -> &'static str {
        "failure-domain"
    }
    fn check(&self, cx: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        let mut others =
            self.range.replicas.iter().map(|r| r.node).filter(|n| Some(*n) != self.replaced && *n != node.id);
        if others.any(|other| cx.nodes.shares_domain(node.id, other)) {
            return Err(Rejection::SameFailureDomain);
        }
        Ok(())
    }
}

/// The node holds a caught-up, non-leader voter of the range (a leader-transfer target).
#[derive(Debug, Clone, Copy)]
pub struct FollowerVoterOf<'a>(pub &'a RangeInfo);
impl NodeFilter for FollowerVoterOf<'_> {
    fn name(&self) -> &'static str {
        "follower-voter-of"
    }
    fn check(&self, _: &FilterContext<'_>, node: &NodeStatus) -> Result<(), Rejection> {
        let range = self.0;
        let voter = range.replica(node.id).is_some_and(|r| r.role == Role::Voter);
        if voter && !range.is_leader(node.id) && !range.is_pending(node.id) {
            Ok(())
        } else {
            Err(Rejection::NotFollowerVoter)
        }
    }
}

/// The first isolation label on which nodes `a` and `b` share a value, if any. Unknown nodes
/// share nothing.
pub fn shared_domain<'l>(view: &ClusterView, labels: &'l [String], a: NodeId, b: NodeId) -> Option<&'l str> {
    if labels.is_empty() {
        return None;
    }
    let (na, nb) = (view.node(a)?, view.node(b)?);
    labels.iter().find(|l| na.label(l) == nb.label(l)).map(String::as_str)
}

/// True if two replicas of `range` share a failure domain.
pub fn violates_isolation(view: &ClusterView, labels: &[String], range: &RangeInfo) -> bool {
    let nodes = &range.replicas;
    nodes
        .iter()
        .enumerate()
        .any(|(i, a)| nodes[..i].iter().any(|b| shared_domain(view, labels, a.node, b.node).is_some()))
}

/// Why a plan or a step is unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    /// The range has no known leader to carry out the step.
    #[error("range has no leader")]
    NoLeader,
    /// The range is in a joint configuration; single-step changes would be ambiguous.
    #[error("range is in a joint configuration")]
    Joint,
    /// The range has no live quorum to begin with.
    #[error("range has no live quorum")]
    NoQuorum,
    /// After step `after_step` the live voters would not form a quorum.
    #[error("step {after_step} would leave the range without a live quorum")]
    LosesQuorum {
        /// Index of the offending step.
        after_step: usize,
    },
    /// Adds a replica on a node that already has one.
    #[error("node {0} already holds a replica")]
    AlreadyReplica(NodeId),
    /// Adds a replica on a node that is down.
    #[error("target node {0} is down")]
    TargetDown(NodeId),
    /// Promotes something that is not a caught-up learner.
    #[error("node {0} holds no caught-up learner")]
    NotCaughtUpLearner(NodeId),
    /// Removes a replica that does not exist.
    #[error("node {0} holds no replica")]
    NotReplica(NodeId),
    /// Removes the leader's replica.
    #[error("would remove the leader on node {0}")]
    RemovesLeader(NodeId),
    /// Transfers leadership to something other than a live, caught-up voter.
    #[error("node {0} cannot take leadership")]
    BadLeaderTarget(NodeId),
    /// An added replica would share a failure domain with another replica.
    #[error("replica on node {0} would share a failure domain")]
    SameFailureDomain(NodeId),
}

/// Replica list and leader as a plan replays them.
struct Replay {
    replicas: Vec<Replica>,
    leader: Option<NodeId>,
}

impl Replay {
    fn apply(
        &mut self,
        step: &Step,
        pending: &[NodeId],
        is_up: &dyn Fn(NodeId) -> bool,
    ) -> Result<(), Unsafe> {
        let position = |replicas: &[Replica], node| replicas.iter().position(|r| r.node == node);
        match *step {
            Step::AddLearner { node } => {
                if position(&self.replicas, node).is_some() {
                    return Err(Unsafe::AlreadyReplica(node));
                }
                if !is_up(node) {
                    return Err(Unsafe::TargetDown(node));
                }
                self.replicas.push(Replica::learner(node));
            }
            Step::PromoteLearner { node } => {
                let i = position(&self.replicas, node).ok_or(Unsafe::NotCaughtUpLearner(node))?;
                if self.replicas[i].role != Role::Learner || pending.contains(&node) || !is_up(node) {
                    return Err(Unsafe::NotCaughtUpLearner(node));
                }
                self.replicas[i].role = Role::Voter;
            }
            Step::RemovePeer { node } => {
                let i = position(&self.replicas, node).ok_or(Unsafe::NotReplica(node))?;
                if self.leader == Some(node) {
                    return Err(Unsafe::RemovesLeader(node));
                }
                self.replicas.remove(i);
            }
            Step::TransferLeader { to, .. } => {
                let voter =
                    position(&self.replicas, to).is_some_and(|i| self.replicas[i].role == Role::Voter);
                if !voter || pending.contains(&to) || !is_up(to) {
                    return Err(Unsafe::BadLeaderTarget(to));
                }
                self.leader = Some(to);
            }
            Step::Split { .. } | Step::Merge { .. } => {
                if self.leader.is_none() {
                    return Err(Unsafe::NoLeader);
                }
            }
        }
        Ok(())
    }
}

/// Admission check: replays `steps` over `range` with today's liveness and refuses the plan if
/// any intermediate state loses quorum or breaks a step's precondition, or if a replica it adds
/// shares a failure domain with another replica of the final state.
pub fn check_plan(
    view: &ClusterView,
    config: &Config,
    range: &RangeInfo,
    steps: &[Step],
    is_up: &dyn Fn(NodeId) -> bool,
) -> Result<(), Unsafe> {
    if range.leader.is_none() {
        return Err(Unsafe::NoLeader);
    }
    if range.is_joint() {
        return Err(Unsafe::Joint);
    }
    if !range.has_quorum(is_up) {
        return Err(Unsafe::NoQuorum);
    }
    let mut replay = Replay { replicas: range.replicas.clone(), leader: range.leader };
    for (i, step) in steps.iter().enumerate() {
        // A learner added earlier in the plan will have caught up before it is promoted.
        replay.apply(step, &[], is_up)?;
        if !quorum_of(&replay.replicas, is_up) {
            return Err(Unsafe::LosesQuorum { after_step: i });
        }
    }
    // Only replicas the plan adds are judged: a range that already breaks the rule may still
    // be repaired or moved, as long as nothing new lands in an occupied domain.
    let labels = &config.isolation_labels;
    let added = steps.iter().filter_map(|s| match s {
        Step::AddLearner { node } if replay.replicas.iter().any(|r| r.node == *node) => Some(*node),
        _ => None,
    });
    for node in added {
        let mut others = replay.replicas.iter().filter(|r| r.node != node);
        if others.any(|r| shared_domain(view, labels, node, r.node).is_some()) {
            return Err(Unsafe::SameFailureDomain(node));
        }
    }
    Ok(())
}

/// Dispatch check: the single `step` is still safe on `range` as the view shows it now.
pub fn check_step(range: &RangeInfo, step: &Step, is_up: &dyn Fn(NodeId) -> bool) -> Result<(), Unsafe> {
    if range.leader.is_none() {
        return Err(Unsafe::NoLeader);
    }
    let mut replay = Replay { replicas: range.replicas.clone(), leader: range.leader };
    replay.apply(step, &range.pending, is_up)?;
    if step.is_conf_change() && !quorum_of(&replay.replicas, is_up) {
        return Err(Unsafe::LosesQuorum { after_step: 0 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::operator::{OpKind, build};
    use crate::view::{Epoch, NodeInfo, RangeId};

    fn view_with_zones(zones: &[&str]) -> ClusterView {
        let mut view = ClusterView::new();
        for (i, zone) in zones.iter().enumerate() {
            let labels = BTreeMap::from([("zone".to_string(), zone.to_string())]);
            view.put_node(NodeInfo::new(NodeId(i as u64 + 1), labels, 1 << 40, 0));
        }
        view
    }

    fn range(nodes: &[u64]) -> RangeInfo {
        RangeInfo {
            id: RangeId(1),
            start_key: b"a".to_vec(),
            end_key: b"b".to_vec(),
            epoch: Epoch { version: 1, conf_ver: 1 },
            replicas: nodes.iter().map(|n| Replica::voter(NodeId(*n))).collect(),
            leader: Some(NodeId(nodes[0])),
            pending: Vec::new(),
            size_bytes: 1,
            keys: 1,
            write_bytes_per_sec: 0,
            write_keys_per_sec: 0,
            split_key_hint: None,
        }
    }

    fn zone_config() -> Config {
        Config { isolation_labels: vec!["zone".into()], ..Config::default() }
    }

    #[test]
    fn move_keeps_quorum_with_one_voter_down() {
        let view = view_with_zones(&["a", "b", "c", "c"]);
        let r = range(&[1, 2, 3]);
        let down3 = |n: NodeId| n != NodeId(3);
        // Replace the dead voter on node 3: add 4, promote (4 voters, 3 live), remove 3.
        let op = build::move_replica(OpKind::RepairDown, &r, NodeId(3), NodeId(4), None, 0);
        check_plan(&view, &zone_config(), &r, &op.steps, &down3).expect("safe");
        // Removing a live voter while another is down would leave 1 of 2 live.
        let bad = [Step::RemovePeer { node: NodeId(2) }];
        assert_eq!(
            check_plan(&view, &zone_config(), &r, &bad, &down3),
            Err(Unsafe::LosesQuorum { after_step: 0 })
        );
    }

    #[test]
    fn plan_never_removes_the_leader_or_promotes_a_non_learner() {
        let view = view_with_zones(&["a", "b", "c", "d"]);
        let r = range(&[1, 2, 3]);
        let up = |_: NodeId| true;
        let remove_leader = [Step::RemovePeer { node: NodeId(1) }];
        assert_eq!(
            check_plan(&view, &zone_config(), &r, &remove_leader, &up),
            Err(Unsafe::RemovesLeader(NodeId(1)))
        );
        let promote_voter = [Step::PromoteLearner { node: NodeId(2) }];
        assert_eq!(
            check_plan(&view, &zone_config(), &r, &promote_voter, &up),
            Err(Unsafe::NotCaughtUpLearner(NodeId(2)))
        );
        let add_twice = [Step::AddLearner { node: NodeId(2) }];
        assert_eq!(
            check_plan(&view, &zone_config(), &r, &add_twice, &up),
            Err(Unsafe::AlreadyReplica(NodeId(2)))
        );
    }

    #[test]
    fn plan_refuses_a_second_replica_in_one_zone() {
        // Nodes 3 and 4 share zone c; 1 is in zone a.
        let view = view_with_zones(&["a", "b", "c", "c", "a"]);
        let r = range(&[1, 2, 3]);
        let up = |_: NodeId| true;
        // Moving 1 (zone a) to 4 (zone c) would put two replicas in zone c.
        let op = build::move_replica(OpKind::BalanceReplica, &r, NodeId(2), NodeId(4), None, 0);
        assert_eq!(
            check_plan(&view, &zone_config(), &r, &op.steps, &up),
            Err(Unsafe::SameFailureDomain(NodeId(4)))
        );
        // Moving 3 to 4 stays within zone c: allowed.
        let op = build::move_replica(OpKind::BalanceReplica, &r, NodeId(3), NodeId(4), None, 0);
        check_plan(&view, &zone_config(), &r, &op.steps, &up).expect("same-zone replacement");
        // Without isolation labels only the node rule applies.
        let op = build::move_replica(OpKind::BalanceReplica, &r, NodeId(2), NodeId(4), None, 0);
        check_plan(&view, &Config::default(), &r, &op.steps, &up).expect("no labels configured");
    }

    #[test]
    fn step_check_uses_pending_and_current_liveness() {
        let mut r = range(&[1, 2, 3]);
        r.replicas.push(Replica::learner(NodeId(4)));
        r.pending.push(NodeId(4));
        let up = |_: NodeId| true;
        let promote = Step::PromoteLearner { node: NodeId(4) };
        assert_eq!(check_step(&r, &promote, &up), Err(Unsafe::NotCaughtUpLearner(NodeId(4))));
        r.pending.clear();
        check_step(&r, &promote, &up).expect("caught up");
        r.replicas[3].role = Role::Voter;
        let remove = Step::RemovePeer { node: NodeId(2) };
        let two_down = |n: NodeId| n == NodeId(1) || n == NodeId(2);
        // 4 voters, 2 live; removing live 2 leaves 1 of 3.
        assert_eq!(check_step(&r, &remove, &two_down), Err(Unsafe::LosesQuorum { after_step: 0 }));
    }

    #[test]
    fn failure_domain_filter_ignores_the_replaced_replica() {
        let view = view_with_zones(&["a", "b", "c", "c"]);
        let r = range(&[1, 2, 3]);
        let controller = Controller::new(zone_config());
        let nodes = NodeTable::build(&view, controller.config(), 0);
        let cx = FilterContext { view: &view, controller: &controller, nodes: &nodes };
        let n4 = *nodes.get(NodeId(4)).unwrap();
        let replace_3 = FailureDomain { range: &r, replaced: Some(NodeId(3)) };
        let replace_1 = FailureDomain { range: &r, replaced: Some(NodeId(1)) };
        assert_eq!(replace_3.check(&cx, &n4), Ok(()));
        assert_eq!(replace_1.check(&cx, &n4), Err(Rejection::SameFailureDomain));
        let filters: [&dyn NodeFilter; 3] = [&Alive, &NoReplicaOf(&r), &replace_3];
        assert_eq!(check_all(&filters, &cx, &n4), Ok(()));
        assert_eq!(check_all(&filters, &cx, nodes.get(NodeId(2)).unwrap()), Err(Rejection::HasReplica));
    }
}
