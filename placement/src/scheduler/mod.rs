//! CORE. Schedulers: each looks at the view (plus the influence of in-flight operators) and
//! admits operators through its [`ScheduleContext`] (PD's `Schedule(cluster) -> []*Operator`,
//! with admission folded in so that every pick sees the influence of the previous one).
//!
//! The default set, in the order [`crate::Coordinator`] runs them each round (most urgent
//! first, since earlier schedulers take slots first):
//! [`repair::Repair`], [`evict::Evict`], [`split::Split`], [`merge::Merge`],
//! [`balance_replica::BalanceReplica`], [`balance_leader::BalanceLeader`].
//!
//! Scores: a node's replica (leader) score is its replica (leader) count in the view plus the
//! influence of unfinished steps, divided by its capacity weight. Balancers move from high to
//! low score only while the gap exceeds the tolerance, and never so far that the two swap
//! order, so every move strictly lowers the spread and balancing terminates.

pub mod balance_leader;
pub mod balance_replica;
pub mod evict;
pub mod merge;
pub mod repair;
pub mod split;

use rand::rngs::SmallRng;

use crate::config::Config;
use crate::controller::{AdmitError, Controller, SlotKind};
use crate::filter::{
    Alive, FailureDomain, FilterContext, FollowerVoterOf, NoReplicaOf, NodeFilter, NodeStatus, NodeTable,
    NotBusy, PendingBelowLimit, Serving, SlotFree, check_all,
};
use crate::operator::{Operator, OperatorId};
use crate::protection::SplitProtection;
use crate::view::{ClusterView, NodeId, RangeId, RangeInfo, Role};

/// A scheduler: maps the cluster to operators.
pub trait Scheduler {
    /// Name, for logs and reports.
    fn name(&self) -> &'static str;
    /// Admits up to `ops_per_scheduler_round_max` operators through `cx`.
    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, rng: &mut SmallRng);
}

/// The default schedulers, in running order.
pub fn default_schedulers() -> Vec<Box<dyn Scheduler>> {
    vec![
        Box::new(repair::Repair::default()),
        Box::new(evict::Evict::default()),
        Box::new(split::Split),
        Box::new(merge::Merge),
        Box::new(balance_replica::BalanceReplica),
        Box::new(balance_leader::BalanceLeader),
    ]
}

/// What a scheduler sees and how it admits operators during one round.
pub struct ScheduleContext<'a> {
    /// The cluster.
    pub view: &'a ClusterView,
    /// Node facts for this round.
    pub nodes: &'a NodeTable,
    /// The caller's clock.
    pub now_ms: u64,
    /// Ranges to check this round: suspects from heartbeats, then a patrol slice.
    pub candidates: &'a [RangeId],
    /// Recently split ranges and boundaries.
    pub protection: &'a SplitProtection,
    pub(crate) controller: &'a mut Controller,
    pub(crate) admitted: &'a mut Vec<Operator>,
    pub(crate) deferred: &'a mut Vec<RangeId>,
}

impl<'a> ScheduleContext<'a> {
    /// Asks for `range` to be checked again next round: it needs an operator that a limit
    /// (class, slot, busy neighbour) prevents now. Without this, a suspect dropped at a limit
    /// would wait for the patrol's next pass.
    pub fn defer(&mut self, range: RangeId) {
        self.deferred.push(range);
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.controller.config()
    }

    /// In-flight operators, slots and influence.
    pub fn controller(&self) -> &Controller {
        self.controller
    }

    /// Context for node filters.
    pub fn filter_context(&self) -> FilterContext<'_> {
        FilterContext { view: self.view, controller: self.controller, nodes: self.nodes }
    }

    /// Admits `op`; on success the round's output gets a copy.
    pub fn admit(&mut self, op: Operator) -> Result<OperatorId, AdmitError> {
        let mut copy = op.clone();
        let id = self.controller.admit(self.view, op, self.now_ms)?;
        copy.id = id;
        self.admitted.push(copy);
        Ok(id)
    }

    /// Replica score of `node`: (replicas + pending delta) / capacity weight.
    pub fn replica_score(&self, node: NodeId) -> f64 {
        let count = self.view.replica_count(node) as i64 + self.controller.influence(node).replicas;
        count as f64 / self.weight(node)
    }

    /// Leader score of `node`: (leaders + pending delta) / capacity weight.
    pub fn leader_score(&self, node: NodeId) -> f64 {
        let count = self.view.leader_count(node) as i64 + self.controller.influence(node).leaders;
        count as f64 / self.weight(node)
    }

    fn weight(&self, node: NodeId) -> f64 {
        self.nodes.get(node).map_or(1.0, |n| n.weight)
    }

    /// True if an operator holds `range`.
    pub fn is_busy(&self, range: RangeId) -> bool {
        self.controller.is_range_busy(range)
    }

    /// A range fit to be balanced or merged: a leader, exactly `replicas_per_range` caught-up
    /// voters on up nodes, no learners, no joint state.
    pub fn is_healthy(&self, range: &RangeInfo) -> bool {
        range.leader.is_some()
            && range.pending.is_empty()
            && range.replicas.len() == self.config().replicas_per_range
            && range.replicas.iter().all(|r| r.role == Role::Voter && self.nodes.is_up(r.node))
    }

    /// The lowest-score node that may receive a replica of `range` in place of `replaced`:
    /// alive, serving, not busy, a free move slot, pending below limit, no replica of the
    /// range yet, and no shared failure domain with the replicas that stay.
    pub fn pick_replica_target(&self, range: &RangeInfo, replaced: Option<NodeId>) -> Option<NodeId> {
        let cx = self.filter_context();
        let no_replica = NoReplicaOf(range);
        let domain = FailureDomain { range, replaced };
        let filters: [&dyn NodeFilter; 7] = [
            &Alive,
            &Serving,
            &NotBusy,
            &SlotFree(SlotKind::ReplicaMove),
            &PendingBelowLimit,
            &no_replica,
            &domain,
        ];
        self.lowest(self.nodes.iter().filter(|n| check_all(&filters, &cx, n).is_ok()), |id| {
            self.replica_score(id)
        })
    }

    /// The lowest-leader-score voter of `range` (other than those in `exclude`) that may take
    /// leadership: a caught-up follower voter, alive, serving, not busy, with a free leader slot.
    /// `extra` is a node about to become a voter (the target of a move), considered as well.
    pub fn pick_leader_target(
        &self,
        range: &RangeInfo,
        exclude: &[NodeId],
        extra: Option<NodeId>,
    ) -> Option<NodeId> {
        let cx = self.filter_context();
        let follower = FollowerVoterOf(range);
        let base: [&dyn NodeFilter; 4] = [&Alive, &Serving, &NotBusy, &SlotFree(SlotKind::LeaderTransfer)];
        let eligible = |n: &&NodeStatus| {
            !exclude.contains(&n.id)
                && check_all(&base, &cx, n).is_ok()
                && (Some(n.id) == extra || follower.check(&cx, n).is_ok())
        };
        let candidates =
            range.replicas.iter().map(|r| r.node).chain(extra).filter_map(|id| self.nodes.get(id));
        self.lowest(candidates.filter(eligible), |id| self.leader_score(id))
    }

    fn lowest<'n>(
        &self,
        nodes: impl Iterator<Item = &'n NodeStatus>,
        score: impl Fn(NodeId) -> f64,
    ) -> Option<NodeId> {
        nodes
            .map(|n| (score(n.id), n.id))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, id)| id)
    }
}

/// A node in a balancer's working list.
#[derive(Debug, Clone, Copy)]
struct Scored {
    id: NodeId,
    score: f64,
    weight: f64,
}

/// Sorts by descending score, ties by id, so runs are reproducible.
fn sort_descending(nodes: &mut [Scored]) {
    nodes.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
}

/// Balance tolerance for `nodes`: the configured fraction of the mean score.
fn tolerance(config: &Config, nodes: &[Scored]) -> f64 {
    if nodes.is_empty() {
        return 0.0;
    }
    let mean = nodes.iter().map(|n| n.score).sum::<f64>() / nodes.len() as f64;
    mean * f64::from(config.balance_tolerance_permille) / 1000.0
}

/// True if moving one unit from `src` to `dst` is worth it: the gap exceeds the tolerance
/// and the move does not reverse their order.
fn worth_moving(src: Scored, dst: Scored, tolerance: f64) -> bool {
    let gap = src.score - dst.score;
    gap > tolerance && src.score - 1.0 / src.weight >= dst.score + 1.0 / dst.weight
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worth_moving_needs_a_gap_above_tolerance_and_never_reverses_order() {
        let high = Scored { id: NodeId(1), score: 110.0, weight: 1.0 };
        let low = Scored { id: NodeId(2), score: 100.0, weight: 1.0 };
        assert!(worth_moving(high, low, 5.0));
        assert!(!worth_moving(high, low, 10.0));
        // A gap of one replica: moving it would just swap the two.
        let near = Scored { score: 101.0, ..high };
        assert!(!worth_moving(near, low, 0.0));
        // A node with twice the capacity gains half a point per replica.
        let big = Scored { id: NodeId(3), score: 100.0, weight: 2.0 };
        assert!(worth_moving(Scored { score: 101.5, ..high }, big, 0.0));
    }

    #[test]
    fn tolerance_is_a_fraction_of_the_mean_score() {
        let config = Config { balance_tolerance_permille: 50, ..Config::default() };
        let nodes = [100.0, 300.0].map(|score| Scored { id: NodeId(0), score, weight: 1.0 });
        assert!((tolerance(&config, &nodes) - 10.0).abs() < 1e-9);
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! A small cluster builder shared by the schedulers' unit tests.

    use std::collections::BTreeMap;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use crate::Coordinator;
    use crate::config::Config;
    use crate::operator::Operator;
    use crate::scheduler::Scheduler;
    use crate::view::{ClusterView, Epoch, NodeHeartbeat, NodeId, NodeInfo, RangeId, RangeInfo, Replica};

    pub(crate) const MIB: u64 = 1024 * 1024;

    /// `zones[i]` is the zone of node `i + 1`; all nodes heard from at time 0.
    pub(crate) fn view(zones: &[&str]) -> ClusterView {
        let mut view = ClusterView::new();
        for (i, zone) in zones.iter().enumerate() {
            let labels = BTreeMap::from([("zone".to_string(), zone.to_string())]);
            view.put_node(NodeInfo::new(NodeId(i as u64 + 1), labels, 1 << 40, 0));
        }
        view
    }

    /// Range `id` over `[id, id+1)` (one-byte keys prefixed by `R`), voters on `nodes`,
    /// led by the first.
    pub(crate) fn range(id: u64, nodes: &[u64]) -> RangeInfo {
        RangeInfo {
            id: RangeId(id),
            start_key: key(id),
            end_key: key(id + 1),
            epoch: Epoch { version: 1, conf_ver: 1 },
            replicas: nodes.iter().map(|n| Replica::voter(NodeId(*n))).collect(),
            leader: Some(NodeId(nodes[0])),
            pending: Vec::new(),
            size_bytes: 32 * MIB,
            keys: 100_000,
            write_bytes_per_sec: 0,
            write_keys_per_sec: 0,
            split_key_hint: None,
        }
    }

    /// A heartbeat from every node at `now_ms`.
    pub(crate) fn touch(view: &mut ClusterView, now_ms: u64) {
        let ids: Vec<NodeId> = view.nodes().map(|n| n.id).collect();
        for id in ids {
            let hb = NodeHeartbeat { id, capacity_bytes: 1 << 40, available_bytes: 1 << 40, busy: false };
            view.handle_node_heartbeat(hb, now_ms).expect("registered");
        }
    }

    pub(crate) fn key(i: u64) -> Vec<u8> {
        let mut k = vec![b'R'];
        k.extend_from_slice(&i.to_be_bytes());
        k
    }

    pub(crate) fn zone_config() -> Config {
        Config { isolation_labels: vec!["zone".into()], ..Config::default() }
    }

    /// Runs one round of `scheduler` alone at `now_ms` and returns what it admitted.
    pub(crate) fn run(
        view: &ClusterView,
        config: Config,
        scheduler: Box<dyn Scheduler>,
        now_ms: u64,
    ) -> (Coordinator, Vec<Operator>) {
        let mut coordinator = Coordinator::with_schedulers(config, vec![scheduler]).expect("valid config");
        let mut rng = SmallRng::seed_from_u64(1);
        // Heartbeats at `now_ms` keep every node up unless a test ages one on purpose.
        let ops = coordinator.schedule(view, now_ms, &mut rng);
        (coordinator, ops)
    }
}
