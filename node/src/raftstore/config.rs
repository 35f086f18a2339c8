//! SHELL. Configuration of a [`Store`](super::Store): [`StoreConfig`], what a store runs
//! with, and [`RaftstoreConfig`], the `[raftstore]` section of the node configuration
//! that fills it (documented in `flotilla.example.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// The `[raftstore]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RaftstoreConfig {
    /// Raft poller threads.
    pub poller_threads: usize,
    /// Most groups one poll round handles (one log write and one fsync per round); 1
    /// turns round batching off.
    pub raft_batch_groups_max: usize,
    /// fsync the raft log (`false` only for benchmarks).
    pub sync_writes: bool,
}

impl Default for RaftstoreConfig {
    fn default() -> Self {
        Self { poller_threads: 2, raft_batch_groups_max: 256, sync_writes: true }
    }
}

/// Why a `[raftstore]` section is refused; each names its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftstoreConfigError {
    /// No poller thread would run the groups.
    #[error("raftstore.poller-threads must be positive")]
    NoPollerThreads,
    /// A poll round could hold no group.
    #[error("raftstore.raft-batch-groups-max must be positive")]
    NoBatchGroups,
}

impl RaftstoreConfig {
    /// Checks the section's own rules.
    pub fn validate(&self) -> Result<(), RaftstoreConfigError> {
        if self.poller_threads == 0 {
            return Err(RaftstoreConfigError::NoPollerThreads);
        }
        if self.raft_batch_groups_max == 0 {
            return Err(RaftstoreConfigError::NoBatchGroups);
        }
        Ok(())
    }

    /// The store configuration of node `node_id` storing in `dir`, with this section's
    /// settings over [`StoreConfig::new`]'s defaults.
    pub fn store_config(&self, node_id: NodeId, dir: impl Into<PathBuf>, seed: u64) -> StoreConfig {
        let mut cfg = StoreConfig::new(node_id, dir, seed);
        cfg.poller_threads = self.poller_threads;
        cfg.batch_groups_max = self.raft_batch_groups_max;
        cfg.sync_writes = self.sync_writes;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_refuses_unknown_keys_and_fills_the_store_config() {
        let cfg: RaftstoreConfig =
            toml::from_str("poller-threads = 4\nsync-writes = false\n").expect("parses");
        let store = cfg.store_config(3, "/tmp/x", 3);
        assert_eq!((store.poller_threads, store.batch_groups_max, store.sync_writes), (4, 256, false));
        let err = toml::from_str::<RaftstoreConfig>("poller-thread = 4\n").expect_err("unknown key");
        assert!(err.to_string().contains("poller-thread"), "{err}");
    }

    #[test]
    fn each_rule_gives_its_typed_error() {
        RaftstoreConfig::default().validate().expect("defaults");
        let none = RaftstoreConfig { poller_threads: 0, ..RaftstoreConfig::default() };
        assert_eq!(none.validate(), Err(RaftstoreConfigError::NoPollerThreads));
        let none = RaftstoreConfig { raft_batch_groups_max: 0, ..RaftstoreConfig::default() };
        assert_eq!(none.validate(), Err(RaftstoreConfigError::NoBatchGroups));
    }
}
