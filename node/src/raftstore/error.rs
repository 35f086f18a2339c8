//! SHELL. Errors of the store shell.

use crate::group::{GroupError, GroupId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No replica of the group lives on this store.
    #[error("group {0} not found on this store")]
    GroupNotFound(GroupId),
    /// The group's mailbox is full; retry later.
    #[error("group {0} mailbox full")]
    MailboxFull(GroupId),
    /// A log write failed earlier: the store accepts nothing more (restart to recover).
    #[error("store poisoned by a failed log write")]
    Poisoned,
    /// The store is shutting down.
    #[error("store stopped")]
    Stopped,
    /// raft-engine failed.
    #[error("raft-engine: {0}")]
    Engine(String),
    /// A replica could not be built from its persisted state.
    #[error("group {group}: {source}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        source: GroupError,
    },
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
}

impl From<raft_engine::Error> for StoreError {
    fn from(e: raft_engine::Error) -> Self {
        Self::Engine(e.to_string())
    }
}
