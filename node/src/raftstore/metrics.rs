//! SHELL. Store counters, as plain atomics (a metrics registry comes later).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::group::NodeId;

/// Counters of one store. All are monotonic.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Proposals accepted by a leader.
    pub proposals: AtomicU64,
    /// Requests refused on the spot (not leader, epoch, busy, ...).
    pub requests_refused: AtomicU64,
    /// Reads accepted.
    pub reads: AtomicU64,
    /// Log entries appended.
    pub entries_appended: AtomicU64,
    /// Bytes of appended entry payloads.
    pub entry_bytes_appended: AtomicU64,
    /// Write tasks persisted.
    pub write_tasks: AtomicU64,
    /// raft-engine log batches written.
    pub log_writes: AtomicU64,
    /// Log batches written with fsync.
    pub fsyncs: AtomicU64,
    /// Poll rounds that handled at least one group.
    pub rounds: AtomicU64,
    /// Groups handled, summed over rounds (÷ `rounds` = mean batch size).
    pub round_groups: AtomicU64,
    /// Largest batch of groups in one round.
    pub round_groups_max: AtomicU64,
    /// Raft messages handed to the transport.
    pub messages_sent: AtomicU64,
    /// Transport sends (one per destination node per round).
    pub message_batches_sent: AtomicU64,
    /// Messages dropped at delivery (full mailbox, unknown group).
    pub messages_dropped: AtomicU64,
    /// Elections won by replicas here.
    pub elections: AtomicU64,
    /// Ticks delivered to awake groups.
    pub ticks: AtomicU64,
    /// Ticks skipped because the group hibernates.
    pub ticks_skipped: AtomicU64,
    /// Replicas created from a message (new learners).
    pub replicas_created: AtomicU64,
    /// Replicas destroyed (removed from their group).
    pub replicas_destroyed: AtomicU64,
    messages_per_node: Mutex<BTreeMap<NodeId, u64>>,
}

/// A copy of the counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`StoreMetrics::proposals`].
    pub proposals: u64,
    /// See [`StoreMetrics::requests_refused`].
    pub requests_refused: u64,
    /// See [`StoreMetrics::reads`].
    pub reads: u64,
    /// See [`StoreMetrics::entries_appended`].
    pub entries_appended: u64,
    /// See [`StoreMetrics::entry_bytes_appended`].
    pub entry_bytes_appended: u64,
    /// See [`StoreMetrics::write_tasks`].
    pub write_tasks: u64,
    /// See [`StoreMetrics::log_writes`].
    pub log_writes: u64,
    /// See [`StoreMetrics::fsyncs`].
    pub fsyncs: u64,
    /// See [`StoreMetrics::rounds`].
    pub rounds: u64,
    /// See [`StoreMetrics::round_groups`].
    pub round_groups: u64,
    /// See [`StoreMetrics::round_groups_max`].
    pub round_groups_max: u64,
    /// See [`StoreMetrics::messages_sent`].
    pub messages_sent: u64,
    /// See [`StoreMetrics::message_batches_sent`].
    pub message_batches_sent: u64,
    /// See [`StoreMetrics::messages_dropped`].
    pub messages_dropped: u64,
    /// See [`StoreMetrics::elections`].
    pub elections: u64,
    /// See [`StoreMetrics::ticks`].
    pub ticks: u64,
    /// See [`StoreMetrics::ticks_skipped`].
    pub ticks_skipped: u64,
    /// See [`StoreMetrics::replicas_created`].
    pub replicas_created: u64,
    /// See [`StoreMetrics::replicas_destroyed`].
    pub replicas_destroyed: u64,
    /// Messages sent per destination node.
    pub messages_per_node: BTreeMap<NodeId, u64>,
}

impl StoreMetrics {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one round's sends to `node`.
    pub(crate) fn sent_to(&self, node: NodeId, msgs: u64) {
        Self::add(&self.messages_sent, msgs);
        Self::add(&self.message_batches_sent, 1);
        if let Ok(mut per) = self.messages_per_node.lock() {
            *per.entry(node).or_default() += msgs;
        }
    }

    /// Counts a round of `groups` groups.
    pub(crate) fn round(&self, groups: u64) {
        Self::add(&self.rounds, 1);
        Self::add(&self.round_groups, groups);
        self.round_groups_max.fetch_max(groups, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            proposals: get(&self.proposals),
            requests_refused: get(&self.requests_refused),
            reads: get(&self.reads),
            entries_appended: get(&self.entries_appended),
            entry_bytes_appended: get(&self.entry_bytes_appended),
            write_tasks: get(&self.write_tasks),
            log_writes: get(&self.log_writes),
            fsyncs: get(&self.fsyncs),
            rounds: get(&self.rounds),
            round_groups: get(&self.round_groups),
            round_groups_max: get(&self.round_groups_max),
            messages_sent: get(&self.messages_sent),
            message_batches_sent: get(&self.message_batches_sent),
            messages_dropped: get(&self.messages_dropped),
            elections: get(&self.elections),
            ticks: get(&self.ticks),
            ticks_skipped: get(&self.ticks_skipped),
            replicas_created: get(&self.replicas_created),
            replicas_destroyed: get(&self.replicas_destroyed),
            messages_per_node: self.messages_per_node.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }
}
