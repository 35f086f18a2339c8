//! The `[pd]` section of the node configuration: where the placement driver runs, how
//! often nodes report to it and it schedules, when a node counts as down or lost, this
//! node's capacity and labels, and when ranges split. [`PlacementDriverConfig::service_config`]
//! turns it into what the [`PdService`](super::PdService) runs with. Every key is documented
//! in `flotilla.example.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DriverConfig;
use super::service::{BootstrapConfig, PdConfig};
use crate::group::NodeId;

/// The `[pd]` section (the placement driver's settings; [`PdConfig`] is the service's
/// runtime form of it).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlacementDriverConfig {
    /// Nodes hosting the placement driver's raft group (3 recommended); empty = this node
    /// finds the PD leader through its peers.
    pub voters: Vec<NodeId>,
    /// How often a node sends its heartbeat to the PD leader.
    pub heartbeat_ms: u64,
    /// How often the PD leader runs a scheduling round.
    pub schedule_ms: u64,
    /// An unchanged range is re-reported every this many heartbeats.
    pub refresh_beats: u64,
    /// A node silent this long is down.
    pub node_down_after_ms: u64,
    /// Replicas of a node down this long are re-created elsewhere.
    pub node_repair_after_ms: u64,
    /// Storage this node offers for replicas; balance targets are proportional to it.
    pub capacity_bytes: u64,
    /// This node's failure-domain labels, e.g. `{ zone = "a" }`.
    pub labels: BTreeMap<String, String>,
    /// Label keys no two replicas of a range may share a value of (e.g. `["zone"]`).
    pub isolation_labels: Vec<String>,
    /// A range with more keys than this is split in two.
    pub split_keys: u64,
    /// A range with more bytes than this is split in two.
    pub split_size_bytes: u64,
}

impl Default for PlacementDriverConfig {
    fn default() -> Self {
        Self {
            voters: Vec::new(),
            heartbeat_ms: 1000,
            schedule_ms: 250,
            refresh_beats: 10,
            node_down_after_ms: 10_000,
            node_repair_after_ms: 30 * 60_000,
            capacity_bytes: 1 << 40,
            labels: BTreeMap::new(),
            isolation_labels: Vec::new(),
            split_keys: 512_000,
            split_size_bytes: 64 << 20,
        }
    }
}

/// Why a `[pd]` section is refused; each names its keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PdConfigError {
    /// A period or count that must be positive is zero.
    #[error("pd.{key} must be positive")]
    Zero {
        /// `heartbeat-ms`, `schedule-ms`, `refresh-beats` or `capacity-bytes`.
        key: &'static str,
    },
    /// A node would be declared down between two of its heartbeats.
    #[error(
        "pd.node-down-after-ms = {down_after_ms} must be at least two heartbeats (2 x heartbeat-ms = {heartbeat_ms})"
    )]
    NodeDownTooSoon {
        /// `node-down-after-ms`.
        down_after_ms: u64,
        /// `heartbeat-ms`.
        heartbeat_ms: u64,
    },
    /// Replicas would be repaired before their node counts as down.
    #[error(
        "pd.node-repair-after-ms = {repair_after_ms} must be at least node-down-after-ms = {down_after_ms}"
    )]
    RepairBeforeDown {
        /// `node-repair-after-ms`.
        repair_after_ms: u64,
        /// `node-down-after-ms`.
        down_after_ms: u64,
    },
    /// Ranges would split at a tiny size.
    #[error(
        "pd.split-keys = {split_keys} must be at least 8 and pd.split-size-bytes = {split_size_bytes} at least 1024"
    )]
    SplitTooSmall {
        /// `split-keys`.
        split_keys: u64,
        /// `split-size-bytes`.
        split_size_bytes: u64,
    },
    /// The voter list names a node twice, or node 0.
    #[error("pd.voters = {0:?} must be distinct positive node ids")]
    Voters(Vec<NodeId>),
}

impl PlacementDriverConfig {
    /// Checks the section's own rules.
    pub fn validate(&self) -> Result<(), PdConfigError> {
        use PdConfigError as E;
        for (key, value) in [
            ("heartbeat-ms", self.heartbeat_ms),
            ("schedule-ms", self.schedule_ms),
            ("refresh-beats", self.refresh_beats),
        ] {
            if value == 0 {
                return Err(E::Zero { key });
            }
        }
        if self.node_down_after_ms < 2 * self.heartbeat_ms {
            let (down_after_ms, heartbeat_ms) = (self.node_down_after_ms, self.heartbeat_ms);
            return Err(E::NodeDownTooSoon { down_after_ms, heartbeat_ms });
        }
        if self.node_repair_after_ms < self.node_down_after_ms {
            let (repair_after_ms, down_after_ms) = (self.node_repair_after_ms, self.node_down_after_ms);
            return Err(E::RepairBeforeDown { repair_after_ms, down_after_ms });
        }
        if self.split_keys < 8 || self.split_size_bytes < 1024 {
            let (split_keys, split_size_bytes) = (self.split_keys, self.split_size_bytes);
            return Err(E::SplitTooSmall { split_keys, split_size_bytes });
        }
        if self.capacity_bytes == 0 {
            return Err(E::Zero { key: "capacity-bytes" });
        }
        let mut voters = self.voters.clone();
        voters.sort_unstable();
        voters.dedup();
        if voters.len() != self.voters.len() || voters.contains(&0) {
            return Err(E::Voters(self.voters.clone()));
        }
        Ok(())
    }

    /// What the PD service runs with: this section, and from `[cluster]` whether to
    /// bootstrap the MQTT keyspace (`mqtt_bootstrap`) with how many message-log ranges per
    /// PD voter (`log_groups_per_node`).
    pub fn service_config(&self, mqtt_bootstrap: bool, log_groups_per_node: u32) -> PdConfig {
        let defaults = placement::SizeLimits::default();
        let size_limits = placement::SizeLimits {
            split_size_bytes: self.split_size_bytes,
            split_keys: self.split_keys,
            merge_size_bytes_max: defaults.merge_size_bytes_max.min(self.split_size_bytes / 4),
            merge_keys_max: defaults.merge_keys_max.min(self.split_keys / 4),
            ..defaults
        };
        // Message-log ranges are fixed hash slices (CLUSTER.md 2.4): never split or merged.
        let fixed = placement::SizeLimits {
            split_size_bytes: u64::MAX,
            split_keys: u64::MAX,
            load_split_write_bytes_per_sec: u64::MAX,
            load_split_write_keys_per_sec: u64::MAX,
            merge_size_bytes_max: 0,
            merge_keys_max: 0,
            merge_write_bytes_per_sec_max: 0,
        };
        let placement = placement::Config {
            keyspace_limits: [(crate::cluster::keys::FAMILY_LOGS, fixed)].into_iter().collect(),
            size_limits,
            node_down_after_ms: self.node_down_after_ms,
            node_repair_after_ms: self.node_repair_after_ms,
            isolation_labels: self.isolation_labels.clone(),
            ..placement::Config::default()
        };
        PdConfig {
            voters: self.voters.clone(),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            schedule: Duration::from_millis(self.schedule_ms),
            refresh_beats: self.refresh_beats,
            capacity_bytes: self.capacity_bytes,
            labels: self.labels.clone(),
            driver: DriverConfig {
                placement,
                // Every node re-sends all its ranges within a heartbeat or two of a new leader.
                warmup_ms: self.heartbeat_ms.saturating_mul(3),
                default_capacity_bytes: self.capacity_bytes,
            },
            bootstrap: mqtt_bootstrap.then(|| BootstrapConfig {
                replicas: 3,
                log_groups: log_groups_per_node.saturating_mul(self.voters.len().max(1) as u32),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_without_the_old_prefix_and_refuses_unknown_keys() {
        let text =
            "voters = [1, 2, 3]\nsplit-keys = 100\nisolation-labels = [\"zone\"]\n\n[labels]\nzone = \"a\"\n";
        let cfg: PlacementDriverConfig = toml::from_str(text).expect("parses");
        assert_eq!((cfg.voters.as_slice(), cfg.split_keys), (&[1, 2, 3][..], 100));
        assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
        let err = toml::from_str::<PlacementDriverConfig>("pd-voters = [1]\n").expect_err("old name");
        assert!(err.to_string().contains("pd-voters"), "{err}");
    }

    #[test]
    fn each_rule_gives_its_typed_error() {
        use PdConfigError as E;
        let base = PlacementDriverConfig::default;
        base().validate().expect("defaults");
        let cases = [
            (PlacementDriverConfig { heartbeat_ms: 0, ..base() }, E::Zero { key: "heartbeat-ms" }),
            (PlacementDriverConfig { refresh_beats: 0, ..base() }, E::Zero { key: "refresh-beats" }),
            (PlacementDriverConfig { capacity_bytes: 0, ..base() }, E::Zero { key: "capacity-bytes" }),
            (
                PlacementDriverConfig { node_down_after_ms: 1500, ..base() },
                E::NodeDownTooSoon { down_after_ms: 1500, heartbeat_ms: 1000 },
            ),
            (
                PlacementDriverConfig { node_repair_after_ms: 5000, ..base() },
                E::RepairBeforeDown { repair_after_ms: 5000, down_after_ms: 10_000 },
            ),
            (
                PlacementDriverConfig { split_keys: 7, ..base() },
                E::SplitTooSmall { split_keys: 7, split_size_bytes: 64 << 20 },
            ),
            (PlacementDriverConfig { voters: vec![1, 2, 1], ..base() }, E::Voters(vec![1, 2, 1])),
            (PlacementDriverConfig { voters: vec![0], ..base() }, E::Voters(vec![0])),
        ];
        for (cfg, want) in cases {
            assert_eq!(cfg.validate(), Err(want));
        }
    }

    #[test]
    fn the_service_config_carries_the_section() {
        let cfg = PlacementDriverConfig { voters: vec![1, 2, 3], split_keys: 400, ..Default::default() };
        let svc = cfg.service_config(true, 16);
        assert_eq!(svc.heartbeat, Duration::from_secs(1));
        assert_eq!(svc.driver.warmup_ms, 3000);
        assert_eq!(svc.driver.placement.size_limits.split_keys, 400);
        assert_eq!(svc.driver.placement.size_limits.merge_keys_max, 100);
        assert_eq!(svc.bootstrap.map(|b| b.log_groups), Some(48));
        assert!(cfg.service_config(false, 16).bootstrap.is_none());
    }

    #[test]
    fn message_log_ranges_are_never_split_or_merged() {
        let cfg = PlacementDriverConfig::default().service_config(true, 16);
        let placement = &cfg.driver.placement;
        placement.validate().expect("valid placement config");
        let logs = placement.limits_for(&[crate::cluster::keys::FAMILY_LOGS, 0x80, 1]);
        assert_eq!((logs.split_keys, logs.split_size_bytes, logs.merge_keys_max), (u64::MAX, u64::MAX, 0));
        let sessions = placement.limits_for(b"S\x00\x01");
        assert!(sessions.split_keys < u64::MAX, "other families split as configured");
    }
}
