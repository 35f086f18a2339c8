//! SHELL. Poll rounds (TiKV's batch-system shape): a poller takes up to `batch_groups_max`
//! scheduled groups and, for the whole batch,
//! 1. feeds each group its tick and mailbox, and collects its ready write task;
//! 2. sends the messages raft allows before the write (a leader's appends);
//! 3. writes every task of the batch in ONE raft-engine `LogBatch` with ONE fsync;
//! 4. tells each group its task is durable, which applies committed entries, answers
//!    requests and releases the messages that had to wait;
//! 5. sends them, one transport call per destination node;
//! 6. unschedules each group and schedules it again if it has more work.
//!
//! With `poller_threads > 0` each poller thread loops over rounds; in manual mode
//! [`Store::poll`](super::Store::poll) runs them on the caller's thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use raft_engine::LogBatch;

use super::engine;
use super::fsm::Outbox;
use super::mailbox::GroupCell;
use super::metrics::StoreMetrics;
use super::store::StoreShared;

/// How long an idle poller thread waits before re-checking for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The loop of one poller thread.
pub(crate) fn run(shared: &Arc<StoreShared>) {
    let mut batch = Vec::with_capacity(shared.cfg.batch_groups_max);
    while !shared.shutdown.load(Ordering::Acquire) {
        match shared.ready_rx.recv_timeout(IDLE_WAIT) {
            Ok(cell) => batch.push(cell),
            Err(_) => continue,
        }
        fill_batch(shared, &mut batch);
        run_round(shared, &batch, crate::clock::now());
        batch.clear();
    }
}

/// Adds already-scheduled cells to `batch`, up to the batch limit.
pub(crate) fn fill_batch(shared: &StoreShared, batch: &mut Vec<Arc<GroupCell>>) {
    while batch.len() < shared.cfg.batch_groups_max {
        match shared.ready_rx.try_recv() {
            Ok(cell) => batch.push(cell),
            Err(_) => break,
        }
    }
}

/// One round over `batch` at `now`.
pub(crate) fn run_round(shared: &StoreShared, batch: &[Arc<GroupCell>], now: Instant) {
    if shared.poisoned.load(Ordering::Acquire) {
        for cell in batch {
            cell.unschedule();
        }
        return;
    }
    let metrics = &shared.metrics;
    metrics.round(batch.len() as u64);
    let mut outbox = Outbox::new();
    let mut log_batch = LogBatch::default();
    let mut sync = false;
    let mut persisting = Vec::new();
    let mut children = Vec::new();
    for (i, cell) in batch.iter().enumerate() {
        let mut fsm = cell.fsm();
        if cell.take_tick() {
            fsm.peer.tick();
        }
        for msg in cell.rx.try_iter().take(shared.cfg.group_msgs_per_round_max) {
            fsm.handle(msg, now, metrics);
        }
        if let Some(task) = fsm.peer.ready() {
            StoreMetrics::add(&metrics.write_tasks, 1);
            StoreMetrics::add(&metrics.entries_appended, task.entries.len() as u64);
            StoreMetrics::add(&metrics.entry_bytes_appended, task.entry_bytes() as u64);
            if let Err(e) = engine::add_task(&mut log_batch, &task) {
                tracing::error!(group = cell.id, error = %e, "cannot encode a write task");
                shared.poisoned.store(true, Ordering::Release);
            }
            sync |= task.must_sync;
            persisting.push((i, task.ready_number));
        }
        children.extend(fsm.peer.take_splits());
        fsm.flush(&mut outbox, metrics);
    }
    if !children.is_empty() {
        shared.add_split_children(&mut log_batch, &mut children);
        sync = true;
    }
    send(shared, &mut outbox);
    if !log_batch.is_empty() && !write(shared, &mut log_batch, sync) {
        return;
    }
    shared.host_split_children(children);
    let mut late = Vec::new();
    for (i, number) in persisting {
        let cell = &batch[i];
        let mut fsm = cell.fsm();
        fsm.peer.on_persisted(number);
        late.extend(fsm.peer.take_splits());
        fsm.flush(&mut outbox, metrics);
    }
    send(shared, &mut outbox);
    if !late.is_empty() {
        // Applied after this round's write: their own write, before any later round's.
        let mut batch_late = LogBatch::default();
        shared.add_split_children(&mut batch_late, &mut late);
        if !batch_late.is_empty() && !write(shared, &mut batch_late, true) {
            return;
        }
        shared.host_split_children(late);
    }
    finish(shared, batch);
}

/// Writes the round's batch; on failure poisons the store.
fn write(shared: &StoreShared, log_batch: &mut LogBatch, sync: bool) -> bool {
    let sync = sync && shared.cfg.sync_writes;
    match shared.engine.write(log_batch, sync) {
        Ok(_) => {
            StoreMetrics::add(&shared.metrics.log_writes, 1);
            if sync {
                StoreMetrics::add(&shared.metrics.fsyncs, 1);
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "raft log write failed; the store is poisoned");
            shared.poisoned.store(true, Ordering::Release);
            false
        }
    }
}

fn send(shared: &StoreShared, outbox: &mut Outbox) {
    for (to, msgs) in std::mem::take(outbox) {
        shared.metrics.sent_to(to, msgs.len() as u64);
        shared.transport.send(to, msgs);
    }
}

/// Unschedules the batch, drops destroyed replicas, reschedules groups with more work.
fn finish(shared: &StoreShared, batch: &[Arc<GroupCell>]) {
    for cell in batch {
        let (hibernated, removed, more) = {
            let fsm = cell.fsm();
            (fsm.peer.is_hibernated(), fsm.peer.is_removed(), fsm.peer.has_ready())
        };
        if cell.set_hibernated(hibernated) {
            shared.router.set_awake(cell, !hibernated);
        }
        cell.unschedule();
        if removed && !more {
            // The destroy task is durable: forget the group.
            shared.destroyed(cell.id);
        } else if more || (!removed && cell.has_input()) {
            shared.router.schedule(cell);
        }
    }
}
