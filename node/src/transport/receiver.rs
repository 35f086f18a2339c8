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
        tokio::spawn(serve_connection(Arc::clone(&shared), incoming));
    }
}

async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            TransportMetrics::add(&shared.metrics.handshake_failures, 1);
            tracing::warn!(%remote, error = %e, "refused cluster connection");
            return;
        }
    };
    shared.track(&conn);
    let peer = Arc::new(AtomicU64::new(0));
    loop {
        match conn.accept_uni().await {
            Ok(stream) => {
                tokio::spawn(read_stream(Arc::clone(&shared), conn.clone(), stream, Arc::clone(&peer)));
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
) {
    if let Err(e) = read_frames(&shared, &conn, &mut stream, &peer).await {
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
async fn read_frame(shared: &Shared, stream: &mut quinn::RecvStream) -> Result<Option<Frame>, ReadError> {
    let mut prefix = [0; LEN_PREFIX_BYTES];
    match stream.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = payload_len(prefix, shared.cfg.frame_bytes_max)?;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await?;
    TransportMetrics::add(&shared.metrics.frames_received, 1);
    TransportMetrics::add(&shared.metrics.bytes_received, (len + LEN_PREFIX_BYTES) as u64);
    Ok(Some(Frame::decode(&payload)?))
}

/// Acts on one frame from `node`.
fn handle_frame(shared: &Arc<Shared>, node: NodeId, frame: Frame) -> Result<(), ReadError> {
    match frame {
        Frame::Raft(msgs) => {
            for m in msgs {
                if m.from != node || m.to != shared.node_id {
                    return Err(ReadError::Misaddressed { from: m.from, to: m.to, peer: node });
                }
                shared.deliver(m);
            }
        }
        Frame::Peers(book) => {
            for (id, addr) in book {
                shared.learn(id, addr, false);
            }
        }
        Frame::Pd(body) => shared.deliver_pd(node, body),
        Frame::Requests(reqs) => shared.deliver_requests(node, reqs),
        Frame::Replies(replies) => shared.deliver_replies(node, replies),
        Frame::Ping { nonce, .. } => {
            let pong = Control::Pong { incarnation: shared.incarnation, nonce };
            shared.send_control(node, pong);
        }
        Frame::Pong { incarnation, .. } => shared.pong(node, incarnation),
        Frame::Hello { .. } | Frame::Chunk { .. } => return Err(ReadError::NoHello),
    }
    Ok(())
}

async fn read_frames(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    stream: &mut quinn::RecvStream,
    peer: &AtomicU64,
) -> Result<(), ReadError> {
    let node = match read_frame(shared, stream).await? {
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
    while let Some(frame) = read_frame(shared, stream).await? {
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
