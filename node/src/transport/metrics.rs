//! SHELL. Transport counters, as plain atomics; [`TransportMetrics::snapshot`] copies them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one node's transport. All are monotonic.
        #[derive(Debug, Default)]
        pub struct TransportMetrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one instant.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct TransportSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl TransportMetrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> TransportSnapshot {
                TransportSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Group messages written to a stream.
    messages_sent,
    /// Frames written.
    frames_sent,
    /// Frames of raft messages written (the rest are hellos and address books).
    raft_frames_sent,
    /// Bytes written to streams, length prefixes included.
    bytes_sent,
    /// Group messages read and handed to the store.
    messages_received,
    /// Frames read.
    frames_received,
    /// Bytes read from streams, length prefixes included.
    bytes_received,
    /// Placement-driver messages read and handed to the node's PD service.
    pd_received,
    /// QUIC Retry packets sent to addresses not yet validated.
    retries_sent,
    /// Gossiped peers not learned: the address book is full.
    peers_refused,
    /// Requests read from peers.
    requests_received,
    /// Replies read from peers.
    replies_received,
    /// Requests and replies written to peers.
    control_sent,
    /// Messages the store (or the PD service) refused (full mailbox, unknown group, store stopped).
    messages_undelivered,
    /// Messages dropped because the peer's send queue was full.
    dropped_queue_full,
    /// Messages dropped because no address of the destination node is known.
    dropped_no_route,
    /// Messages dropped because the connection failed before they were written.
    dropped_disconnected,
    /// Messages dropped because they do not fit in a frame (or did not serialize).
    dropped_too_large,
    /// Snapshot messages sent on their own streams.
    snapshots_sent,
    /// Chunks of snapshots too large for one frame.
    snapshot_chunks_sent,
    /// Frames or streams refused as malformed or misaddressed.
    frames_rejected,
    /// Outgoing connections established.
    connects,
    /// Outgoing connection attempts that failed (unreachable, refused certificate).
    connect_failures,
    /// Incoming connections whose handshake failed (for example a certificate the CA did
    /// not sign).
    handshake_failures,
    /// Outgoing connections lost.
    disconnects,
    /// UDP bytes sent by all connections, QUIC overhead included (closed connections plus,
    /// in a snapshot from `QuicTransport::metrics`, the live ones).
    udp_bytes_sent,
    /// Forwarded publishes written to a data stream.
    forwards_sent,
    /// Forward batches (frames) written to data streams.
    forward_batches_sent,
    /// Writes to data streams (each carries every batch queued on its stream, up to about
    /// four `frame-bytes-target`).
    forward_writes,
    /// Payload bytes of the forwarded publishes written.
    forward_payload_bytes_sent,
    /// Bytes of forward frames written, length prefixes included (with
    /// `forward_payload_bytes_sent`: the wire overhead per payload byte).
    forward_bytes_sent,
    /// Forwarded publishes read from peers.
    forwards_received,
    /// Forwarded publishes not sent: no route, no connection, a full queue, a frame too
    /// large, or a connection lost before they were written.
    forwards_dropped,
    /// Forward batch ids acknowledged to peers.
    forward_acks_sent,
    /// Forward batch ids acknowledged by peers.
    forward_acks_received,
}

impl TransportMetrics {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
