//! CORE. Errors of the group core.
//!
//! [`RequestError`] is what a client request gets back, as a value: routing errors
//! (`NotLeader`, `EpochNotMatch`, `KeyNotInRange`) tell the client how to fix its range cache
//! and retry; the others say what happened to a proposal. [`GroupError`] is for the shell:
//! a replica that cannot be built or driven.

use super::range::{GroupId, NodeId, RangeDescriptor};
use crate::codec::CodecError;

/// Why a request was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// This replica is not the leader; retry at `leader_hint` if known.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// The request's epoch is stale (or ahead); `current` holds the ranges as this replica
    /// knows them, for the client's range cache.
    #[error("epoch not match")]
    EpochNotMatch {
        /// The current descriptors covering the request.
        current: Vec<RangeDescriptor>,
    },
    /// A key is outside the group's range.
    #[error("key not in range of group {group}")]
    KeyNotInRange {
        /// The offending key (or scan start).
        key: Vec<u8>,
        /// The group that was asked.
        group: GroupId,
        /// The group's range start.
        start: Vec<u8>,
        /// The group's range end (empty = unbounded).
        end: Vec<u8>,
    },
    /// The proposal's log entry was replaced by another leader's: it was not applied.
    #[error("stale command: replaced by a newer leader's entry")]
    StaleCommand,
    /// This replica installed a snapshot past the proposal: whether it applied is unknown.
    #[error("outcome unknown: a snapshot overtook the proposal")]
    OutcomeUnknown,
    /// raft refused the proposal (leader transfer in flight, uncommitted-size limit).
    #[error("proposal dropped by raft")]
    ProposalDropped,
    /// Too many requests are pending on this replica.
    #[error("busy: {pending} requests pending")]
    Busy {
        /// Requests pending when this one arrived.
        pending: usize,
    },
    /// A membership change or leader transfer was refused.
    #[error("admin request rejected: {0}")]
    AdminRejected(&'static str),
    /// The command in the log did not decode (never applied; same result on every replica).
    #[error("malformed command: {0}")]
    Malformed(#[from] CodecError),
    /// The replica was removed from the group.
    #[error("replica removed from the group")]
    Removed,
}

/// Why a replica could not be built or stepped.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// raft-rs refused (invalid config, corrupt persisted state, bad message).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Persisted group state did not decode.
    #[error("persisted state: {0}")]
    Codec(#[from] CodecError),
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// Only a voter of the applied configuration may campaign (raft-rs panics otherwise).
    #[error("not a voter of the group")]
    NotVoter,
    /// Persisted state is inconsistent (a hole between checkpoint and log, ...).
    #[error("corrupt persisted state: {0}")]
    Corrupt(String),
}
