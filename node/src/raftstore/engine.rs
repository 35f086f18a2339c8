//! SHELL. raft-engine as the store's shared raft log: every group's entries, hard state
//! and checkpoint in one append-only file stream, with raft-engine's in-memory index per
//! group (its memtable) telling where each entry lives.
//!
//! Layout per group (raft-engine "region" id = group id):
//! - entries: the raft log after the checkpoint;
//! - key `hs`: the raft `HardState`;
//! - key `cp`: the checkpoint, a raft `Snapshot` (see `group::snapshot`).
//!
//! Group [`STORE_META_GROUP`] holds store metadata: key `tomb/<group id BE>` marks a group
//! whose replica was destroyed here, so stale messages do not recreate it.
//!
//! Invariant: a write task's parts go into the batch in the order documented on
//! `group::WriteTask`, so one `LogBatch` (one fsync) makes the whole round durable at once.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{Entry, HardState, Snapshot};
use raft_engine::{Command, LogBatch, MessageExt};

use super::error::StoreError;
use crate::group::{GroupId, LogStore, PersistedState, WriteTask};

/// The raft-engine type the store uses (default file system, file pipe log).
pub type RaftEngine = raft_engine::Engine;

/// raft-engine "region" id reserved for store metadata.
pub const STORE_META_GROUP: GroupId = u64::MAX;

const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_CHECKPOINT: &[u8] = b"cp";
const TOMBSTONE_PREFIX: &[u8] = b"tomb/";
/// The first key after every tombstone key (`'/' + 1 == '0'`).
const TOMBSTONE_END: &[u8] = b"tomb0";

/// Tells raft-engine how to index raft-rs protobuf entries.
#[derive(Clone, Copy, Debug)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// Opens (or creates) the engine in `dir`, replaying it.
pub fn open(dir: &Path) -> Result<Arc<RaftEngine>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine(format!("create {}: {e}", dir.display())))?;
    let cfg = raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        recovery_threads: 2,
        ..raft_engine::Config::default()
    };
    Ok(Arc::new(RaftEngine::open(cfg)?))
}

/// One group's log inside the shared engine.
#[derive(Clone)]
pub struct EngineLog {
    engine: Arc<RaftEngine>,
    group: GroupId,
}

impl EngineLog {
    /// The log of `group`.
    pub fn new(engine: Arc<RaftEngine>, group: GroupId) -> Self {
        Self { engine, group }
    }
}

impl LogStore for EngineLog {
    fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.engine.first_index(self.group)?, self.engine.last_index(self.group)?))
    }

    fn fetch(&self, low: u64, high: u64, max_size: Option<u64>, out: &mut Vec<Entry>) -> raft::Result<()> {
        let max = max_size.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        match self.engine.fetch_entries_to::<EntryExt>(self.group, low, high, max, out) {
            Ok(0) if low < high => Err(raft::Error::Store(raft::StorageError::Unavailable)),
            Ok(_) => Ok(()),
            Err(e) => Err(raft::Error::Store(raft::StorageError::Other(Box::new(e)))),
        }
    }
}

/// Adds `task` to `batch`.
pub fn add_task(batch: &mut LogBatch, task: &WriteTask) -> Result<(), StoreError> {
    let g = task.group_id;
    if task.destroy {
        batch.add_command(g, Command::Clean);
        batch.put(STORE_META_GROUP, tombstone_key(g), vec![1])?;
        return Ok(());
    }
    if let Some(snap) = &task.snapshot {
        batch.add_command(g, Command::Clean);
        batch.put_message(g, KEY_CHECKPOINT.to_vec(), snap)?;
    }
    batch.add_entries::<EntryExt>(g, &task.entries)?;
    if let Some(hs) = &task.hard_state {
        batch.put_message(g, KEY_HARD_STATE.to_vec(), hs)?;
    }
    if let Some(cp) = &task.checkpoint {
        batch.put_message(g, KEY_CHECKPOINT.to_vec(), cp)?;
        batch.add_command(g, Command::Compact { index: cp.get_metadata().index + 1 });
    }
    Ok(())
}

/// Adds the initial state of a new group.
pub fn add_bootstrap(batch: &mut LogBatch, group: GroupId, state: &PersistedState) -> Result<(), StoreError> {
    batch.put_message(group, KEY_HARD_STATE.to_vec(), &state.hard_state)?;
    batch.put_message(group, KEY_CHECKPOINT.to_vec(), &state.checkpoint)?;
    Ok(())
}

/// Reads a group's hard state and checkpoint.
pub fn load_state(engine: &RaftEngine, group: GroupId) -> Result<PersistedState, StoreError> {
    let hard_state = engine.get_message::<HardState>(group, KEY_HARD_STATE)?.unwrap_or_default();
    let checkpoint = engine.get_message::<Snapshot>(group, KEY_CHECKPOINT)?.unwrap_or_default();
    Ok(PersistedState { hard_state, checkpoint })
}

/// Whether the engine holds any state of `group`.
pub fn has_group(engine: &RaftEngine, group: GroupId) -> bool {
    engine.get(group, KEY_CHECKPOINT).is_some() || engine.get(group, KEY_HARD_STATE).is_some()
}

/// Groups with state in the engine, except metadata and tombstoned ones.
pub fn stored_groups(engine: &RaftEngine, tombstones: &BTreeSet<GroupId>) -> Vec<GroupId> {
    let mut groups: Vec<GroupId> = engine
        .raft_groups()
        .into_iter()
        .filter(|g| *g != STORE_META_GROUP && !tombstones.contains(g) && has_group(engine, *g))
        .collect();
    groups.sort_unstable();
    groups
}

/// Deletes `group`'s tombstone (the node is a member again).
pub fn clear_tombstone(engine: &RaftEngine, group: GroupId, sync: bool) -> Result<(), StoreError> {
    let mut batch = LogBatch::default();
    batch.delete(STORE_META_GROUP, tombstone_key(group));
    engine.write(&mut batch, sync)?;
    Ok(())
}

/// Groups destroyed on this store.
pub fn tombstones(engine: &RaftEngine) -> Result<BTreeSet<GroupId>, StoreError> {
    let mut out = BTreeSet::new();
    engine.scan_raw_messages(
        STORE_META_GROUP,
        Some(TOMBSTONE_PREFIX),
        Some(TOMBSTONE_END),
        false,
        |key, _| {
            if let Ok(bytes) = <[u8; 8]>::try_from(&key[TOMBSTONE_PREFIX.len()..]) {
                out.insert(u64::from_be_bytes(bytes));
            }
            true
        },
    )?;
    Ok(out)
}

fn tombstone_key(group: GroupId) -> Vec<u8> {
    let mut k = TOMBSTONE_PREFIX.to_vec();
    k.extend_from_slice(&group.to_be_bytes());
    k
}
