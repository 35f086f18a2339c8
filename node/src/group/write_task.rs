//! CORE. [`WriteTask`]: what one replica's ready round asks the shell to make durable, and
//! [`PersistedState`]: what the shell hands back to rebuild a replica after a restart.
//!
//! The shell applies a task's parts in this order, atomically with every other task of the
//! same round (one log batch, one fsync), then calls `GroupPeer::on_persisted`:
//! 1. `destroy`: drop everything of the group (nothing else follows);
//! 2. `snapshot`: drop the whole log, hard state and checkpoint; the snapshot becomes the
//!    checkpoint and the log restarts after its index;
//! 3. `entries`: append, first dropping any persisted entry at or after the first index;
//! 4. `hard_state`: replace;
//! 5. `checkpoint`: replace, then drop log entries at or below its index.

use raft::eraftpb::{Entry, HardState, Snapshot};

use super::kv::KvState;
use super::range::{GroupId, RangeDescriptor};
use super::sm::StateMachine;
use super::snapshot::encode_snapshot;

/// raft index and term of a freshly bootstrapped group's checkpoint (TiKV's
/// `RAFT_INIT_LOG_INDEX`/`TERM`): peers created later start empty at 0 and so always need a
/// snapshot, never an append from index 1.
pub const INIT_INDEX: u64 = 5;
/// See [`INIT_INDEX`].
pub const INIT_TERM: u64 = 5;

/// Durable writes of one ready round of one replica.
#[derive(Clone, Debug, Default)]
pub struct WriteTask {
    /// The group.
    pub group_id: GroupId,
    /// The raft ready number to pass back to `on_persisted`.
    pub ready_number: u64,
    /// The group's replica was removed: drop all of its data.
    pub destroy: bool,
    /// A snapshot received from the leader: replaces log, hard state and checkpoint.
    pub snapshot: Option<Snapshot>,
    /// Log entries to append (contiguous, ascending).
    pub entries: Vec<Entry>,
    /// The new hard state (always set together with `snapshot`).
    pub hard_state: Option<HardState>,
    /// A new local checkpoint of the state machine; compacts the log up to its index.
    pub checkpoint: Option<Snapshot>,
    /// Whether the write must be fsynced before `on_persisted` (raft's `must_sync`).
    pub must_sync: bool,
}

impl WriteTask {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.destroy
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.checkpoint.is_none()
    }

    /// Total bytes of entry payloads.
    pub fn entry_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.data.len() + e.context.len()).sum()
    }
}

/// A replica's durable state apart from its log: hard state and checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistedState {
    /// raft's term, vote and commit.
    pub hard_state: HardState,
    /// The latest checkpoint (index 0 = an uninitialized replica, waiting for a snapshot).
    pub checkpoint: Snapshot,
}

impl PersistedState {
    /// The state every initial voter of a new group starts from: an empty state machine
    /// checkpointed at [`INIT_INDEX`] with `desc`'s voters.
    pub fn bootstrap(desc: &RangeDescriptor) -> Self {
        let hard_state = HardState { term: INIT_TERM, commit: INIT_INDEX, ..HardState::default() };
        let checkpoint =
            encode_snapshot(desc, &KvState::default(), INIT_INDEX, INIT_TERM, desc.initial_conf_state());
        Self { hard_state, checkpoint }
    }

    /// The state every replica of a split's new group starts from: the moved pairs
    /// checkpointed at [`INIT_INDEX`] with `desc`'s members.
    pub fn split_child<S: StateMachine>(desc: &RangeDescriptor, kv: &S) -> Self {
        let hard_state = HardState { term: INIT_TERM, commit: INIT_INDEX, ..HardState::default() };
        let checkpoint = encode_snapshot(desc, kv, INIT_INDEX, INIT_TERM, desc.initial_conf_state());
        Self { hard_state, checkpoint }
    }

    /// The state of a replica created to receive a snapshot (a new learner).
    pub fn uninitialized() -> Self {
        Self::default()
    }
}
