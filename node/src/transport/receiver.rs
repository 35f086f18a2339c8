//! SHELL. The incoming side of the transport: accept connections (the TLS handshake checks
//! the peer's certificate), accept uni streams, read frames and hand messages to the store.
//!
//! A stream must open with `Hello`; a malformed frame, a message not from the stream's node
//! or not to this node, or an oversized length prefix closes the connection with an error
//! code and is counted: it never panics and never reaches a group.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::{Frame, FrameError, LEN_PREFIX_BYTES, Reassembly, payload_len};
use super::metrics::TransportMetrics;
use super::quic::{Control, Shared, stopped};
use super::tls;
use crate::group::NodeId;

/// Application close code for a protocol violation.
const CLOSE_PROTOCOL: u32 = 1;

/// Why a stream stopped being read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream did not open with Hello from another node")]
    NoHello,
    #[error("a frame of {0} bytes would pass the connection's buffer budget")]
    Budget(usize),
    #[error("node {0} presented a certificate that does not name it")]
    Identity(NodeId),
    #[error("message from node {from} to node {to} on a stream of node {peer}")]
    Misaddressed { from: NodeId, to: NodeId, peer: NodeId },
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            incoming = shared.endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        // A peer must prove it owns its address (QUIC Retry) before the server spends a
        // handshake on it: a spoofed flood costs one stateless packet each.
        if !incoming.remote_address_validated() {
            match incoming.retry() {
                Ok(()) => TransportMetrics::add(&shared.metrics.retries_sent, 1),
                Err(e) => tracing::debug!(error = %e, "retry not sent"),
            }
            continue;
        }
        tokio::spawn(serve_connection(Arc::clone(&shared), incoming));
    }
}

/// Bytes of frames being read on one connection, across its streams: a frame's announced
/// length is reserved before it is read, and a connection past `max` is closed, so peers
/// cannot make this node hold `streams x frame-bytes-max`.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    used: AtomicU64,
}

impl Budget {
    /// Reserves `n` bytes; false (nothing reserved) if that would pass `max`.
    pub(crate) fn take(&self, n: u64, max: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|t| *t <= max))
            .is_ok()
    }

    /// Returns `n` reserved bytes.
    pub(crate) fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Largest first frame (the `Hello`) of a stream.
const HELLO_BYTES_MAX: u32 = 64 << 10;
/// Bytes read from a stream at a time: a frame's buffer grows as its bytes arrive.
const READ_PIECE_BYTES: usize = 64 << 10;
/// Handshake failures are logged at warn level at most once per this many milliseconds.
const HANDSHAKE_WARN_EVERY_MS: u64 = 10_000;

async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            TransportMetrics::add(&shared.metrics.handshake_failures, 1);
            if shared.warn_handshake_now(HANDSHAKE_WARN_EVERY_MS) {
                tracing::warn!(%remote, error = %e, "refused cluster connection (more are counted, not logged, for 10 s)");
            } else {
                tracing::debug!(%remote, error = %e, "refused cluster connection");
            }
            return;
        }
    };
    shared.track(&conn);
    let peer = Arc::new(AtomicU64::new(0));
    let budget = Arc::new(Budget::default());
    loop {
        match conn.accept_uni().await {
            Ok(stream) => {
                let (shared, conn, peer, budget) =
                    (Arc::clone(&shared), conn.clone(), Arc::clone(&peer), Arc::clone(&budget));
                tokio::spawn(async move { read_stream(shared, conn, stream, peer, budget).await });
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "incoming connection ended");
                break;
            }
        }
    }
    shared.untrack(&conn);
    let node = peer.load(Ordering::Relaxed);
    if node != 0 && !shared.is_shutdown() {
        shared.peer_down(node);
    }
}

async fn read_stream(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    mut stream: quinn::RecvStream,
    peer: Arc<AtomicU64>,
    budget: Arc<Budget>,
) {
    if let Err(e) = read_frames(&shared, &conn, &mut stream, &peer, &budget).await {
        if matches!(e, ReadError::Read(_)) {
            tracing::debug!(remote = %conn.remote_address(), error = %e, "stream ended");
        } else {
            TransportMetrics::add(&shared.metrics.frames_rejected, 1);
            tracing::warn!(remote = %conn.remote_address(), error = %e, "closing a misbehaving cluster connection");
            conn.close(CLOSE_PROTOCOL.into(), b"protocol violation");
        }
    }
}

/// Reads one frame; `None` at a clean end of stream.
/// Reads one frame of at most `max` bytes, its buffer growing as bytes arrive and its
/// announced length reserved from the connection's `budget` meanwhile; `None` at a clean
/// end of stream.
async fn read_frame(
    shared: &Shared,
    stream: &mut quinn::RecvStream,
    max: u32,
    budget: &Budget,
) -> Result<Option<Frame>, ReadError> {
    let mut prefix = [0; LEN_PREFIX_BYTES];
    match stream.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = payload_len(prefix, max)?;
    if !budget.take(len as u64, shared.cfg.conn_buffer_bytes_max) {
        return Err(ReadError::Budget(len));
    }
    let result = read_payload(stream, len).await;
    budget.give(len as u64);
    let payload = result?;
    TransportMetrics::add(&shared.metrics.frames_received, 1);
    TransportMetrics::add(&shared.metrics.bytes_received, (len + LEN_PREFIX_BYTES) as u64);
    Ok(Some(Frame::decode(&payload)?))
}

async fn read_payload(stream: &mut quinn::RecvStream, len: usize) -> Result<Vec<u8>, ReadError> {
    let mut payload = Vec::with_capacity(len.min(READ_PIECE_BYTES));
    while payload.len() < len {
        let at = payload.len();
        let piece = (len - at).min(READ_PIECE_BYTES);
        payload.resize(at + piece, 0);
        stream.read_exact(&mut payload[at..]).await?;
    }
    Ok(payload)
}

/// Acts on one frame from `node`.
fn handle_frame(shared: &Arc<Shared>, node: NodeId, frame: Frame) -> Result<(), ReadError> {
    if shared.blocked.load(Ordering::Relaxed) {
        // Fault injection: this node hears nothing.
        return Ok(());
    }
    match frame {
        Frame::Raft(msgs) => {
            for m in msgs {
                if m.from != node || m.to != shared.node_id {
                    return Err(ReadError::Misaddressed { from: m.from, to: m.to, peer: node });
                }
                shared.deliver(m);
            }
        }
        Frame::Peers(book) => shared.learn_book(book),
        Frame::Pd(body) => shared.deliver_pd(node, body),
        Frame::Requests(reqs) => shared.deliver_requests(node, reqs),
        Frame::Replies(replies) => shared.deliver_replies(node, replies),
        Frame::Ping { nonce, .. } => {
            let pong = Control::Pong { incarnation: shared.incarnation, nonce };
            shared.send_control(node, pong);
        }
        Frame::Pong { incarnation, .. } => shared.pong(node, incarnation),
        Frame::Forward(batch) => shared.deliver_forwards(node, batch),
        Frame::ForwardAck(ids) => shared.forward_acks(node, ids),
        Frame::Hello { .. } | Frame::Chunk { .. } => return Err(ReadError::NoHello),
    }
    Ok(())
}

async fn read_frames(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    peer: &AtomicU64,
    budget: &Budget,
) -> Result<(), ReadError> {
    let node = match read_frame(shared, stream, HELLO_BYTES_MAX, budget).await? {
        Some(Frame::Hello { node_id, addr }) if node_id != 0 && node_id != shared.node_id => {
            if shared.check_names && !tls::peer_is_node(conn, node_id) {
                return Err(ReadError::Identity(node_id));
            }
            shared.learn(node_id, addr, true);
            node_id
        }
        _ => return Err(ReadError::NoHello),
    };
    peer.store(node, Ordering::Relaxed);
    let mut assembly = Reassembly::default();
    while let Some(frame) = read_frame(shared, stream, shared.cfg.frame_bytes_max, budget).await? {
        let frame = match frame {
            Frame::Chunk { total, data } => {
                match assembly.push(total, &data, shared.cfg.snapshot_bytes_max)? {
                    // A reassembled payload is one whole frame, never another chunk.
                    Some(payload) => match Frame::decode(&payload)? {
                        Frame::Chunk { .. } => return Err(ReadError::NoHello),
                        whole => whole,
                    },
                    None => continue,
                }
            }
            other => other,
        };
        handle_frame(shared, node, frame)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn a_connection_budget_refuses_reservations_past_its_max_and_recovers() {
        let b = Budget::default();
        assert!(b.take(60, 100));
        assert!(!b.take(41, 100), "60 + 41 passes 100");
        assert!(b.take(40, 100));
        b.give(60);
        assert!(b.take(60, 100));
        assert!(!b.take(u64::MAX, u64::MAX), "no overflow");
    }
}
