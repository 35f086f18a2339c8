//! CORE. [`PeerEvent`]s: what a replica reports about itself to its shell (and to test
//! checkers), drained after each call.

use super::range::{NodeId, RangeDescriptor};

/// A replica's raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Probing with pre-vote before starting an election.
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leading.
    Leader,
}

impl From<raft::StateRole> for Role {
    fn from(r: raft::StateRole) -> Self {
        match r {
            raft::StateRole::Follower => Self::Follower,
            raft::StateRole::PreCandidate => Self::PreCandidate,
            raft::StateRole::Candidate => Self::Candidate,
            raft::StateRole::Leader => Self::Leader,
        }
    }
}

/// Something that happened to a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Role, term or known leader changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The current term.
        term: u64,
        /// The leader this replica now knows, if any.
        leader: Option<NodeId>,
    },
    /// A membership change was applied.
    ConfChanged(RangeDescriptor),
    /// The replica stopped ticking (`true`) or woke up (`false`).
    Hibernated(bool),
    /// The replica was removed from the group; the shell should drop it after persisting.
    Removed,
}
