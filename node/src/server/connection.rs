//! SHELL. One task per client connection: socket bytes -> codec -> core, and core -> codec
//! -> socket.
//!
//! Memory: an idle connection holds no read or write buffer (both are allocated when bytes
//! arrive or leave and dropped once empty) and no timer (keep alive and the CONNECT
//! deadline are core timers). While idle the task waits on two small futures, socket
//! readability and its [`Signal`] in one `poll_fn` (no stored sub-futures); the read and
//! write paths are boxed futures that exist only while running, so the task stays small.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Shared;
use crate::broker::Transmit;
use crate::broker::session::ConnId;
use crate::clock;
use crate::mqtt::codec;
use crate::mqtt::packet::{Packet, Protocol};

/// Packets pulled from the core per write.
const TRANSMIT_BUDGET: usize = 256;
/// Bytes read per read call.
const READ_CHUNK: usize = 4096;

/// Wakes a connection task: a flag plus the task's waker. Smaller than `tokio::sync::Notify`
/// and, unlike awaiting `Notified`, needs no future stored in the task.
#[derive(Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Marks work pending and wakes the task if it is waiting.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes the pending mark, or registers `cx`'s waker and returns false.
    fn poll_take(&self, cx: &mut Context<'_>) -> bool {
        if self.raised.swap(false, Ordering::AcqRel) {
            return true;
        }
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        // A raise between the swap and the registration must not be lost.
        self.raised.swap(false, Ordering::AcqRel)
    }
}

/// A client connection: everything its task owns.
pub(super) struct Task {
    shared: Arc<Shared>,
    stream: TcpStream,
    signal: Arc<Signal>,
    conn: ConnId,
    peer: SocketAddr,
    protocol: Option<Protocol>,
    rbuf: BytesMut,
    max_packet_size: usize,
}

enum Step {
    Continue,
    Close,
}

enum Wake {
    Readable,
    Signalled,
    Failed,
}

impl Task {
    /// Registers a freshly accepted socket with the core. Boxed: an async fn keeps its
    /// by-value arguments twice in its state, so the task's state is passed as a pointer.
    pub(super) fn open(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> Box<Self> {
        let signal = Arc::new(Signal::default());
        let conn = {
            let mut core = shared.lock();
            let id = core.broker.open(clock::now());
            core.wakers.insert(id, signal.clone());
            id
        };
        let max_packet_size = shared.config.broker.max_packet_size as usize;
        Box::new(Self {
            shared,
            stream,
            signal,
            conn,
            peer,
            protocol: None,
            rbuf: BytesMut::new(),
            max_packet_size,
        })
    }

    /// Serves the client until it or the broker closes the connection, then tells the core.
    /// `done` is held until then, so shutdown can wait for every connection.
    pub(super) async fn run(mut self: Box<Self>, done: tokio::sync::mpsc::Sender<()>) {
        self.serve().await;
        let _ = self.stream.shutdown().await;
        let mut core = self.shared.lock();
        core.wakers.remove(&self.conn);
        core.broker.close(clock::now(), self.conn);
        core.notify_woken(None);
        drop(done);
    }

    async fn serve(&mut self) {
        loop {
            let wake = std::future::poll_fn(|cx| {
                if self.signal.poll_take(cx) {
                    return Poll::Ready(Wake::Signalled);
                }
                match self.stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Wake::Readable),
                    Poll::Ready(Err(_)) => Poll::Ready(Wake::Failed),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let step = match wake {
                Wake::Signalled => Box::pin(self.flush()).await,
                Wake::Readable => Box::pin(self.on_readable()).await,
                Wake::Failed => Step::Close,
            };
            if let Step::Close = step {
                // Write whatever the core queued last (CONNACK refusal, DISCONNECT).
                let _ = Box::pin(self.flush()).await;
                return;
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
        }
    }

    async fn on_readable(&mut self) -> Step {
        match read_some(&self.stream, &mut self.rbuf) {
            Ok(0) => return Step::Close,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Continue,
            Err(_) => return Step::Close,
        }
        let max = self.max_packet_size;
        let mut packets = Vec::new();
        let mut failed = None;
        loop {
            match codec::decode(&mut self.rbuf, self.protocol, max) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        self.protocol = c.protocol;
                    }
                    packets.push(p);
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let now = clock::now();
        let me_woken = {
            let mut core = self.shared.lock();
            for p in packets {
                core.broker.handle_packet(now, self.conn, p);
            }
            if let Some(e) = &failed {
                tracing::debug!(peer = %self.peer, error = %e, "bad packet from client");
                core.broker.handle_decode_error(now, self.conn, e);
            }
            if let Some(params) = core.broker.conn_params(self.conn) {
                self.protocol = params.protocol;
            }
            core.notify_woken(Some(self.conn))
        };
        if me_woken || failed.is_some() {
            return self.flush().await;
        }
        Step::Continue
    }

    /// Pulls packets from the core and writes them until the core has nothing more.
    async fn flush(&mut self) -> Step {
        let mut packets = Vec::new();
        loop {
            packets.clear();
            let (transmit, protocol) = {
                let mut core = self.shared.lock();
                let t = core.broker.poll_transmit(clock::now(), self.conn, TRANSMIT_BUDGET, &mut packets);
                core.notify_woken(Some(self.conn));
                let proto = core.broker.conn_params(self.conn).and_then(|p| p.protocol);
                (t, proto.or(self.protocol).unwrap_or(Protocol::V3_1_1))
            };
            if !packets.is_empty() {
                let mut wbuf = BytesMut::new();
                for p in &packets {
                    codec::encode(p, protocol, &mut wbuf);
                }
                if self.stream.write_all(&wbuf).await.is_err() {
                    return Step::Close;
                }
            }
            if transmit == Transmit::Close {
                return Step::Close;
            }
            if packets.len() < TRANSMIT_BUDGET {
                return Step::Continue;
            }
        }
    }
}

/// Reads what the socket has into `rbuf` through a stack buffer, so `rbuf` grows by exactly
/// the bytes received: a small packet costs a small allocation, and no 4 KiB chunk is
/// allocated and freed per packet (which fragments the heap of a broker holding many small
/// long-lived objects).
fn read_some(stream: &TcpStream, rbuf: &mut BytesMut) -> std::io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut chunk)?;
    rbuf.extend_from_slice(&chunk[..n]);
    Ok(n)
}
