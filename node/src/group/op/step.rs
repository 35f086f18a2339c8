//! CORE. Driving a replica: messages from other replicas, ticks, campaigns, reachability.
//!
//! A leader that hears from a node outside its configuration answers `Destroy` with its
//! `conf_ver`; the stranger destroys itself only if its own `conf_ver` is older (it missed
//! its removal), so a new member that the leader has not applied yet is never destroyed.

use raft::eraftpb::MessageType;

use crate::group::error::GroupError;
use crate::group::event::PeerEvent;
use crate::group::message::{GroupMessage, MessageBody};
use crate::group::peer::GroupPeer;
use crate::group::range::NodeId;
use crate::group::sm::StateMachine;
use crate::group::snapshot::decode_snapshot_data;
use crate::group::storage::LogStore;

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Handles a message from another replica of the group. Stale or unknown-peer messages
    /// are dropped silently; an error means raft refused the message outright.
    pub fn step(&mut self, msg: GroupMessage) -> Result<(), GroupError> {
        debug_assert_eq!(msg.group_id, self.group_id);
        if self.removed {
            return Ok(());
        }
        let from = msg.from;
        match msg.body {
            MessageBody::Raft(m) => {
                if self.is_leader() && self.is_initialized() && !self.desc().has_member(from) {
                    let conf_ver = self.desc().epoch.conf_ver;
                    self.send(from, MessageBody::Destroy { conf_ver });
                    return Ok(());
                }
                let is_vote =
                    matches!(m.get_msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote);
                if is_vote && !self.is_initialized() && !self.votes_uninitialized {
                    // Re-added after a removal: an empty log would grant any vote, and a
                    // candidate with an old configuration may still count this node, so
                    // votes wait until a snapshot brings the real state.
                    return Ok(());
                }
                if m.get_msg_type() == MessageType::MsgSnapshot && !m.get_snapshot().is_empty() {
                    // Refused before raft sees it: once raft accepts a snapshot, the state
                    // machine must install it, so a snapshot that does not decode (a
                    // corrupt or hostile peer) is dropped here, and the leader retries.
                    decode_snapshot_data::<S>(&m.get_snapshot().data)?;
                }
                if self.is_hibernated() && !self.is_stale_heartbeat(&m) {
                    self.wake();
                }
                let result = self.raw.step(m);
                self.after_raft();
                match result {
                    Ok(()) | Err(raft::Error::StepPeerNotFound) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            MessageBody::HibernateRequest { term, index } => {
                self.on_hibernate_request(from, term, index);
                Ok(())
            }
            MessageBody::HibernateAck { term, index } => {
                self.on_hibernate_ack(from, term, index);
                Ok(())
            }
            MessageBody::HibernateConfirm { term, index } => {
                self.on_hibernate_confirm(from, term, index);
                Ok(())
            }
            MessageBody::Destroy { conf_ver } => {
                self.on_destroy_request(conf_ver);
                Ok(())
            }
        }
    }

    /// Advances raft's logical clock by one tick; a no-op while hibernated.
    pub fn tick(&mut self) {
        if self.removed || self.is_hibernated() {
            return;
        }
        self.raw.tick();
        self.after_raft();
        self.hibernation_tick();
    }

    /// Starts an election now (bootstrap, tests, placing a leader deliberately). Refused
    /// unless this replica is a voter (an uninitialized replica is not).
    pub fn campaign(&mut self) -> Result<(), GroupError> {
        if self.removed || !self.raw.raft.promotable() {
            return Err(GroupError::NotVoter);
        }
        self.wake();
        let result = self.raw.campaign();
        self.after_raft();
        Ok(result?)
    }

    /// Tells raft that the last message to `node` was not delivered (it then probes
    /// instead of streaming to it).
    pub fn report_unreachable(&mut self, node: NodeId) {
        self.raw.report_unreachable(node);
        self.after_raft();
    }

    /// Tells raft that a snapshot sent to `node` was not delivered (it sends another once
    /// the peer is probed again).
    pub fn report_snapshot_failure(&mut self, node: NodeId) {
        self.raw.report_snapshot(node, raft::SnapshotStatus::Failure);
        self.after_raft();
    }

    /// Heartbeat traffic of the current term that carries no news: a heartbeat from our
    /// leader committing nothing new, or a heartbeat response. Hibernation races with the
    /// last heartbeats sent before the leader stopped ticking (the network may reorder them
    /// after the confirm), so these do not wake a hibernated replica; anything else does.
    fn is_stale_heartbeat(&self, m: &raft::eraftpb::Message) -> bool {
        let r = &self.raw.raft;
        match m.get_msg_type() {
            MessageType::MsgHeartbeat => {
                m.term == r.term && m.from == r.leader_id && m.commit <= r.raft_log.committed
            }
            MessageType::MsgHeartbeatResponse => m.term == r.term && self.is_leader(),
            _ => false,
        }
    }

    fn on_destroy_request(&mut self, conf_ver: u64) {
        if self.is_initialized() && self.desc().epoch.conf_ver < conf_ver {
            self.mark_removed();
        }
    }

    /// The replica is out of the group: fail everything pending and schedule the destroy.
    pub(crate) fn mark_removed(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        self.destroy_pending = true;
        self.fail_all_pending(crate::group::error::RequestError::Removed);
        self.push_event(PeerEvent::Removed);
    }
}
