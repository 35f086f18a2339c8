//! SHELL. [`Store`]: hosts many groups of one node over one raft-engine log.
//!
//! Opening a store replays raft-engine and rebuilds every group it finds (checkpoint + log);
//! pollers then run rounds (see `poller`), a ticker ticks awake groups every tick interval
//! (hibernated groups cost nothing), and the [`Transport`] carries messages between stores.
//! Requests enter through the group mailboxes and are answered on the caller's channel.
//!
//! Replicas of groups created elsewhere (a new learner) are created here when their first
//! message arrives (`GroupMessage::may_create_replica`) unless the group is tombstoned (its
//! replica here was destroyed), and start uninitialized until the leader's snapshot.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender};
use raft_engine::LogBatch;

use super::config::StoreConfig;
use super::engine::{self, EngineLog, RaftEngine, STORE_META_GROUP};
use super::error::StoreError;
use super::fsm::GroupFsm;
use super::mailbox::{GroupCell, PeerMsg, Router};
use super::metrics::StoreMetrics;
use super::transport::Transport;
use super::{poller, ticker};
use crate::group::{
    Epoch, GroupId, GroupMessage, GroupPeer, NodeId, PeerChange, PeerStatus, PersistedState, RangeDescriptor,
    ReadRequest, Response, SplitChild, WriteRequest,
};

/// Most rounds one [`Store::poll`] call runs (a guard against a livelock in manual mode).
const POLL_ROUNDS_MAX: usize = 100_000;

/// State shared by the store handle, its threads and its routers.
pub(crate) struct StoreShared {
    pub(crate) cfg: StoreConfig,
    pub(crate) engine: Arc<RaftEngine>,
    pub(crate) router: Router,
    pub(crate) ready_rx: Receiver<Arc<GroupCell>>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) metrics: StoreMetrics,
    pub(crate) shutdown: AtomicBool,
    pub(crate) poisoned: AtomicBool,
    logger: slog::Logger,
    tombstones: Mutex<BTreeSet<GroupId>>,
    create_lock: Mutex<()>,
}

impl StoreShared {
    fn create_replica(&self, group: GroupId, state: PersistedState) -> Result<Arc<GroupCell>, StoreError> {
        let log = EngineLog::new(Arc::clone(&self.engine), group);
        let seed = self.cfg.seed ^ group.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let peer = GroupPeer::new(&self.cfg.peer, self.cfg.node_id, group, log, state, seed, &self.logger)
            .map_err(|source| StoreError::Group { group, source })?;
        let cell = GroupCell::new(group, GroupFsm::new(peer), self.cfg.mailbox_msgs_max);
        if !self.router.insert_new(Arc::clone(&cell)) {
            return Err(StoreError::Config(format!("group {group} is already hosted")));
        }
        self.router.schedule(&cell);
        Ok(cell)
    }

    /// Adds the initial state of split children to `batch` (written with the parent's own
    /// write, so a parent checkpoint past the split is never durable without the child).
    /// Children already hosted, or tombstoned here, are skipped.
    pub(crate) fn add_split_children(&self, batch: &mut LogBatch, children: &mut Vec<SplitChild>) {
        children.retain(|c| {
            if c.desc.id == STORE_META_GROUP || self.is_hosted_or_removed(c.desc.id) {
                tracing::debug!(group = c.desc.id, "split child already here (or removed); not re-created");
                return false;
            }
            let state = PersistedState::split_child(&c.desc, &c.kv);
            match engine::add_bootstrap(batch, c.desc.id, &state) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(group = c.desc.id, error = %e, "cannot encode a split child");
                    false
                }
            }
        });
    }

    /// Hosts split children whose state is durable; the ones the parent's leader made
    /// campaign at once.
    pub(crate) fn host_split_children(&self, children: Vec<SplitChild>) {
        let _guard = self.create_lock.lock();
        for c in children {
            if self.router.get(c.desc.id).is_some() {
                continue;
            }
            match self.create_replica(c.desc.id, PersistedState::split_child(&c.desc, &c.kv)) {
                Ok(cell) => {
                    tracing::info!(group = c.desc.id, start = ?String::from_utf8_lossy(&c.desc.start), "split child created");
                    StoreMetrics::add(&self.metrics.replicas_created, 1);
                    if c.campaign {
                        let _ = Router::send_to(&cell, PeerMsg::Campaign);
                        self.router.schedule(&cell);
                    }
                }
                Err(e) => tracing::error!(group = c.desc.id, error = %e, "cannot host a split child"),
            }
        }
    }

    /// A group's replica was destroyed (its destroy write is durable).
    pub(crate) fn destroyed(&self, group: GroupId) {
        self.router.remove(group);
        if let Ok(mut t) = self.tombstones.lock() {
            t.insert(group);
        }
        StoreMetrics::add(&self.metrics.replicas_destroyed, 1);
    }

    /// Whether `group` has a replica here (running or on disk), or had one that was removed.
    fn is_hosted_or_removed(&self, group: GroupId) -> bool {
        self.router.get(group).is_some()
            || engine::has_group(&self.engine, group)
            || self.is_tombstoned(group)
    }

    fn is_tombstoned(&self, group: GroupId) -> bool {
        self.tombstones.lock().map(|t| t.contains(&group)).unwrap_or(true)
    }

    /// Delivers a message from another store; false if it was dropped.
    fn deliver(&self, msg: GroupMessage) -> bool {
        if self.poisoned.load(Ordering::Acquire)
            || msg.to != self.cfg.node_id
            || msg.group_id == STORE_META_GROUP
        {
            return false;
        }
        let cell = match self.router.get(msg.group_id) {
            Some(cell) => cell,
            None if msg.may_create_replica() => {
                match self.create_uninitialized(msg.group_id, msg.is_invitation()) {
                    Some(cell) => cell,
                    None => return false,
                }
            }
            None => return false,
        };
        if !Router::send_to(&cell, PeerMsg::Raft(Box::new(msg))) {
            StoreMetrics::add(&self.metrics.messages_dropped, 1);
            return false;
        }
        self.router.schedule(&cell);
        true
    }

    /// Creates an uninitialized replica of `group` for an incoming message. Over a
    /// tombstone (this node's replica was removed earlier) only for a leader's invitation
    /// (see [`GroupMessage::is_invitation`]): the node is being added again, and the
    /// tombstone is deleted durably first so the new replica survives a restart. A stray
    /// replica made by a stale invitation holds nothing, cannot vote while uninitialized,
    /// and is destroyed by the current leader when it answers.
    fn create_uninitialized(&self, group: GroupId, invitation: bool) -> Option<Arc<GroupCell>> {
        let _guard = self.create_lock.lock().ok()?;
        if let Some(cell) = self.router.get(group) {
            return Some(cell);
        }
        let recreated = self.is_tombstoned(group);
        if recreated {
            if !invitation {
                return None;
            }
            if let Err(e) = engine::clear_tombstone(&self.engine, group, self.cfg.sync_writes) {
                tracing::warn!(group, error = %e, "cannot clear a tombstone");
                return None;
            }
            if let Ok(mut t) = self.tombstones.lock() {
                t.remove(&group);
            }
            tracing::info!(group, "replica re-created after an earlier removal");
        }
        match self.create_replica(group, PersistedState::uninitialized()) {
            Ok(cell) => {
                StoreMetrics::add(&self.metrics.replicas_created, 1);
                if recreated {
                    cell.fsm().peer.forbid_votes_until_initialized();
                }
                Some(cell)
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot create a replica");
                None
            }
        }
    }
}

/// A handle that delivers messages into a store; transports hold it. It does not keep the
/// store alive: after the store is dropped, deliveries fail.
#[derive(Clone)]
pub struct StoreRouter {
    shared: Weak<StoreShared>,
}

impl StoreRouter {
    /// Delivers `msg` to its group's mailbox; false if dropped (store gone, mailbox full,
    /// unknown group).
    pub fn deliver(&self, msg: GroupMessage) -> bool {
        self.shared.upgrade().is_some_and(|s| s.deliver(msg))
    }

    /// Tells `group` that its messages to `to` were dropped (a snapshot, if `snapshot`), so
    /// raft probes `to` (and resends the snapshot) instead of assuming them delivered.
    pub fn unreachable(&self, group: GroupId, to: NodeId, snapshot: bool) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|s| s.router.send(group, PeerMsg::Unreachable { to, snapshot }).is_ok())
    }
}

/// Many raft groups of one node, over one raft-engine log.
pub struct Store {
    shared: Arc<StoreShared>,
    threads: Vec<JoinHandle<()>>,
}

impl Store {
    /// Opens the store in `cfg.dir`, recovers every group found there, and (unless in
    /// manual mode) starts the pollers and the ticker.
    pub fn open(cfg: StoreConfig, transport: Arc<dyn Transport>) -> Result<Self, StoreError> {
        cfg.validate()?;
        let engine = engine::open(&cfg.dir)?;
        let tombstones = engine::tombstones(&engine)?;
        let (ready_tx, ready_rx) = crossbeam::channel::unbounded();
        let shared = Arc::new(StoreShared {
            router: Router::new(ready_tx),
            ready_rx,
            transport,
            metrics: StoreMetrics::default(),
            shutdown: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            logger: crate::group::raft_logger(),
            tombstones: Mutex::new(tombstones),
            create_lock: Mutex::new(()),
            engine,
            cfg,
        });
        let groups = engine::stored_groups(
            &shared.engine,
            &shared.tombstones.lock().map(|t| t.clone()).unwrap_or_default(),
        );
        for group in groups {
            let state = engine::load_state(&shared.engine, group)?;
            shared.create_replica(group, state)?;
        }
        let mut store = Self { shared, threads: Vec::new() };
        store.start_threads()?;
        Ok(store)
    }

    fn start_threads(&mut self) -> Result<(), StoreError> {
        let n = self.shared.cfg.poller_threads;
        if n == 0 {
            return Ok(());
        }
        let node = self.shared.cfg.node_id;
        for i in 0..n {
            let shared = Arc::clone(&self.shared);
            let t = std::thread::Builder::new()
                .name(format!("raft-poll-{node}-{i}"))
                .spawn(move || poller::run(&shared))
                .map_err(|e| StoreError::Config(format!("spawn poller: {e}")))?;
            self.threads.push(t);
        }
        let shared = Arc::clone(&self.shared);
        let t = std::thread::Builder::new()
            .name(format!("raft-tick-{node}"))
            .spawn(move || ticker::run(&shared))
            .map_err(|e| StoreError::Config(format!("spawn ticker: {e}")))?;
        self.threads.push(t);
        Ok(())
    }

    /// This store's node.
    pub fn node_id(&self) -> NodeId {
        self.shared.cfg.node_id
    }

    /// A delivery handle for transports.
    pub fn router(&self) -> StoreRouter {
        StoreRouter { shared: Arc::downgrade(&self.shared) }
    }

    /// The counters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    /// Ids of the hosted groups, sorted.
    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.shared.router.cells().iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Number of hosted groups.
    pub fn group_count(&self) -> usize {
        self.shared.router.len()
    }

    /// Creates the initial replicas of new groups on this store (this node must be one of
    /// each group's voters), persisting all of them in one write. Groups already present
    /// (bootstrapped before, or created by an early message from a peer) are skipped.
    /// Returns how many were created.
    pub fn bootstrap_groups(&self, descs: &[RangeDescriptor]) -> Result<usize, StoreError> {
        let shared = &self.shared;
        // Serialized with replica creation by message: a replica that a vote request created
        // first (and that may have voted) must not be overwritten; it stays and catches up
        // from the leader's snapshot instead.
        let _guard = shared.create_lock.lock().map_err(|_| StoreError::Poisoned)?;
        let mut batch = LogBatch::default();
        let mut new = Vec::new();
        for desc in descs {
            if desc.id == STORE_META_GROUP || desc.id == 0 {
                return Err(StoreError::Config(format!("group id {} is reserved", desc.id)));
            }
            if !desc.voters.contains(&shared.cfg.node_id) {
                return Err(StoreError::Config(format!(
                    "node {} is not a voter of group {}",
                    shared.cfg.node_id, desc.id
                )));
            }
            if shared.is_hosted_or_removed(desc.id) {
                continue;
            }
            let state = PersistedState::bootstrap(desc);
            engine::add_bootstrap(&mut batch, desc.id, &state)?;
            new.push((desc.id, state));
        }
        if !batch.is_empty() {
            shared.engine.write(&mut batch, shared.cfg.sync_writes)?;
        }
        for (group, state) in &new {
            shared.create_replica(*group, state.clone())?;
        }
        Ok(new.len())
    }

    fn send(&self, group: GroupId, msg: PeerMsg) -> Result<(), StoreError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        self.shared.router.send(group, msg)
    }

    /// Proposes a write to `group`; the answer goes to `reply` with `req.request_id`.
    pub fn propose(
        &self,
        group: GroupId,
        req: WriteRequest,
        reply: &Sender<Response>,
    ) -> Result<(), StoreError> {
        self.send(group, PeerMsg::Propose { req, reply: reply.clone() })
    }

    /// Reads from `group`; the answer goes to `reply` with `req.request_id`.
    pub fn read(&self, group: GroupId, req: ReadRequest, reply: &Sender<Response>) -> Result<(), StoreError> {
        self.send(group, PeerMsg::Read { req, reply: reply.clone() })
    }

    /// Proposes a membership change of `group` (on its leader).
    pub fn change_peers(
        &self,
        group: GroupId,
        request_id: u64,
        epoch: Epoch,
        changes: Vec<PeerChange>,
        reply: &Sender<Response>,
    ) -> Result<(), StoreError> {
        self.send(group, PeerMsg::ConfChange { request_id, epoch, changes, reply: reply.clone() })
    }

    /// Asks `group`'s leader here to hand leadership to `to`; `reply` gets `Outcome::Noop`
    /// once raft accepted the transfer.
    pub fn transfer_leader(
        &self,
        group: GroupId,
        request_id: u64,
        epoch: Epoch,
        to: NodeId,
        reply: &Sender<Response>,
    ) -> Result<(), StoreError> {
        self.send(group, PeerMsg::TransferLeader { request_id, epoch, to, reply: reply.clone() })
    }

    /// Asks `group`'s leader here to split the range at `key` (or the middle of its data)
    /// into `new_group`; `reply` gets `Outcome::Split` once the split is applied.
    pub fn split(
        &self,
        group: GroupId,
        request_id: u64,
        epoch: Epoch,
        key: Option<Vec<u8>>,
        new_group: GroupId,
        reply: &Sender<Response>,
    ) -> Result<(), StoreError> {
        if new_group == 0 || new_group == STORE_META_GROUP {
            return Err(StoreError::Config(format!("group id {new_group} is reserved")));
        }
        self.send(group, PeerMsg::Split { request_id, epoch, key, new_group, reply: reply.clone() })
    }

    /// Makes this store's replica of `group` campaign now.
    pub fn campaign(&self, group: GroupId) -> Result<(), StoreError> {
        self.send(group, PeerMsg::Campaign)
    }

    /// Wakes every hibernated group that has a replica on `node`: call it when the
    /// connection to `node` drops, so followers notice a dead leader.
    pub fn wake_groups_with(&self, node: NodeId) {
        for cell in self.shared.router.cells() {
            if cell.fsm().peer.desc().has_member(node) {
                let _ = self.shared.router.send(cell.id, PeerMsg::Wake);
            }
        }
    }

    /// The status of this store's replica of `group`.
    pub fn status(&self, group: GroupId) -> Option<PeerStatus> {
        Some(self.shared.router.get(group)?.fsm().peer.status())
    }

    /// The status of every replica on this store (one lock per group, in turn).
    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.shared.router.cells().iter().map(|c| c.fsm().peer.status()).collect()
    }

    /// Manual mode: ticks every awake group once (the ticker thread does this otherwise).
    pub fn tick(&self) {
        ticker::tick_all(&self.shared);
    }

    /// Manual mode: runs rounds on this thread until no group has work; returns the rounds.
    pub fn poll(&self, now: Instant) -> usize {
        let mut batch = Vec::with_capacity(self.shared.cfg.batch_groups_max);
        for rounds in 0..POLL_ROUNDS_MAX {
            poller::fill_batch(&self.shared, &mut batch);
            if batch.is_empty() {
                return rounds;
            }
            poller::run_round(&self.shared, &batch, now);
            batch.clear();
        }
        POLL_ROUNDS_MAX
    }

    /// Runs raft-engine's purge now (the ticker does it every `purge_interval`); groups that
    /// pin old files checkpoint with their next round.
    pub fn purge_log(&self) {
        ticker::purge(&self.shared);
    }

    /// Whether a failed log write stopped the store.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Stops the threads; durable state stays in the directory for the next `open`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop();
    }
}
