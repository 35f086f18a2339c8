//! The node's configuration: TOML with `deny_unknown_fields`, embedded defaults, and CLI
//! overrides applied on top. Every key is documented in `flotilla.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker::config::{BrokerConfig, ConfigError};
use crate::cluster::ClusterConfig;

/// Top-level node configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// MQTT TCP listen address.
    pub listen: SocketAddr,
    /// Directory for persistent data.
    pub data_dir: PathBuf,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax; `RUST_LOG` overrides it.
    pub log: String,
    /// Seconds graceful shutdown waits for connections to flush before exiting.
    pub shutdown_grace_secs: u16,
    /// Network reactor threads serving client sockets; 0 picks half the cores (at least 1,
    /// at most 8).
    pub io_threads: u16,
    /// Broker limits and behaviour.
    pub broker: BrokerConfig,
    /// Durability of sessions, queued messages, wills and retained messages.
    pub storage: StorageConfig,
    /// Clustering: node id, QUIC transport, TLS, admin endpoint (off with `node-id = 0`).
    pub cluster: ClusterConfig,
}

/// When journal writes are made durable.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// `fdatasync` every batch before acknowledging it (PUBACK/PUBREC wait for the disk).
    EveryBatch,
    /// `fdatasync` at most every `sync-interval-ms`; acknowledgements wait for it.
    Interval,
}

/// The `[storage]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageConfig {
    /// Persist broker state in `data-dir`; `false` keeps everything in memory.
    pub persistence: bool,
    /// When writes are made durable.
    pub sync: SyncMode,
    /// With `sync = "interval"`: the longest a write waits for its fsync, milliseconds.
    pub sync_interval_ms: u64,
    /// Journal segment size in bytes.
    pub segment_bytes: u32,
    /// Write a checkpoint (and delete the segments before it once it is durable) after this
    /// many journal bytes, or twice the last checkpoint's size if that is larger.
    pub checkpoint_bytes: u64,
    /// While more than this many bytes of journal records wait for the disk, no client is
    /// read (publishers wait in TCP), so a slow or failing disk cannot queue records without
    /// bound.
    pub max_journal_lag_bytes: u64,
    /// Cut a damaged journal at its first bad record instead of refusing to start
    /// (`--repair`; not a file setting).
    #[serde(skip)]
    pub repair: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            persistence: true,
            sync: SyncMode::EveryBatch,
            sync_interval_ms: 10,
            segment_bytes: 64 << 20,
            checkpoint_bytes: 256 << 20,
            max_journal_lag_bytes: 64 << 20,
            repair: false,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            data_dir: PathBuf::from("./data"),
            log: "info".into(),
            shutdown_grace_secs: 5,
            io_threads: 0,
            broker: BrokerConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error, naming the key.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigError),
    /// The `[cluster]` section is inconsistent.
    #[error("invalid configuration: {0}")]
    Cluster(String),
}

impl NodeConfig {
    /// Reactor threads to run: `io-threads`, or half the cores when it is 0. One reactor
    /// per two cores leaves the kernel's TCP work (most of a broker's CPU) and the core's
    /// lock room; measured per delivery, one reactor beat two on a 2-core machine.
    pub fn reactor_threads(&self) -> usize {
        match self.io_threads {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).clamp(1, 8),
            n => usize::from(n),
        }
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|source| LoadError::Parse { path: path.to_owned(), source })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.broker.validate()?;
        if self.io_threads > 64 {
            return Err(LoadError::Invalid(ConfigError::OutOfRange {
                field: "io-threads",
                value: self.io_threads.to_string(),
                rule: "it must be at most 64 (0 picks half the cores)",
            }));
        }
        let s = &self.storage;
        if s.sync == SyncMode::Interval && s.sync_interval_ms == 0 {
            return Err(LoadError::Invalid(ConfigError::OutOfRange {
                field: "storage.sync-interval-ms",
                value: "0".into(),
                rule: "it must be at least 1 with sync = \"interval\"",
            }));
        }
        if s.segment_bytes < 1 << 20 {
            return Err(LoadError::Invalid(ConfigError::OutOfRange {
                field: "storage.segment-bytes",
                value: s.segment_bytes.to_string(),
                rule: "it must be at least 1048576",
            }));
        }
        if s.checkpoint_bytes < u64::from(s.segment_bytes) {
            return Err(LoadError::Invalid(ConfigError::OutOfRange {
                field: "storage.checkpoint-bytes",
                value: s.checkpoint_bytes.to_string(),
                rule: "it must be at least segment-bytes",
            }));
        }
        self.cluster.validate().map_err(LoadError::Cluster)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_equals_defaults() {
        let text = include_str!("../flotilla.example.toml");
        let cfg = NodeConfig::from_toml(text).expect("example parses");
        assert_eq!(cfg, NodeConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = NodeConfig::from_toml("listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = NodeConfig::from_toml("[broker]\nmax-inflite = 3\n").unwrap_err();
        assert!(err.to_string().contains("max-inflite"), "{err}");
    }

    #[test]
    fn cluster_section_is_checked() {
        let cfg =
            NodeConfig::from_toml("[cluster]\nnode-id = 1\nlisten = \"10.0.0.1:7946\"\n").expect("parses");
        let err = cfg.validate().expect_err("dev TLS off loopback");
        assert!(err.to_string().contains("loopback"), "{err}");
        let cfg = NodeConfig::from_toml("[cluster]\nnode-id = 1\ntls = \"mutual\"\n").expect("parses");
        let err = cfg.validate().expect_err("mutual without files");
        assert!(err.to_string().contains("ca-cert"), "{err}");
        let err = NodeConfig::from_toml("[cluster]\nnode-idd = 1\n").expect_err("unknown key");
        assert!(err.to_string().contains("node-idd"), "{err}");
        let cfg =
            NodeConfig::from_toml("[cluster]\nnode-id = 2\njoin = [\"127.0.0.1:7000\"]\n").expect("parses");
        cfg.validate().expect("valid");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let cfg = NodeConfig::from_toml("[broker]\nmax-qos = 3\n").expect("parses");
        assert!(cfg.validate().is_err());
        // Matching recurses per level: a huge max-topic-levels is refused, not a stack risk.
        let cfg = NodeConfig::from_toml("[broker]\nmax-topic-levels = 100000\n").expect("parses");
        let err = cfg.validate().expect_err("max-topic-levels over 128");
        assert!(err.to_string().contains("max-topic-levels"), "{err}");
        let cfg = NodeConfig::from_toml("[broker]\nmax-filters-per-subscribe = 0\n").expect("parses");
        assert!(cfg.validate().is_err());
    }
}
