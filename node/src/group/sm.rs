//! CORE. [`StateMachine`]: what a range's replicas apply, query, snapshot and restore. The
//! raft machinery in this module (proposals, reads, splits, snapshots) is generic over it;
//! [`KvState`](super::KvState), an ordered key-value map, is the implementation every range
//! uses today. The MQTT keyspaces add theirs (the message-log family's applied state is a
//! segment log).
//!
//! Contract: `apply` is a pure function of (state, command), so every replica that applies
//! the same committed prefix holds the same state and `digest`; `restore(snapshot())` gives
//! back an equal state; `split_off(k)` moves exactly the keys at or after `k`.

use super::command::Command;
use super::op::read::Query;
use super::response::Outcome;
use crate::codec::CodecError;

/// The applied state of a range.
pub trait StateMachine: Clone + Default + std::fmt::Debug + PartialEq + Send + 'static {
    /// Applies one committed command (never `Split`: the replica applies that itself).
    fn apply(&mut self, cmd: &Command) -> Outcome;
    /// Answers a read about the range `[range_start, range_end)` (empty end = unbounded):
    /// `range_end` replaces an empty scan end, and a match never leaves the range.
    fn query(&self, query: &Query, range_start: &[u8], range_end: &[u8]) -> Outcome;
    /// Moves everything at or after `key` into a new state (the right half of a split).
    fn split_off(&mut self, key: &[u8]) -> Self;
    /// Where to split when no key is given (the middle, aligned to the keyspace's records).
    fn split_key(&self) -> Option<Vec<u8>>;
    /// Appends the snapshot encoding.
    fn snapshot(&self, buf: &mut Vec<u8>);
    /// Rebuilds a state from exactly what [`snapshot`](Self::snapshot) wrote.
    fn restore(data: &[u8]) -> Result<Self, CodecError>;
    /// Order-independent content hash, equal on replicas with equal state.
    fn digest(&self) -> u64;
    /// Records held.
    fn len(&self) -> usize;
    /// Whether no record is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held (keys and values).
    fn bytes(&self) -> usize;
}
