//! SHELL. Configuration of a [`Store`](super::Store).

use std::path::PathBuf;

use super::error::StoreError;
use crate::group::{NodeId, PeerConfig};

/// How a store runs its groups.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This node's id (= its raft id in every group).
    pub node_id: NodeId,
    /// The raft-engine directory.
    pub dir: PathBuf,
    /// Poller threads; 0 = manual mode: nothing runs until the caller calls
    /// [`Store::tick`](super::Store::tick) and [`Store::poll`](super::Store::poll).
    pub poller_threads: usize,
    /// Most groups a poller handles in one round (one log write, one fsync).
    pub batch_groups_max: usize,
    /// Capacity of each group's mailbox, in messages.
    pub mailbox_msgs_max: usize,
    /// Most mailbox messages one group handles per round (the rest wait a round).
    pub group_msgs_per_round_max: usize,
    /// fsync each round that raft says must be durable (`false` only for benchmarks).
    pub sync_writes: bool,
    /// How often the ticker asks raft-engine to purge expired log files (and checkpoints
    /// the groups that pin them).
    pub purge_interval: std::time::Duration,
    /// Seed of every replica's randomness (election timeouts), mixed with the group id.
    pub seed: u64,
    /// Per-replica configuration.
    pub peer: PeerConfig,
}

impl StoreConfig {
    /// Defaults for node `node_id` storing in `dir`: 2 pollers, batches of 256 groups.
    pub fn new(node_id: NodeId, dir: impl Into<PathBuf>, seed: u64) -> Self {
        Self {
            node_id,
            dir: dir.into(),
            poller_threads: 2,
            batch_groups_max: 256,
            mailbox_msgs_max: 4096,
            group_msgs_per_round_max: 1024,
            sync_writes: true,
            purge_interval: std::time::Duration::from_secs(10),
            seed,
            peer: PeerConfig::default(),
        }
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.node_id == 0 {
            return Err(StoreError::Config("node-id must be positive".into()));
        }
        if self.batch_groups_max == 0 || self.mailbox_msgs_max == 0 || self.group_msgs_per_round_max == 0 {
            return Err(StoreError::Config("batch, mailbox and per-round limits must be positive".into()));
        }
        self.peer.validate().map_err(|e| StoreError::Config(e.to_string()))
    }
}
