//! The `[transport]` section of the node configuration: TLS between nodes, QUIC timers,
//! per-peer queues, frame sizes and snapshot chunking. The node's identity and addresses
//! are in `[cluster]` ([`crate::cluster::config`]). Every key is documented in
//! `flotilla.example.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most data streams per peer (`forward-streams`).
pub const FORWARD_STREAMS_MAX: usize = 64;
/// Longest `forward-linger-us`.
pub const FORWARD_LINGER_US_MAX: u64 = 100_000;

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

/// The `[transport]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransportConfig {
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
    /// Snapshots larger than this travel as chunks of this size.
    pub snapshot_chunk_bytes: u32,
    /// Largest snapshot accepted (and sent), bytes; at most 4 GiB - 1.
    pub snapshot_bytes_max: u64,
    /// Snapshot bytes sent per second per peer at most (0: unlimited).
    pub snapshot_bytes_per_sec: u64,
    /// Bytes of frames being read on one peer connection at most (across its streams).
    pub conn_buffer_bytes_max: u64,
    /// Data streams per peer carrying forwarded publishes (1..=64).
    pub forward_streams: usize,
    /// Encoded bytes of forward batches queued per peer (across its data streams) at
    /// most; past it `send_forward` refuses new batches.
    pub forward_queue_bytes: u64,
    /// How long a publish waits for others to share its route match and forward batch,
    /// microseconds (0: none; at most 100,000). More messages per batch cost less CPU and
    /// fewer packets each; every forwarded message waits up to this long.
    pub forward_linger_us: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
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
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: u64::from(u32::MAX),
            snapshot_bytes_per_sec: 128 << 20,
            conn_buffer_bytes_max: 256 << 20,
            forward_streams: 8,
            forward_queue_bytes: 64 << 20,
            forward_linger_us: 1000,
        }
    }
}

/// Why a `[transport]` section is refused; each names its keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportConfigError {
    /// The keep-alive is zero or not below the idle timeout.
    #[error(
        "transport.keep-alive-ms = {keep_alive_ms} must be positive and below transport.idle-timeout-ms = {idle_timeout_ms}"
    )]
    KeepAlive {
        /// `keep-alive-ms`.
        keep_alive_ms: u64,
        /// `idle-timeout-ms`.
        idle_timeout_ms: u64,
    },
    /// The reconnect delays are zero or out of order.
    #[error("transport.reconnect-min-ms = {min_ms} must be positive and at most reconnect-max-ms = {max_ms}")]
    Reconnect {
        /// `reconnect-min-ms`.
        min_ms: u64,
        /// `reconnect-max-ms`.
        max_ms: u64,
    },
    /// A per-peer queue has no room.
    #[error("transport.{key} must be positive")]
    EmptyQueue {
        /// `send-queue-batches`, `snapshot-queue-len` or `forward-queue-bytes`.
        key: &'static str,
    },
    /// The frame limit is too small or below the coalescing target.
    #[error(
        "transport.frame-bytes-max = {max} must be at least 65536 and at least frame-bytes-target = {target}"
    )]
    FrameBytes {
        /// `frame-bytes-max`.
        max: u32,
        /// `frame-bytes-target`.
        target: u32,
    },
    /// Snapshot chunks would not fit a frame (or are tiny).
    #[error("transport.snapshot-chunk-bytes = {chunk} must be within 4096..=frame-bytes-max/2 ({})", frame_max / 2)]
    SnapshotChunk {
        /// `snapshot-chunk-bytes`.
        chunk: u32,
        /// `frame-bytes-max`.
        frame_max: u32,
    },
    /// The snapshot limit is below a frame or above 4 GiB - 1.
    #[error(
        "transport.snapshot-bytes-max = {value} must be within frame-bytes-max ({frame_max})..=4294967295"
    )]
    SnapshotBytesMax {
        /// `snapshot-bytes-max`.
        value: u64,
        /// `frame-bytes-max`.
        frame_max: u32,
    },
    /// A connection's read budget would not hold one largest frame.
    #[error("transport.conn-buffer-bytes-max = {value} must be at least frame-bytes-max = {frame_max}")]
    ConnBuffer {
        /// `conn-buffer-bytes-max`.
        value: u64,
        /// `frame-bytes-max`.
        frame_max: u32,
    },
    /// The number of data streams is out of range.
    #[error("transport.forward-streams = {0} must be within 1..={FORWARD_STREAMS_MAX}")]
    ForwardStreams(usize),
    /// The forward linger is out of range.
    #[error("transport.forward-linger-us = {0} must be at most {FORWARD_LINGER_US_MAX}")]
    ForwardLinger(u64),
    /// Mutual TLS without one of its files.
    #[error("transport.{key} is required with tls = \"mutual\"")]
    MissingTlsFile {
        /// `ca-cert`, `node-cert` or `node-key`.
        key: &'static str,
    },
    /// Development TLS with a cluster address other hosts could reach: the mode accepts
    /// any peer certificate, so off loopback anyone who can reach the port could join the
    /// cluster or pose as a node.
    #[error(
        "cluster.{key} = {addr} is not a loopback address, and transport.tls = \"dev-self-signed\" \
         (the default) accepts any peer, so it is allowed on loopback only; set \
         transport.tls = \"mutual\" with transport.ca-cert, transport.node-cert and transport.node-key \
         (`flotilla cert --dir DIR --nodes 1,2,3` writes a development CA and node certificates)"
    )]
    DevTlsNotLoopback {
        /// The `[cluster]` key the address comes from (`listen`, `advertise` or `join`).
        key: &'static str,
        /// The first cluster address that is not loopback.
        addr: SocketAddr,
    },
}

impl TransportConfig {
    /// Keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.keep_alive_ms)
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks the section's own rules.
    pub fn validate(&self) -> Result<(), TransportConfigError> {
        use TransportConfigError as E;
        if self.keep_alive_ms == 0 || self.keep_alive_ms >= self.idle_timeout_ms {
            return Err(E::KeepAlive {
                keep_alive_ms: self.keep_alive_ms,
                idle_timeout_ms: self.idle_timeout_ms,
            });
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(E::Reconnect { min_ms: self.reconnect_min_ms, max_ms: self.reconnect_max_ms });
        }
        if self.send_queue_batches == 0 {
            return Err(E::EmptyQueue { key: "send-queue-batches" });
        }
        if self.snapshot_queue_len == 0 {
            return Err(E::EmptyQueue { key: "snapshot-queue-len" });
        }
        if self.frame_bytes_max < 64 << 10 || self.frame_bytes_target > self.frame_bytes_max {
            return Err(E::FrameBytes { max: self.frame_bytes_max, target: self.frame_bytes_target });
        }
        if self.snapshot_chunk_bytes < 4096 || self.snapshot_chunk_bytes > self.frame_bytes_max / 2 {
            return Err(E::SnapshotChunk {
                chunk: self.snapshot_chunk_bytes,
                frame_max: self.frame_bytes_max,
            });
        }
        if self.snapshot_bytes_max > u64::from(u32::MAX)
            || self.snapshot_bytes_max < u64::from(self.frame_bytes_max)
        {
            return Err(E::SnapshotBytesMax {
                value: self.snapshot_bytes_max,
                frame_max: self.frame_bytes_max,
            });
        }
        if self.conn_buffer_bytes_max < u64::from(self.frame_bytes_max) {
            return Err(E::ConnBuffer { value: self.conn_buffer_bytes_max, frame_max: self.frame_bytes_max });
        }
        if !(1..=FORWARD_STREAMS_MAX).contains(&self.forward_streams) {
            return Err(E::ForwardStreams(self.forward_streams));
        }
        if self.forward_linger_us > FORWARD_LINGER_US_MAX {
            return Err(E::ForwardLinger(self.forward_linger_us));
        }
        if self.forward_queue_bytes == 0 {
            return Err(E::EmptyQueue { key: "forward-queue-bytes" });
        }
        if self.tls == TlsMode::Mutual {
            for (key, path) in
                [("ca-cert", &self.ca_cert), ("node-cert", &self.node_cert), ("node-key", &self.node_key)]
            {
                if path.as_os_str().is_empty() {
                    return Err(E::MissingTlsFile { key });
                }
            }
        }
        Ok(())
    }

    /// Checks the TLS mode against the node's cluster addresses (`[cluster]` listen,
    /// advertise and join, each with its key): development TLS is refused unless every one
    /// is loopback. An unspecified address (`0.0.0.0`, `[::]`) listens on every interface
    /// and is refused too; so is an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`), which
    /// is never taken for loopback.
    pub fn check_addresses(
        &self,
        addrs: impl IntoIterator<Item = (&'static str, SocketAddr)>,
    ) -> Result<(), TransportConfigError> {
        if self.tls == TlsMode::DevSelfSigned
            && let Some((key, addr)) = addrs.into_iter().find(|(_, a)| !a.ip().is_loopback())
        {
            return Err(TransportConfigError::DevTlsNotLoopback { key, addr });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_refused() {
        TransportConfig::default().validate().expect("defaults");
        let err = toml::from_str::<TransportConfig>("keep-alive-ms = 10\nbogus = 1\n").expect_err("unknown");
        assert!(err.to_string().contains("bogus"), "{err}");
        let cfg: TransportConfig =
            toml::from_str("coalesce = false\nframe-bytes-max = 131072\n").expect("parses");
        assert_eq!((cfg.coalesce, cfg.frame_bytes_max), (false, 131_072));
    }

    #[test]
    fn each_rule_gives_its_typed_error() {
        use TransportConfigError as E;
        let base = TransportConfig::default;
        let cases = [
            (TransportConfig { keep_alive_ms: 5000, ..base() }, "KeepAlive"),
            (TransportConfig { keep_alive_ms: 0, ..base() }, "KeepAlive"),
            (TransportConfig { reconnect_min_ms: 3000, ..base() }, "Reconnect"),
            (TransportConfig { send_queue_batches: 0, ..base() }, "EmptyQueue"),
            (TransportConfig { snapshot_queue_len: 0, ..base() }, "EmptyQueue"),
            (TransportConfig { frame_bytes_max: 1024, ..base() }, "FrameBytes"),
            (TransportConfig { snapshot_chunk_bytes: 1024, ..base() }, "SnapshotChunk"),
            (TransportConfig { snapshot_bytes_max: 1 << 32, ..base() }, "SnapshotBytesMax"),
            (TransportConfig { conn_buffer_bytes_max: 1 << 20, ..base() }, "ConnBuffer"),
            (TransportConfig { forward_streams: 0, ..base() }, "ForwardStreams"),
            (TransportConfig { forward_streams: 65, ..base() }, "ForwardStreams"),
            (TransportConfig { forward_queue_bytes: 0, ..base() }, "EmptyQueue"),
            (TransportConfig { forward_linger_us: 100_001, ..base() }, "ForwardLinger"),
            (TransportConfig { tls: TlsMode::Mutual, ..base() }, "MissingTlsFile"),
        ];
        for (cfg, kind) in cases {
            let err = cfg.validate().expect_err(kind);
            assert!(format!("{err:?}").starts_with(kind), "{kind}: {err:?}");
            assert!(err.to_string().starts_with("transport."), "{err}");
        }
        let err = TransportConfig { snapshot_queue_len: 0, ..base() }.validate().expect_err("queue");
        assert_eq!(err, E::EmptyQueue { key: "snapshot-queue-len" });
    }

    #[test]
    fn development_tls_is_for_loopback_addresses_only() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 7946));
        let public = SocketAddr::from(([10, 0, 0, 1], 7946));
        let dev = TransportConfig::default();
        dev.check_addresses([("listen", loopback)]).expect("loopback");
        assert_eq!(
            dev.check_addresses([("listen", loopback), ("join", public)]),
            Err(TransportConfigError::DevTlsNotLoopback { key: "join", addr: public })
        );
        let mutual = TransportConfig { tls: TlsMode::Mutual, ..TransportConfig::default() };
        mutual.check_addresses([("listen", public)]).expect("mutual TLS anywhere");
    }
}
