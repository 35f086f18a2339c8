//! CORE. Membership changes: add a learner, promote it, remove a member, or several at once
//! through joint consensus (raft-rs `ConfChangeV2`, auto transition: one change is applied
//! directly, several enter a joint configuration that raft leaves by itself once applied).
//!
//! Rules (checked at proposal, the epoch again at apply, where it is authoritative):
//! - the request's `conf_ver` must match; each applied change bumps `conf_ver` by one;
//! - one change at a time: none may be pending or joint;
//! - the leader never removes or demotes itself (transfer leadership first, as TiKV does);
//! - a replica that applies its own removal destroys itself.

use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry,
};

use crate::codec::Reader;
use crate::group::command::{decode_epoch_header, encode_epoch_header};
use crate::group::error::RequestError;
use crate::group::event::PeerEvent;
use crate::group::op::propose::ProposalKind;
use crate::group::peer::GroupPeer;
use crate::group::proto_scan::{Schema, scan};
use crate::group::range::{Epoch, EpochCheck, NodeId};
use crate::group::response::Outcome;
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChange {
    /// Add `node` as a voter, or promote it if it is a learner.
    AddVoter(NodeId),
    /// Add `node` as a learner (or demote a voter, through a joint configuration).
    AddLearner(NodeId),
    /// Remove `node`.
    Remove(NodeId),
}

impl PeerChange {
    fn node(self) -> NodeId {
        match self {
            Self::AddVoter(n) | Self::AddLearner(n) | Self::Remove(n) => n,
        }
    }

    fn to_raft(self) -> ConfChangeSingle {
        let mut cc = ConfChangeSingle { node_id: self.node(), ..ConfChangeSingle::default() };
        cc.set_change_type(match self {
            Self::AddVoter(_) => ConfChangeType::AddNode,
            Self::AddLearner(_) => ConfChangeType::AddLearnerNode,
            Self::Remove(_) => ConfChangeType::RemoveNode,
        });
        cc
    }
}

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Proposes `changes` (one, or several as a joint change). The outcome is
    /// `Outcome::ConfChanged` with the new descriptor once applied on this leader.
    pub fn propose_conf_change(
        &mut self,
        now: Instant,
        request_id: u64,
        epoch: Epoch,
        changes: &[PeerChange],
    ) -> Result<(), RequestError> {
        self.admit_request()?;
        self.desc().check_epoch(epoch, EpochCheck::ConfVer)?;
        self.check_conf_change(changes)?;
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        cc.set_changes(changes.iter().map(|c| c.to_raft()).collect::<Vec<_>>().into());
        let context = encode_epoch_header(epoch);
        self.propose_entry(now, request_id, ProposalKind::ConfChange, |raw| {
            raw.propose_conf_change(context, cc)
        })
    }

    fn check_conf_change(&self, changes: &[PeerChange]) -> Result<(), RequestError> {
        if changes.is_empty() {
            return Err(RequestError::AdminRejected("no changes"));
        }
        if self.desc().is_joint() || self.raw.raft.pending_conf_index > self.storage().applied().0 {
            return Err(RequestError::AdminRejected("a membership change is in progress"));
        }
        let mut seen = Vec::with_capacity(changes.len());
        for c in changes {
            if seen.contains(&c.node()) {
                return Err(RequestError::AdminRejected("a node appears twice"));
            }
            seen.push(c.node());
            if c.node() == self.node_id && !matches!(c, PeerChange::AddVoter(_)) {
                return Err(RequestError::AdminRejected("the leader cannot remove or demote itself"));
            }
        }
        Ok(())
    }

    /// Applies a committed conf-change entry (or refuses it, identically on every replica).
    pub(crate) fn apply_conf_change_entry(&mut self, entry: &Entry) -> Result<Outcome, RequestError> {
        // The entry came from a peer: no group wire type may reach rust-protobuf 2.
        let cc = match entry.get_entry_type() {
            raft::eraftpb::EntryType::EntryConfChange => {
                scan(Schema::ConfChange, &entry.data).map_err(|_| bad_entry())?;
                let v1 = ConfChange::parse_from_bytes(&entry.data).map_err(|_| bad_entry())?;
                let mut single = ConfChangeSingle::default();
                single.set_change_type(v1.get_change_type());
                single.node_id = v1.node_id;
                let mut v2 = ConfChangeV2::default();
                v2.set_changes(vec![single].into());
                v2
            }
            _ => {
                scan(Schema::ConfChangeV2, &entry.data).map_err(|_| bad_entry())?;
                ConfChangeV2::parse_from_bytes(&entry.data).map_err(|_| bad_entry())?
            }
        };
        // The empty entry raft appends to leave a joint configuration carries no epoch.
        if !entry.context.is_empty() {
            let epoch = decode_epoch_header(&mut Reader::new(&entry.context))?;
            self.desc().check_epoch(epoch, EpochCheck::ConfVer)?;
        }
        let cs =
            self.raw.apply_conf_change(&cc).map_err(|_| RequestError::AdminRejected("invalid change"))?;
        let store = self.raw.mut_store();
        let desc = store.desc_mut();
        desc.set_members(&cs);
        desc.epoch.conf_ver += 1;
        let desc = desc.clone();
        store.set_conf_state(cs);
        self.push_event(PeerEvent::ConfChanged(desc.clone()));
        if !desc.has_member(self.node_id) {
            self.mark_removed();
        }
        Ok(Outcome::ConfChanged(desc))
    }
}

fn bad_entry() -> RequestError {
    RequestError::AdminRejected("undecodable conf change")
}
