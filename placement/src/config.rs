//! CORE. Scheduler configuration: a plain struct with [`Default`] values taken from
//! ARCHITECTURE.md §14 and §18 (PD's values where ours are not set), checked once by
//! [`Config::validate`]. The core never parses anything; the service shell builds a `Config`
//! and the core trusts it after validation.
//!
//! Invariants checked by `validate`: every limit is positive, merge thresholds sit below split
//! thresholds (so a merge result is not split again at once), and timeouts are non-zero.

use std::collections::BTreeMap;

use crate::error::ConfigError;

const MIB: u64 = 1024 * 1024;

/// Split and merge thresholds for one keyspace family (ARCHITECTURE.md §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeLimits {
    /// Split a range once its approximate size exceeds this.
    pub split_size_bytes: u64,
    /// Split a range once its key count exceeds this.
    pub split_keys: u64,
    /// Split a range whose write rate exceeds this (load split; TiKV `byte_threshold`).
    pub load_split_write_bytes_per_sec: u64,
    /// Split a range whose write rate exceeds this many keys per second (TiKV `qps_threshold`).
    pub load_split_write_keys_per_sec: u64,
    /// A range is a merge candidate only below this size ...
    pub merge_size_bytes_max: u64,
    /// ... and below this key count ...
    pub merge_keys_max: u64,
    /// ... and below this write rate (a hot small range is not merged).
    pub merge_write_bytes_per_sec_max: u64,
}

impl Default for SizeLimits {
    fn default() -> Self {
        Self {
            split_size_bytes: 64 * MIB,
            split_keys: 512_000,
            load_split_write_bytes_per_sec: 30 * MIB,
            load_split_write_keys_per_sec: 3_000,
            merge_size_bytes_max: 16 * MIB,
            merge_keys_max: 128_000,
            merge_write_bytes_per_sec_max: MIB,
        }
    }
}

impl SizeLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        positive("split_size_bytes", self.split_size_bytes)?;
        positive("split_keys", self.split_keys)?;
        positive("load_split_write_bytes_per_sec", self.load_split_write_bytes_per_sec)?;
        positive("load_split_write_keys_per_sec", self.load_split_write_keys_per_sec)?;
        if self.merge_size_bytes_max >= self.split_size_bytes {
            return Err(invalid("merge_size_bytes_max", "must be below split_size_bytes"));
        }
        if self.merge_keys_max >= self.split_keys {
            return Err(invalid("merge_keys_max", "must be below split_keys"));
        }
        if self.merge_write_bytes_per_sec_max >= self.load_split_write_bytes_per_sec {
            return Err(invalid(
                "merge_write_bytes_per_sec_max",
                "must be below load_split_write_bytes_per_sec",
            ));
        }
        Ok(())
    }
}

/// Everything the scheduler core can be tuned by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Voters per range (PD `max-replicas`).
    pub replicas_per_range: usize,
    /// Node label keys that name failure domains (e.g. `["zone"]`). For each key, no two
    /// replicas of a range may sit on nodes with the same value. A node missing the label
    /// counts as the empty value, so two unlabelled nodes share a domain (PD's rule).
    pub isolation_labels: Vec<String>,
    /// A node whose last heartbeat is older than this is down (the liveness lease expiry).
    pub node_down_after_ms: u64,
    /// Replicas of a node down at least this long are re-created elsewhere
    /// (PD `max-store-down-time`).
    pub node_repair_after_ms: u64,
    /// Concurrent leader transfers per node, counted on both ends.
    pub leader_transfers_per_node_max: u32,
    /// Concurrent replica moves per node: adds (snapshots in) count on the target, removals on
    /// the source. A down source is exempt, since it does no work.
    pub replica_moves_per_node_max: u32,
    /// A node with this many replicas still catching up gets no new replicas
    /// (PD `max-pending-peer-count`).
    pub pending_replicas_per_node_max: u32,
    /// Cluster-wide concurrent operators that move replicas (balance, repair, evict).
    pub replica_ops_max: u32,
    /// Cluster-wide concurrent leader-only operators.
    pub leader_ops_max: u32,
    /// Cluster-wide concurrent split operators.
    pub split_ops_max: u32,
    /// Cluster-wide concurrent merge operators (PD `merge-schedule-limit`).
    pub merge_ops_max: u32,
    /// A range, or a boundary, created by a split is not merged for this long
    /// (PD `split-merge-interval`).
    pub split_merge_interval_ms: u64,
    /// Operators one scheduler may admit per [`crate::Coordinator::schedule`] call.
    pub ops_per_scheduler_round_max: u32,
    /// Ranges the patrol checks per `schedule` call, on top of suspects from heartbeats.
    pub patrol_ranges_per_round: u32,
    /// Suspect ranges (changed by a heartbeat, or left behind by a cancelled operator) checked
    /// per `schedule` call; the rest wait for the next call.
    pub suspects_per_round_max: u32,
    /// Random ranges a balance scheduler samples on a node before giving up on it this round.
    pub range_samples_per_node: u32,
    /// Balance only while the spread between source and target score exceeds this fraction of
    /// the mean score, in thousandths (20 = 2 %). Keeps balancing from chasing noise.
    pub balance_tolerance_permille: u32,
    /// Timeout of a leader transfer step.
    pub leader_transfer_timeout_ms: u64,
    /// Timeout of a membership change step (promote, remove), and the base of an add.
    pub conf_change_timeout_ms: u64,
    /// Slowest snapshot rate tolerated: an add-learner step times out after
    /// `conf_change_timeout_ms + size / snapshot_bytes_per_sec_min`.
    pub snapshot_bytes_per_sec_min: u64,
    /// Timeout of a split step.
    pub split_timeout_ms: u64,
    /// Timeout of a merge step (the peer-alignment steps before it have their own).
    pub merge_timeout_ms: u64,
    /// A step with no progress is sent to the leader again after this long.
    pub step_resend_ms: u64,
    /// Default split and merge thresholds.
    pub size_limits: SizeLimits,
    /// Per-keyspace overrides, keyed by the keyspace tag byte (the first key byte, §7).
    pub keyspace_limits: BTreeMap<u8, SizeLimits>,
    /// Merge ranges whose start keys are in different keyspaces (PD `enable-cross-table-merge`).
    pub merge_across_keyspaces: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            replicas_per_range: 3,
            isolation_labels: Vec::new(),
            node_down_after_ms: 10_000,
            node_repair_after_ms: 30 * 60_000,
            leader_transfers_per_node_max: 4,
            replica_moves_per_node_max: 8,
            pending_replicas_per_node_max: 64,
            replica_ops_max: 64,
            leader_ops_max: 64,
            split_ops_max: 32,
            merge_ops_max: 8,
            split_merge_interval_ms: 60 * 60_000,
            ops_per_scheduler_round_max: 64,
            patrol_ranges_per_round: 512,
            suspects_per_round_max: 4_096,
            range_samples_per_node: 16,
            balance_tolerance_permille: 20,
            leader_transfer_timeout_ms: 10_000,
            conf_change_timeout_ms: 30_000,
            snapshot_bytes_per_sec_min: 4 * MIB,
            split_timeout_ms: 60_000,
            merge_timeout_ms: 120_000,
            step_resend_ms: 5_000,
            size_limits: SizeLimits::default(),
            keyspace_limits: BTreeMap::new(),
            merge_across_keyspaces: false,
        }
    }
}

impl Config {
    /// Checks every field and the rules between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replicas_per_range == 0 {
            return Err(invalid("replicas_per_range", "must be at least 1"));
        }
        positive("node_down_after_ms", self.node_down_after_ms)?;
        if self.node_repair_after_ms < self.node_down_after_ms {
            return Err(invalid("node_repair_after_ms", "must be at least node_down_after_ms"));
        }
        for (field, value) in [
            ("leader_transfers_per_node_max", self.leader_transfers_per_node_max),
            ("replica_moves_per_node_max", self.replica_moves_per_node_max),
            ("pending_replicas_per_node_max", self.pending_replicas_per_node_max),
            ("replica_ops_max", self.replica_ops_max),
            ("leader_ops_max", self.leader_ops_max),
            ("split_ops_max", self.split_ops_max),
            ("merge_ops_max", self.merge_ops_max),
            ("ops_per_scheduler_round_max", self.ops_per_scheduler_round_max),
            ("patrol_ranges_per_round", self.patrol_ranges_per_round),
            ("suspects_per_round_max", self.suspects_per_round_max),
            ("range_samples_per_node", self.range_samples_per_node),
        ] {
            positive(field, u64::from(value))?;
        }
        if self.balance_tolerance_permille >= 1000 {
            return Err(invalid("balance_tolerance_permille", "must be below 1000"));
        }
        for (field, value) in [
            ("leader_transfer_timeout_ms", self.leader_transfer_timeout_ms),
            ("conf_change_timeout_ms", self.conf_change_timeout_ms),
            ("snapshot_bytes_per_sec_min", self.snapshot_bytes_per_sec_min),
            ("split_timeout_ms", self.split_timeout_ms),
            ("merge_timeout_ms", self.merge_timeout_ms),
            ("step_resend_ms", self.step_resend_ms),
        ] {
            positive(field, value)?;
        }
        self.size_limits.validate()?;
        for limits in self.keyspace_limits.values() {
            limits.validate()?;
        }
        Ok(())
    }

    /// The split and merge thresholds for a range starting at `start_key`.
    pub fn limits_for(&self, start_key: &[u8]) -> &SizeLimits {
        start_key.first().and_then(|tag| self.keyspace_limits.get(tag)).unwrap_or(&self.size_limits)
    }

    /// Majority of `replicas_per_range` voters.
    pub fn quorum(&self) -> usize {
        self.replicas_per_range / 2 + 1
    }
}

fn invalid(field: &'static str, reason: &'static str) -> ConfigError {
    ConfigError { field, reason }
}

fn positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 { Err(invalid(field, "must be positive")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn merge_threshold_must_sit_below_split() {
        let mut config = Config::default();
        config.size_limits.merge_size_bytes_max = config.size_limits.split_size_bytes;
        assert_eq!(config.validate().unwrap_err().field, "merge_size_bytes_max");
    }

    #[test]
    fn keyspace_override_applies_by_tag_byte() {
        let mut config = Config::default();
        let small = SizeLimits { split_size_bytes: 32 * MIB, ..SizeLimits::default() };
        config.keyspace_limits.insert(b'S', small.clone());
        assert_eq!(config.limits_for(b"S\x01abc"), &small);
        assert_eq!(config.limits_for(b"R\x01abc"), &config.size_limits);
        assert_eq!(config.limits_for(b""), &config.size_limits);
        config.validate().expect("override validates");
    }
}
