//! CORE. Hibernation: an idle group whose members all agree stops ticking, so thousands of
//! idle groups cost no CPU and send no heartbeats (TiKV's `hibernate_regions`).
//!
//! Protocol (three steps, so that no follower stops ticking unless the leader did):
//! 1. a leader idle for `hibernate_after_ticks` and *quiescent* (everything replicated,
//!    committed and applied everywhere it knows of, nothing pending, no transfer or conf
//!    change in flight) sends `HibernateRequest{term, index}` to every member each tick;
//! 2. a follower that is in the same term under that leader, with last = commit = applied =
//!    `index`, answers `HibernateAck` (and keeps ticking);
//! 3. once every member acked the same `(term, index)`, the leader stops ticking and sends
//!    `HibernateConfirm`; a follower still at `(term, index)` under that leader stops too.
//!
//! Any other message, request or role change wakes a replica ([`GroupPeer::wake`]), except
//! heartbeat traffic of the current term that carries no news (the last heartbeats before
//! the leader stopped may arrive after the confirm); a woken leader pings its followers,
//! and its first append wakes them. A lost confirm leaves a follower awake: it
//! times out, campaigns, and its pre-vote wakes the leader. A hibernated follower whose
//! leader dies never notices by itself: the shell must call `wake` when the transport loses
//! a node (as TiKV wakes regions on store-liveness changes).

use std::collections::BTreeSet;

use raft::StateRole;

use crate::group::event::PeerEvent;
use crate::group::message::MessageBody;
use crate::group::peer::GroupPeer;
use crate::group::range::NodeId;
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

/// Whether a replica ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum HibernateState {
    /// Ticking normally.
    #[default]
    Awake,
    /// Not ticking until woken.
    Hibernated,
}

/// Hibernation bookkeeping of one replica.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hibernation {
    state: HibernateState,
    idle_ticks: u32,
    /// Leader: the `(term, index)` being voted on, and who agreed.
    round: (u64, u64),
    acks: BTreeSet<NodeId>,
}

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Whether the replica stopped ticking. The shell skips ticks for it.
    pub fn is_hibernated(&self) -> bool {
        self.hibernation.state == HibernateState::Hibernated
    }

    /// Marks activity: resets the idle count and, if hibernated, resumes ticking (a leader
    /// also pings its followers awake). Shells call it when a peer node's connection drops.
    pub fn wake(&mut self) {
        let h = &mut self.hibernation;
        h.idle_ticks = 0;
        h.acks.clear();
        if h.state == HibernateState::Awake {
            return;
        }
        h.state = HibernateState::Awake;
        self.push_event(PeerEvent::Hibernated(false));
        if self.is_leader() {
            self.raw.ping();
        }
    }

    /// Leader side of step 1, once per tick.
    pub(crate) fn hibernation_tick(&mut self) {
        let after = self.cfg.hibernate_after_ticks;
        if after == 0 || !self.is_leader() {
            return;
        }
        let h = &mut self.hibernation;
        h.idle_ticks = h.idle_ticks.saturating_add(1);
        if h.idle_ticks < after {
            return;
        }
        if !self.quiescent() {
            self.hibernation.acks.clear();
            return;
        }
        let round = (self.raw.raft.term, self.raw.raft.raft_log.last_index());
        if self.hibernation.round != round {
            self.hibernation.round = round;
            self.hibernation.acks.clear();
        }
        if self.all_acked() {
            self.enter_hibernation();
            return;
        }
        for member in self.desc().members() {
            if member != self.node_id && !self.hibernation.acks.contains(&member) {
                self.send(member, MessageBody::HibernateRequest { term: round.0, index: round.1 });
            }
        }
    }

    /// Follower side of step 2.
    pub(crate) fn on_hibernate_request(&mut self, from: NodeId, term: u64, index: u64) {
        if self.follower_idle_at(from, term, index) {
            self.send(from, MessageBody::HibernateAck { term, index });
        }
    }

    /// Leader side of step 3.
    pub(crate) fn on_hibernate_ack(&mut self, from: NodeId, term: u64, index: u64) {
        if !self.is_leader() || self.hibernation.round != (term, index) || self.is_hibernated() {
            return;
        }
        if !self.quiescent() {
            return;
        }
        self.hibernation.acks.insert(from);
        if self.all_acked() {
            self.enter_hibernation();
        }
    }

    /// Follower side of step 3.
    pub(crate) fn on_hibernate_confirm(&mut self, from: NodeId, term: u64, index: u64) {
        if !self.is_hibernated() && self.follower_idle_at(from, term, index) {
            self.hibernation.state = HibernateState::Hibernated;
            self.push_event(PeerEvent::Hibernated(true));
        }
    }

    fn enter_hibernation(&mut self) {
        let (term, index) = self.hibernation.round;
        self.hibernation.state = HibernateState::Hibernated;
        self.push_event(PeerEvent::Hibernated(true));
        for member in self.desc().members() {
            if member != self.node_id {
                self.send(member, MessageBody::HibernateConfirm { term, index });
            }
        }
    }

    fn all_acked(&self) -> bool {
        self.desc().members().iter().all(|m| *m == self.node_id || self.hibernation.acks.contains(m))
    }

    fn follower_idle_at(&self, leader: NodeId, term: u64, index: u64) -> bool {
        let r = &self.raw.raft;
        r.state == StateRole::Follower
            && r.term == term
            && r.leader_id == leader
            && r.raft_log.last_index() == index
            && r.raft_log.committed == index
            && self.storage().applied().0 == index
            && self.in_flight.is_none()
    }

    /// Nothing left to replicate, commit, apply or answer, as far as the leader knows.
    fn quiescent(&self) -> bool {
        let r = &self.raw.raft;
        let last = r.raft_log.last_index();
        r.state == StateRole::Leader
            && self.in_flight.is_none()
            && self.proposals.is_empty()
            && self.reads.is_empty()
            && r.lead_transferee.is_none()
            && !self.desc().is_joint()
            && r.pending_conf_index <= self.storage().applied().0
            && r.raft_log.committed == last
            && self.storage().applied().0 == last
            && r.prs().iter().all(|(_, pr)| pr.matched == last)
    }
}
