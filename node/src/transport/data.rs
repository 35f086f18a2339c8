//! SHELL. Data streams: forwarded MQTT publishes to a peer on `forward-streams` uni
//! streams of its connection (priority below raft, above snapshots).
//!
//! [`QuicTransport::send_forward`] encodes a batch on the caller's thread and queues the
//! frame on stream `stream % forward-streams`; it never blocks. The peer's queued frames
//! are bounded by `forward-queue-bytes` (encoded bytes, across its data streams): past it,
//! and without a route or a connection, the batch is refused and counted
//! (`forwards_dropped`). Each stream's task opens its QUIC stream on first use, and writes
//! everything queued on it in one write (in order: one stream never reorders). Frames
//! queued when the connection is lost are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};

use super::forward::ForwardBatch;
use super::frame::Frame;
use super::metrics::TransportMetrics;
use super::quic::{Control, Peer, QuicTransport, Shared, stopped};
use super::sender::{self, SendError, open_stream};
use crate::group::NodeId;

/// Data streams' priority: below control (2) and raft (1), above snapshots (-1).
pub(crate) const PRIORITY_DATA: i32 = 0;

/// One encoded forward frame waiting for its stream.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The frame, length prefix included.
    frame: Vec<u8>,
    /// Publishes in it.
    messages: u64,
    /// Their payload bytes.
    payload: u64,
}

/// A peer's data-stream queues and the bytes queued across them.
#[derive(Debug)]
pub(crate) struct DataQueues {
    txs: Vec<mpsc::UnboundedSender<Queued>>,
    queued: AtomicU64,
    max: u64,
}

impl DataQueues {
    /// `streams` queues holding `max` encoded bytes together, and their receivers.
    pub(crate) fn new(streams: usize, max: u64) -> (Self, Vec<mpsc::UnboundedReceiver<Queued>>) {
        let (txs, rxs) = (0..streams.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        (Self { txs, queued: AtomicU64::new(0), max }, rxs)
    }

    /// Queues `q` on stream `stream % streams`; false (nothing queued) if its bytes would
    /// pass the bound or the stream's task is gone.
    fn push(&self, stream: usize, q: Queued) -> bool {
        let n = q.frame.len() as u64;
        let reserved = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            u.checked_add(n).filter(|t| *t <= self.max)
        });
        if reserved.is_err() {
            return false;
        }
        let tx = self.txs.get(stream % self.txs.len().max(1));
        if tx.is_none_or(|tx| tx.send(q).is_err()) {
            self.release(n);
            return false;
        }
        true
    }

    /// Returns `n` bytes taken off a queue.
    fn release(&self, n: u64) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Encoded bytes queued now.
    fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// More than half the bound is queued.
    fn backlogged(&self) -> bool {
        self.queued() > self.max / 2
    }
}

/// The task of data stream `index` to `peer`: takes what is queued, writes it in one go on
/// the stream of the current connection (opened on first use), until shutdown.
pub(crate) async fn run_stream(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    conn_rx: watch::Receiver<Option<quinn::Connection>>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut open: Option<(usize, quinn::SendStream)> = None;
    let limit = (shared.cfg.frame_bytes_target as usize * 4).max(1);
    let mut buf = Vec::new();
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        let (mut messages, mut payload, mut frames) = (0, 0, 0);
        buf.clear();
        let mut next = Some(first);
        while let Some(q) = next.take() {
            (messages, payload, frames) = (messages + q.messages, payload + q.payload, frames + 1);
            buf.extend_from_slice(&q.frame);
            if buf.len() < limit {
                next = rx.try_recv().ok();
            }
        }
        let conn = conn_rx.borrow().clone();
        let result = match conn {
            Some(conn) => write(&shared, &mut open, &conn, &buf).await,
            None => Err(SendError::Disconnected),
        };
        peer.data.release(buf.len() as u64);
        let m = &shared.metrics;
        match result {
            Ok(()) => {
                TransportMetrics::add(&m.forwards_sent, messages);
                TransportMetrics::add(&m.forward_batches_sent, frames);
                TransportMetrics::add(&m.forward_writes, 1);
                TransportMetrics::add(&m.forward_payload_bytes_sent, payload);
                TransportMetrics::add(&m.forward_bytes_sent, buf.len() as u64);
                TransportMetrics::add(&m.frames_sent, frames);
            }
            Err(e) => {
                open = None;
                TransportMetrics::add(&m.forwards_dropped, messages);
                tracing::debug!(node = peer.id, stream = index, error = %e, "forwards dropped");
            }
        }
    }
}

/// Writes `buf` on the data stream of `conn`, opening it (with its `Hello`) if the stream
/// in `open` belongs to an older connection or there is none.
async fn write(
    shared: &Shared,
    open: &mut Option<(usize, quinn::SendStream)>,
    conn: &quinn::Connection,
    buf: &[u8],
) -> Result<(), SendError> {
    if shared.blocked.load(Ordering::Relaxed) {
        // Fault injection: nothing this node sends arrives (no stream is opened either).
        return Ok(());
    }
    if open.as_ref().is_none_or(|(id, _)| *id != conn.stable_id()) {
        *open = None;
        *open = Some((conn.stable_id(), open_stream(shared, conn, PRIORITY_DATA).await?));
    }
    let Some((_, stream)) = open.as_mut() else {
        return Err(SendError::Disconnected);
    };
    sender::write(shared, stream, buf).await
}

impl QuicTransport {
    /// Queues `batch` for `to` on its data stream `stream % forward-streams` (batches on
    /// one stream arrive in the order queued). False, counted in `forwards_dropped`, if
    /// there is no route or connection to `to`, the peer's `forward-queue-bytes` are full,
    /// or the batch does not fit in a frame. Never blocks.
    pub fn send_forward(&self, to: NodeId, stream: usize, batch: ForwardBatch) -> bool {
        let shared = &self.shared;
        let messages = batch.messages.len() as u64;
        let queued = shared.peer(to).filter(|p| p.connected.load(Ordering::Relaxed)).is_some_and(|peer| {
            let payload = batch.payload_bytes();
            let mut frame = Vec::new();
            Frame::Forward(batch).encode(&mut frame, shared.cfg.frame_bytes_max).is_ok()
                && peer.data.push(stream, Queued { frame, messages, payload })
        });
        if !queued {
            TransportMetrics::add(&shared.metrics.forwards_dropped, messages);
        }
        queued
    }

    /// True while some connected peer's data queues hold more than half their
    /// `forward-queue-bytes`: the MQTT server then stops reading clients, so publishers slow
    /// down to what the peer takes instead of their forwards being dropped.
    pub fn forwards_backlogged(&self) -> bool {
        self.shared.read_peers().values().any(|p| p.connected.load(Ordering::Relaxed) && p.data.backlogged())
    }

    /// Acknowledges forward batches `ids` to `to` on its control stream (coalesced with
    /// other acks into one frame); false if there is no route or the queue is full.
    pub fn send_forward_acks(&self, to: NodeId, ids: Vec<u64>) -> bool {
        ids.is_empty() || self.shared.send_control(to, Control::ForwardAck(ids))
    }
}

impl Shared {
    /// Hands received forwards to the node.
    pub(crate) fn deliver_forwards(&self, from: NodeId, batch: ForwardBatch) {
        TransportMetrics::add(&self.metrics.forwards_received, batch.messages.len() as u64);
        if let Some(i) = self.inbound() {
            i.deliver_forwards(from, batch);
        }
    }

    /// Hands received forward acks to the node.
    pub(crate) fn forward_acks(&self, from: NodeId, ids: Vec<u64>) {
        TransportMetrics::add(&self.metrics.forward_acks_received, ids.len() as u64);
        if let Some(i) = self.inbound() {
            i.forward_acks(from, ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(bytes: usize) -> Queued {
        Queued { frame: vec![0; bytes], messages: 1, payload: bytes as u64 }
    }

    #[test]
    fn queues_refuse_bytes_past_the_bound_across_streams_and_keep_order() {
        let (q, mut rxs) = DataQueues::new(4, 1000);
        assert!(q.push(0, queued(400)));
        assert!(q.push(5, queued(400)), "stream 5 is stream 1 of 4");
        assert!(!q.push(2, queued(201)), "800 + 201 passes 1000");
        assert_eq!(q.queued(), 800, "a refused batch reserves nothing");
        assert!(q.push(3, queued(200)));
        let taken = rxs[1].try_recv().expect("queued on stream 1");
        q.release(taken.frame.len() as u64);
        assert!(q.push(1, queued(300)) && q.push(1, queued(100)));
        let order: Vec<usize> =
            std::iter::from_fn(|| rxs[1].try_recv().ok()).map(|q| q.frame.len()).collect();
        assert_eq!(order, [300, 100]);
        q.release(400);
        assert_eq!(q.queued(), 600);
        assert!(rxs[2].try_recv().is_err());
        drop(rxs);
        assert!(!q.push(0, queued(1)), "a stream without its task refuses");
    }
}
