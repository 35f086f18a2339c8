//! SHELL. One task per client connection: socket bytes -> codec -> core, and core -> codec
//! -> socket.
//!
//! Memory: an idle connection holds no read or write buffer (both are allocated when bytes
//! arrive or leave and dropped once empty) and no timer (keep alive and the CONNECT
//! deadline are core timers). While idle the task waits on two small futures, socket
//! readability and its `Notify`; the read and write paths are boxed futures that exist only
//! while running, so the task's own size stays a few hundred bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

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

/// Serves one client until it or the broker closes the connection.
pub(super) async fn run(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let notify = Arc::new(Notify::new());
    let conn = {
        let mut core = shared.lock();
        let id = core.broker.open(clock::now());
        core.wakers.insert(id, notify.clone());
        id
    };
    let max_packet_size = shared.config.broker.max_packet_size as usize;
    let mut task =
        Task { shared: shared.clone(), conn, peer, protocol: None, rbuf: BytesMut::new(), max_packet_size };
    task.serve(&mut stream, &notify).await;
    let _ = stream.shutdown().await;
    let mut core = shared.lock();
    core.wakers.remove(&conn);
    core.broker.close(clock::now(), conn);
    core.notify_woken(None);
}

struct Task {
    shared: Arc<Shared>,
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

impl Task {
    async fn serve(&mut self, stream: &mut TcpStream, notify: &Notify) {
        loop {
            let readable = tokio::select! {
                r = stream.readable() => r.is_ok(),
                () = notify.notified() => {
                    if let Step::Close = Box::pin(self.flush(stream)).await {
                        return;
                    }
                    continue;
                }
            };
            let step = if readable { Box::pin(self.on_readable(stream)).await } else { Step::Close };
            if let Step::Close = step {
                // Write whatever the core queued last (CONNACK refusal, DISCONNECT).
                let _ = Box::pin(self.flush(stream)).await;
                return;
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
        }
    }

    async fn on_readable(&mut self, stream: &mut TcpStream) -> Step {
        match read_some(stream, &mut self.rbuf) {
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
            return self.flush(stream).await;
        }
        Step::Continue
    }

    /// Pulls packets from the core and writes them until the core has nothing more.
    async fn flush(&mut self, stream: &mut TcpStream) -> Step {
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
                if stream.write_all(&wbuf).await.is_err() {
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
