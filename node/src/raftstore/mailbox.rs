//! SHELL. Per-group mailboxes and the router from group id to mailbox.
//!
//! Each hosted group is a [`GroupCell`]: a crossbeam channel of [`PeerMsg`]s bounded at
//! `mailbox_msgs_max` (checked on send, so concurrent senders may overshoot by their number;
//! a list channel, because a bounded crossbeam channel preallocates every slot — 1 MiB per
//! group at 4096 slots, 30 GiB for 30,000 replicas), flags, and the group's state machine
//! behind a mutex. A cell with pending work is *scheduled*:
//! pushed once onto the store's ready queue, from which pollers take batches.
//!
//! Invariants:
//! - `scheduled` is true from the push until the poller that took the cell has finished its
//!   round and re-checked for work, so a cell is in the ready queue at most once and handled
//!   by one poller at a time (the ready queue is bounded by the number of groups);
//! - a sender pushes its message *before* scheduling, and a poller clears `scheduled`
//!   *before* re-checking the mailbox, so no message is left unscheduled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use rustc_hash::FxHashMap;

use super::error::StoreError;
use super::fsm::GroupFsm;
use crate::group::{Epoch, GroupId, GroupMessage, NodeId, PeerChange, ReadRequest, Response, WriteRequest};

/// A message for one group's state machine.
pub(crate) enum PeerMsg {
    /// From another replica (boxed: it is the largest message, and mailbox slots are sized
    /// by the largest variant).
    Raft(Box<GroupMessage>),
    /// A write; the answer goes to `reply`.
    Propose { req: WriteRequest, reply: Sender<Response> },
    /// A read; the answer goes to `reply`.
    Read { req: ReadRequest, reply: Sender<Response> },
    /// A membership change.
    ConfChange { request_id: u64, epoch: Epoch, changes: Vec<PeerChange>, reply: Sender<Response> },
    /// A leader transfer; `reply` gets `Noop` once raft accepted it.
    TransferLeader { request_id: u64, epoch: Epoch, to: NodeId, reply: Sender<Response> },
    /// A split (at `key`, or the middle of the data) into `new_group`; `reply` gets
    /// `Outcome::Split` once applied.
    Split { request_id: u64, epoch: Epoch, key: Option<Vec<u8>>, new_group: GroupId, reply: Sender<Response> },
    /// Start an election now.
    Campaign,
    /// Resume ticking (a peer node's connection dropped).
    Wake,
    /// Checkpoint now: the group pins old files of the shared log.
    Checkpoint,
    /// The transport dropped messages to `to` (a snapshot, if `snapshot`).
    Unreachable { to: NodeId, snapshot: bool },
}

/// One hosted group.
pub(crate) struct GroupCell {
    pub(crate) id: GroupId,
    mailbox_msgs_max: usize,
    tx: Sender<PeerMsg>,
    pub(crate) rx: Receiver<PeerMsg>,
    scheduled: AtomicBool,
    tick_pending: AtomicBool,
    hibernated: AtomicBool,
    fsm: Mutex<GroupFsm>,
}

impl GroupCell {
    pub(crate) fn new(id: GroupId, fsm: GroupFsm, mailbox_msgs_max: usize) -> Arc<Self> {
        let (tx, rx) = crossbeam::channel::unbounded();
        Arc::new(Self {
            id,
            mailbox_msgs_max,
            tx,
            rx,
            scheduled: AtomicBool::new(false),
            tick_pending: AtomicBool::new(false),
            hibernated: AtomicBool::new(false),
            fsm: Mutex::new(fsm),
        })
    }

    /// Locks the state machine (uncontended while scheduled: one poller owns the cell).
    pub(crate) fn fsm(&self) -> MutexGuard<'_, GroupFsm> {
        self.fsm.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the pending tick, if any.
    pub(crate) fn take_tick(&self) -> bool {
        self.tick_pending.swap(false, Ordering::AcqRel)
    }

    /// Whether the mailbox or a tick waits.
    pub(crate) fn has_input(&self) -> bool {
        !self.rx.is_empty() || self.tick_pending.load(Ordering::Acquire)
    }

    /// Records whether the group hibernates; returns whether that changed.
    pub(crate) fn set_hibernated(&self, h: bool) -> bool {
        self.hibernated.swap(h, Ordering::AcqRel) != h
    }

    /// Called by the poller when its round is over.
    pub(crate) fn unschedule(&self) {
        self.scheduled.store(false, Ordering::SeqCst);
    }
}

/// Group id → cell, the awake subset (what the ticker visits), and the ready queue.
pub(crate) struct Router {
    groups: RwLock<FxHashMap<GroupId, Arc<GroupCell>>>,
    awake: Mutex<FxHashMap<GroupId, Arc<GroupCell>>>,
    ready_tx: Sender<Arc<GroupCell>>,
}

impl Router {
    pub(crate) fn new(ready_tx: Sender<Arc<GroupCell>>) -> Self {
        Self { groups: RwLock::new(FxHashMap::default()), awake: Mutex::new(FxHashMap::default()), ready_tx }
    }

    /// The groups that tick (not hibernated).
    pub(crate) fn awake_cells(&self) -> Vec<Arc<GroupCell>> {
        self.awake.lock().map(|a| a.values().cloned().collect()).unwrap_or_default()
    }

    /// Moves `cell` in or out of the awake set (called by the poller owning the cell).
    pub(crate) fn set_awake(&self, cell: &Arc<GroupCell>, awake: bool) {
        if let Ok(mut a) = self.awake.lock() {
            if awake {
                a.insert(cell.id, Arc::clone(cell));
            } else {
                a.remove(&cell.id);
            }
        }
    }

    pub(crate) fn get(&self, id: GroupId) -> Option<Arc<GroupCell>> {
        self.groups.read().ok()?.get(&id).cloned()
    }

    /// Adds `cell` unless its group is already hosted (two cells of one group would both
    /// write the group's log); returns whether it was added.
    pub(crate) fn insert_new(&self, cell: Arc<GroupCell>) -> bool {
        let Ok(mut g) = self.groups.write() else { return false };
        match g.entry(cell.id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                self.set_awake(&cell, true);
                v.insert(cell);
                true
            }
        }
    }

    pub(crate) fn remove(&self, id: GroupId) {
        if let Ok(mut g) = self.groups.write() {
            g.remove(&id);
        }
        if let Ok(mut a) = self.awake.lock() {
            a.remove(&id);
        }
    }

    /// Every cell (a snapshot of the map).
    pub(crate) fn cells(&self) -> Vec<Arc<GroupCell>> {
        self.groups.read().map(|g| g.values().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.groups.read().map(|g| g.len()).unwrap_or(0)
    }

    /// Puts `cell` on the ready queue unless it is already there or being handled.
    pub(crate) fn schedule(&self, cell: &Arc<GroupCell>) {
        if !cell.scheduled.swap(true, Ordering::SeqCst) {
            let _ = self.ready_tx.send(Arc::clone(cell));
        }
    }

    /// Marks a tick pending on `cell` and schedules it.
    pub(crate) fn tick(&self, cell: &Arc<GroupCell>) {
        cell.tick_pending.store(true, Ordering::Release);
        self.schedule(cell);
    }

    /// Sends `msg` to group `id`.
    pub(crate) fn send(&self, id: GroupId, msg: PeerMsg) -> Result<(), StoreError> {
        let cell = self.get(id).ok_or(StoreError::GroupNotFound(id))?;
        if !Self::send_to(&cell, msg) {
            return Err(StoreError::MailboxFull(id));
        }
        self.schedule(&cell);
        Ok(())
    }

    /// Pushes `msg` into `cell`'s mailbox without scheduling; false if the mailbox is full.
    pub(crate) fn send_to(cell: &GroupCell, msg: PeerMsg) -> bool {
        if cell.tx.len() >= cell.mailbox_msgs_max {
            return false;
        }
        match cell.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}
