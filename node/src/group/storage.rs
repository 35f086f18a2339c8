//! CORE. [`PeerStorage`]: the `raft::Storage` of one replica, over a durable [`LogStore`],
//! plus the applied state machine (descriptor, key-value map, applied index and conf state).
//!
//! The storage never writes: writes leave the core as `WriteTask`s, and the shell reports
//! them durable with `GroupPeer::on_persisted`. To let raft read entries it has handed over
//! but that are not yet durable, the storage keeps them in an in-memory cache.
//!
//! Invariants (`t` = truncated index, the checkpoint's):
//! - the logical log is `(t, last_index]`; `terms` knows the term of every index in it, and
//!   `term(t)` is the checkpoint's term;
//! - `cache` is empty or a contiguous suffix of the logical log ending at `last_index`;
//! - every index in `(t, cache.front)` is durable and current in the [`LogStore`], so the
//!   store is only read below the cache;
//! - `applied_index <= commit <= last_index`, and `kv`/`desc`/`conf_state` are the result of
//!   applying `(0, applied_index]`.

use std::cell::RefCell;
use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::error::GroupError;
use super::kv::KvState;
use super::range::RangeDescriptor;
use super::sm::StateMachine;
use super::snapshot::{decode_snapshot_data, encode_snapshot};
use super::write_task::PersistedState;

/// Read access to a replica's durable log. Implemented over raft-engine by the raftstore
/// shell and in memory by [`MemLog`](super::MemLog) for simulations.
pub trait LogStore {
    /// First and last durable index, or `None` if the log is empty.
    fn bounds(&self) -> Option<(u64, u64)>;

    /// Appends entries `[low, high)` to `out`; stops early (after at least one entry) once
    /// `max_size` bytes are reached. Every index in the range must exist.
    fn fetch(&self, low: u64, high: u64, max_size: Option<u64>, out: &mut Vec<Entry>) -> raft::Result<()>;
}

/// The terms of a contiguous run of log indexes, as (first index, term) change points.
#[derive(Clone, Debug, Default)]
struct TermRuns {
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    fn term(&self, index: u64) -> Option<u64> {
        let p = self.runs.partition_point(|r| r.0 <= index);
        p.checked_sub(1).map(|i| self.runs[i].1)
    }

    fn truncate_from(&mut self, index: u64) {
        let p = self.runs.partition_point(|r| r.0 < index);
        self.runs.truncate(p);
    }

    fn push(&mut self, index: u64, term: u64) {
        if self.runs.last().is_none_or(|r| r.1 != term) {
            self.runs.push((index, term));
        }
    }

    fn trim_before(&mut self, index: u64) {
        let p = self.runs.partition_point(|r| r.0 <= index);
        if p > 1 {
            self.runs.drain(..p - 1);
        }
        if let Some(first) = self.runs.first_mut() {
            first.0 = first.0.max(index);
        }
    }
}

/// The storage and applied state of one replica.
pub struct PeerStorage<L, S = KvState> {
    log: L,
    hard_state: HardState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    terms: TermRuns,
    cache: VecDeque<Entry>,
    desc: RangeDescriptor,
    kv: S,
    applied_index: u64,
    applied_term: u64,
    conf_state: ConfState,
    snapshot_cache: RefCell<Option<Snapshot>>,
}

impl<L: LogStore, S: StateMachine> PeerStorage<L, S> {
    /// Rebuilds the storage from the durable log and state (after a restart or on creation).
    pub(crate) fn recover(log: L, state: PersistedState) -> Result<Self, GroupError> {
        let PersistedState { mut hard_state, checkpoint } = state;
        let meta = checkpoint.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let (desc, kv) =
            if index == 0 { Default::default() } else { decode_snapshot_data(&checkpoint.data)? };
        let mut terms = TermRuns::default();
        let mut last_index = index;
        if let Some((first, last)) = log.bounds().filter(|&(_, last)| last > index) {
            if first > index + 1 {
                return Err(GroupError::Corrupt(format!("log starts at {first}, checkpoint at {index}")));
            }
            let mut entries = Vec::with_capacity((last - index) as usize);
            log.fetch(index + 1, last + 1, None, &mut entries)?;
            for (i, e) in entries.iter().enumerate() {
                if e.index != index + 1 + i as u64 {
                    return Err(GroupError::Corrupt(format!("log entry {} out of place", e.index)));
                }
                terms.push(e.index, e.term);
            }
            last_index = last;
        }
        hard_state.commit = hard_state.commit.max(index);
        if hard_state.commit > last_index {
            return Err(GroupError::Corrupt(format!(
                "commit {} beyond last index {last_index}",
                hard_state.commit
            )));
        }
        Ok(Self {
            log,
            hard_state,
            truncated_index: index,
            truncated_term: term,
            last_index,
            terms,
            cache: VecDeque::new(),
            desc,
            kv,
            applied_index: index,
            applied_term: term,
            conf_state: meta.get_conf_state().clone(),
            snapshot_cache: RefCell::new(None),
        })
    }

    /// The durable log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The durable log, for shells that persist through it (simulations).
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// The applied range descriptor.
    pub fn desc(&self) -> &RangeDescriptor {
        &self.desc
    }

    /// The applied state machine.
    pub fn kv(&self) -> &S {
        &self.kv
    }

    /// Index and term of the last applied entry.
    pub fn applied(&self) -> (u64, u64) {
        (self.applied_index, self.applied_term)
    }

    /// Index of the last compacted entry (the checkpoint).
    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    /// Entries held in memory.
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    pub(crate) fn kv_mut(&mut self) -> &mut S {
        &mut self.kv
    }

    pub(crate) fn desc_mut(&mut self) -> &mut RangeDescriptor {
        &mut self.desc
    }

    pub(crate) fn set_applied(&mut self, index: u64, term: u64) {
        debug_assert!(index > self.applied_index);
        self.applied_index = index;
        self.applied_term = term;
    }

    pub(crate) fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Takes entries handed to a write task; they shadow any durable entry at their indexes.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else { return };
        assert!(first > self.truncated_index, "append at {first} below truncated {}", self.truncated_index);
        assert!(first <= self.last_index + 1, "append at {first} leaves a hole after {}", self.last_index);
        match self.cache.front().map(|e| e.index) {
            Some(front) if first > front => self.cache.truncate((first - front) as usize),
            _ => self.cache.clear(),
        }
        self.terms.truncate_from(first);
        for e in entries {
            self.terms.push(e.index, e.term);
        }
        self.cache.extend(entries.iter().cloned());
        self.last_index = entries[entries.len() - 1].index;
    }

    /// The write task handed out last is durable: cached entries may now be evicted once
    /// applied.
    pub(crate) fn on_persisted(&mut self) {
        self.evict_cache();
    }

    /// Drops cached entries that are durable and applied (the store serves later reads).
    pub(crate) fn evict_cache(&mut self) {
        // With at most one write task in flight, on_persisted means the whole log is durable;
        // before it, entries past the durable prefix must stay, and those are never applied.
        while self.cache.front().is_some_and(|e| e.index <= self.applied_index) {
            self.cache.pop_front();
        }
    }

    /// Installs a snapshot received from the leader: the state machine and descriptor it
    /// holds, and an empty log after its index.
    pub(crate) fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<(), GroupError> {
        let meta = snap.get_metadata();
        let (desc, kv) = decode_snapshot_data(&snap.data)?;
        self.desc = desc;
        self.kv = kv;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.conf_state = meta.get_conf_state().clone();
        self.terms = TermRuns::default();
        self.cache.clear();
        *self.snapshot_cache.borrow_mut() = None;
        Ok(())
    }

    /// Checkpoints the state machine at the applied index and compacts the log up to it.
    pub(crate) fn checkpoint(&mut self) -> Snapshot {
        let snap = self.snapshot_at_applied();
        let index = self.applied_index;
        self.truncated_term = self.applied_term;
        self.truncated_index = index;
        self.terms.trim_before(index + 1);
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.cache.pop_front();
        }
        snap
    }

    /// A snapshot of the applied state, cached until the applied index moves.
    fn snapshot_at_applied(&self) -> Snapshot {
        let mut cached = self.snapshot_cache.borrow_mut();
        if let Some(s) = cached.as_ref().filter(|s| s.get_metadata().index == self.applied_index) {
            return s.clone();
        }
        let snap = encode_snapshot(
            &self.desc,
            &self.kv,
            self.applied_index,
            self.applied_term,
            self.conf_state.clone(),
        );
        *cached = Some(snap.clone());
        snap
    }
}

impl<L: LogStore, S: StateMachine> raft::Storage for PeerStorage<L, S> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let cache_front = self.cache.front().map_or(self.last_index + 1, |e| e.index);
        if low < cache_front {
            let store_high = high.min(cache_front);
            self.log.fetch(low, store_high, max_size, &mut out)?;
            if (out.len() as u64) < store_high - low {
                return Ok(out);
            }
        }
        if high > cache_front {
            let from = (low.max(cache_front) - cache_front) as usize;
            let to = (high - cache_front) as usize;
            out.extend(self.cache.range(from..to).cloned());
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.terms.term(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied_index == 0 || self.applied_index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot_at_applied())
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage as _;

    use super::*;
    use crate::group::MemLog;
    use crate::group::write_task::WriteTask;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 3].into(), ..Entry::default() }
    }

    fn storage() -> PeerStorage<MemLog> {
        let desc = RangeDescriptor::new(1, vec![], vec![], &[1]);
        let state = PersistedState::bootstrap(&desc);
        PeerStorage::recover(MemLog::new(state.clone()), state).unwrap()
    }

    fn persist(s: &mut PeerStorage<MemLog>, entries: Vec<Entry>) {
        s.append(&entries);
        let task = WriteTask { entries, ..WriteTask::default() };
        s.log_mut().apply(&task);
        s.on_persisted();
    }

    #[test]
    fn term_runs_track_truncation_and_trim() {
        let mut t = TermRuns::default();
        for (i, term) in [(6, 1), (7, 1), (8, 2), (9, 3)] {
            t.push(i, term);
        }
        assert_eq!(t.term(7), Some(1));
        assert_eq!(t.term(9), Some(3));
        t.truncate_from(8);
        t.push(8, 4);
        assert_eq!(t.term(8), Some(4));
        t.trim_before(8);
        assert_eq!(t.term(8), Some(4));
        assert_eq!(t.term(7), None);
    }

    #[test]
    fn reads_span_store_and_cache_and_overwrites_shadow_the_store() {
        let mut s = storage();
        persist(&mut s, (6..=9).map(|i| entry(i, 5)).collect());
        assert_eq!(s.cached_entries(), 4, "not applied yet, so still cached");
        s.set_applied(8, 5);
        s.evict_cache();
        assert_eq!(s.cached_entries(), 1);
        // An unpersisted conflicting suffix from 9 on.
        s.append(&[entry(9, 6), entry(10, 6)]);
        let got = s.entries(6, 11, None, GetEntriesContext::empty(false)).unwrap();
        let ids: Vec<_> = got.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(ids, vec![(6, 5), (7, 5), (8, 5), (9, 6), (10, 6)]);
        assert_eq!(s.term(9).unwrap(), 6);
        assert_eq!(s.term(5).unwrap(), 5);
        assert!(s.term(4).is_err());
        assert_eq!(s.last_index().unwrap(), 10);
    }

    #[test]
    fn checkpoint_compacts_and_recovery_restores() {
        let mut s = storage();
        persist(&mut s, (6..=8).map(|i| entry(i, 5)).collect());
        s.set_applied(7, 5);
        let cp = s.checkpoint();
        assert_eq!(s.first_index().unwrap(), 8);
        assert_eq!(s.term(7).unwrap(), 5);
        assert!(matches!(
            s.entries(7, 9, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let task = WriteTask { checkpoint: Some(cp), ..WriteTask::default() };
        s.log_mut().apply(&task);
        let log = s.log().clone();
        let back: PeerStorage<MemLog> = PeerStorage::recover(log.clone(), log.persisted_state()).unwrap();
        assert_eq!(back.first_index().unwrap(), 8);
        assert_eq!(back.last_index().unwrap(), 8);
        assert_eq!(back.applied(), (7, 5));
    }
}
