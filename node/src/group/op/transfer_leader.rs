//! CORE. Leader transfer: the leader brings the transferee's log up to date, then tells it
//! to campaign at once (raft-rs `MsgTimeoutNow`); the transferee's votes bypass the other
//! followers' lease, so this leader stops serving lease reads for the rest of its term.
//!
//! There is no answer message: the shell sees the outcome as a `RoleChanged` event (this
//! replica becomes a follower of the transferee), or raft aborts the transfer after an
//! election timeout and this replica keeps leading.

use crate::group::error::RequestError;
use crate::group::peer::GroupPeer;
use crate::group::range::{Epoch, EpochCheck, NodeId};
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

/// A transferee may lag this many entries behind; further behind, the transfer is refused
/// (TiKV's `leader_transfer_max_log_lag`).
pub const TRANSFER_LOG_LAG_MAX: u64 = 128;

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Asks raft to hand leadership to voter `to`.
    pub fn transfer_leader(&mut self, epoch: Epoch, to: NodeId) -> Result<(), RequestError> {
        if self.removed {
            return Err(RequestError::Removed);
        }
        self.wake();
        if !self.is_leader() {
            return Err(RequestError::NotLeader { leader_hint: self.leader() });
        }
        self.desc().check_epoch(epoch, EpochCheck::Both)?;
        if to == self.node_id {
            return Err(RequestError::AdminRejected("already the leader"));
        }
        if !self.desc().voters.contains(&to) || self.desc().is_joint() {
            return Err(RequestError::AdminRejected("transferee is not a voter"));
        }
        let last = self.raw.raft.raft_log.last_index();
        let matched = self.raw.raft.prs().get(to).map_or(0, |pr| pr.matched);
        if matched + TRANSFER_LOG_LAG_MAX < last {
            return Err(RequestError::AdminRejected("transferee lags too far behind"));
        }
        self.lease.suspend();
        self.raw.transfer_leader(to);
        self.after_raft();
        Ok(())
    }
}
