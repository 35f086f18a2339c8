//! CORE. [`MemLog`]: a durable log kept in memory, for deterministic simulations.
//!
//! It holds exactly what a disk would after each applied [`WriteTask`]: a simulated crash
//! keeps a clone of it and drops everything else of the replica.

use std::collections::BTreeMap;

use raft::eraftpb::{Entry, HardState, Snapshot};

use super::storage::LogStore;
use super::write_task::{PersistedState, WriteTask};

/// An in-memory "disk" for one replica.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    entries: BTreeMap<u64, Entry>,
    hard_state: HardState,
    checkpoint: Snapshot,
    destroyed: bool,
    writes: u64,
}

impl MemLog {
    /// A disk holding `state` and an empty log.
    pub fn new(state: PersistedState) -> Self {
        Self { hard_state: state.hard_state, checkpoint: state.checkpoint, ..Self::default() }
    }

    /// Makes `task` durable, in the order documented on [`WriteTask`].
    pub fn apply(&mut self, task: &WriteTask) {
        self.writes += 1;
        if task.destroy {
            *self = Self { destroyed: true, writes: self.writes, ..Self::default() };
            return;
        }
        if let Some(snap) = &task.snapshot {
            self.entries.clear();
            self.checkpoint = snap.clone();
        }
        if let Some(first) = task.entries.first() {
            self.entries.split_off(&first.index);
            for e in &task.entries {
                self.entries.insert(e.index, e.clone());
            }
        }
        if let Some(hs) = &task.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(cp) = &task.checkpoint {
            self.checkpoint = cp.clone();
            let keep = self.entries.split_off(&(cp.get_metadata().index + 1));
            self.entries = keep;
        }
    }

    /// What a restart would read back, apart from the log itself.
    pub fn persisted_state(&self) -> PersistedState {
        PersistedState { hard_state: self.hard_state.clone(), checkpoint: self.checkpoint.clone() }
    }

    /// Whether the replica was destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    /// Write tasks applied so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl LogStore for MemLog {
    fn bounds(&self) -> Option<(u64, u64)> {
        Some((*self.entries.keys().next()?, *self.entries.keys().next_back()?))
    }

    fn fetch(&self, low: u64, high: u64, max_size: Option<u64>, out: &mut Vec<Entry>) -> raft::Result<()> {
        let start = out.len();
        let mut size = 0u64;
        for i in low..high {
            let e = self.entries.get(&i).ok_or(raft::Error::Store(raft::StorageError::Unavailable))?;
            size += u64::from(protobuf::Message::compute_size(e));
            if out.len() > start && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Ok(())
    }
}
