//! CORE. Splitting a range in two (TiKV's batch-split, one cut at a time).
//!
//! The leader proposes `Command::Split { key, new_group }` (placing the key at the middle of
//! its data if none is given). Every replica applies it the same way: the range keeps
//! `[start, key)`, the new group gets `[key, end)` with the same voters and learners, both at
//! `version + 1`, and the pairs from `key` on move to the new group's state, handed to the
//! shell as a [`SplitChild`] to host (all replicas start the new group from the same state at
//! the initial index, so no snapshot is needed). A split proposed against an old version, or
//! inside a joint configuration, or at a key not strictly inside the range, is refused on
//! every replica alike.

use std::time::Instant;

use crate::group::command::Command;
use crate::group::error::RequestError;
use crate::group::op::propose::ProposalKind;
use crate::group::peer::{GroupPeer, SplitChild};
use crate::group::range::{Epoch, EpochCheck, GroupId, RangeDescriptor};
use crate::group::response::Outcome;
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Proposes splitting the range at `key` (or the middle of its data) into `new_group`.
    pub fn propose_split(
        &mut self,
        now: Instant,
        request_id: u64,
        epoch: Epoch,
        key: Option<Vec<u8>>,
        new_group: GroupId,
    ) -> Result<(), RequestError> {
        self.admit_request()?;
        self.desc().check_epoch(epoch, EpochCheck::Version)?;
        let key = match key {
            Some(k) => k,
            None => self
                .kv()
                .split_key()
                .ok_or(RequestError::AdminRejected("an empty range has no middle to split at"))?,
        };
        check_split(self.desc(), &key, new_group)?;
        let data = Command::Split { key, new_group }.encode(self.desc().epoch);
        self.propose_entry(now, request_id, ProposalKind::Write, |raw| raw.propose(Vec::new(), data))
    }

    /// Applies a committed split (its epoch already checked).
    pub(crate) fn apply_split(&mut self, key: Vec<u8>, new_group: GroupId) -> Result<Outcome, RequestError> {
        check_split(self.desc(), &key, new_group)?;
        let campaign = self.is_leader();
        let store = self.raw.mut_store();
        let right_kv = store.kv_mut().split_off(&key);
        let desc = store.desc_mut();
        desc.epoch.version += 1;
        let right = RangeDescriptor {
            id: new_group,
            start: key.clone(),
            end: std::mem::replace(&mut desc.end, key),
            epoch: desc.epoch,
            voters: desc.voters.clone(),
            outgoing: Vec::new(),
            learners: desc.learners.clone(),
        };
        self.splits.push(SplitChild { desc: right.clone(), kv: right_kv, campaign });
        Ok(Outcome::Split(right))
    }
}

fn check_split(desc: &RangeDescriptor, key: &[u8], new_group: GroupId) -> Result<(), RequestError> {
    if desc.is_joint() {
        return Err(RequestError::AdminRejected("no split inside a joint configuration"));
    }
    if key <= desc.start.as_slice() || (!desc.end.is_empty() && key >= desc.end.as_slice()) {
        return Err(RequestError::AdminRejected("the split key is not strictly inside the range"));
    }
    if new_group == 0 || new_group == desc.id {
        return Err(RequestError::AdminRejected("bad id for the new group"));
    }
    Ok(())
}
