//! A deterministic simulator for `node::group` replicas, shared by the `raft_*` test crates
//! through `#[path]` (each uses a part of it, hence the `dead_code` allowance).
//!
//! One seeded rng drives everything: message delays (hence reordering), loss, duplication,
//! partitions, crashes (optionally between a ready and its fsync) and restarts from the
//! simulated disks ([`MemLog`]). Virtual time advances in fixed steps; each node ticks its
//! awake replicas every `tick_interval`. A failing run prints its seed; rerun it alone with
//! `RAFT_SIM_SEED=<seed>`.
//!
//! The [`Checker`] asserts, as the run goes:
//! - election safety: at most one leader per (group, term);
//! - state-machine safety: replicas that applied the same index hold the same digest (so a
//!   committed entry is never lost or changed, across crashes and snapshots too);
//! - read safety: a read started after a write was acknowledged sees it.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use node::group::{
    Command, Epoch, GroupId, GroupMessage, GroupPeer, MemLog, NodeId, Outcome, PeerChange, PeerConfig,
    PeerEvent, PersistedState, Query, RangeDescriptor, ReadPolicy, ReadRequest, RequestError, Response, Role,
    WriteRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Virtual milliseconds per simulation step.
pub const STEP_MS: u64 = 5;

/// Seeds to run: `RAFT_SIM_SEED` alone if set, else `count` seeds derived from `base`.
pub fn seeds(base: u64, count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("RAFT_SIM_SEED") {
        return vec![s.parse().expect("RAFT_SIM_SEED must be a u64")];
    }
    (0..count).map(|i| base.wrapping_mul(1_000_003).wrapping_add(i)).collect()
}

/// Network faults, in permille per message.
#[derive(Clone, Debug)]
pub struct NetFaults {
    /// Messages lost.
    pub drop_permille: u32,
    /// Messages delivered twice.
    pub dup_permille: u32,
    /// Delivery delay range, milliseconds (a wide range reorders).
    pub delay_ms: (u64, u64),
}

impl NetFaults {
    /// A clean, fast network.
    pub fn none() -> Self {
        Self { drop_permille: 0, dup_permille: 0, delay_ms: (1, 3) }
    }

    /// A lossy, reordering, duplicating network.
    pub fn chaos() -> Self {
        Self { drop_permille: 50, dup_permille: 20, delay_ms: (1, 60) }
    }
}

/// Test timing: the production defaults (ticks of 200 ms), hibernation as given.
pub fn peer_config(hibernate_after_ticks: u32) -> PeerConfig {
    PeerConfig { hibernate_after_ticks, checkpoint_interval_entries: 64, ..PeerConfig::default() }
}

/// A simulated node.
pub struct SimNode {
    /// Node id.
    pub id: NodeId,
    /// Whether it runs.
    pub up: bool,
    /// Live replicas.
    pub peers: BTreeMap<GroupId, GroupPeer<MemLog>>,
    /// Disks of every replica this node ever had (the durable state while down).
    pub disks: BTreeMap<GroupId, MemLog>,
    next_tick_ms: u64,
    restarts: u64,
}

struct Flight {
    at_ms: u64,
    msg: GroupMessage,
}

#[derive(Clone, Debug)]
enum OpKind {
    Write { key: Vec<u8>, value: Vec<u8> },
    Read { key: Vec<u8>, must_see: Option<Vec<u8>> },
    Admin,
    // A command from `Sim::propose`: its answer goes unchecked to `Sim::take_answers`.
    Command,
}

/// A request in flight.
#[derive(Clone, Debug)]
struct Op {
    group: GroupId,
    kind: OpKind,
}

/// Safety checks and bookkeeping of acknowledged writes.
#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<(GroupId, u64), NodeId>,
    digests: BTreeMap<(GroupId, u64), (u64, NodeId)>,
    /// Acknowledged writes: (group, key) -> (value, virtual ms acknowledged).
    pub acked: BTreeMap<(GroupId, Vec<u8>), (Vec<u8>, u64)>,
    /// Counters for the report.
    pub stats: SimStats,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Writes refused or lost (not-leader, stale, dropped, ...).
    pub writes_failed: u64,
    /// Reads checked.
    pub reads_ok: u64,
    /// Admin requests answered Ok.
    pub admin_ok: u64,
    /// Elections won.
    pub elections: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages dropped by faults or partitions.
    pub dropped: u64,
    /// Crashes.
    pub crashes: u64,
    /// Ticks delivered to replicas.
    pub ticks: u64,
}

impl Checker {
    fn on_leader(&mut self, group: GroupId, term: u64, node: NodeId) {
        let prev = *self.leaders.entry((group, term)).or_insert(node);
        assert_eq!(prev, node, "two leaders in group {group} term {term}: {prev} and {node}");
    }

    fn on_applied(&mut self, group: GroupId, applied: u64, digest: u64, node: NodeId) {
        let (d, n) = *self.digests.entry((group, applied)).or_insert((digest, node));
        assert_eq!(
            d, digest,
            "group {group} diverged at applied index {applied}: node {n} digest {d:x}, node {node} digest {digest:x}"
        );
    }
}

/// The answer to a request of [`Sim::propose`].
#[derive(Clone, Debug)]
pub struct Answer {
    /// The id [`Sim::propose`] returned.
    pub request_id: u64,
    /// Virtual ms at which the proposer answered.
    pub at_ms: u64,
    /// What the group said.
    pub result: Result<Outcome, RequestError>,
}

/// The simulated cluster.
pub struct Sim {
    /// This run's seed.
    pub seed: u64,
    rng: SmallRng,
    base: Instant,
    /// Virtual time, milliseconds.
    pub now_ms: u64,
    /// The nodes.
    pub nodes: BTreeMap<NodeId, SimNode>,
    net: Vec<Flight>,
    /// Cut directed links.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Current network faults.
    pub faults: NetFaults,
    /// Crash a node between a ready and its fsync with this permille per write task.
    pub crash_in_ready_permille: u32,
    /// Safety checks.
    pub checker: Checker,
    cfg: PeerConfig,
    logger: slog::Logger,
    ops: BTreeMap<u64, Op>,
    next_request: u64,
    answers: Vec<Answer>,
}

impl Sim {
    /// Nodes `node_ids`, each with a replica of every group in `groups` it is a voter of.
    pub fn new(seed: u64, node_ids: &[NodeId], groups: &[RangeDescriptor], cfg: PeerConfig) -> Self {
        if let Ok(filter) = std::env::var("RAFT_SIM_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let mut rng = SmallRng::seed_from_u64(seed);
        let logger = node::group::raft_logger();
        let mut nodes = BTreeMap::new();
        for &id in node_ids {
            let phase = rng.random_range(0..cfg.tick_interval.as_millis() as u64);
            let mut node = SimNode {
                id,
                up: true,
                peers: BTreeMap::new(),
                disks: BTreeMap::new(),
                next_tick_ms: phase,
                restarts: 0,
            };
            for desc in groups.iter().filter(|d| d.voters.contains(&id)) {
                let state = PersistedState::bootstrap(desc);
                node.disks.insert(desc.id, MemLog::new(state));
            }
            nodes.insert(id, node);
        }
        let mut sim = Self {
            seed,
            rng,
            base: Instant::now(),
            now_ms: 0,
            nodes,
            net: Vec::new(),
            blocked: BTreeSet::new(),
            faults: NetFaults::none(),
            crash_in_ready_permille: 0,
            checker: Checker::default(),
            cfg,
            logger,
            ops: BTreeMap::new(),
            next_request: 1,
            answers: Vec::new(),
        };
        for id in node_ids {
            sim.start_node(*id);
        }
        sim
    }

    /// The virtual instant.
    pub fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    /// A random number in `range`, from the run's rng.
    pub fn rand(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.rng.random_range(range)
    }

    fn start_node(&mut self, id: NodeId) {
        let cfg = self.cfg.clone();
        let restarts = {
            let node = self.nodes.get_mut(&id).expect("node");
            node.restarts += 1;
            node.restarts
        };
        let node = self.nodes.get_mut(&id).expect("node");
        node.up = true;
        for (&group, disk) in &node.disks {
            if disk.is_destroyed() {
                continue;
            }
            let seed = self.seed ^ (id << 48) ^ (group << 16) ^ restarts;
            let peer =
                GroupPeer::new(&cfg, id, group, disk.clone(), disk.persisted_state(), seed, &self.logger)
                    .expect("peer");
            node.peers.insert(group, peer);
        }
    }

    /// Crashes `id`: replicas vanish, disks stay as last persisted. The other nodes notice
    /// the lost connection and wake the groups they share with it.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        if !node.up {
            return;
        }
        node.up = false;
        for (group, peer) in std::mem::take(&mut node.peers) {
            node.disks.insert(group, peer.log().clone());
        }
        self.checker.stats.crashes += 1;
        self.wake_peers_of(id);
    }

    /// Restarts `id` from its disks.
    pub fn restart(&mut self, id: NodeId) {
        if !self.nodes[&id].up {
            self.start_node(id);
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
        for &x in a.iter().chain(b) {
            self.wake_peers_of(x);
        }
    }

    /// Restores every link and a clean network.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.faults = NetFaults::none();
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.wake_peers_of(id);
        }
    }

    fn wake_peers_of(&mut self, lost: NodeId) {
        for node in self.nodes.values_mut().filter(|n| n.up && n.id != lost) {
            for peer in node.peers.values_mut() {
                if peer.desc().has_member(lost) {
                    peer.wake();
                }
            }
        }
    }

    /// Advances virtual time by `ms`, in steps.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.step();
        }
    }

    /// Runs until `done` holds, at most `max_ms`; returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now_ms + max_ms;
        while self.now_ms < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// One step: deliver due messages (shuffled), tick due nodes, process every ready.
    pub fn step(&mut self) {
        self.now_ms += STEP_MS;
        self.deliver_due();
        self.tick_due();
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process_node(id);
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now_ms;
        let (mut due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.net).into_iter().partition(|f| f.at_ms <= now);
        self.net = later;
        // Fisher-Yates with the run's rng: same-instant deliveries in random order.
        for i in (1..due.len()).rev() {
            let j = self.rng.random_range(0..=i);
            due.swap(i, j);
        }
        for f in due {
            self.deliver(f.msg);
        }
    }

    fn deliver(&mut self, msg: GroupMessage) {
        let cfg = self.cfg.clone();
        let seed = self.seed;
        let node = self.nodes.get_mut(&msg.to).expect("node");
        if !node.up {
            self.checker.stats.dropped += 1;
            return;
        }
        if !node.peers.contains_key(&msg.group_id) {
            let destroyed = node.disks.get(&msg.group_id).is_some_and(MemLog::is_destroyed);
            if destroyed || !msg.may_create_replica() {
                return;
            }
            let log = MemLog::new(PersistedState::uninitialized());
            let peer = GroupPeer::new(
                &cfg,
                node.id,
                msg.group_id,
                log,
                PersistedState::uninitialized(),
                seed ^ msg.to,
                &self.logger,
            )
            .expect("peer");
            node.peers.insert(msg.group_id, peer);
        }
        let peer = node.peers.get_mut(&msg.group_id).expect("peer");
        let _ = peer.step(msg);
    }

    fn tick_due(&mut self) {
        let interval = self.cfg.tick_interval.as_millis() as u64;
        for node in self.nodes.values_mut().filter(|n| n.up) {
            while node.next_tick_ms <= self.now_ms {
                node.next_tick_ms += interval;
                for peer in node.peers.values_mut() {
                    if !peer.is_hibernated() {
                        self.checker.stats.ticks += 1;
                    }
                    peer.tick();
                }
            }
        }
    }

    fn process_node(&mut self, id: NodeId) {
        if !self.nodes[&id].up {
            return;
        }
        let groups: Vec<GroupId> = self.nodes[&id].peers.keys().copied().collect();
        for group in groups {
            for _round in 0..64 {
                let crash = self.crash_in_ready_permille > 0
                    && self.rng.random_range(0..1000) < self.crash_in_ready_permille;
                let node = self.nodes.get_mut(&id).expect("node");
                let Some(peer) = node.peers.get_mut(&group) else { break };
                let task = peer.ready();
                if let Some(task) = task {
                    if crash {
                        // The messages raft let go before the fsync are out; the task is lost.
                        self.collect(id, group);
                        self.crash(id);
                        return;
                    }
                    let peer = self.nodes.get_mut(&id).expect("node").peers.get_mut(&group).expect("peer");
                    peer.log_mut().apply(&task);
                    peer.on_persisted(task.ready_number);
                }
                self.collect(id, group);
                let node = self.nodes.get_mut(&id).expect("node");
                let Some(peer) = node.peers.get_mut(&group) else { break };
                if peer.is_removed() && !peer.has_ready() {
                    node.disks.insert(group, peer.log().clone());
                    node.peers.remove(&group);
                    break;
                }
                if !peer.has_ready() {
                    break;
                }
            }
        }
    }

    /// Drains one replica's messages, responses and events into the network and checker.
    fn collect(&mut self, id: NodeId, group: GroupId) {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(peer) = node.peers.get_mut(&group) else { return };
        let msgs = peer.take_messages();
        let responses = peer.take_responses();
        let events = peer.take_events();
        let status = (peer.storage().applied().0, peer.kv().digest());
        self.checker.on_applied(group, status.0, status.1, id);
        for e in events {
            if let PeerEvent::RoleChanged { role: Role::Leader, term, .. } = e {
                self.checker.on_leader(group, term, id);
                self.checker.stats.elections += 1;
            }
        }
        for r in responses {
            self.on_response(r);
        }
        for m in msgs {
            self.send(m);
        }
    }

    fn send(&mut self, msg: GroupMessage) {
        self.checker.stats.messages += 1;
        if self.blocked.contains(&(msg.from, msg.to)) || self.roll(self.faults.drop_permille) {
            self.checker.stats.dropped += 1;
            return;
        }
        let copies = if self.roll(self.faults.dup_permille) { 2 } else { 1 };
        for _ in 0..copies {
            let (lo, hi) = self.faults.delay_ms;
            let at_ms = self.now_ms + self.rng.random_range(lo..=hi);
            self.net.push(Flight { at_ms, msg: msg.clone() });
        }
    }

    fn roll(&mut self, permille: u32) -> bool {
        permille > 0 && self.rng.random_range(0..1000) < permille
    }

    fn on_response(&mut self, r: Response) {
        let Some(op) = self.ops.remove(&r.request_id) else { return };
        match (op.kind, r.result) {
            (OpKind::Write { key, value }, Ok(Outcome::Written)) => {
                self.checker.stats.writes_acked += 1;
                self.checker.acked.insert((op.group, key), (value, self.now_ms));
            }
            (OpKind::Write { .. }, Ok(other)) => panic!("write answered {other:?}"),
            (OpKind::Write { .. }, Err(_)) => self.checker.stats.writes_failed += 1,
            (OpKind::Read { key, must_see }, Ok(Outcome::Value(v))) => {
                if let Some(expect) = must_see {
                    assert_eq!(v.as_ref(), Some(&expect), "stale read of {key:?} in group {}", op.group);
                }
                if let Some(v) = &v {
                    let written = self.checker.acked.get(&(op.group, key.clone())).map(|(w, _)| w);
                    assert!(written.is_none_or(|w| w == v), "read of {key:?} saw a value never written");
                }
                self.checker.stats.reads_ok += 1;
            }
            (OpKind::Read { .. }, Ok(other)) => panic!("read answered {other:?}"),
            (OpKind::Read { .. }, Err(_)) => {}
            (OpKind::Admin, Ok(_)) => self.checker.stats.admin_ok += 1,
            (OpKind::Admin, Err(_)) => {}
            (OpKind::Command, result) => {
                self.answers.push(Answer { request_id: r.request_id, at_ms: self.now_ms, result });
            }
        }
    }

    /// The replica of `group` that leads in the highest term among up nodes.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.up)
            .filter_map(|n| n.peers.get(&group).filter(|p| p.is_leader()).map(|p| (p.status().term, n.id)))
            .max()
            .map(|(_, id)| id)
    }

    /// The leader's descriptor of `group`.
    pub fn desc(&self, group: GroupId) -> Option<RangeDescriptor> {
        let leader = self.leader(group)?;
        Some(self.nodes[&leader].peers[&group].desc().clone())
    }

    fn pick_target(&mut self, group: GroupId) -> Option<NodeId> {
        // A client that knows the leader most of the time and sometimes asks a random node.
        if let Some(l) = self.leader(group).filter(|_| self.rng.random_range(0..10) < 8) {
            return Some(l);
        }
        let up: Vec<NodeId> =
            self.nodes.values().filter(|n| n.up && n.peers.contains_key(&group)).map(|n| n.id).collect();
        if up.is_empty() { None } else { Some(up[self.rng.random_range(0..up.len())]) }
    }

    fn request_id(&mut self, op: Op) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.ops.insert(id, op);
        id
    }

    /// Proposes a put of a fresh unique key in `group`; follows one `NotLeader` hint.
    pub fn write(&mut self, group: GroupId) -> Result<(), RequestError> {
        let n = self.next_request;
        let key = format!("k{n:08}").into_bytes();
        let value = format!("v{n}-{}", self.seed).into_bytes();
        let op = Op { group, kind: OpKind::Write { key: key.clone(), value: value.clone() } };
        let request_id = self.request_id(op);
        self.submit(group, request_id, Command::Put { key, value }).map_err(|(e, refused)| {
            if refused {
                self.checker.stats.writes_failed += 1;
            }
            e
        })
    }

    /// Proposes any `command` in `group` like [`write`](Self::write) does (to the leader
    /// mostly, following one `NotLeader` hint) and returns its request id. The harness does
    /// not check its outcome: the answer, if one comes, shows up in [`take_answers`](Self::take_answers).
    pub fn propose(&mut self, group: GroupId, command: Command) -> Result<u64, RequestError> {
        let request_id = self.request_id(Op { group, kind: OpKind::Command });
        self.submit(group, request_id, command).map(|()| request_id).map_err(|(e, _)| e)
    }

    /// The answers to [`propose`](Self::propose)d commands since the last call, in the
    /// order the proposers gave them.
    pub fn take_answers(&mut self) -> Vec<Answer> {
        std::mem::take(&mut self.answers)
    }

    /// Proposes request `request_id` to a replica of `group`. On failure the request is
    /// forgotten, and the flag says whether a replica refused it (rather than there being
    /// no replica to ask or no hint left to follow).
    fn submit(
        &mut self,
        group: GroupId,
        request_id: u64,
        command: Command,
    ) -> Result<(), (RequestError, bool)> {
        let Some(mut target) = self.pick_target(group) else {
            self.ops.remove(&request_id);
            return Err((RequestError::NotLeader { leader_hint: None }, false));
        };
        let now = self.now();
        for _ in 0..2 {
            let peer = self.nodes.get_mut(&target).and_then(|n| n.peers.get_mut(&group));
            let Some(peer) = peer else { break };
            let epoch = peer.desc().epoch;
            let req = WriteRequest { request_id, epoch, command: command.clone() };
            match peer.propose(now, req) {
                Err(RequestError::NotLeader { leader_hint: Some(h) }) if self.nodes[&h].up => target = h,
                Err(e) => {
                    self.ops.remove(&request_id);
                    return Err((e, true));
                }
                Ok(()) => return Ok(()),
            }
        }
        self.ops.remove(&request_id);
        Err((RequestError::NotLeader { leader_hint: None }, false))
    }

    /// Reads a random acknowledged key of `group`, checking it sees the acknowledged value.
    pub fn read(&mut self, group: GroupId, policy: ReadPolicy) {
        let keys: Vec<_> = self
            .checker
            .acked
            .range((group, Vec::new())..(group + 1, Vec::new()))
            .map(|(k, v)| (k.1.clone(), v.0.clone()))
            .collect();
        if keys.is_empty() {
            return;
        }
        let (key, value) = keys[self.rng.random_range(0..keys.len())].clone();
        let Some(target) = self.leader(group) else { return };
        let op = Op { group, kind: OpKind::Read { key: key.clone(), must_see: Some(value) } };
        let request_id = self.request_id(op);
        let now = self.now();
        let peer = self.nodes.get_mut(&target).and_then(|n| n.peers.get_mut(&group)).expect("leader");
        let epoch = peer.desc().epoch;
        if peer.read(now, ReadRequest { request_id, epoch, query: Query::Get { key }, policy }).is_err() {
            self.ops.remove(&request_id);
        }
    }

    /// Proposes a membership change through the current leader.
    pub fn conf_change(&mut self, group: GroupId, changes: &[PeerChange]) -> Result<(), RequestError> {
        let leader = self.leader(group).ok_or(RequestError::NotLeader { leader_hint: None })?;
        let request_id = self.request_id(Op { group, kind: OpKind::Admin });
        let now = self.now();
        let peer = self.nodes.get_mut(&leader).and_then(|n| n.peers.get_mut(&group)).expect("leader");
        let epoch = peer.desc().epoch;
        peer.propose_conf_change(now, request_id, epoch, changes)
    }

    /// Asks the current leader to hand over to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> Result<(), RequestError> {
        let leader = self.leader(group).ok_or(RequestError::NotLeader { leader_hint: None })?;
        let peer = self.nodes.get_mut(&leader).and_then(|n| n.peers.get_mut(&group)).expect("leader");
        let epoch = peer.desc().epoch;
        peer.transfer_leader(epoch, to)
    }

    /// Whether every member replica of `group` (per the leader) applied the leader's commit.
    pub fn converged(&self, group: GroupId) -> bool {
        let Some(leader) = self.leader(group) else { return false };
        let lp = &self.nodes[&leader].peers[&group];
        let commit = lp.status().commit;
        lp.storage().applied().0 == commit
            && lp.desc().members().iter().all(|m| {
                self.nodes[m].up
                    && self.nodes[m].peers.get(&group).is_some_and(|p| p.storage().applied().0 == commit)
            })
    }

    /// Prints every replica of `group`.
    pub fn dump(&self, group: GroupId) {
        for n in self.nodes.values() {
            match n.peers.get(&group) {
                Some(p) => eprintln!(
                    "node {} up {}: {:?} pending {} truncated {}",
                    n.id,
                    n.up,
                    p.status(),
                    p.pending_requests(),
                    p.storage().truncated_index()
                ),
                None => eprintln!("node {} up {}: no replica", n.id, n.up),
            }
        }
    }

    /// After healing: every group elects a leader and converges, and all member replicas
    /// hold the same state, containing every acknowledged write.
    pub fn check_final(&mut self, groups: &[GroupId]) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.restart(id);
        }
        self.heal();
        for &g in groups {
            // Commit an entry of the current term so followers learn the final commit index.
            let ok = self.run_until(30_000, |s| s.leader(g).is_some());
            assert!(ok, "group {g} has no leader 30 s after healing");
            let _ = self.write(g);
            let ok = self.run_until(30_000, |s| s.converged(g));
            if !ok {
                self.dump(g);
            }
            assert!(ok, "group {g} did not converge 30 s after healing");
            let leader = self.leader(g).expect("leader");
            let lp = &self.nodes[&leader].peers[&g];
            let (digest, desc) = (lp.kv().digest(), lp.desc().clone());
            for m in desc.members() {
                let p = &self.nodes[&m].peers[&g];
                assert_eq!(p.kv().digest(), digest, "group {g}: node {m} differs from leader {leader}");
                assert_eq!(p.desc(), &desc, "group {g}: node {m} has another descriptor");
            }
            for ((group, key), (value, _)) in self.checker.acked.range((g, Vec::new())..(g + 1, Vec::new())) {
                assert_eq!(
                    lp.kv().get(key),
                    Some(value.as_slice()),
                    "group {group}: acknowledged write of {key:?} lost"
                );
            }
        }
    }
}

/// `n` groups (ids 1..=n) over `voters`, each owning the whole key space.
pub fn groups(n: u64, voters: &[NodeId]) -> Vec<RangeDescriptor> {
    (1..=n).map(|i| RangeDescriptor::new(i, Vec::new(), Vec::new(), voters)).collect()
}

/// The epoch every test group starts at.
pub fn initial_epoch() -> Epoch {
    Epoch { version: 1, conf_ver: 1 }
}
