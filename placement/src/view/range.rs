//! CORE. One range (a raft group over the key span `[start_key, end_key)`) as its leader reports it:
//! epoch, replicas with their roles, leader, size and load.
//!
//! Quorum rule (used by filters and by the simulator's safety check): a range is available
//! when the live members of its incoming voter set form a majority of that set and, in a
//! joint configuration, the live members of the outgoing voter set form a majority of that
//! set too. Learners never count.

use std::fmt;

use crate::view::NodeId;

/// A range (a TiKV "region"): one raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeId(pub u64);

impl fmt::Display for RangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Range epoch (ARCHITECTURE.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Epoch {
    /// Bumped by split and merge.
    pub version: u64,
    /// Bumped by every membership change.
    pub conf_ver: u64,
}

impl Epoch {
    /// True if `self` is older than `other` in either component: a report carrying `self`
    /// must not overwrite `other`.
    pub fn is_stale_against(&self, other: &Self) -> bool {
        self.version < other.version || self.conf_ver < other.conf_ver
    }
}

/// Raft role of a replica (PD's `PeerRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Votes in the current configuration.
    Voter,
    /// Receives the log but does not vote.
    Learner,
    /// Joint consensus: votes in the incoming configuration only.
    IncomingVoter,
    /// Joint consensus: votes in the outgoing configuration only.
    DemotingVoter,
}

impl Role {
    /// Votes in the incoming (or only) configuration.
    pub fn votes_incoming(self) -> bool {
        matches!(self, Self::Voter | Self::IncomingVoter)
    }

    /// Votes in the outgoing configuration of a joint state.
    pub fn votes_outgoing(self) -> bool {
        matches!(self, Self::Voter | Self::DemotingVoter)
    }
}

/// One replica of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Replica {
    /// Where it lives.
    pub node: NodeId,
    /// Its raft role.
    pub role: Role,
}

impl Replica {
    /// A voter on `node`.
    pub fn voter(node: NodeId) -> Self {
        Self { node, role: Role::Voter }
    }

    /// A learner on `node`.
    pub fn learner(node: NodeId) -> Self {
        Self { node, role: Role::Learner }
    }
}

/// A range as reported by its leader's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeInfo {
    /// The range.
    pub id: RangeId,
    /// First key (inclusive). Empty means the start of the key space.
    pub start_key: Vec<u8>,
    /// End key (exclusive). Empty means unbounded.
    pub end_key: Vec<u8>,
    /// Epoch.
    pub epoch: Epoch,
    /// Replicas, at most one per node.
    pub replicas: Vec<Replica>,
    /// The node of the current leader, if one is known.
    pub leader: Option<NodeId>,
    /// Replicas still catching up (receiving a snapshot or far behind the log).
    pub pending: Vec<NodeId>,
    /// Approximate size.
    pub size_bytes: u64,
    /// Approximate number of keys.
    pub keys: u64,
    /// Written bytes per second, as smoothed by the leader.
    pub write_bytes_per_sec: u64,
    /// Written keys per second, as smoothed by the leader.
    pub write_keys_per_sec: u64,
    /// A split key the leader suggests from sampled hot keys (load-based split).
    pub split_key_hint: Option<Vec<u8>>,
}

/// Majority of `n` voters (`n / 2 + 1`); 1 for an empty set, which then never has quorum.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl RangeInfo {
    /// The replica on `node`, if any.
    pub fn replica(&self, node: NodeId) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.node == node)
    }

    /// True if some replica lives on `node`.
    pub fn has_replica(&self, node: NodeId) -> bool {
        self.replica(node).is_some()
    }

    /// True if the replica on `node` is still catching up.
    pub fn is_pending(&self, node: NodeId) -> bool {
        self.pending.contains(&node)
    }

    /// Nodes of plain voters (role [`Role::Voter`]).
    pub fn voter_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().filter(|r| r.role == Role::Voter).map(|r| r.node)
    }

    /// Number of plain voters.
    pub fn voter_count(&self) -> usize {
        self.voter_nodes().count()
    }

    /// True if any replica is in a joint role (incoming or demoting voter).
    pub fn is_joint(&self) -> bool {
        self.replicas.iter().any(|r| matches!(r.role, Role::IncomingVoter | Role::DemotingVoter))
    }

    /// True if the leader is known and is `node`.
    pub fn is_leader(&self, node: NodeId) -> bool {
        self.leader == Some(node)
    }

    /// True if `end_key` bounds the range (it is not the last range of the key space).
    pub fn has_end(&self) -> bool {
        !self.end_key.is_empty()
    }

    /// True if `key` falls in `[start_key, end_key)`.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice() && (!self.has_end() || key < self.end_key.as_slice())
    }

    /// The quorum rule of the module doc, with `is_up` deciding which nodes are live.
    pub fn has_quorum(&self, is_up: impl Fn(NodeId) -> bool) -> bool {
        quorum_of(&self.replicas, is_up)
    }
}

/// The quorum rule of the module doc over an explicit replica list.
pub fn quorum_of(replicas: &[Replica], is_up: impl Fn(NodeId) -> bool) -> bool {
    let (mut incoming, mut incoming_up, mut outgoing, mut outgoing_up) = (0, 0, 0, 0);
    let mut joint = false;
    for replica in replicas {
        let up = is_up(replica.node);
        joint |= matches!(replica.role, Role::IncomingVoter | Role::DemotingVoter);
        if replica.role.votes_incoming() {
            incoming += 1;
            incoming_up += usize::from(up);
        }
        if replica.role.votes_outgoing() {
            outgoing += 1;
            outgoing_up += usize::from(up);
        }
    }
    let incoming_ok = incoming > 0 && incoming_up >= majority(incoming);
    let outgoing_ok = !joint || (outgoing > 0 && outgoing_up >= majority(outgoing));
    incoming_ok && outgoing_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(replicas: Vec<Replica>) -> RangeInfo {
        RangeInfo {
            id: RangeId(1),
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
            epoch: Epoch::default(),
            leader: replicas.first().map(|r| r.node),
            replicas,
            pending: Vec::new(),
            size_bytes: 0,
            keys: 0,
            write_bytes_per_sec: 0,
            write_keys_per_sec: 0,
            split_key_hint: None,
        }
    }

    #[test]
    fn simple_majority() {
        let r = range((1..=3).map(|n| Replica::voter(NodeId(n))).collect());
        assert!(r.has_quorum(|n| n != NodeId(3)));
        assert!(!r.has_quorum(|n| n == NodeId(1)));
    }

    #[test]
    fn learners_do_not_count() {
        let mut replicas: Vec<_> = (1..=3).map(|n| Replica::voter(NodeId(n))).collect();
        replicas.push(Replica::learner(NodeId(4)));
        let r = range(replicas);
        assert!(!r.has_quorum(|n| n == NodeId(1) || n == NodeId(4)));
    }

    #[test]
    fn joint_needs_both_majorities() {
        // old {1,2,3}, new {1,2,4}: 3 demoting, 4 incoming.
        let r = range(vec![
            Replica::voter(NodeId(1)),
            Replica::voter(NodeId(2)),
            Replica { node: NodeId(3), role: Role::DemotingVoter },
            Replica { node: NodeId(4), role: Role::IncomingVoter },
        ]);
        assert!(r.is_joint());
        assert!(r.has_quorum(|n| n != NodeId(3)));
        // 1 and 4 up: new config {1,2,4} has 2 of 3, old {1,2,3} has 1 of 3.
        assert!(!r.has_quorum(|n| n == NodeId(1) || n == NodeId(4)));
    }

    #[test]
    fn key_containment() {
        let r = range(vec![Replica::voter(NodeId(1))]);
        assert!(r.contains_key(b"a"));
        assert!(r.contains_key(b"lzz"));
        assert!(!r.contains_key(b"m"));
        let mut last = r.clone();
        last.end_key.clear();
        assert!(last.contains_key(b"zzz"));
    }
}
