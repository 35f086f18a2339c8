//! CORE. Proposing a write: routing checks, then a raft entry tracked by its log index.
//!
//! A proposal is answered when its index is applied: with the command's outcome if the
//! entry there is still ours (same term), with `StaleCommand` if another leader's entry
//! replaced it, with `OutcomeUnknown` if a snapshot skipped past it. Routing errors
//! (`NotLeader`, `EpochNotMatch`, `KeyNotInRange`) come back at once as values; the same
//! epoch and range checks run again at apply, where they are authoritative.

use std::time::Instant;

use crate::group::command::Command;
use crate::group::error::RequestError;
use crate::group::peer::GroupPeer;
use crate::group::range::{Epoch, EpochCheck};
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

/// A write to propose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// Echoed in the [`Response`](crate::group::Response).
    pub request_id: u64,
    /// The epoch the client routed by.
    pub epoch: Epoch,
    /// The command.
    pub command: Command,
}

/// What a pending proposal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProposalKind {
    /// A state-machine command.
    Write,
    /// A membership change.
    ConfChange,
}

/// A proposal waiting for its index to be applied.
#[derive(Clone, Debug)]
pub(crate) struct PendingProposal {
    pub(crate) request_id: u64,
    pub(crate) term: u64,
    pub(crate) kind: ProposalKind,
    /// When it was proposed: its commit proves a quorum heard from us after this instant.
    pub(crate) proposed_at: Instant,
}

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Proposes a write. `Ok` means it is in the leader's log; the outcome comes later as a
    /// [`Response`](crate::group::Response) with `req.request_id`.
    pub fn propose(&mut self, now: Instant, req: WriteRequest) -> Result<(), RequestError> {
        self.admit_request()?;
        let desc = self.desc();
        desc.check_epoch(req.epoch, EpochCheck::Version)?;
        req.command.check_keys(desc)?;
        let data = req.command.encode(req.epoch);
        self.propose_entry(now, req.request_id, ProposalKind::Write, |raw| raw.propose(Vec::new(), data))
    }

    /// Shared admission for every request: alive, awake, leading, not overloaded.
    pub(crate) fn admit_request(&mut self) -> Result<(), RequestError> {
        if self.removed {
            return Err(RequestError::Removed);
        }
        self.wake();
        if !self.is_leader() {
            return Err(RequestError::NotLeader { leader_hint: self.leader() });
        }
        let pending = self.pending_requests();
        if pending >= self.cfg.pending_requests_max {
            return Err(RequestError::Busy { pending });
        }
        Ok(())
    }

    /// Appends one entry through `append` and tracks it as a pending proposal.
    pub(crate) fn propose_entry(
        &mut self,
        now: Instant,
        request_id: u64,
        kind: ProposalKind,
        append: impl FnOnce(&mut raft::RawNode<crate::group::PeerStorage<L, S>>) -> raft::Result<()>,
    ) -> Result<(), RequestError> {
        let before = self.raw.raft.raft_log.last_index();
        let result = append(&mut self.raw);
        self.after_raft();
        let index = self.raw.raft.raft_log.last_index();
        if result.is_err() || index == before {
            return Err(RequestError::ProposalDropped);
        }
        let term = self.raw.raft.term;
        self.proposals.insert(index, PendingProposal { request_id, term, kind, proposed_at: now });
        Ok(())
    }
}
