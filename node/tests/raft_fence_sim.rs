//! Deterministic simulations of fenced ownership on `node::group` replicas: `Fence` epochs
//! and `Batch` guards under message loss, reordering and duplication, partitions, crashes
//! and restarts (some between a ready and its fsync), and leader changes, both elected and
//! asked for with `transfer_leader`.
//!
//! The clients act like connection owners. Each fenced key `k` (several per group, in two
//! groups) has a few competing owners. An owner takes `k` over with a `Fence` of the record
//! `f/<k>/owner` that also clears the data span `f/<k>/d/`; once answered `Fenced { epoch }`
//! it writes `Batch`es guarded by that epoch, each putting a distinctive data key
//! `f/<k>/d/<epoch>/<owner>/<seq>` and the marker `f/<k>/last` = `<epoch>/<owner>/<seq>`,
//! until a batch comes back `GuardFailed` (another owner took over). Requests whose answer
//! does not come are given up on: their outcome is unknown and nothing is concluded from it.
//!
//! What is checked, as answers arrive (`floor` = the highest epoch answered to a fence of
//! the same key before the request was proposed):
//! - a fence answered `Fenced { epoch }` has `epoch > floor`, an epoch no other answered
//!   fence of the key got, and `previous` holding epoch `epoch - 1` (and the generation
//!   bumped exactly when asked);
//! - a batch answered `Written` was guarded by an epoch no lower than `floor` (a guard
//!   below an epoch a fence had already been answered with is stale and must fail); one answered
//!   `GuardFailed` names the guarded key and an epoch that differs from the guard and is
//!   at least `floor`.
//!
//! And on the state of every replica, during the run and after healing and convergence:
//! every data key of `k` carries the epoch `f/<k>/owner` holds (a fence clears the span, so
//! a key from an older epoch is a batch that applied with a stale guard); when data keys
//! exist, `f/<k>/last` carries that epoch too, and it never carries a later one. At the end
//! every batch answered `Written` at the final epoch of its key is still there.
//!
//! Answers are not required to come in epoch order: two fences in flight together may be
//! answered out of log order (a deposed leader answers its committed proposal after it
//! catches up), which linearizability allows; the run counts these as `inversions`.
//!
//! Each run prints its seed; rerun one with
//! `RAFT_SIM_SEED=<seed> cargo test -p node --test raft_fence_sim <name>`.

#[path = "raft_sim_harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::{Answer, NetFaults, Sim, groups, peer_config, seeds};
use node::group::command::{BatchOp, FENCE_HEADER_BYTES, Guard, fence_epoch, fence_generation};
use node::group::{Command, GroupId, KvState, NodeId, Outcome};

const NODES: [NodeId; 3] = [1, 2, 3];
/// Groups, each over all nodes and the whole key space.
const GROUPS: u64 = 2;
/// Fenced keys per group.
const KEYS_PER_GROUP: usize = 2;
/// Owners competing for each key.
const OWNERS_PER_KEY: usize = 3;
/// An owner stops waiting for an answer after this long (virtual ms).
const GIVE_UP_MS: u64 = 4_000;
/// Batches an owner keeps in flight.
const BATCHES_IN_FLIGHT: usize = 2;

/// How the owners behave.
#[derive(Clone, Copy, Debug)]
struct Workload {
    /// Virtual ms of faults before healing.
    chaos_ms: u64,
    /// Percent chance that an idle owner, when it acts, tries to take its key over.
    takeover_pct: u64,
    /// Percent chance that an owner holding its key fences it again instead of writing.
    refence_pct: u64,
}

/// One fenced record and the keys that belong to it.
struct FencedKey {
    group: GroupId,
    name: String,
}

impl FencedKey {
    fn record(&self) -> Vec<u8> {
        format!("f/{}/owner", self.name).into_bytes()
    }

    fn last(&self) -> Vec<u8> {
        format!("f/{}/last", self.name).into_bytes()
    }

    fn data_prefix(&self) -> String {
        format!("f/{}/d/", self.name)
    }

    /// The span a fence clears: every data key.
    fn data_span(&self) -> (Vec<u8>, Vec<u8>) {
        (self.data_prefix().into_bytes(), format!("f/{}/d0", self.name).into_bytes())
    }

    fn data_key(&self, epoch: u64, owner: usize, seq: u64) -> Vec<u8> {
        format!("{}{epoch:020}/{owner}/{seq:06}", self.data_prefix()).into_bytes()
    }

    /// The epoch a data key was written under.
    fn data_epoch(&self, key: &[u8]) -> u64 {
        let key = std::str::from_utf8(key).expect("utf-8 data key");
        let rest = key.strip_prefix(&self.data_prefix()).expect("data key of this record");
        rest.split('/').next().and_then(|e| e.parse().ok()).expect("data key names an epoch")
    }
}

/// The epoch `f/<k>/last` names (`<epoch>/<owner>/<seq>`).
fn marker_epoch(value: &[u8]) -> u64 {
    let value = std::str::from_utf8(value).expect("utf-8 marker");
    value.split('/').next().and_then(|e| e.parse().ok()).expect("marker names an epoch")
}

enum OwnerState {
    Idle,
    Fencing { request: u64, since_ms: u64 },
    Owning { epoch: u64, seq: u64, in_flight: Vec<(u64, u64)> },
}

struct Owner {
    key: usize,
    state: OwnerState,
}

enum Sent {
    Fence { attempt: u64, new_generation: bool },
    Batch { epoch: u64, data_key: Vec<u8> },
}

/// A proposed request the checks wait for an answer to.
struct Pending {
    key: usize,
    owner: usize,
    /// The highest epoch answered to a fence of `key` before this was proposed.
    floor: u64,
    sent: Sent,
}

/// What the answers said about one key.
#[derive(Default)]
struct KeyHistory {
    /// The highest epoch answered to a fence so far.
    answered_max: u64,
    /// Every epoch answered to a fence, with its request id.
    epochs: BTreeMap<u64, u64>,
    /// The epoch each answered fence attempt got.
    attempt_epoch: BTreeMap<u64, u64>,
    /// For each answered fence, its epoch and the attempt its `previous` value names.
    follows: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Counts {
    fences: u64,
    written: u64,
    stale_rejected: u64,
    unknown: u64,
    inversions: u64,
    transfers: u64,
    /// Answered fences whose predecessor in the log was answered too.
    chained: u64,
}

struct FenceSim {
    sim: Sim,
    work: Workload,
    keys: Vec<FencedKey>,
    owners: Vec<Owner>,
    pending: BTreeMap<u64, Pending>,
    history: Vec<KeyHistory>,
    /// Batches answered `Written`: (key, guard epoch, data key).
    written: Vec<(usize, u64, Vec<u8>)>,
    counts: Counts,
    /// Numbers the fences; each writes its number into the record's body.
    next_attempt: u64,
}

/// The record body a fence writes.
fn fence_body(owner: usize, attempt: u64) -> Vec<u8> {
    format!("owner {owner} fence {attempt}").into_bytes()
}

/// The attempt a record body names.
fn body_attempt(body: &[u8]) -> u64 {
    let body = std::str::from_utf8(body).expect("utf-8 body");
    body.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("body names a fence attempt")
}

impl FenceSim {
    fn new(seed: u64, work: Workload) -> Self {
        let descs = groups(GROUPS, &NODES);
        let mut sim = Sim::new(seed, &NODES, &descs, peer_config(50));
        sim.faults = NetFaults::chaos();
        sim.crash_in_ready_permille = 2;
        let keys: Vec<FencedKey> = descs
            .iter()
            .flat_map(|d| {
                (0..KEYS_PER_GROUP).map(move |i| FencedKey { group: d.id, name: format!("g{}k{i}", d.id) })
            })
            .collect();
        let owners = (0..keys.len() * OWNERS_PER_KEY)
            .map(|o| Owner { key: o / OWNERS_PER_KEY, state: OwnerState::Idle })
            .collect();
        let history = keys.iter().map(|_| KeyHistory::default()).collect();
        Self {
            sim,
            work,
            keys,
            owners,
            pending: BTreeMap::new(),
            history,
            written: Vec::new(),
            counts: Counts::default(),
            next_attempt: 0,
        }
    }

    fn group_ids(&self) -> Vec<GroupId> {
        let set: BTreeSet<GroupId> = self.keys.iter().map(|k| k.group).collect();
        set.into_iter().collect()
    }

    /// Faults, leader transfers and owners at work for `work.chaos_ms`, checking answers as
    /// they come and every replica's state as it goes.
    fn chaos(&mut self) {
        let end = self.sim.now_ms + self.work.chaos_ms;
        while self.sim.now_ms < end {
            for o in 0..self.owners.len() {
                self.act(o);
            }
            self.fault();
            let ms = self.sim.rand(1..20) * harness::STEP_MS;
            self.sim.run_for(ms);
            self.check_answers();
            self.check_replicas();
        }
    }

    fn fault(&mut self) {
        let sim = &mut self.sim;
        match sim.rand(0..200) {
            0 => {
                let victim = NODES[sim.rand(0..3) as usize];
                sim.crash(victim);
            }
            1..8 => {
                let down: Vec<NodeId> = NODES.iter().copied().filter(|n| !sim.nodes[n].up).collect();
                if !down.is_empty() {
                    let id = down[sim.rand(0..down.len() as u64) as usize];
                    sim.restart(id);
                }
            }
            8..10 => {
                let lone = NODES[sim.rand(0..3) as usize];
                let rest: Vec<NodeId> = NODES.iter().copied().filter(|&n| n != lone).collect();
                sim.partition(&[lone], &rest);
            }
            10..14 => sim.blocked.clear(),
            14..18 => {
                let g = sim.rand(1..GROUPS + 1);
                let to = NODES[sim.rand(0..3) as usize];
                if sim.transfer_leader(g, to).is_ok() {
                    self.counts.transfers += 1;
                }
            }
            _ => {}
        }
    }

    /// Owner `o` takes its next step.
    fn act(&mut self, o: usize) {
        let now = self.sim.now_ms;
        match self.owners[o].state {
            OwnerState::Idle => {
                if self.sim.rand(0..100) < self.work.takeover_pct {
                    self.fence(o);
                }
            }
            OwnerState::Fencing { since_ms, .. } => {
                if now - since_ms > GIVE_UP_MS {
                    self.owners[o].state = OwnerState::Idle;
                }
            }
            OwnerState::Owning { .. } => self.write(o),
        }
    }

    /// Owner `o`, holding its key, writes a batch guarded by its epoch (or fences again).
    fn write(&mut self, o: usize) {
        let now = self.sim.now_ms;
        let OwnerState::Owning { epoch, seq, in_flight } = &mut self.owners[o].state else { return };
        in_flight.retain(|&(_, since)| now - since <= GIVE_UP_MS);
        if in_flight.len() >= BATCHES_IN_FLIGHT {
            return;
        }
        let (epoch, seq) = (*epoch, std::mem::replace(seq, *seq + 1));
        if self.sim.rand(0..100) < self.work.refence_pct {
            self.fence(o);
            return;
        }
        let k = self.owners[o].key;
        let key = &self.keys[k];
        let data_key = key.data_key(epoch, o, seq);
        let command = Command::Batch {
            guards: vec![Guard { key: key.record(), epoch }],
            ops: vec![
                BatchOp::Put { key: data_key.clone(), value: format!("owner {o} seq {seq}").into_bytes() },
                BatchOp::Put { key: key.last(), value: format!("{epoch}/{o}/{seq}").into_bytes() },
            ],
        };
        let floor = self.history[k].answered_max;
        if let Ok(request) = self.sim.propose(key.group, command) {
            self.pending
                .insert(request, Pending { key: k, owner: o, floor, sent: Sent::Batch { epoch, data_key } });
            if let OwnerState::Owning { in_flight, .. } = &mut self.owners[o].state {
                in_flight.push((request, now));
            }
        }
    }

    /// Owner `o` proposes a fence of its key.
    fn fence(&mut self, o: usize) {
        let k = self.owners[o].key;
        let new_generation = self.sim.rand(0..2) == 0;
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let key = &self.keys[k];
        let command = Command::Fence {
            key: key.record(),
            body: fence_body(o, attempt),
            new_generation,
            clear: Some(key.data_span()),
        };
        let floor = self.history[k].answered_max;
        match self.sim.propose(key.group, command) {
            Ok(request) => {
                self.pending.insert(
                    request,
                    Pending { key: k, owner: o, floor, sent: Sent::Fence { attempt, new_generation } },
                );
                self.owners[o].state = OwnerState::Fencing { request, since_ms: self.sim.now_ms };
            }
            Err(_) => self.owners[o].state = OwnerState::Idle,
        }
    }

    fn check_answers(&mut self) {
        for answer in self.sim.take_answers() {
            self.check_answer(answer);
        }
    }

    fn check_answer(&mut self, answer: Answer) {
        let seed = self.sim.seed;
        let Answer { request_id, at_ms, result } = answer;
        let p = self.pending.remove(&request_id).expect("an answer to a request of this test");
        if let OwnerState::Owning { in_flight, .. } = &mut self.owners[p.owner].state {
            in_flight.retain(|&(r, _)| r != request_id);
        }
        let name = &self.keys[p.key].name;
        let record = self.keys[p.key].record();
        let history = &mut self.history[p.key];
        let Ok(outcome) = result else {
            // Not applied, or unknown: nothing to conclude.
            self.counts.unknown += 1;
            if let OwnerState::Fencing { request, .. } = self.owners[p.owner].state
                && request == request_id
            {
                self.owners[p.owner].state = OwnerState::Idle;
            }
            return;
        };
        match (p.sent, outcome) {
            (Sent::Fence { attempt, new_generation }, Outcome::Fenced { epoch, generation, previous }) => {
                assert!(
                    epoch > p.floor,
                    "seed {seed}: fence of {name} (request {request_id}, answered at {at_ms} ms) got epoch \
                     {epoch}, not above epoch {} that a fence answered before it was proposed got",
                    p.floor
                );
                if let Some(other) = history.epochs.insert(epoch, request_id) {
                    panic!("seed {seed}: fences {other} and {request_id} of {name} both got epoch {epoch}");
                }
                let prev = previous.as_deref().unwrap_or_default();
                let prev_epoch = fence_epoch(prev).unwrap_or(0);
                assert_eq!(
                    prev_epoch + 1,
                    epoch,
                    "seed {seed}: fence of {name} skipped from epoch {prev_epoch}"
                );
                let prev_generation = fence_generation(prev).unwrap_or(0);
                assert_eq!(
                    generation,
                    prev_generation + u64::from(new_generation),
                    "seed {seed}: fence of {name} (new_generation {new_generation}) after generation {prev_generation}"
                );
                history.attempt_epoch.insert(attempt, epoch);
                if let Some(body) = previous.as_deref().and_then(|v| v.get(FENCE_HEADER_BYTES..)) {
                    history.follows.push((epoch, body_attempt(body)));
                }
                if epoch < history.answered_max {
                    self.counts.inversions += 1;
                }
                history.answered_max = history.answered_max.max(epoch);
                self.counts.fences += 1;
                if let OwnerState::Fencing { request, .. } = self.owners[p.owner].state
                    && request == request_id
                {
                    self.owners[p.owner].state = OwnerState::Owning { epoch, seq: 0, in_flight: Vec::new() };
                }
            }
            (Sent::Batch { epoch, data_key }, Outcome::Written) => {
                assert!(
                    epoch >= p.floor,
                    "seed {seed}: batch {request_id} guarded by {name} at epoch {epoch} was written (answered at \
                     {at_ms} ms), but a fence had taken the key to epoch {} before the batch was proposed",
                    p.floor
                );
                self.written.push((p.key, epoch, data_key));
                self.counts.written += 1;
            }
            (Sent::Batch { epoch, .. }, Outcome::GuardFailed { key, current }) => {
                assert_eq!(key, record, "seed {seed}: batch {request_id} failed on a key it did not guard");
                let current = current.unwrap_or_else(|| {
                    panic!("seed {seed}: batch {request_id}: {name} lost its fenced record after a fence was answered")
                });
                assert_ne!(
                    current, epoch,
                    "seed {seed}: batch {request_id}: the guard held at epoch {epoch}"
                );
                assert!(
                    current >= p.floor,
                    "seed {seed}: batch {request_id} saw {name} at epoch {current}, below epoch {} answered \
                     before it was proposed",
                    p.floor
                );
                if current > epoch {
                    self.counts.stale_rejected += 1;
                }
                // Deposed: another owner fenced the key.
                if let OwnerState::Owning { epoch: mine, .. } = self.owners[p.owner].state
                    && mine == epoch
                {
                    self.owners[p.owner].state = OwnerState::Idle;
                }
            }
            (_, other) => panic!("seed {seed}: request {request_id} on {name} answered {other:?}"),
        }
    }

    /// The state every replica holds satisfies the fencing invariants.
    fn check_replicas(&self) {
        for node in self.sim.nodes.values().filter(|n| n.up) {
            for (&group, peer) in &node.peers {
                for key in self.keys.iter().filter(|k| k.group == group) {
                    self.check_state(
                        key,
                        peer.kv(),
                        &format!("node {} applied {}", node.id, peer.storage().applied().0),
                    );
                }
            }
        }
    }

    fn check_state(&self, key: &FencedKey, kv: &KvState, at: &str) {
        let seed = self.sim.seed;
        let name = &key.name;
        let epoch = kv.get(&key.record()).map(|v| fence_epoch(v).expect("a fenced record"));
        let (start, end) = key.data_span();
        let data = kv.scan(&start, &end, usize::MAX);
        for (k, _) in &data {
            let written_at = key.data_epoch(k);
            assert_eq!(
                Some(written_at),
                epoch,
                "seed {seed}: {at}: {} was written by a batch guarded at epoch {written_at} while {name} is at \
                 epoch {epoch:?} (a batch with a stale guard applied)",
                String::from_utf8_lossy(k)
            );
        }
        if let Some(marker) = kv.get(&key.last()) {
            let marked = marker_epoch(marker);
            let current = epoch.expect("a batch wrote the marker, so a fence came first");
            assert!(marked <= current, "seed {seed}: {at}: {name}'s marker names epoch {marked} > {current}");
            assert!(
                data.is_empty() || marked == current,
                "seed {seed}: {at}: {name} holds data of epoch {current} but its last batch was guarded at \
                 epoch {marked} (a batch with a stale guard applied after a current one)"
            );
        }
    }

    /// Heals, converges, then checks the last answers, every replica's state, and that the
    /// batches written at each key's final epoch are all there.
    fn finish(&mut self) {
        let ids = self.group_ids();
        self.sim.crash_in_ready_permille = 0;
        self.sim.check_final(&ids);
        self.check_answers();
        let seed = self.sim.seed;
        for (key, h) in self.keys.iter().zip(&self.history) {
            // The answered fences chain: each one's `previous` is the record the fence
            // before it in the log wrote, so if that one was answered too, it got epoch - 1.
            for &(epoch, before) in &h.follows {
                if let Some(&e) = h.attempt_epoch.get(&before) {
                    self.counts.chained += 1;
                    assert_eq!(
                        e + 1,
                        epoch,
                        "seed {seed}: {}: fence {before} got {e}, the next fence {epoch}",
                        key.name
                    );
                }
            }
        }
        for node in self.sim.nodes.values() {
            for (&group, peer) in &node.peers {
                let at = format!("node {} after convergence", node.id);
                for (k, key) in self.keys.iter().enumerate().filter(|(_, k)| k.group == group) {
                    let kv = peer.kv();
                    self.check_state(key, kv, &at);
                    let last = kv.get(&key.record()).and_then(fence_epoch).unwrap_or(0);
                    assert!(
                        last >= self.history[k].answered_max,
                        "seed {seed}: {at}: {} at epoch {last}, below an answered fence",
                        key.name
                    );
                    for (_, epoch, data_key) in self.written.iter().filter(|w| w.0 == k && w.1 == last) {
                        assert!(
                            kv.get(data_key).is_some(),
                            "seed {seed}: {at}: {} written at epoch {epoch} (still current) is lost",
                            String::from_utf8_lossy(data_key)
                        );
                    }
                }
            }
        }
        let s = &self.sim.checker.stats;
        eprintln!(
            "seed {seed}: {:?}; elections {} crashes {} msgs {} dropped {}",
            self.counts, s.elections, s.crashes, s.messages, s.dropped
        );
    }
}

/// Runs `work` for `seed` and returns what the answers said.
fn run(seed: u64, work: Workload) -> FenceSim {
    eprintln!("seed {seed}");
    let mut fs = FenceSim::new(seed, work);
    fs.chaos();
    fs.finish();
    fs
}

#[test]
fn fence_epochs_strictly_increase_per_key_under_faults() {
    // Owners fence often, holders fence again: many fences race on every key.
    let work = Workload { chaos_ms: 120_000, takeover_pct: 40, refence_pct: 30 };
    for seed in seeds(0xfe9ce, 6) {
        let fs = run(seed, work);
        for (k, h) in fs.history.iter().enumerate() {
            assert!(
                h.epochs.len() >= 20,
                "seed {seed}: only {} fences of {} answered",
                h.epochs.len(),
                fs.keys[k].name
            );
        }
        assert!(fs.counts.chained > 0, "seed {seed}: no two consecutive fences answered");
        assert!(fs.counts.transfers > 0, "seed {seed}: no leader transfer");
    }
}

#[test]
fn batch_with_stale_guard_never_applies_under_faults() {
    // Owners mostly write; takeovers leave the deposed owner's batches in flight.
    let work = Workload { chaos_ms: 120_000, takeover_pct: 10, refence_pct: 0 };
    for seed in seeds(0xba7c4, 6) {
        let fs = run(seed, work);
        assert!(fs.counts.written > 100, "seed {seed}: only {} batches written", fs.counts.written);
        assert!(
            fs.counts.stale_rejected > 20,
            "seed {seed}: only {} stale batches refused",
            fs.counts.stale_rejected
        );
        assert!(fs.counts.transfers > 0, "seed {seed}: no leader transfer");
    }
}
