//! The `[cluster]` section of the node configuration: identity, addresses, TLS, transport
//! tuning and the admin endpoint. Every key is documented in `flotilla.example.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How nodes authenticate each other.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Each node makes a throwaway self-signed certificate and accepts any peer's: for
    /// development on loopback only (refused on any other address).
    DevSelfSigned,
    /// Mutual TLS: both sides present a certificate signed by the cluster CA
    /// (`flotilla cert` makes a development CA and node certificates).
    Mutual,
}

/// The `[cluster]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// This node's id; 0 runs a single node with no cluster (the default).
    pub node_id: u64,
    /// UDP address of the QUIC transport.
    pub listen: SocketAddr,
    /// Address other nodes dial; unset = `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<SocketAddr>,
    /// Cluster addresses of existing nodes to introduce this node to.
    pub join: Vec<SocketAddr>,
    /// Node authentication.
    pub tls: TlsMode,
    /// With `tls = "mutual"`: PEM file of the cluster CA certificate.
    pub ca_cert: PathBuf,
    /// With `tls = "mutual"`: PEM file of this node's certificate.
    pub node_cert: PathBuf,
    /// With `tls = "mutual"`: PEM file of this node's private key.
    pub node_key: PathBuf,
    /// QUIC keep-alive interval, milliseconds.
    pub keep_alive_ms: u64,
    /// A connection silent for this long is dead, milliseconds.
    pub idle_timeout_ms: u64,
    /// First delay before reconnecting to a peer, milliseconds (doubles per failure).
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnection attempts, milliseconds.
    pub reconnect_max_ms: u64,
    /// Batches of raft messages queued per peer; more are dropped and counted.
    pub send_queue_batches: usize,
    /// Snapshots queued per peer; more are dropped and counted.
    pub snapshot_queue_len: usize,
    /// Coalesce queued batches into one frame per write (`false` sends one frame per
    /// message, for comparison).
    pub coalesce: bool,
    /// Largest frame accepted or sent, bytes.
    pub frame_bytes_max: u32,
    /// Target size of a coalesced frame, bytes.
    pub frame_bytes_target: u32,
    /// Raft poller threads.
    pub poller_threads: usize,
    /// Most groups one poll round handles (one log write and one fsync per round); 1
    /// turns round batching off.
    pub raft_batch_groups_max: usize,
    /// fsync the raft log (`false` only for benchmarks).
    pub sync_writes: bool,
    /// Admin HTTP endpoint address; unset = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Nodes hosting the placement driver's raft group (3 recommended); empty = this node
    /// finds the PD leader through its peers.
    pub pd_voters: Vec<u64>,
    /// How often a node sends its heartbeat to the PD leader.
    pub pd_heartbeat_ms: u64,
    /// How often the PD leader runs a scheduling round.
    pub pd_schedule_ms: u64,
    /// An unchanged range is re-reported every this many heartbeats.
    pub pd_refresh_beats: u64,
    /// A node silent this long is down.
    pub pd_node_down_after_ms: u64,
    /// Replicas of a node down this long are re-created elsewhere.
    pub pd_node_repair_after_ms: u64,
    /// Storage this node offers for replicas; balance targets are proportional to it.
    pub pd_capacity_bytes: u64,
    /// This node's failure-domain labels, e.g. `{ zone = "a" }`.
    pub pd_labels: std::collections::BTreeMap<String, String>,
    /// Label keys no two replicas of a range may share a value of (e.g. `["zone"]`).
    pub pd_isolation_labels: Vec<String>,
    /// A range with more keys than this is split in two.
    pub pd_split_keys: u64,
    /// A range with more bytes than this is split in two.
    pub pd_split_size_bytes: u64,
    /// Bytes of frames being read on one peer connection at most (across its streams).
    pub conn_buffer_bytes_max: u64,
    /// How long a request to a range leader may take, retries included, before the caller
    /// gets an error (MQTT clients then get a reason code).
    pub request_timeout_ms: u64,
    /// Snapshots larger than this travel as chunks of this size.
    pub snapshot_chunk_bytes: u32,
    /// Largest snapshot accepted (and sent), bytes; at most 4 GiB - 1.
    pub snapshot_bytes_max: u64,
    /// Snapshot bytes sent per second per peer at most (0: unlimited).
    pub snapshot_bytes_per_sec: u64,
    /// Whether the placement driver's leader creates the MQTT key families' ranges once
    /// its voters are up (sessions, routes, retained, message logs).
    pub mqtt_bootstrap: bool,
    /// Message-log ranges the bootstrap creates per PD voter.
    pub log_groups_per_node: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise: None,
            join: Vec::new(),
            tls: TlsMode::DevSelfSigned,
            ca_cert: PathBuf::new(),
            node_cert: PathBuf::new(),
            node_key: PathBuf::new(),
            keep_alive_ms: 1000,
            idle_timeout_ms: 5000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 2000,
            send_queue_batches: 1024,
            snapshot_queue_len: 16,
            coalesce: true,
            frame_bytes_max: 64 << 20,
            frame_bytes_target: 256 << 10,
            poller_threads: 2,
            raft_batch_groups_max: 256,
            sync_writes: true,
            admin_listen: None,
            pd_voters: Vec::new(),
            pd_heartbeat_ms: 1000,
            pd_schedule_ms: 250,
            pd_refresh_beats: 10,
            pd_node_down_after_ms: 10_000,
            pd_node_repair_after_ms: 30 * 60_000,
            pd_capacity_bytes: 1 << 40,
            pd_labels: std::collections::BTreeMap::new(),
            pd_isolation_labels: Vec::new(),
            pd_split_keys: 512_000,
            pd_split_size_bytes: 64 << 20,
            conn_buffer_bytes_max: 256 << 20,
            request_timeout_ms: 5000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: u64::from(u32::MAX),
            snapshot_bytes_per_sec: 128 << 20,
            mqtt_bootstrap: true,
            log_groups_per_node: 16,
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs in a cluster.
    pub fn enabled(&self) -> bool {
        self.node_id != 0
    }

    /// The address peers dial.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.keep_alive_ms)
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks cross-field rules; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.keep_alive_ms == 0 || self.keep_alive_ms >= self.idle_timeout_ms {
            return Err("cluster.keep-alive-ms must be positive and below cluster.idle-timeout-ms".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err("cluster.reconnect-min-ms must be positive and at most reconnect-max-ms".into());
        }
        if self.send_queue_batches == 0 || self.snapshot_queue_len == 0 {
            return Err("cluster.send-queue-batches and cluster.snapshot-queue-len must be positive".into());
        }
        if self.frame_bytes_max < 64 << 10 || self.frame_bytes_target > self.frame_bytes_max {
            return Err(
                "cluster.frame-bytes-max must be at least 65536 and at least frame-bytes-target".into()
            );
        }
        if self.poller_threads == 0 || self.raft_batch_groups_max == 0 {
            return Err("cluster.poller-threads and cluster.raft-batch-groups-max must be positive".into());
        }
        if self.pd_heartbeat_ms == 0 || self.pd_schedule_ms == 0 || self.pd_refresh_beats == 0 {
            return Err(
                "cluster.pd-heartbeat-ms, pd-schedule-ms and pd-refresh-beats must be positive".into()
            );
        }
        if self.pd_node_down_after_ms < 2 * self.pd_heartbeat_ms {
            return Err("cluster.pd-node-down-after-ms must be at least two heartbeats".into());
        }
        if self.pd_node_repair_after_ms < self.pd_node_down_after_ms {
            return Err("cluster.pd-node-repair-after-ms must be at least pd-node-down-after-ms".into());
        }
        if self.snapshot_chunk_bytes < 4096 || self.snapshot_chunk_bytes > self.frame_bytes_max / 2 {
            return Err("cluster.snapshot-chunk-bytes must be within 4096..=frame-bytes-max/2".into());
        }
        if self.snapshot_bytes_max > u64::from(u32::MAX)
            || self.snapshot_bytes_max < u64::from(self.frame_bytes_max)
        {
            return Err("cluster.snapshot-bytes-max must be within frame-bytes-max..=4294967295".into());
        }
        if self.conn_buffer_bytes_max < u64::from(self.frame_bytes_max) {
            return Err("cluster.conn-buffer-bytes-max must be at least frame-bytes-max".into());
        }
        if self.request_timeout_ms < 100 {
            return Err("cluster.request-timeout-ms must be at least 100".into());
        }
        if self.log_groups_per_node == 0 || self.log_groups_per_node > 256 {
            return Err("cluster.log-groups-per-node must be within 1..=256".into());
        }
        if self.pd_split_keys < 8 || self.pd_split_size_bytes < 1024 {
            return Err(
                "cluster.pd-split-keys must be at least 8 and pd-split-size-bytes at least 1024".into()
            );
        }
        if self.pd_capacity_bytes == 0 {
            return Err("cluster.pd-capacity-bytes must be positive".into());
        }
        let mut voters = self.pd_voters.clone();
        voters.sort_unstable();
        voters.dedup();
        if voters.len() != self.pd_voters.len() || voters.contains(&0) {
            return Err("cluster.pd-voters must be distinct positive node ids".into());
        }
        self.check_dev_tls_on_loopback()?;
        if let Some(admin) = self.admin_listen
            && !admin.ip().is_loopback()
        {
            return Err(format!(
                "cluster.admin-listen = {admin} is not a loopback address: the admin API has no authentication"
            ));
        }
        if self.tls == TlsMode::Mutual {
            for (key, path) in
                [("ca-cert", &self.ca_cert), ("node-cert", &self.node_cert), ("node-key", &self.node_key)]
            {
                if path.as_os_str().is_empty() {
                    return Err(format!("cluster.{key} is required with tls = \"mutual\""));
                }
            }
        }
        Ok(())
    }

    /// Every cluster address (`listen`, `advertise`, each `join`), with the key it comes
    /// from.
    fn cluster_addrs(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> + '_ {
        let own = [("listen", self.listen), ("advertise", self.advertise_addr())];
        own.into_iter().chain(self.join.iter().map(|&a| ("join", a)))
    }

    /// Mutual TLS is required unless every cluster address is loopback: the development
    /// mode accepts any peer certificate, so off loopback anyone who can reach the port
    /// could join the cluster or pose as a node. An unspecified address (`0.0.0.0`, `[::]`)
    /// listens on every interface and is refused too; so is an IPv4-mapped IPv6 address
    /// (`[::ffff:127.0.0.1]`), which is never taken for loopback.
    fn check_dev_tls_on_loopback(&self) -> Result<(), String> {
        if self.tls != TlsMode::DevSelfSigned {
            return Ok(());
        }
        match self.cluster_addrs().find(|(_, a)| !a.ip().is_loopback()) {
            None => Ok(()),
            Some((key, addr)) => Err(format!(
                "cluster.{key} = {addr} is not a loopback address, and cluster.tls = \"dev-self-signed\" \
                 (the default) accepts any peer, so it is allowed on loopback only; set \
                 cluster.tls = \"mutual\" with cluster.ca-cert, cluster.node-cert and cluster.node-key \
                 (`flotilla cert --dir DIR --nodes 1,2,3` writes a development CA and node certificates)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> ClusterConfig {
        ClusterConfig { node_id: 1, ..ClusterConfig::default() }
    }

    #[test]
    fn disabled_cluster_skips_every_check() {
        let cfg = ClusterConfig { keep_alive_ms: 0, ..ClusterConfig::default() };
        assert!(cfg.validate().is_ok());
        assert!(enabled().validate().is_ok());
    }

    #[test]
    fn admin_endpoint_must_be_loopback() {
        let cfg = ClusterConfig { admin_listen: Some(SocketAddr::from(([0, 0, 0, 0], 9946))), ..enabled() };
        assert!(cfg.validate().expect_err("public admin").contains("admin-listen"));
        let cfg = ClusterConfig { admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9946))), ..enabled() };
        assert!(cfg.validate().is_ok());
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// The error for dev TLS on a non-loopback `key = value`: it names that key and value,
    /// the keys that turn mutual TLS on, and `flotilla cert`.
    fn assert_dev_tls_refused(cfg: &ClusterConfig, key: &str, value: &str) {
        let err = cfg.validate().expect_err("dev TLS off loopback");
        assert!(err.contains(&format!("cluster.{key} = {value} is not a loopback address")), "{err}");
        for needed in ["tls = \"mutual\"", "ca-cert", "node-cert", "node-key", "flotilla cert"] {
            assert!(err.contains(needed), "{err} should name {needed}");
        }
    }

    #[test]
    fn dev_tls_is_refused_when_listen_is_not_loopback() {
        for listen in ["10.0.0.1:7946", "0.0.0.0:7946", "[::]:7946", "[2001:db8::1]:7946"] {
            let cfg = ClusterConfig { listen: addr(listen), ..enabled() };
            assert_dev_tls_refused(&cfg, "listen", listen);
        }
        // The dev mode is the default: a bare public listen address is refused.
        let cfg = ClusterConfig { node_id: 3, listen: addr("192.168.1.5:7946"), ..ClusterConfig::default() };
        assert_dev_tls_refused(&cfg, "listen", "192.168.1.5:7946");
    }

    #[test]
    fn dev_tls_is_refused_when_advertise_is_not_loopback() {
        for advertise in ["10.0.0.1:7946", "0.0.0.0:7946", "[::ffff:127.0.0.1]:7946"] {
            let cfg = ClusterConfig { advertise: Some(addr(advertise)), ..enabled() };
            assert_dev_tls_refused(&cfg, "advertise", advertise);
        }
    }

    #[test]
    fn dev_tls_is_refused_when_any_join_address_is_not_loopback() {
        let join = vec![addr("127.0.0.1:7001"), addr("[::1]:7002"), addr("10.1.2.3:7946")];
        let cfg = ClusterConfig { join, ..enabled() };
        assert_dev_tls_refused(&cfg, "join", "10.1.2.3:7946");
    }

    #[test]
    fn dev_tls_is_allowed_when_every_cluster_address_is_loopback() {
        let cfg = ClusterConfig {
            listen: addr("127.0.0.1:0"),
            advertise: Some(addr("127.0.0.2:7946")),
            join: vec![addr("127.0.0.1:7001"), addr("[::1]:7002")],
            ..enabled()
        };
        cfg.validate().expect("loopback only");
        let cfg = ClusterConfig { listen: addr("[::1]:7946"), ..enabled() };
        cfg.validate().expect("IPv6 loopback");
    }

    #[test]
    fn mutual_tls_is_allowed_on_any_address() {
        let cfg = ClusterConfig {
            tls: TlsMode::Mutual,
            listen: addr("0.0.0.0:7946"),
            advertise: Some(addr("10.0.0.1:7946")),
            join: vec![addr("10.0.0.2:7946")],
            ca_cert: "ca.pem".into(),
            node_cert: "node-1.pem".into(),
            node_key: "node-1.key".into(),
            ..enabled()
        };
        cfg.validate().expect("mutual TLS off loopback");
    }

    #[test]
    fn dev_tls_off_loopback_is_fine_while_clustering_is_off() {
        let cfg = ClusterConfig { listen: addr("0.0.0.0:7946"), ..ClusterConfig::default() };
        cfg.validate().expect("node-id 0 runs no cluster");
    }

    #[test]
    fn timing_and_limits_are_checked() {
        let bad = [
            ClusterConfig { keep_alive_ms: 5000, idle_timeout_ms: 5000, ..enabled() },
            ClusterConfig { reconnect_min_ms: 3000, reconnect_max_ms: 2000, ..enabled() },
            ClusterConfig { send_queue_batches: 0, ..enabled() },
            ClusterConfig { frame_bytes_max: 1024, ..enabled() },
            ClusterConfig { raft_batch_groups_max: 0, ..enabled() },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
