//! CORE. The ready round: hand the shell what to persist, apply what is committed, release
//! messages in the order raft allows.
//!
//! - A leader's messages leave at once (raft thesis §10.2.1: the leader appends to its own
//!   log in parallel with its followers); every other message waits for `on_persisted`.
//! - Committed entries are applied inside `ready`: raft-rs only hands out entries that are
//!   already durable here.
//! - Every `checkpoint_interval_entries` applied entries (or when the shell asks) the state
//!   machine is checkpointed into the same write task, which also compacts the log up to the
//!   checkpoint.
//! - A write task with nothing to persist completes on the spot.
//! - Snapshots are sent inline and reported delivered at once (raft then probes; a lost
//!   snapshot fails the probe and is sent again).

use raft::SnapshotStatus;
use raft::eraftpb::MessageType;

use crate::group::peer::{GroupPeer, InFlight};
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;
use crate::group::write_task::WriteTask;

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Whether [`ready`](Self::ready) has work: false while a write task is in flight.
    pub fn has_ready(&self) -> bool {
        self.in_flight.is_none()
            && (self.destroy_pending || (!self.removed && (self.raw.has_ready() || self.checkpoint_due())))
    }

    /// Asks for a checkpoint at the applied index with the next ready, even if the
    /// interval has not passed, so the log before it can be dropped (raft-engine's purge
    /// names the groups that pin old files).
    pub fn request_checkpoint(&mut self) {
        self.checkpoint_requested = true;
    }

    fn checkpoint_due(&self) -> bool {
        let store = self.storage();
        self.checkpoint_requested && store.applied().0 > store.truncated_index()
    }

    /// Runs one ready round; returns the write task to persist before calling
    /// [`on_persisted`](Self::on_persisted), or `None` if nothing must be persisted.
    pub fn ready(&mut self) -> Option<WriteTask> {
        if !self.has_ready() {
            return None;
        }
        if self.removed {
            self.destroy_pending = false;
            let task =
                WriteTask { group_id: self.group_id, destroy: true, must_sync: true, ..WriteTask::default() };
            self.in_flight = Some(InFlight { number: 0, messages: Vec::new(), snapshot_index: None });
            return Some(task);
        }
        if !self.raw.has_ready() {
            // Only a requested checkpoint is due: a task that is not a raft ready.
            let mut task = WriteTask { group_id: self.group_id, must_sync: true, ..WriteTask::default() };
            self.maybe_checkpoint(&mut task);
            self.in_flight = Some(InFlight { number: 0, messages: Vec::new(), snapshot_index: None });
            return Some(task);
        }
        let mut rd = self.raw.ready();
        let mut task =
            WriteTask { group_id: self.group_id, ready_number: rd.number(), ..WriteTask::default() };
        let immediate = rd.take_messages();
        let snapshot_targets: Vec<u64> =
            immediate.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot).map(|m| m.to).collect();
        self.send_raft(immediate);
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            if let Err(e) = self.raw.mut_store().apply_snapshot(&snap) {
                // `step` refuses snapshots that do not decode before raft sees them.
                unreachable!("group {}: snapshot accepted by raft does not decode: {e}", self.group_id);
            }
            self.settle_proposals_for_snapshot(snap.get_metadata().index);
            task.hard_state = Some(self.raw.raft.hard_state());
            task.snapshot = Some(snap);
        }
        let entries = rd.take_entries();
        self.raw.mut_store().append(&entries);
        task.entries = entries;
        if let Some(hs) = rd.hs() {
            task.hard_state = Some(hs.clone());
        }
        if let Some(hs) = &task.hard_state {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        for rs in rd.take_read_states() {
            self.on_read_state(&rs.request_ctx, rs.index);
        }
        task.must_sync = rd.must_sync();
        let committed = rd.take_committed_entries();
        let persisted_messages = rd.take_persisted_messages();
        self.raw.advance_append_async(rd);
        for to in snapshot_targets {
            // Snapshots travel inline on an ordered stream: report them sent, so raft probes
            // right after; a lost snapshot makes the probe fail and raft sends it again.
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        self.apply_committed(committed);
        self.serve_reads();
        self.maybe_checkpoint(&mut task);
        let snapshot_index = task.snapshot.as_ref().map(|s| s.get_metadata().index);
        self.in_flight =
            Some(InFlight { number: task.ready_number, messages: persisted_messages, snapshot_index });
        if task.is_empty() {
            self.on_persisted(task.ready_number);
            return None;
        }
        Some(task)
    }

    /// The write task of ready `number` is durable.
    pub fn on_persisted(&mut self, number: u64) {
        let Some(in_flight) = self.in_flight.take() else {
            debug_assert!(false, "on_persisted without a write task in flight");
            return;
        };
        debug_assert_eq!(in_flight.number, number, "write tasks complete in order");
        if self.removed {
            return;
        }
        self.raw.mut_store().on_persisted();
        if number == 0 {
            return;
        }
        self.raw.on_persist_ready(number);
        if let Some(index) = in_flight.snapshot_index {
            // raft-rs does not move `applied` on restore; it must not lag the compacted log.
            self.raw.advance_apply_to(index);
        }
        self.send_raft(in_flight.messages);
        self.after_raft();
    }

    fn maybe_checkpoint(&mut self, task: &mut WriteTask) {
        if self.removed || task.snapshot.is_some() {
            return;
        }
        let requested = self.checkpoint_requested;
        let store = self.raw.mut_store();
        let (applied, _) = store.applied();
        let truncated = store.truncated_index();
        if applied >= truncated + self.cfg.checkpoint_interval_entries || (requested && applied > truncated) {
            task.checkpoint = Some(store.checkpoint());
            self.checkpoint_requested = false;
        }
    }
}
