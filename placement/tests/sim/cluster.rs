//! The simulated cluster: the ground truth of every range, an event queue in simulated
//! milliseconds, and the glue that feeds heartbeats to the coordinator and applies the
//! commands it sends back.
//!
//! Model: a membership change applies `conf_change_ms` after it is sent; an added learner
//! catches up after `catch_up_base_ms + size / snapshot_bytes_per_sec`; a leader transfer
//! takes `transfer_ms`; splits and merges take `split_ms` / `merge_ms`. A node refuses a step
//! whose epoch or leader does not match (as TiKV does). A dead node's ranges elect a new
//! leader among live voters after `election_ms`. Faults: a fraction of commands is lost and a
//! fraction of learners never catch up, so operators time out and leave debris to clean.
//!
//! Safety oracle: after every applied step, the changed range must still have a live quorum
//! (joint-aware); after every node failure, every range must.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{DefaultHasher, Hash, Hasher};

use placement::view::quorum_of;
use placement::{
    ClusterView, Command, Coordinator, NodeHeartbeat, NodeId, NodeState, OpKind, Operator, OperatorEvent,
    Outcome, RangeId, RangeInfo, Replica, Role, SplitPolicy, Step,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use super::keys;
use super::report::SimStats;

/// Simulated latencies.
#[derive(Debug, Clone)]
pub(crate) struct Latency {
    pub(crate) conf_change_ms: u64,
    pub(crate) transfer_ms: u64,
    pub(crate) split_ms: u64,
    pub(crate) merge_ms: u64,
    pub(crate) catch_up_base_ms: u64,
    pub(crate) snapshot_bytes_per_sec: u64,
    pub(crate) election_ms: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            conf_change_ms: 5,
            transfer_ms: 5,
            split_ms: 10,
            merge_ms: 20,
            catch_up_base_ms: 20,
            snapshot_bytes_per_sec: 100 * 1024 * 1024,
            election_ms: 2_000,
        }
    }
}

/// Fault injection, in thousandths.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    pub(crate) drop_command_permille: u32,
    pub(crate) stuck_learner_permille: u32,
}

#[derive(Debug, Clone)]
enum Event {
    Apply(Command),
    CatchUp { range: RangeId, node: NodeId, conf_ver: u64 },
    Elect { range: RangeId },
}

/// Something a case does at a simulated time.
pub(crate) type Action = (u64, Box<dyn FnOnce(&mut Sim)>);

/// A checker run on every finished operator.
pub(crate) type FinishHook = Box<dyn FnMut(&Sim, &Operator)>;

pub(crate) struct SimNode {
    pub(crate) up: bool,
}

pub(crate) struct Sim {
    pub(crate) case: &'static str,
    pub(crate) seed: u64,
    pub(crate) now_ms: u64,
    pub(crate) view: ClusterView,
    pub(crate) coord: Coordinator,
    pub(crate) truth: BTreeMap<RangeId, RangeInfo>,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) stats: SimStats,
    pub(crate) latency: Latency,
    pub(crate) faults: Faults,
    pub(crate) tick_ms: u64,
    pub(crate) idle_tick_ms: u64,
    /// Split boundary -> when it was cut (oracle for the split-merge interval).
    pub(crate) split_log: BTreeMap<Vec<u8>, u64>,
    /// Per-operator hook run when an operator finishes (checkers use it).
    pub(crate) on_finished: Vec<FinishHook>,
    /// Hash of every admitted operator, in order: equal across runs with one seed.
    pub(crate) digest: u64,
    /// Numbers a case records for its checker (e.g. replicas on a node when it died).
    pub(crate) marks: BTreeMap<&'static str, u64>,
    sched_rng: SmallRng,
    rng: SmallRng,
    next_range_id: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    event_data: FxHashMap<u64, Event>,
    event_seq: u64,
    next_tick_ms: u64,
    passes_at_last_admit: u64,
}

impl Sim {
    pub(crate) fn new(
        case: &'static str,
        seed: u64,
        view: ClusterView,
        coord: Coordinator,
        nodes: usize,
    ) -> Self {
        let truth: BTreeMap<RangeId, RangeInfo> = view.ranges().map(|r| (r.id, r.clone())).collect();
        let next_range_id = truth.keys().next_back().map_or(1, |id| id.0 + 1);
        Self {
            case,
            seed,
            now_ms: 0,
            view,
            coord,
            truth,
            nodes: (0..nodes).map(|_| SimNode { up: true }).collect(),
            stats: SimStats::default(),
            latency: Latency::default(),
            faults: Faults::default(),
            tick_ms: 100,
            idle_tick_ms: 1_000,
            split_log: BTreeMap::new(),
            on_finished: Vec::new(),
            digest: 0,
            marks: BTreeMap::new(),
            sched_rng: SmallRng::seed_from_u64(seed),
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed),
            next_range_id,
            events: BinaryHeap::new(),
            event_data: FxHashMap::default(),
            event_seq: 0,
            next_tick_ms: 0,
            passes_at_last_admit: 0,
        }
    }

    /// Panics with the case and seed in the message.
    #[track_caller]
    pub(crate) fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("[sim {} seed={} t={}ms] {msg}", self.case, self.seed, self.now_ms)
    }

    pub(crate) fn is_up(&self, node: NodeId) -> bool {
        self.nodes[node.0 as usize].up
    }

    // ---- actions ----

    /// Replicas and bytes on `node` now (the minimum a repair or drain must re-create).
    pub(crate) fn mark_node_load(&mut self, node: NodeId) {
        let replicas = self.view.replica_count(node) as u64;
        let leaders = self.view.leader_count(node) as u64;
        self.marks.insert("node_replicas", replicas);
        self.marks.insert("node_leaders", leaders);
        self.marks.insert("node_bytes", self.view.node_size_bytes(node));
    }

    pub(crate) fn kill_node(&mut self, node: NodeId) {
        self.nodes[node.0 as usize].up = false;
        let led: Vec<RangeId> = self.truth.values().filter(|r| r.is_leader(node)).map(|r| r.id).collect();
        for range in led {
            self.push(self.now_ms + self.latency.election_ms, Event::Elect { range });
        }
        self.check_all_quorums("node failure");
    }

    pub(crate) fn drain_node(&mut self, node: NodeId) {
        self.view.set_node_state(node, NodeState::Draining).expect("registered");
    }

    /// Sets a range's load (and optionally size) as its leader would report it.
    pub(crate) fn set_load(&mut self, range: RangeId, write_bytes_per_sec: u64, size_bytes: Option<u64>) {
        let Some(r) = self.truth.get_mut(&range) else { self.fail(format!("no range {range}")) };
        r.write_bytes_per_sec = write_bytes_per_sec;
        r.write_keys_per_sec = write_bytes_per_sec / (32 * 1024);
        if let Some(size) = size_bytes {
            r.size_bytes = size;
            r.keys = size / 1024;
        }
        self.heartbeat(range);
    }

    // ---- main loop ----

    /// Runs until `until` says stop, or fails after `max_ms` of simulated time. `actions` fire
    /// at their times (sorted ascending).
    pub(crate) fn run(&mut self, max_ms: u64, actions: &mut Vec<Action>) {
        actions.sort_by_key(|(t, _)| Reverse(*t));
        loop {
            let next_event = self.events.peek().map_or(u64::MAX, |Reverse((t, _))| *t);
            let next_action = actions.last().map_or(u64::MAX, |(t, _)| *t);
            self.now_ms = next_event.min(next_action).min(self.next_tick_ms);
            if self.now_ms > max_ms {
                self.fail(format!(
                    "not quiescent after {max_ms} ms; in flight {}; admitted {:?}; finished {:?}; cancelled {:?}; timed out {:?}",
                    self.coord.controller().in_flight(),
                    self.stats.admitted,
                    self.stats.finished,
                    self.stats.cancelled,
                    self.stats.timed_out
                ));
            }
            while actions.last().is_some_and(|(t, _)| *t <= self.now_ms) {
                let (_, action) = actions.pop().expect("peeked");
                action(self);
                self.passes_at_last_admit = self.coord.stats().patrol_passes;
            }
            while self.events.peek().is_some_and(|Reverse((t, _))| *t <= self.now_ms) {
                let Reverse((_, seq)) = self.events.pop().expect("peeked");
                let event = self.event_data.remove(&seq).expect("event data");
                self.process(event);
            }
            if self.now_ms >= self.next_tick_ms {
                let admitted = self.tick();
                let busy = admitted > 0 || !self.events.is_empty() || self.coord.controller().in_flight() > 0;
                self.next_tick_ms = self.now_ms + if busy { self.tick_ms } else { self.idle_tick_ms };
                if actions.is_empty()
                    && !busy
                    && self.coord.stats().patrol_passes >= self.passes_at_last_admit + 2
                {
                    return;
                }
            }
        }
    }

    fn tick(&mut self) -> usize {
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                let id = NodeId(i as u64);
                let capacity_bytes = self.view.node(id).expect("registered").capacity_bytes;
                let hb = NodeHeartbeat { id, capacity_bytes, available_bytes: capacity_bytes, busy: false };
                self.view.handle_node_heartbeat(hb, self.now_ms).expect("registered");
            }
        }
        let started = std::time::Instant::now();
        let ops = self.coord.schedule(&self.view, self.now_ms, &mut self.sched_rng);
        self.stats.schedule_wall += started.elapsed();
        self.stats.rounds += 1;
        for op in &ops {
            *self.stats.admitted.entry(op.kind).or_default() += 1;
            let mut hasher = DefaultHasher::new();
            (self.digest, self.now_ms, format!("{op:?}")).hash(&mut hasher);
            self.digest = hasher.finish();
        }
        if !ops.is_empty() {
            self.passes_at_last_admit = self.coord.stats().patrol_passes;
        }
        self.pump();
        ops.len()
    }

    /// Moves commands into the event queue and handles ended operators.
    fn pump(&mut self) {
        while let Some(cmd) = self.coord.poll_command() {
            if self.faults.drop_command_permille > 0
                && self.rng.random_range(0..1000) < self.faults.drop_command_permille
            {
                self.stats.commands_dropped += 1;
                continue;
            }
            let delay = match cmd.step {
                Step::AddLearner { .. } | Step::PromoteLearner { .. } | Step::RemovePeer { .. } => {
                    self.latency.conf_change_ms
                }
                Step::TransferLeader { .. } => self.latency.transfer_ms,
                Step::Split { .. } => self.latency.split_ms,
                Step::Merge { .. } => self.latency.merge_ms,
            };
            self.push(self.now_ms + delay, Event::Apply(cmd));
        }
        while let Some(event) = self.coord.poll_event() {
            self.on_operator_end(event);
        }
    }

    fn on_operator_end(&mut self, event: OperatorEvent) {
        let kind = event.operator.kind;
        match event.outcome {
            Outcome::Finished => *self.stats.finished.entry(kind).or_default() += 1,
            Outcome::Cancelled(_) => *self.stats.cancelled.entry(kind).or_default() += 1,
            Outcome::TimedOut => *self.stats.timed_out.entry(kind).or_default() += 1,
        }
        if event.outcome == Outcome::Finished {
            // Every finished operator leaves its ranges within the failure-domain rules.
            let labels = &self.coord.config().isolation_labels;
            for id in std::iter::once(event.operator.range).chain(event.operator.related) {
                if let Some(r) = self.truth.get(&id)
                    && placement::filter::violates_isolation(&self.view, labels, r)
                {
                    self.fail(format!(
                        "{} finished with two replicas in one domain: {:?}",
                        event.operator.id, r.replicas
                    ));
                }
            }
            let mut hooks = std::mem::take(&mut self.on_finished);
            for hook in &mut hooks {
                hook(self, &event.operator);
            }
            self.on_finished = hooks;
        }
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.event_seq += 1;
        self.events.push(Reverse((at_ms, self.event_seq)));
        self.event_data.insert(self.event_seq, event);
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Apply(cmd) => self.apply(cmd),
            Event::CatchUp { range, node, conf_ver } => {
                let Some(r) = self.truth.get_mut(&range) else { return };
                if r.epoch.conf_ver < conf_ver || !r.is_pending(node) || !r.has_replica(node) {
                    return;
                }
                r.pending.retain(|n| *n != node);
                self.stats.bytes_moved += r.size_bytes;
                self.stats.learners_caught_up += 1;
                self.heartbeat(range);
            }
            Event::Elect { range } => self.elect(range),
        }
    }

    fn elect(&mut self, range: RangeId) {
        let nodes = &self.nodes;
        let Some(r) = self.truth.get_mut(&range) else { return };
        if r.leader.is_some_and(|l| nodes[l.0 as usize].up) {
            return;
        }
        let live: Vec<NodeId> = r
            .replicas
            .iter()
            .filter(|p| p.role == Role::Voter && nodes[p.node.0 as usize].up && !r.pending.contains(&p.node))
            .map(|p| p.node)
            .collect();
        if live.is_empty() || !r.has_quorum(|n| nodes[n.0 as usize].up) {
            r.leader = None;
            return;
        }
        r.leader = Some(live[self.rng.random_range(0..live.len())]);
        self.heartbeat(range);
    }

    /// Applies one command the way a range leader would, refusing stale or impossible ones.
    fn apply(&mut self, cmd: Command) {
        let Some(range) = self.truth.get(&cmd.range) else { return self.reject() };
        if range.leader != Some(cmd.leader) || !self.is_up(cmd.leader) || range.epoch != cmd.epoch {
            return self.reject();
        }
        let applied = match cmd.step.clone() {
            Step::AddLearner { node } => self.add_learner(cmd.range, node),
            Step::PromoteLearner { node } => self.promote(cmd.range, node),
            Step::RemovePeer { node } => self.remove(cmd.range, node),
            Step::TransferLeader { to, .. } => self.transfer(cmd.range, to),
            Step::Split { policy } => return self.split(cmd.range, policy),
            Step::Merge { target, .. } => return self.merge(cmd.range, target),
        };
        if !applied {
            return self.reject();
        }
        self.stats.steps_applied += 1;
        self.check_quorum(cmd.range, &cmd.step);
        self.heartbeat(cmd.range);
    }

    fn reject(&mut self) {
        self.stats.steps_rejected += 1;
    }

    fn add_learner(&mut self, id: RangeId, node: NodeId) -> bool {
        let stuck = self.faults.stuck_learner_permille > 0
            && self.rng.random_range(0..1000) < self.faults.stuck_learner_permille;
        let node_up = self.is_up(node);
        let r = self.truth.get_mut(&id).expect("checked");
        if r.has_replica(node) {
            return false;
        }
        r.replicas.push(Replica::learner(node));
        r.pending.push(node);
        r.epoch.conf_ver += 1;
        let (conf_ver, size) = (r.epoch.conf_ver, r.size_bytes);
        if stuck {
            self.stats.learners_stuck += 1;
        } else if node_up {
            let ms = self.latency.catch_up_base_ms
                + size.saturating_mul(1000) / self.latency.snapshot_bytes_per_sec;
            self.push(self.now_ms + ms, Event::CatchUp { range: id, node, conf_ver });
        }
        true
    }

    fn promote(&mut self, id: RangeId, node: NodeId) -> bool {
        let r = self.truth.get_mut(&id).expect("checked");
        let pending = r.is_pending(node);
        let Some(replica) = r.replicas.iter_mut().find(|p| p.node == node) else { return false };
        if replica.role != Role::Learner || pending {
            return false;
        }
        replica.role = Role::Voter;
        r.epoch.conf_ver += 1;
        true
    }

    fn remove(&mut self, id: RangeId, node: NodeId) -> bool {
        let r = self.truth.get_mut(&id).expect("checked");
        if r.is_leader(node) || !r.has_replica(node) {
            return false;
        }
        r.replicas.retain(|p| p.node != node);
        r.pending.retain(|n| *n != node);
        r.epoch.conf_ver += 1;
        true
    }

    fn transfer(&mut self, id: RangeId, to: NodeId) -> bool {
        let up = self.is_up(to);
        let r = self.truth.get_mut(&id).expect("checked");
        let voter = r.replica(to).is_some_and(|p| p.role == Role::Voter);
        if !voter || r.is_pending(to) || !up {
            return false;
        }
        r.leader = Some(to);
        self.stats.leader_transfers += 1;
        true
    }

    fn split(&mut self, id: RangeId, policy: SplitPolicy) {
        let r = &self.truth[&id];
        let key = match policy {
            SplitPolicy::Middle => keys::middle(&r.start_key, &r.end_key),
            SplitPolicy::AtKey(k) => {
                Some(k).filter(|k| k.as_slice() > r.start_key.as_slice() && r.contains_key(k))
            }
        };
        let Some(key) = key else { return self.reject() };
        let mut left = r.clone();
        let mut right = r.clone();
        left.end_key = key.clone();
        right.start_key = key.clone();
        right.id = RangeId(self.next_range_id);
        self.next_range_id += 1;
        for half in [&mut left, &mut right] {
            half.epoch.version += 1;
            half.size_bytes /= 2;
            half.keys /= 2;
            half.write_bytes_per_sec /= 2;
            half.write_keys_per_sec /= 2;
            half.split_key_hint = None;
        }
        let right_id = right.id;
        self.truth.insert(id, left);
        self.truth.insert(right_id, right);
        self.split_log.insert(key, self.now_ms);
        self.stats.steps_applied += 1;
        self.stats.splits += 1;
        self.heartbeat(id);
        self.heartbeat(right_id);
    }

    fn merge(&mut self, source_id: RangeId, target_id: RangeId) {
        let (Some(source), Some(target)) = (self.truth.get(&source_id), self.truth.get(&target_id)) else {
            return self.reject();
        };
        let nodes = |r: &RangeInfo| {
            let mut v: Vec<(NodeId, Role)> = r.replicas.iter().map(|p| (p.node, p.role)).collect();
            v.sort();
            v
        };
        let all_voters =
            |r: &RangeInfo| r.replicas.iter().all(|p| p.role == Role::Voter) && r.pending.is_empty();
        let boundary = if source.end_key == target.start_key {
            source.end_key.clone()
        } else if target.end_key == source.start_key {
            source.start_key.clone()
        } else {
            return self.reject();
        };
        if nodes(source) != nodes(target) || !all_voters(source) || !all_voters(target) {
            return self.reject();
        }
        let interval = self.coord.config().split_merge_interval_ms;
        if let Some(&cut_ms) = self.split_log.get(&boundary)
            && self.now_ms < cut_ms + interval
        {
            self.fail(format!("merge across boundary split at {cut_ms} ms, within the split-merge interval"));
        }
        let mut merged = target.clone();
        merged.start_key = source.start_key.clone().min(target.start_key.clone());
        merged.end_key = if source.end_key.is_empty() || target.end_key.is_empty() {
            Vec::new()
        } else {
            source.end_key.clone().max(target.end_key.clone())
        };
        merged.epoch.version = source.epoch.version.max(target.epoch.version) + 1;
        merged.size_bytes += source.size_bytes;
        merged.keys += source.keys;
        merged.write_bytes_per_sec += source.write_bytes_per_sec;
        merged.write_keys_per_sec += source.write_keys_per_sec;
        self.truth.remove(&source_id);
        self.truth.insert(target_id, merged);
        self.split_log.remove(&boundary);
        self.stats.steps_applied += 1;
        self.stats.merges += 1;
        self.heartbeat(target_id);
    }

    /// The leader reports the range (truth) to the placement driver.
    pub(crate) fn heartbeat(&mut self, id: RangeId) {
        let Some(info) = self.truth.get(&id).cloned() else { return };
        if info.leader.is_none_or(|l| !self.is_up(l)) {
            return;
        }
        if let Err(e) = self.coord.handle_range_heartbeat(&mut self.view, info, self.now_ms) {
            self.fail(format!("heartbeat of {id} rejected: {e}"));
        }
        self.stats.heartbeats += 1;
        self.pump();
    }

    // ---- invariants ----

    fn check_quorum(&self, id: RangeId, step: &Step) {
        let r = &self.truth[&id];
        if !quorum_of(&r.replicas, |n| self.is_up(n)) {
            self.fail(format!("{id} lost quorum after {step:?}: {:?}", r.replicas));
        }
    }

    pub(crate) fn check_all_quorums(&self, when: &str) {
        for r in self.truth.values() {
            if !quorum_of(&r.replicas, |n| self.is_up(n)) {
                self.fail(format!("{} has no live quorum after {when}: {:?}", r.id, r.replicas));
            }
        }
    }

    /// Ranges whose final state breaks a rule: not exactly `rf` voters, learners or pending
    /// replicas left, a replica on a dead node, a dead or missing leader, two replicas in one
    /// zone, or a view that disagrees with the truth.
    pub(crate) fn check_final_ranges(&self) {
        let rf = self.coord.config().replicas_per_range;
        let labels = &self.coord.config().isolation_labels;
        if self.coord.controller().in_flight() != 0 {
            self.fail("operators still in flight at the end");
        }
        if self.view.range_count() != self.truth.len() {
            self.fail(format!("view has {} ranges, truth {}", self.view.range_count(), self.truth.len()));
        }
        for r in self.truth.values() {
            let ok_roles = r.replicas.len() == rf && r.replicas.iter().all(|p| p.role == Role::Voter);
            let ok_nodes = r.replicas.iter().all(|p| self.is_up(p.node)) && r.pending.is_empty();
            let ok_leader = r.leader.is_some_and(|l| self.is_up(l));
            if !(ok_roles && ok_nodes && ok_leader) {
                self.fail(format!("bad final range {r:?}"));
            }
            if placement::filter::violates_isolation(&self.view, labels, r) {
                self.fail(format!("{} has two replicas in one failure domain: {:?}", r.id, r.replicas));
            }
            if self.view.range(r.id) != Some(r) {
                self.fail(format!("view disagrees with truth on {}", r.id));
            }
        }
    }

    /// Replica and leader counts per node (from the view), for the given nodes.
    pub(crate) fn counts(&self, nodes: impl Iterator<Item = NodeId>) -> Vec<(NodeId, usize, usize)> {
        nodes.map(|n| (n, self.view.replica_count(n), self.view.leader_count(n))).collect()
    }

    /// Fails unless every node in `nodes` is within `pct` % of the mean on replicas and leaders.
    pub(crate) fn check_balanced(&self, nodes: impl Iterator<Item = NodeId>, pct: f64) {
        let counts = self.counts(nodes);
        let n = counts.len() as f64;
        let mean_replicas = counts.iter().map(|c| c.1 as f64).sum::<f64>() / n;
        let mean_leaders = counts.iter().map(|c| c.2 as f64).sum::<f64>() / n;
        for &(node, replicas, leaders) in &counts {
            let off_r = (replicas as f64 - mean_replicas).abs() / mean_replicas * 100.0;
            let off_l = (leaders as f64 - mean_leaders).abs() / mean_leaders * 100.0;
            if off_r > pct || off_l > pct {
                self.fail(format!(
                    "{node} unbalanced: {replicas} replicas (mean {mean_replicas:.0}), {leaders} leaders (mean {mean_leaders:.0})"
                ));
            }
        }
    }

    pub(crate) fn op_count(&self, kind: OpKind) -> u64 {
        self.stats.admitted.get(&kind).copied().unwrap_or(0)
    }
}
