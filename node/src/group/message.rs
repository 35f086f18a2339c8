//! CORE. [`GroupMessage`]: what replicas of one group send each other — raft messages plus
//! the hibernation and garbage-collection extensions raft-rs does not have.

use raft::eraftpb::{Message, MessageType};

use super::range::{GroupId, NodeId};

/// One message between two replicas of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMessage {
    /// The group.
    pub group_id: GroupId,
    /// Sending node (= raft id).
    pub from: NodeId,
    /// Receiving node (= raft id).
    pub to: NodeId,
    /// The payload.
    pub body: MessageBody,
}

/// The payload of a [`GroupMessage`].
#[derive(Clone, Debug, PartialEq)]
pub enum MessageBody {
    /// A raft-rs message.
    Raft(Message),
    /// Leader to follower: the group is idle at `(term, index)`; may we all stop ticking?
    HibernateRequest {
        /// The leader's term.
        term: u64,
        /// The leader's last (= committed = applied) index.
        index: u64,
    },
    /// Follower to leader: agreed, I am idle at `(term, index)` too.
    HibernateAck {
        /// As in the request.
        term: u64,
        /// As in the request.
        index: u64,
    },
    /// Leader to follower: everyone agreed and the leader stopped ticking; stop too.
    HibernateConfirm {
        /// As in the request.
        term: u64,
        /// As in the request.
        index: u64,
    },
    /// Leader to a node that is no longer a member (as of `conf_ver`): destroy your replica.
    Destroy {
        /// The leader's `conf_ver`; only a replica with an older one obeys.
        conf_ver: u64,
    },
}

impl GroupMessage {
    /// Whether a node without a replica of the group should create one (uninitialized) to
    /// receive this message: a vote request, or the heartbeat a leader sends to a peer it
    /// has not replicated anything to yet (commit 0), as in TiKV's `is_initial_msg`.
    pub fn may_create_replica(&self) -> bool {
        match &self.body {
            MessageBody::Raft(m) => match m.get_msg_type() {
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => true,
                MessageType::MsgHeartbeat => m.commit == 0,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether this is a leader's first contact with a peer it just added (a heartbeat with
    /// commit 0), the only message that may re-create a replica this node destroyed before.
    /// A vote request never does: a removed node must not vote for a candidate that still
    /// counts it.
    pub fn is_invitation(&self) -> bool {
        matches!(&self.body, MessageBody::Raft(m) if m.get_msg_type() == MessageType::MsgHeartbeat && m.commit == 0)
    }

    /// Rough encoded size in bytes, for batching statistics.
    pub fn approximate_bytes(&self) -> usize {
        match &self.body {
            MessageBody::Raft(m) => {
                64 + m.entries.iter().map(|e| e.data.len() + e.context.len() + 16).sum::<usize>()
                    + m.snapshot.as_ref().map_or(0, |s| s.data.len())
            }
            _ => 32,
        }
    }
}
