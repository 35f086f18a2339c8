//! Store-level tests of `node::raftstore` over real raft-engine directories.
//!
//! - A deterministic run: three stores in manual mode (the test drives ticks and poll
//!   rounds on virtual time) over a seeded, lossy, reordering queue transport; a store is
//!   restarted from disk; replicas must agree, and a second run with the same seed must
//!   produce the same result.
//! - 1,000 groups on three threaded stores over the in-process transport: write to every
//!   group, restart a store from disk, write again, check identical state; prints
//!   proposals/s and fsyncs per round with and without batching.
//! - 10,000 idle groups hibernate: zero ticks and zero messages over a window.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, unbounded};
use node::group::{
    Command, GroupId, GroupMessage, NodeId, Outcome, PeerConfig, RangeDescriptor, Response, Role,
    WriteRequest,
};
use node::raftstore::{LocalTransport, Store, StoreConfig, StoreRouter, Transport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const NODES: [NodeId; 3] = [1, 2, 3];

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("flotilla-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn node(&self, id: NodeId) -> PathBuf {
        self.0.join(format!("node-{id}"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn descs(n: u64) -> Vec<RangeDescriptor> {
    (1..=n).map(|g| RangeDescriptor::new(g, Vec::new(), Vec::new(), &NODES)).collect()
}

fn put(request_id: u64, g: GroupId, i: u64) -> WriteRequest {
    let command =
        Command::Put { key: format!("g{g}-k{i}").into_bytes(), value: format!("v{i}").into_bytes() };
    WriteRequest { request_id, epoch: node::group::Epoch { version: 1, conf_ver: 1 }, command }
}

/// User + system CPU time of this process in milliseconds (Linux `/proc`), if readable.
fn process_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10) // USER_HZ = 100
}

// ---------------------------------------------------------------------------------------
// Deterministic manual-mode cluster.

/// Collects every round's messages for the test to deliver.
#[derive(Default)]
struct QueueTransport {
    queue: Mutex<Vec<GroupMessage>>,
}

impl Transport for QueueTransport {
    fn send(&self, _to: NodeId, msgs: Vec<GroupMessage>) {
        if let Ok(mut q) = self.queue.lock() {
            q.extend(msgs);
        }
    }
}

struct ManualCluster {
    rng: SmallRng,
    base: Instant,
    now_ms: u64,
    dirs: TempDir,
    transport: Arc<QueueTransport>,
    stores: BTreeMap<NodeId, Store>,
    routers: BTreeMap<NodeId, StoreRouter>,
    seed: u64,
    peer: PeerConfig,
}

impl ManualCluster {
    fn new(seed: u64) -> Self {
        let mut c = Self {
            rng: SmallRng::seed_from_u64(seed),
            base: Instant::now(),
            now_ms: 0,
            dirs: TempDir::new("raft-manual"),
            transport: Arc::new(QueueTransport::default()),
            stores: BTreeMap::new(),
            routers: BTreeMap::new(),
            seed,
            peer: PeerConfig { checkpoint_interval_entries: 32, ..PeerConfig::default() },
        };
        for n in NODES {
            c.open(n);
        }
        c
    }

    fn open(&mut self, n: NodeId) {
        let mut cfg = StoreConfig::new(n, self.dirs.node(n), self.seed ^ n);
        cfg.poller_threads = 0;
        cfg.batch_groups_max = 64;
        cfg.peer = self.peer.clone();
        let transport: Arc<dyn Transport> = self.transport.clone();
        let store = Store::open(cfg, transport).expect("open store");
        self.routers.insert(n, store.router());
        self.stores.insert(n, store);
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    /// 10 ms of virtual time: deliver (shuffled, 2% lost), tick every 200 ms, poll.
    fn step(&mut self) {
        self.now_ms += 10;
        let mut msgs = std::mem::take(&mut *self.transport.queue.lock().expect("queue"));
        for i in (1..msgs.len()).rev() {
            let j = self.rng.random_range(0..=i);
            msgs.swap(i, j);
        }
        for m in msgs {
            if self.rng.random_range(0..100) < 2 {
                continue;
            }
            if let Some(r) = self.routers.get(&m.to) {
                r.deliver(m);
            }
        }
        let tick = self.now_ms.is_multiple_of(200);
        let now = self.now();
        for store in self.stores.values() {
            if tick {
                store.tick();
            }
            store.poll(now);
        }
    }

    fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now_ms + max_ms;
        while self.now_ms < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn leader(&self, g: GroupId) -> Option<NodeId> {
        self.stores
            .iter()
            .find(|(_, s)| s.status(g).is_some_and(|st| st.role == Role::Leader))
            .map(|(n, _)| *n)
    }

    fn converged(&self, g: GroupId) -> bool {
        let statuses: Vec<_> = self.stores.values().filter_map(|s| s.status(g)).collect();
        statuses.len() == NODES.len()
            && statuses.iter().all(|s| s.applied == statuses[0].applied && s.digest == statuses[0].digest)
            && statuses.iter().any(|s| s.role == Role::Leader)
    }

    /// Writes `n` puts to every group through its leader, retrying refused ones.
    fn write_all(&mut self, groups: u64, n: u64, tx: &Sender<Response>, rx: &Receiver<Response>) -> u64 {
        let mut pending: Vec<(GroupId, u64)> =
            (1..=groups).flat_map(|g| (0..n).map(move |i| (g, i))).collect();
        let mut acked = 0;
        for _round in 0..200 {
            let mut sent = BTreeMap::new();
            for (g, i) in pending.drain(..) {
                let id = g * 1_000_000 + i;
                if let Some(l) = self.leader(g) {
                    let _ = self.stores[&l].propose(g, put(id, g, i), tx);
                }
                sent.insert(id, (g, i));
            }
            self.run_until(3_000, |_| false);
            for r in rx.try_iter() {
                if matches!(r.result, Ok(Outcome::Written))
                    && let Some(_) = sent.remove(&r.request_id)
                {
                    acked += 1;
                }
            }
            pending.extend(sent.into_values());
            if pending.is_empty() {
                break;
            }
        }
        assert!(pending.is_empty(), "writes never acknowledged: {}", pending.len());
        acked
    }

    /// (group, applied, digest) of every group on every store, for determinism checks.
    fn fingerprint(&self, groups: u64) -> Vec<(NodeId, GroupId, u64, u64)> {
        let mut out = Vec::new();
        for (n, s) in &self.stores {
            for g in 1..=groups {
                if let Some(st) = s.status(g) {
                    out.push((*n, g, st.applied, st.digest));
                }
            }
        }
        out
    }
}

fn manual_scenario(seed: u64) -> Vec<(NodeId, GroupId, u64, u64)> {
    const GROUPS: u64 = 40;
    let mut c = ManualCluster::new(seed);
    for s in c.stores.values() {
        assert_eq!(s.bootstrap_groups(&descs(GROUPS)).expect("bootstrap"), GROUPS as usize);
    }
    let elected = c.run_until(30_000, |c| (1..=GROUPS).all(|g| c.leader(g).is_some()));
    assert!(elected, "seed {seed}: not every group elected a leader");
    let (tx, rx) = unbounded();
    let acked = c.write_all(GROUPS, 40, &tx, &rx);
    assert_eq!(acked, GROUPS * 40);
    // Restart node 2 from its raft-engine directory, then write more.
    c.stores.remove(&2);
    c.routers.remove(&2);
    c.run_until(2_000, |_| false);
    c.open(2);
    assert_eq!(c.stores[&2].group_count(), GROUPS as usize, "every group recovered from disk");
    let st = c.stores[&2].status(1).expect("status");
    assert!(st.truncated_index > node::group::INIT_INDEX, "recovered from a checkpoint plus log: {st:?}");
    c.stores[&2].purge_log();
    c.write_all(GROUPS, 40, &tx, &rx);
    let done = c.run_until(30_000, |c| (1..=GROUPS).all(|g| c.converged(g)));
    assert!(done, "seed {seed}: groups did not converge");
    for g in 1..=GROUPS {
        let st = c.stores[&1].status(g).expect("status");
        assert!(st.applied > 80, "group {g} applied only {}", st.applied);
    }
    let m = c.stores[&1].metrics().snapshot();
    eprintln!(
        "seed {seed}: store 1 rounds {} log writes {} fsyncs {} mean groups/round {:.1} max {}",
        m.rounds,
        m.log_writes,
        m.fsyncs,
        m.round_groups as f64 / m.rounds.max(1) as f64,
        m.round_groups_max
    );
    c.fingerprint(GROUPS)
}

#[test]
fn manual_stores_restart_from_disk_and_runs_are_reproducible() {
    let seed = std::env::var("RAFT_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5707e);
    eprintln!("seed {seed}");
    let first = manual_scenario(seed);
    let second = manual_scenario(seed);
    assert_eq!(first, second, "seed {seed}: two runs with one seed differ");
}

// ---------------------------------------------------------------------------------------
// Threaded stores over the in-process transport.

struct Cluster {
    dirs: TempDir,
    transport: Arc<LocalTransport>,
    stores: BTreeMap<NodeId, Store>,
    peer: PeerConfig,
    batch_groups_max: usize,
}

impl Cluster {
    fn new(name: &str, peer: PeerConfig, batch_groups_max: usize) -> Self {
        let mut c = Self {
            dirs: TempDir::new(name),
            transport: Arc::new(LocalTransport::new()),
            stores: BTreeMap::new(),
            peer,
            batch_groups_max,
        };
        for n in NODES {
            c.open(n);
        }
        c
    }

    fn open(&mut self, n: NodeId) {
        let mut cfg = StoreConfig::new(n, self.dirs.node(n), 0xfeed ^ n);
        cfg.poller_threads = 1;
        cfg.batch_groups_max = self.batch_groups_max;
        cfg.peer = self.peer.clone();
        let transport: Arc<dyn Transport> = self.transport.clone();
        let store = Store::open(cfg, transport).expect("open store");
        self.transport.register(n, store.router());
        self.stores.insert(n, store);
    }

    fn stop(&mut self, n: NodeId) {
        self.transport.unregister(n);
        if let Some(s) = self.stores.remove(&n) {
            s.shutdown();
        }
        for s in self.stores.values() {
            s.wake_groups_with(n);
        }
    }

    fn leader(&self, g: GroupId) -> Option<NodeId> {
        self.stores
            .iter()
            .find(|(_, s)| s.status(g).is_some_and(|st| st.role == Role::Leader))
            .map(|(n, _)| *n)
    }

    fn wait(&self, max: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = Instant::now() + max;
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done(self)
    }

    /// Spreads leadership: group g campaigns on node (g mod 3) + 1.
    fn elect(&self, groups: u64) {
        for g in 1..=groups {
            let n = NODES[(g % 3) as usize];
            self.stores[&n].campaign(g).expect("campaign");
        }
        let ok = self.wait(Duration::from_secs(60), |c| (1..=groups).all(|g| c.leader(g).is_some()));
        assert!(ok, "not every group elected a leader");
    }

    /// Proposes `n` puts to every group at once through the leaders; returns the
    /// acknowledged count and the elapsed time. Refused writes are retried.
    fn write_all(&self, groups: u64, n: u64, first: u64) -> (u64, Duration) {
        let (tx, rx) = unbounded();
        let leaders: BTreeMap<GroupId, NodeId> =
            (1..=groups).filter_map(|g| Some((g, self.leader(g)?))).collect();
        let start = Instant::now();
        let mut outstanding = BTreeMap::new();
        for i in first..first + n {
            for g in 1..=groups {
                let id = g * 1_000_000 + i;
                outstanding.insert(id, (g, i));
                let l = leaders.get(&g).copied().unwrap_or(1);
                let _ = self.stores[&l].propose(g, put(id, g, i), &tx);
            }
        }
        let mut acked = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !outstanding.is_empty() && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(r) if matches!(r.result, Ok(Outcome::Written)) => {
                    if outstanding.remove(&r.request_id).is_some() {
                        acked += 1;
                    }
                }
                Ok(r) => {
                    // Refused (leader moved): retry on the current leader.
                    if let Some(&(g, i)) = outstanding.get(&r.request_id)
                        && let Some(l) = self.leader(g)
                    {
                        let _ = self.stores[&l].propose(g, put(r.request_id, g, i), &tx);
                    }
                }
                Err(_) => {
                    for (&id, &(g, i)) in &outstanding {
                        if let Some(l) = self.leader(g) {
                            let _ = self.stores[&l].propose(g, put(id, g, i), &tx);
                        }
                    }
                }
            }
        }
        assert!(outstanding.is_empty(), "{} writes never acknowledged", outstanding.len());
        (acked, start.elapsed())
    }

    /// Keeps one write in flight per group for `dur`; returns the acknowledged writes.
    fn closed_loop(&self, groups: u64, dur: Duration) -> (u64, Duration) {
        let (tx, rx) = unbounded();
        let mut leaders: BTreeMap<GroupId, NodeId> =
            (1..=groups).filter_map(|g| Some((g, self.leader(g)?))).collect();
        let mut next: BTreeMap<GroupId, u64> = BTreeMap::new();
        let propose = |g: GroupId, i: u64, leaders: &BTreeMap<GroupId, NodeId>| {
            let l = leaders.get(&g).copied().unwrap_or(1);
            let _ = self.stores[&l].propose(g, put(g * 1_000_000 + i, g, i), &tx);
        };
        for g in 1..=groups {
            propose(g, 0, &leaders);
            next.insert(g, 1);
        }
        let start = Instant::now();
        let mut acked = 0;
        while start.elapsed() < dur {
            let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
            let g = r.request_id / 1_000_000;
            if matches!(r.result, Ok(Outcome::Written)) {
                acked += 1;
            } else if let Some(l) = self.leader(g) {
                leaders.insert(g, l);
            }
            let i = next.entry(g).or_default();
            *i += 1;
            propose(g, *i, &leaders);
        }
        (acked, start.elapsed())
    }

    fn converged(&self, groups: u64) -> bool {
        (1..=groups).all(|g| {
            let st: Vec<_> = self.stores.values().filter_map(|s| s.status(g)).collect();
            st.len() == self.stores.len()
                && st.iter().all(|s| s.applied == st[0].applied && s.digest == st[0].digest)
        })
    }

    fn metrics_line(&self) -> String {
        let mut out = String::new();
        for (n, s) in &self.stores {
            let m = s.metrics().snapshot();
            out += &format!(
                "\n  store {n}: proposals {} entries {} log writes {} fsyncs {} rounds {} groups/round {:.1} (max {}) msgs {} in {} batches, per node {:?}, elections {}",
                m.proposals,
                m.entries_appended,
                m.log_writes,
                m.fsyncs,
                m.rounds,
                m.round_groups as f64 / m.rounds.max(1) as f64,
                m.round_groups_max,
                m.messages_sent,
                m.message_batches_sent,
                m.messages_per_node,
                m.elections,
            );
        }
        out
    }
}

fn fast_peer() -> PeerConfig {
    PeerConfig {
        tick_interval: Duration::from_millis(50),
        lease: Duration::from_millis(400),
        hibernate_after_ticks: 0,
        checkpoint_interval_entries: 64,
        ..PeerConfig::default()
    }
}

#[test]
fn thousand_groups_on_three_stores_survive_a_restart_with_identical_state() {
    const GROUPS: u64 = 1000;
    let mut c = Cluster::new("raft-1000", fast_peer(), 256);
    for s in c.stores.values() {
        assert_eq!(s.bootstrap_groups(&descs(GROUPS)).expect("bootstrap"), GROUPS as usize);
    }
    c.elect(GROUPS);
    let before = c.stores[&1].metrics().snapshot();
    let (acked, took) = c.write_all(GROUPS, 5, 0);
    let after = c.stores[&1].metrics().snapshot();
    let rate = acked as f64 / took.as_secs_f64();
    let (rounds, fsyncs) = (after.rounds - before.rounds, after.fsyncs - before.fsyncs);
    eprintln!(
        "batched (256 groups/round): {acked} proposals over {GROUPS} groups in {took:?} = {rate:.0}/s; store 1: {rounds} rounds, {fsyncs} fsyncs, {:.1} groups/round, {:.2} fsyncs/round",
        (after.round_groups - before.round_groups) as f64 / rounds.max(1) as f64,
        fsyncs as f64 / rounds.max(1) as f64,
    );
    // Restart store 3 from disk, keep writing meanwhile, then check every replica.
    c.stop(3);
    let (acked_while_down, _) = c.write_all(GROUPS, 2, 5);
    assert_eq!(acked_while_down, 2 * GROUPS);
    c.open(3);
    assert_eq!(c.stores[&3].group_count(), GROUPS as usize, "store 3 recovered every group");
    let (acked_after, _) = c.write_all(GROUPS, 2, 7);
    assert_eq!(acked_after, 2 * GROUPS);
    let ok = c.wait(Duration::from_secs(120), |c| c.converged(GROUPS));
    assert!(ok, "replicas differ after the restart");
    for g in [1, GROUPS / 2, GROUPS] {
        let st = c.stores[&3].status(g).expect("status");
        assert!(st.applied >= node::group::INIT_INDEX + 9, "group {g} on store 3 applied {}", st.applied);
    }
    eprintln!("after restart and convergence:{}", c.metrics_line());
}

#[test]
fn batching_many_groups_per_round_saves_fsyncs() {
    // Closed loop: every group always has one write in flight, for 2 s per setting.
    const GROUPS: u64 = 1000;
    let mut results = Vec::new();
    for batch in [256, 1] {
        let c = Cluster::new("raft-batch", fast_peer(), batch);
        for s in c.stores.values() {
            s.bootstrap_groups(&descs(GROUPS)).expect("bootstrap");
        }
        c.elect(GROUPS);
        let before: Vec<_> = c.stores.values().map(|s| s.metrics().snapshot()).collect();
        let (acked, took) = c.closed_loop(GROUPS, Duration::from_secs(2));
        let after: Vec<_> = c.stores.values().map(|s| s.metrics().snapshot()).collect();
        let sum = |f: fn(&node::raftstore::MetricsSnapshot) -> u64| -> u64 {
            after.iter().zip(&before).map(|(a, b)| f(a) - f(b)).sum()
        };
        let (fsyncs, rounds, groups) = (sum(|m| m.fsyncs), sum(|m| m.rounds), sum(|m| m.round_groups));
        eprintln!(
            "batch_groups_max {batch:>3}: {acked} writes over {GROUPS} groups in {took:.1?} = {:.0}/s; 3 stores: {fsyncs} fsyncs, {rounds} rounds, {:.1} groups/round, {:.3} fsyncs/write",
            acked as f64 / took.as_secs_f64(),
            groups as f64 / rounds.max(1) as f64,
            fsyncs as f64 / acked.max(1) as f64
        );
        results.push((fsyncs as f64 / acked.max(1) as f64, acked));
    }
    assert!(results[0].1 > 0 && results[1].1 > 0);
    assert!(results[0].0 * 3.0 < results[1].0, "batching should cut fsyncs per write: {results:?}");
}

#[test]
fn ten_thousand_idle_groups_hibernate_to_zero_ticks_and_messages() {
    const GROUPS: u64 = 10_000;
    let peer = PeerConfig {
        tick_interval: Duration::from_millis(50),
        lease: Duration::from_millis(400),
        hibernate_after_ticks: 10,
        ..PeerConfig::default()
    };
    let c = Cluster::new("raft-10k", peer, 256);
    let started = Instant::now();
    for s in c.stores.values() {
        s.bootstrap_groups(&descs(GROUPS)).expect("bootstrap");
    }
    c.elect(GROUPS);
    eprintln!("{GROUPS} groups x 3 replicas bootstrapped and elected in {:?}", started.elapsed());
    let hibernated = |c: &Cluster| {
        c.stores.values().all(|s| {
            let m = s.metrics().snapshot();
            let t0 = m.ticks;
            std::thread::sleep(Duration::from_millis(120));
            s.metrics().snapshot().ticks == t0
        })
    };
    assert!(c.wait(Duration::from_secs(120), hibernated), "groups kept ticking");
    let before: Vec<_> = c.stores.values().map(|s| s.metrics().snapshot()).collect();
    let cpu_before = process_cpu_ms();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = process_cpu_ms().zip(cpu_before).map(|(a, b)| a - b);
    let after: Vec<_> = c.stores.values().map(|s| s.metrics().snapshot()).collect();
    let ticks: u64 = after.iter().zip(&before).map(|(a, b)| a.ticks - b.ticks).sum();
    let skipped: u64 = after.iter().zip(&before).map(|(a, b)| a.ticks_skipped - b.ticks_skipped).sum();
    let msgs: u64 = after.iter().zip(&before).map(|(a, b)| a.messages_sent - b.messages_sent).sum();
    let rounds: u64 = after.iter().zip(&before).map(|(a, b)| a.rounds - b.rounds).sum();
    eprintln!(
        "2 s window, {GROUPS} idle groups x 3 stores: {ticks} ticks delivered, {skipped} skipped (hibernated), {msgs} messages, {rounds} poll rounds, process CPU {cpu:?} ms"
    );
    assert_eq!((ticks, msgs, rounds), (0, 0, 0));
    // A write wakes just its group.
    let (tx, rx) = unbounded();
    let l = c.leader(77).expect("leader");
    c.stores[&l].propose(77, put(1, 77, 1), &tx).expect("propose");
    let r = rx.recv_timeout(Duration::from_secs(10)).expect("answer");
    assert_eq!(r.result, Ok(Outcome::Written));
}

#[test]
fn reserved_group_ids_are_refused_so_store_metadata_stays_separate() {
    // Group u64::MAX is where a store keeps its tombstones: a group under that id shared
    // its log, and lost its checkpoint on the first restart (found by the PD live test).
    let mut c = ManualCluster::new(7);
    let s = c.stores.get_mut(&1).expect("store 1");
    let meta = RangeDescriptor::new(u64::MAX, Vec::new(), Vec::new(), &[1, 2, 3]);
    assert!(s.bootstrap_groups(&[meta]).is_err());
    let zero = RangeDescriptor::new(0, Vec::new(), Vec::new(), &[1, 2, 3]);
    assert!(s.bootstrap_groups(&[zero]).is_err());
    let pd = RangeDescriptor::new(u64::MAX - 1, Vec::new(), Vec::new(), &[1, 2, 3]);
    assert_eq!(s.bootstrap_groups(&[pd]).expect("the PD group's id is fine"), 1);
}

#[test]
fn a_split_moves_the_upper_half_to_a_new_group_on_every_store_and_survives_a_restart() {
    let mut c = Cluster::new("raft-split", fast_peer(), 64);
    for s in c.stores.values() {
        assert_eq!(s.bootstrap_groups(&descs(1)).expect("bootstrap"), 1);
    }
    c.elect(1);
    c.write_all(1, 20, 0);
    let leader = c.leader(1).expect("leader");
    let (tx, rx) = unbounded();
    let epoch = node::group::Epoch { version: 1, conf_ver: 1 };
    // A key outside the range is refused on the leader, before the log.
    c.stores[&leader].split(1, 7, epoch, Some(Vec::new()), 100, &tx).expect("send");
    assert!(rx.recv_timeout(Duration::from_secs(10)).expect("answer").result.is_err());
    c.stores[&leader].split(1, 8, epoch, None, 100, &tx).expect("send");
    let right = match rx.recv_timeout(Duration::from_secs(10)).expect("answer").result {
        Ok(Outcome::Split(desc)) => desc,
        other => panic!("split: {other:?}"),
    };
    assert_eq!(right.id, 100);
    assert_eq!(right.epoch.version, 2);
    let ok = c.wait(Duration::from_secs(30), |c| {
        c.leader(100).is_some() && NODES.iter().all(|n| c.stores[n].status(100).is_some_and(|s| s.keys > 0))
    });
    let seen: Vec<_> =
        NODES.iter().map(|n| c.stores[n].status(100).map(|s| (s.role, s.keys, s.term, s.applied))).collect();
    assert!(ok, "the new group was not hosted and led on every store: {seen:?}");
    for n in NODES {
        let (l, r) = (c.stores[&n].status(1).expect("left"), c.stores[&n].status(100).expect("right"));
        assert_eq!(l.keys + r.keys, 20, "store {n}: no pair lost or doubled");
        assert_eq!(l.desc.end, right.start, "store {n}: the left half ends where the right starts");
        assert!(l.keys >= 9 && r.keys >= 9, "store {n}: about half each ({}, {})", l.keys, r.keys);
    }
    // A write of the old version to the left group is refused; the right group takes writes.
    c.stores[&c.leader(1).expect("leader")].propose(1, put(9, 1, 99), &tx).expect("send");
    assert!(rx.recv_timeout(Duration::from_secs(10)).expect("answer").result.is_err(), "stale epoch");
    let key = [right.start.clone(), b"-after".to_vec()].concat();
    let write = WriteRequest {
        request_id: 10,
        epoch: right.epoch,
        command: Command::Put { key: key.clone(), value: b"v".to_vec() },
    };
    c.stores[&c.leader(100).expect("leader")].propose(100, write, &tx).expect("send");
    assert!(matches!(rx.recv_timeout(Duration::from_secs(10)).expect("answer").result, Ok(Outcome::Written)));
    c.stop(2);
    c.open(2);
    assert_eq!(c.stores[&2].group_count(), 2, "both halves recovered from disk");
    let ok = c.wait(Duration::from_secs(30), |c| {
        let digests: Vec<_> =
            NODES.iter().filter_map(|n| c.stores[n].status(100)).map(|s| (s.keys, s.digest)).collect();
        digests.len() == 3 && digests.iter().all(|d| *d == digests[0]) && digests[0].0 > 0
    });
    assert!(ok, "the new group's replicas differ after a restart");
}
