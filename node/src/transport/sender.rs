//! SHELL. The outgoing side of the transport: per peer, a raft task (connect with backoff,
//! one long-lived uni stream, coalesced frames) and a snapshot task (a uni stream per
//! snapshot, lower priority); and the `join` introduction to seed addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

use super::frame::{Frame, LEN_PREFIX_BYTES, chunked};
use super::metrics::TransportMetrics;
use super::quic::{Control, Outgoing, Peer, Shared, stopped};
use super::tls::{SERVER_NAME, node_name};
use crate::group::GroupMessage;

/// Stream priorities: control (requests, replies, pings, forward acks) first, raft traffic
/// next, then data streams (forwarded publishes, `data::PRIORITY_DATA` = 0), snapshots last.
const PRIORITY_CONTROL: i32 = 2;
const PRIORITY_RAFT: i32 = 1;
const PRIORITY_SNAPSHOT: i32 = -1;
/// Forward acks in one frame at most (at most 10 bytes each).
const ACKS_PER_FRAME: usize = 16_384;

/// Why a connection's writer stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("no connection")]
    Disconnected,
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("handshake timed out")]
    Timeout,
    #[error("frame: {0}")]
    Frame(#[from] super::frame::FrameError),
}

/// Dials `addr`, asking for a certificate named `name`.
async fn connect(shared: &Shared, addr: SocketAddr, name: &str) -> Result<quinn::Connection, SendError> {
    let connecting = shared.endpoint.connect(addr, name)?;
    match tokio::time::timeout(shared.cfg.idle_timeout(), connecting).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(SendError::Timeout),
    }
}

/// Waits `backoff` (with ±25% jitter) or until shutdown.
async fn pause(shared: &Shared, rng: &mut SmallRng, backoff: Duration) {
    let jitter = rng.random_range(0.75..1.25);
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
        () = stopped(&mut shutdown) => {}
    }
}

/// The raft task of `peer`: connect, write until the connection fails, back off, redial.
pub(crate) async fn run_raft(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut rx: mpsc::Receiver<Outgoing>,
    conn_tx: watch::Sender<Option<quinn::Connection>>,
) {
    let min = Duration::from_millis(shared.cfg.reconnect_min_ms);
    let max = Duration::from_millis(shared.cfg.reconnect_max_ms);
    let mut backoff = min;
    let mut rng = SmallRng::seed_from_u64(shared.node_id.rotate_left(32) ^ peer.id);
    while !shared.is_shutdown() {
        match connect(&shared, peer.addr(), &node_name(peer.id)).await {
            Ok(conn) => {
                backoff = min;
                TransportMetrics::add(&shared.metrics.connects, 1);
                peer.connected.store(true, Ordering::Relaxed);
                shared.track(&conn);
                conn_tx.send_replace(Some(conn.clone()));
                tracing::info!(node = peer.id, addr = %peer.addr(), "connected to peer");
                let result = write_loop(&shared, &conn, &mut rx).await;
                conn_tx.send_replace(None);
                peer.connected.store(false, Ordering::Relaxed);
                conn.close(0u32.into(), b"writer stopped");
                shared.untrack(&conn);
                if shared.is_shutdown() {
                    return;
                }
                TransportMetrics::add(&shared.metrics.disconnects, 1);
                tracing::warn!(node = peer.id, error = ?result.err(), "lost connection to peer");
                shared.peer_down(peer.id);
            }
            Err(e) => {
                TransportMetrics::add(&shared.metrics.connect_failures, 1);
                // Warn on the first failure of a streak (a refused certificate shows up
                // here too), then stay quiet while redialing.
                if backoff == min {
                    tracing::warn!(node = peer.id, error = %e, "cannot connect to peer; will keep retrying");
                } else {
                    tracing::debug!(node = peer.id, error = %e, "cannot connect to peer");
                }
            }
        }
        drop_queued(&shared, &mut rx);
        pause(&shared, &mut rng, backoff).await;
        backoff = (backoff * 2).min(max);
    }
}

/// Drops what queued up while disconnected: raft retries, and stale messages only slow
/// the peer down.
fn drop_queued(shared: &Shared, rx: &mut mpsc::Receiver<Outgoing>) {
    while let Ok(item) = rx.try_recv() {
        if let Outgoing::Raft(msgs) = item {
            TransportMetrics::add(&shared.metrics.dropped_disconnected, msgs.len() as u64);
        }
    }
}

/// Writes queued batches on one stream until the connection fails or shutdown.
async fn write_loop(
    shared: &Shared,
    conn: &quinn::Connection,
    rx: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), SendError> {
    let mut stream = conn.open_uni().await?;
    stream.set_priority(PRIORITY_RAFT)?;
    let mut buf = Vec::with_capacity(shared.cfg.frame_bytes_target as usize);
    let max = shared.cfg.frame_bytes_max;
    let hello = Frame::Hello { node_id: shared.node_id, addr: shared.addr };
    for frame in [hello, Frame::Peers(shared.book())] {
        if frame.encode(&mut buf, max).is_ok() {
            TransportMetrics::add(&shared.metrics.frames_sent, 1);
        }
    }
    write(shared, &mut stream, &buf).await?;
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        buf.clear();
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => return Ok(()),
            },
            e = conn.closed() => return Err(e.into()),
            () = stopped(&mut shutdown) => return Ok(()),
        };
        if shared.cfg.coalesce {
            encode_coalesced(shared, first, rx, &mut buf);
            write(shared, &mut stream, &buf).await?;
        } else {
            write_one_by_one(shared, first, &mut stream, &mut buf).await?;
        }
    }
}

/// Opens a stream on `conn` at `priority` and sends the `Hello` every stream begins with.
pub(super) async fn open_stream(
    shared: &Shared,
    conn: &quinn::Connection,
    priority: i32,
) -> Result<quinn::SendStream, SendError> {
    let mut stream = conn.open_uni().await?;
    stream.set_priority(priority)?;
    let mut buf = Vec::new();
    encode_frame(shared, &Frame::Hello { node_id: shared.node_id, addr: shared.addr }, 0, &mut buf);
    write(shared, &mut stream, &buf).await?;
    Ok(stream)
}

pub(super) async fn write(
    shared: &Shared,
    stream: &mut quinn::SendStream,
    buf: &[u8],
) -> Result<(), SendError> {
    // Fault injection: nothing this node sends arrives.
    if buf.is_empty() || shared.blocked.load(Ordering::Relaxed) {
        return Ok(());
    }
    stream.write_all(buf).await?;
    TransportMetrics::add(&shared.metrics.bytes_sent, buf.len() as u64);
    Ok(())
}

/// Encodes `first` and everything else already queued into frames of about
/// `frame-bytes-target`.
fn encode_coalesced(shared: &Shared, first: Outgoing, rx: &mut mpsc::Receiver<Outgoing>, buf: &mut Vec<u8>) {
    let target = shared.cfg.frame_bytes_target as usize;
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match item {
            Outgoing::Peers(book) => encode_frame(shared, &Frame::Peers(book), 0, buf),
            Outgoing::Pd(body) => encode_frame(shared, &Frame::Pd(body), 0, buf),
            Outgoing::Raft(msgs) => {
                for m in msgs {
                    batch_bytes += m.approximate_bytes();
                    batch.push(m);
                    if batch_bytes >= target {
                        flush_batch(shared, &mut batch, buf);
                        batch_bytes = 0;
                    }
                }
            }
        }
        if buf.len() + batch_bytes < target * 4 {
            next = rx.try_recv().ok();
        }
    }
    flush_batch(shared, &mut batch, buf);
}

fn flush_batch(shared: &Shared, batch: &mut Vec<GroupMessage>, buf: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    let msgs = std::mem::take(batch);
    let n = msgs.len() as u64;
    encode_frame(shared, &Frame::Raft(msgs), n, buf);
}

/// Encodes one frame carrying `msgs` messages; a frame over the limit is dropped and
/// counted (raft retries with smaller appends, bounded by `max_msg_bytes`).
fn encode_frame(shared: &Shared, frame: &Frame, msgs: u64, buf: &mut Vec<u8>) {
    match frame.encode(buf, shared.cfg.frame_bytes_max) {
        Ok(()) => {
            TransportMetrics::add(&shared.metrics.frames_sent, 1);
            if matches!(frame, Frame::Raft(_)) {
                TransportMetrics::add(&shared.metrics.raft_frames_sent, 1);
            }
            TransportMetrics::add(&shared.metrics.messages_sent, msgs);
        }
        Err(e) => {
            TransportMetrics::add(&shared.metrics.dropped_too_large, msgs);
            tracing::warn!(error = %e, "frame dropped");
        }
    }
}

/// Without coalescing: one frame and one write per message.
async fn write_one_by_one(
    shared: &Shared,
    first: Outgoing,
    stream: &mut quinn::SendStream,
    buf: &mut Vec<u8>,
) -> Result<(), SendError> {
    match first {
        Outgoing::Peers(book) => {
            encode_frame(shared, &Frame::Peers(book), 0, buf);
            write(shared, stream, buf).await
        }
        Outgoing::Pd(body) => {
            encode_frame(shared, &Frame::Pd(body), 0, buf);
            write(shared, stream, buf).await
        }
        Outgoing::Raft(msgs) => {
            for m in msgs {
                buf.clear();
                encode_frame(shared, &Frame::Raft(vec![m]), 1, buf);
                write(shared, stream, buf).await?;
            }
            Ok(())
        }
    }
}

/// The snapshot task of `peer`: each snapshot on its own stream of the current connection.
pub(crate) async fn run_snapshots(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut rx: mpsc::Receiver<GroupMessage>,
    conn_rx: watch::Receiver<Option<quinn::Connection>>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        let conn = conn_rx.borrow().clone();
        let (group, to) = (msg.group_id, msg.to);
        let Some(conn) = conn else {
            TransportMetrics::add(&shared.metrics.dropped_disconnected, 1);
            shared.unreachable(group, to, true);
            continue;
        };
        match send_snapshot(&shared, &conn, msg).await {
            Ok(()) => TransportMetrics::add(&shared.metrics.snapshots_sent, 1),
            Err(e) => {
                TransportMetrics::add(&shared.metrics.dropped_disconnected, 1);
                tracing::warn!(node = peer.id, group, error = %e, "snapshot not sent");
                shared.unreachable(group, to, true);
            }
        }
    }
}

async fn send_snapshot(
    shared: &Shared,
    conn: &quinn::Connection,
    msg: GroupMessage,
) -> Result<(), SendError> {
    let mut stream = open_stream(shared, conn, PRIORITY_SNAPSHOT).await?;
    let mut buf = Vec::new();
    let max = u32::try_from(shared.cfg.snapshot_bytes_max).unwrap_or(u32::MAX);
    let mut whole = Vec::new();
    if let Err(e) = Frame::Raft(vec![msg]).encode(&mut whole, max) {
        TransportMetrics::add(&shared.metrics.dropped_too_large, 1);
        return Err(SendError::Frame(e));
    }
    let chunk = shared.cfg.snapshot_chunk_bytes as usize;
    if whole.len() <= chunk + LEN_PREFIX_BYTES {
        write(shared, &mut stream, &whole).await?;
    } else {
        // Paced: at most `snapshot-bytes-per-sec`, so a large snapshot never starves the
        // link the raft and control streams share.
        let rate = shared.cfg.snapshot_bytes_per_sec;
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        for piece in chunked(&whole, chunk) {
            buf.clear();
            encode_frame(shared, &piece, 0, &mut buf);
            write(shared, &mut stream, &buf).await?;
            sent += buf.len() as u64;
            if rate > 0 {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(started + due).await;
            }
        }
        TransportMetrics::add(&shared.metrics.snapshot_chunks_sent, whole.len().div_ceil(chunk) as u64);
    }
    TransportMetrics::add(&shared.metrics.messages_sent, 1);
    stream.finish()?;
    Ok(())
}

/// Introduces this node to the node at `seed` until some known peer has that address: the
/// seed learns us from the `Hello`, dials back, and we learn it.
pub(crate) async fn introduce(shared: Arc<Shared>, seed: SocketAddr) {
    let min = Duration::from_millis(shared.cfg.reconnect_min_ms);
    let max = Duration::from_millis(shared.cfg.reconnect_max_ms);
    let mut backoff = min;
    let mut rng = SmallRng::seed_from_u64(shared.node_id ^ u64::from(seed.port()));
    while !shared.is_shutdown() && !shared.knows_addr(seed) {
        match say_hello(&shared, seed).await {
            Ok(()) => tracing::debug!(%seed, "introduced to seed"),
            Err(e) => tracing::debug!(%seed, error = %e, "seed not reachable"),
        }
        pause(&shared, &mut rng, backoff).await;
        backoff = (backoff * 2).min(max);
    }
}

async fn say_hello(shared: &Shared, seed: SocketAddr) -> Result<(), SendError> {
    // The seed's id is not known yet: any certificate of the cluster CA will do.
    let conn = connect(shared, seed, SERVER_NAME).await?;
    let mut stream = conn.open_uni().await?;
    let mut buf = Vec::new();
    encode_frame(shared, &Frame::Hello { node_id: shared.node_id, addr: shared.addr }, 0, &mut buf);
    encode_frame(shared, &Frame::Peers(shared.book()), 0, &mut buf);
    write(shared, &mut stream, &buf).await?;
    stream.finish()?;
    // Let the peer read the stream before the connection goes away.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.stopped()).await;
    conn.close(0u32.into(), b"introduced");
    shared.untrack(&conn);
    Ok(())
}

/// The control task of `peer`: requests, replies and pings on their own high-priority
/// stream of the raft task's connection, many per frame. Items queued while there is no
/// connection are dropped (a request's sender times out and retries elsewhere).
pub(crate) async fn run_control(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut rx: mpsc::Receiver<Control>,
    mut conn_rx: watch::Receiver<Option<quinn::Connection>>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let conn = conn_rx.borrow_and_update().clone();
        let Some(conn) = conn else {
            while let Ok(_dropped) = rx.try_recv() {
                TransportMetrics::add(&shared.metrics.dropped_disconnected, 1);
            }
            tokio::select! {
                changed = conn_rx.changed() => if changed.is_err() { return },
                () = stopped(&mut shutdown) => return,
                item = rx.recv() => match item {
                    Some(_) => TransportMetrics::add(&shared.metrics.dropped_disconnected, 1),
                    None => return,
                },
            }
            continue;
        };
        if let Err(e) = control_loop(&shared, &conn, &mut rx, &mut conn_rx).await {
            tracing::debug!(node = peer.id, error = %e, "control stream ended");
        }
        if shared.is_shutdown() {
            return;
        }
        // Wait for the raft task to replace the connection (or give up on it).
        if conn_rx.borrow().as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            tokio::select! {
                changed = conn_rx.changed() => if changed.is_err() { return },
                () = stopped(&mut shutdown) => return,
            }
        }
    }
}

async fn control_loop(
    shared: &Shared,
    conn: &quinn::Connection,
    rx: &mut mpsc::Receiver<Control>,
    conn_rx: &mut watch::Receiver<Option<quinn::Connection>>,
) -> Result<(), SendError> {
    let mut stream = open_stream(shared, conn, PRIORITY_CONTROL).await?;
    let mut buf = Vec::with_capacity(shared.cfg.frame_bytes_target as usize);
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        buf.clear();
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => return Ok(()),
            },
            e = conn.closed() => return Err(e.into()),
            _ = conn_rx.changed() => return Ok(()),
            () = stopped(&mut shutdown) => return Ok(()),
        };
        encode_control(shared, first, rx, &mut buf);
        write(shared, &mut stream, &buf).await?;
    }
}

/// Encodes `first` and what else is queued into frames: requests together, replies
/// together, pings and pongs on their own; at most about four frame targets per write.
fn encode_control(shared: &Shared, first: Control, rx: &mut mpsc::Receiver<Control>, buf: &mut Vec<u8>) {
    let target = shared.cfg.frame_bytes_target as usize;
    let (mut reqs, mut replies, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = Some(first);
    let mut n = 0u64;
    while let Some(item) = next.take() {
        n += 1;
        match item {
            Control::Request(r) => reqs.push(r),
            Control::Reply(r) => replies.push(r),
            Control::ForwardAck(ids) => acks.extend(ids),
            Control::Ping { incarnation, nonce } => {
                encode_frame(shared, &Frame::Ping { incarnation, nonce }, 0, buf);
            }
            Control::Pong { incarnation, nonce } => {
                encode_frame(shared, &Frame::Pong { incarnation, nonce }, 0, buf);
            }
        }
        if reqs.len() + replies.len() >= 256 || acks.len() >= ACKS_PER_FRAME {
            flush_control(shared, &mut reqs, &mut replies, &mut acks, buf);
        }
        if buf.len() < target * 4 {
            next = rx.try_recv().ok();
        }
    }
    flush_control(shared, &mut reqs, &mut replies, &mut acks, buf);
    TransportMetrics::add(&shared.metrics.control_sent, n);
}

fn flush_control(
    shared: &Shared,
    reqs: &mut Vec<super::request::Request>,
    replies: &mut Vec<super::request::Reply>,
    acks: &mut Vec<u64>,
    buf: &mut Vec<u8>,
) {
    if !reqs.is_empty() {
        encode_frame(shared, &Frame::Requests(std::mem::take(reqs)), 0, buf);
    }
    if !replies.is_empty() {
        encode_frame(shared, &Frame::Replies(std::mem::take(replies)), 0, buf);
    }
    if !acks.is_empty() {
        TransportMetrics::add(&shared.metrics.forward_acks_sent, acks.len() as u64);
        encode_frame(shared, &Frame::ForwardAck(std::mem::take(acks)), 0, buf);
    }
}
