//! CORE. Applying committed entries to the state machine, in log order, and answering the
//! proposals they settle.
//!
//! Apply is deterministic: it reads only the entry and the applied state (descriptor, map),
//! so every replica computes the same outcome for the same entry, including rejections
//! (a stale epoch, a key outside the range, an undecodable command leave the map as is).

use raft::eraftpb::{Entry, EntryType};

use crate::group::command::Command;
use crate::group::error::RequestError;
use crate::group::op::propose::ProposalKind;
use crate::group::peer::GroupPeer;
use crate::group::range::EpochCheck;
use crate::group::response::{Outcome, Response};
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Applies `entries` (committed, durable, ascending) and answers their proposals.
    pub(crate) fn apply_committed(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else { return };
        for entry in entries {
            if self.removed {
                break;
            }
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change_entry(&entry)
                }
            };
            self.raw.mut_store().set_applied(entry.index, entry.term);
            self.settle_proposals(&entry, outcome);
        }
        self.raw.advance_apply_to(last.min(self.storage().applied().0));
        self.after_raft();
        self.raw.mut_store().evict_cache();
    }

    fn apply_normal(&mut self, entry: &Entry) -> Result<Outcome, RequestError> {
        if entry.data.is_empty() {
            return Ok(Outcome::Noop);
        }
        let (epoch, cmd) = Command::decode(&entry.data)?;
        let desc = self.desc();
        desc.check_epoch(epoch, EpochCheck::Version)?;
        if let Command::Split { key, new_group } = cmd {
            return self.apply_split(key, new_group);
        }
        cmd.check_keys(desc)?;
        self.written.0 += 1;
        self.written.1 += entry.data.len() as u64;
        Ok(self.raw.mut_store().kv_mut().apply(&cmd))
    }

    /// Answers proposals at or below the applied entry.
    fn settle_proposals(&mut self, entry: &Entry, outcome: Result<Outcome, RequestError>) {
        let mut outcome = Some(outcome);
        while let Some(first) = self.proposals.first_entry() {
            if *first.key() > entry.index {
                break;
            }
            let (index, p) = first.remove_entry();
            let result = if index < entry.index || p.term != entry.term {
                Err(RequestError::StaleCommand)
            } else if p.kind == ProposalKind::ConfChange && entry.get_entry_type() == EntryType::EntryNormal {
                // raft-rs turns a conf change it refuses into an empty normal entry.
                Err(RequestError::AdminRejected("conf change refused by raft"))
            } else {
                if p.kind == ProposalKind::Write && p.term == self.raw.raft.term && self.is_leader() {
                    self.lease.renew(p.proposed_at, self.cfg.lease);
                }
                outcome.take().unwrap_or(Err(RequestError::StaleCommand))
            };
            self.responses.push(Response { request_id: p.request_id, result });
        }
    }

    /// A snapshot jumped the state machine to `index`: proposals at or below it may or may
    /// not have been applied.
    pub(crate) fn settle_proposals_for_snapshot(&mut self, index: u64) {
        while let Some(first) = self.proposals.first_entry() {
            if *first.key() > index {
                break;
            }
            let p = first.remove();
            self.responses
                .push(Response { request_id: p.request_id, result: Err(RequestError::OutcomeUnknown) });
        }
    }
}
