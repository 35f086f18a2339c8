//! The node's configuration: TOML with `deny_unknown_fields`, embedded defaults, and CLI
//! overrides applied on top. Every key is documented in `flotilla.example.toml`.
//!
//! Sections, each a struct next to the code it configures with its own `validate()` and
//! typed error: `[broker]` ([`BrokerConfig`]), `[storage]` ([`StorageConfig`], here),
//! `[cluster]` ([`ClusterConfig`]: node id, addresses, request deadline, MQTT bootstrap),
//! `[transport]` ([`TransportConfig`]: TLS, QUIC, frames, snapshots), `[raftstore]`
//! ([`RaftstoreConfig`]), `[pd]` ([`PlacementDriverConfig`]) and `[admin]`
//! ([`AdminConfig`]). [`NodeConfig`] composes them; the five cluster sections are checked
//! only when clustering is on (`cluster.node-id` positive).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::admin::config::{AdminConfig, AdminConfigError};
use crate::broker::config::{BrokerConfig, ConfigError};
use crate::cluster::config::{ClusterConfig, ClusterConfigError};
use crate::pd::config::{PdConfigError, PlacementDriverConfig};
use crate::raftstore::config::{RaftstoreConfig, RaftstoreConfigError};
use crate::transport::config::{TransportConfig, TransportConfigError};

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
    /// Log line format.
    pub log_format: LogFormat,
    /// Seconds graceful shutdown waits for connections to flush before exiting.
    pub shutdown_grace_secs: u16,
    /// Network reactor threads serving client sockets; 0 picks half the cores (at least 1,
    /// at most 8).
    pub io_threads: u16,
    /// Broker limits and behaviour.
    pub broker: BrokerConfig,
    /// Durability of sessions, queued messages, wills and retained messages.
    pub storage: StorageConfig,
    /// Clustering: node id, addresses, request deadline, MQTT keyspace bootstrap (off with
    /// `node-id = 0`).
    pub cluster: ClusterConfig,
    /// The QUIC transport between nodes: TLS, timers, queues, frames, snapshots.
    pub transport: TransportConfig,
    /// The multi-raft store: pollers, round batching, fsync.
    pub raftstore: RaftstoreConfig,
    /// The placement driver: voters, heartbeats, scheduling, node labels, split sizes.
    pub pd: PlacementDriverConfig,
    /// The admin HTTP endpoint.
    pub admin: AdminConfig,
}

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, `span`).
    Json,
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
            log_format: LogFormat::Text,
            shutdown_grace_secs: 5,
            io_threads: 0,
            broker: BrokerConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            transport: TransportConfig::default(),
            raftstore: RaftstoreConfig::default(),
            pd: PlacementDriverConfig::default(),
            admin: AdminConfig::default(),
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
    /// A cluster section (`[cluster]`, `[transport]`, `[raftstore]`, `[pd]`, `[admin]`) is
    /// invalid (the message is the section's; not a `source`, so it is printed once).
    #[error("invalid configuration: {0}")]
    Cluster(ClusterSectionError),
}

/// Why one of the cluster sections is refused: the section's own typed error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSectionError {
    /// `[cluster]`.
    #[error(transparent)]
    Cluster(#[from] ClusterConfigError),
    /// `[transport]` (including development TLS on a non-loopback `[cluster]` address).
    #[error(transparent)]
    Transport(#[from] TransportConfigError),
    /// `[raftstore]`.
    #[error(transparent)]
    Raftstore(#[from] RaftstoreConfigError),
    /// `[pd]`.
    #[error(transparent)]
    Pd(#[from] PdConfigError),
    /// `[admin]`.
    #[error(transparent)]
    Admin(#[from] AdminConfigError),
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
        // The admin endpoint also runs on a single node.
        self.admin.validate().map_err(|e| LoadError::Cluster(e.into()))?;
        self.validate_cluster().map_err(LoadError::Cluster)
    }

    /// Checks the cluster sections when clustering is on (with `node-id = 0` they are not
    /// used, and not checked).
    pub fn validate_cluster(&self) -> Result<(), ClusterSectionError> {
        if !self.cluster.enabled() {
            return Ok(());
        }
        self.cluster.validate()?;
        self.transport.validate()?;
        self.transport.check_addresses(self.cluster.addresses())?;
        self.raftstore.validate()?;
        self.pd.validate()?;
        self.admin.validate()?;
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
    fn the_example_names_every_key_of_every_section() {
        let text = include_str!("../flotilla.example.toml");
        let mut defaults = NodeConfig::default();
        defaults.cluster.advertise = Some(defaults.cluster.listen);
        defaults.admin.listen = Some(defaults.cluster.listen);
        defaults.admin.token_file = Some(PathBuf::from("admin.token"));
        let value = toml::Value::try_from(&defaults).expect("serializes");
        let sections =
            value.as_table().expect("a table").iter().filter_map(|(k, v)| Some((k, v.as_table()?)));
        for (section, table) in sections {
            assert!(text.contains(&format!("[{section}]")), "[{section}] missing from the example");
            for (key, v) in table {
                let line = if v.is_table() { format!("[{section}.{key}]") } else { format!("\n{key} =") };
                let commented = format!("#   {key} =");
                assert!(
                    text.contains(&line) || text.contains(&commented),
                    "{section}.{key} missing from the example"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = NodeConfig::from_toml("listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = NodeConfig::from_toml("[broker]\nmax-inflite = 3\n").unwrap_err();
        assert!(err.to_string().contains("max-inflite"), "{err}");
    }

    #[test]
    fn cluster_sections_are_checked() {
        let cfg =
            NodeConfig::from_toml("[cluster]\nnode-id = 1\nlisten = \"10.0.0.1:7946\"\n").expect("parses");
        let err = cfg.validate().expect_err("dev TLS off loopback");
        assert!(err.to_string().contains("loopback"), "{err}");
        let cfg =
            NodeConfig::from_toml("[cluster]\nnode-id = 1\n[transport]\ntls = \"mutual\"\n").expect("parses");
        let err = cfg.validate().expect_err("mutual without files");
        assert!(err.to_string().contains("ca-cert"), "{err}");
        let cfg =
            NodeConfig::from_toml("[cluster]\nnode-id = 2\njoin = [\"127.0.0.1:7000\"]\n").expect("parses");
        cfg.validate().expect("valid");
    }

    #[test]
    fn every_section_refuses_unknown_keys_and_old_flat_keys_are_refused() {
        for section in ["cluster", "transport", "raftstore", "pd", "admin"] {
            let err = NodeConfig::from_toml(&format!("[{section}]\nbogus-key = 1\n")).expect_err(section);
            assert!(err.to_string().contains("bogus-key"), "[{section}]: {err}");
        }
        for old in
            ["pd-voters = [1]", "admin-listen = \"127.0.0.1:1\"", "tls = \"mutual\"", "sync-writes = false"]
        {
            let err = NodeConfig::from_toml(&format!("[cluster]\n{old}\n")).expect_err(old);
            assert!(err.to_string().contains("unknown field"), "{old}: {err}");
        }
        let err = NodeConfig::from_toml("[pd]\nvoters = \"1,2\"\n").expect_err("wrong type");
        assert!(err.to_string().contains("voters"), "{err}");
    }

    #[test]
    fn each_invalid_section_gives_its_typed_error() {
        use ClusterSectionError as S;
        let on = |text: &str| NodeConfig::from_toml(&format!("[cluster]\nnode-id = 1\n{text}")).expect(text);
        type Check = fn(&ClusterSectionError) -> bool;
        let cases: [(&str, Check); 5] = [
            ("request-timeout-ms = 5\n", |e| matches!(e, S::Cluster(ClusterConfigError::RequestTimeout(5)))),
            ("[transport]\nkeep-alive-ms = 0\n", |e| {
                matches!(e, S::Transport(TransportConfigError::KeepAlive { .. }))
            }),
            ("[raftstore]\npoller-threads = 0\n", |e| {
                matches!(e, S::Raftstore(RaftstoreConfigError::NoPollerThreads))
            }),
            ("[pd]\nvoters = [1, 1]\n", |e| matches!(e, S::Pd(PdConfigError::Voters(_)))),
            ("[admin]\nlisten = \"0.0.0.0:9946\"\n", |e| {
                matches!(e, S::Admin(AdminConfigError::NotLoopback(_)))
            }),
        ];
        for (text, want) in cases {
            let err = on(text).validate_cluster().expect_err(text);
            assert!(want(&err), "{text}: {err:?}");
            assert!(matches!(on(text).validate(), Err(LoadError::Cluster(e)) if e == err));
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// Clustering on, with `[cluster]` changed by `f`.
    fn clustered(f: impl FnOnce(&mut ClusterConfig)) -> NodeConfig {
        let mut cfg = NodeConfig::default();
        cfg.cluster.node_id = 1;
        f(&mut cfg.cluster);
        cfg
    }

    /// The error for dev TLS on a non-loopback `key = value`: it names that key and value,
    /// the keys that turn mutual TLS on, and `flotilla cert`.
    fn assert_dev_tls_refused(cfg: &NodeConfig, key: &str, value: &str) {
        let err = cfg.validate().expect_err("dev TLS off loopback").to_string();
        assert!(err.contains(&format!("cluster.{key} = {value} is not a loopback address")), "{err}");
        for needed in ["transport.tls = \"mutual\"", "ca-cert", "node-cert", "node-key", "flotilla cert"] {
            assert!(err.contains(needed), "{err} should name {needed}");
        }
    }

    #[test]
    fn dev_tls_is_refused_when_listen_is_not_loopback() {
        for listen in ["10.0.0.1:7946", "0.0.0.0:7946", "[::]:7946", "[2001:db8::1]:7946"] {
            assert_dev_tls_refused(&clustered(|c| c.listen = addr(listen)), "listen", listen);
        }
        // The dev mode is the default: a bare public listen address is refused.
        let cfg =
            NodeConfig::from_toml("[cluster]\nnode-id = 3\nlisten = \"192.168.1.5:7946\"\n").expect("parses");
        assert_dev_tls_refused(&cfg, "listen", "192.168.1.5:7946");
    }

    #[test]
    fn dev_tls_is_refused_when_advertise_is_not_loopback() {
        for advertise in ["10.0.0.1:7946", "0.0.0.0:7946", "[::ffff:127.0.0.1]:7946"] {
            assert_dev_tls_refused(
                &clustered(|c| c.advertise = Some(addr(advertise))),
                "advertise",
                advertise,
            );
        }
    }

    #[test]
    fn dev_tls_is_refused_when_any_join_address_is_not_loopback() {
        let join = vec![addr("127.0.0.1:7001"), addr("[::1]:7002"), addr("10.1.2.3:7946")];
        assert_dev_tls_refused(&clustered(|c| c.join = join), "join", "10.1.2.3:7946");
    }

    #[test]
    fn dev_tls_is_allowed_when_every_cluster_address_is_loopback() {
        let cfg = clustered(|c| {
            c.listen = addr("127.0.0.1:0");
            c.advertise = Some(addr("127.0.0.2:7946"));
            c.join = vec![addr("127.0.0.1:7001"), addr("[::1]:7002")];
        });
        cfg.validate().expect("loopback only");
        clustered(|c| c.listen = addr("[::1]:7946")).validate().expect("IPv6 loopback");
    }

    #[test]
    fn mutual_tls_is_allowed_on_any_address() {
        let mut cfg = clustered(|c| {
            c.listen = addr("0.0.0.0:7946");
            c.advertise = Some(addr("10.0.0.1:7946"));
            c.join = vec![addr("10.0.0.2:7946")];
        });
        cfg.transport = TransportConfig {
            tls: crate::transport::TlsMode::Mutual,
            ca_cert: "ca.pem".into(),
            node_cert: "node-1.pem".into(),
            node_key: "node-1.key".into(),
            ..TransportConfig::default()
        };
        cfg.validate().expect("mutual TLS off loopback");
    }

    #[test]
    fn a_single_node_does_not_check_the_cluster_sections() {
        let mut cfg = NodeConfig::default();
        cfg.cluster.listen = addr("0.0.0.0:7946");
        cfg.validate().expect("node-id 0 runs no cluster: dev TLS off loopback is fine");
        let cfg = NodeConfig::from_toml("[transport]\nkeep-alive-ms = 0\n[pd]\nheartbeat-ms = 0\n")
            .expect("parses");
        cfg.validate().expect("clustering is off");
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
