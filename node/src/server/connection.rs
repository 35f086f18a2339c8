//! SHELL. One task per client connection: socket bytes -> codec -> core, and core -> codec
//! -> socket. An idle connection holds no read or write buffer: both are allocated when
//! bytes arrive or leave and released once empty.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let connect_timeout = Duration::from_secs(u64::from(shared.config.connect_timeout_secs));
    let mut task = Task { shared: shared.clone(), conn, peer, protocol: None, keep_alive: None };
    task.serve(&mut stream, &notify, connect_timeout).await;
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
    keep_alive: Option<Duration>,
}

enum Step {
    Continue,
    Close,
}

impl Task {
    async fn serve(&mut self, stream: &mut TcpStream, notify: &Notify, connect_timeout: Duration) {
        let mut rbuf = BytesMut::new();
        let mut deadline = clock::now() + connect_timeout;
        loop {
            let step = tokio::select! {
                r = stream.readable() => match r {
                    Ok(()) => self.on_readable(stream, &mut rbuf, &mut deadline).await,
                    Err(_) => Step::Close,
                },
                () = notify.notified() => self.flush(stream).await,
                () = tokio::time::sleep_until(deadline.into()) => self.on_deadline().await,
            };
            if let Step::Close = step {
                // Write whatever the core queued last (CONNACK refusal, DISCONNECT).
                let _ = self.flush(stream).await;
                return;
            }
            if rbuf.is_empty() && rbuf.capacity() > 0 {
                rbuf = BytesMut::new();
            }
        }
    }

    async fn on_readable(
        &mut self,
        stream: &mut TcpStream,
        rbuf: &mut BytesMut,
        deadline: &mut Instant,
    ) -> Step {
        rbuf.reserve(READ_CHUNK);
        match stream.try_read_buf(rbuf) {
            Ok(0) => return Step::Close,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Continue,
            Err(_) => return Step::Close,
        }
        let max = self.shared.lock().broker.max_packet_size();
        let mut packets = Vec::new();
        let mut failed = None;
        loop {
            match codec::decode(rbuf, self.protocol, max) {
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
                self.keep_alive = (params.protocol.is_some() && params.keep_alive_secs > 0)
                    .then(|| Duration::from_millis(u64::from(params.keep_alive_secs) * 1500));
            }
            core.notify_woken(Some(self.conn))
        };
        // Any packet resets the keep-alive clock (MQTT-3.1.2-22); 1.5x the interval.
        if self.protocol.is_some() {
            *deadline = match self.keep_alive {
                Some(ka) => now + ka,
                None => now + Duration::from_secs(86_400 * 365),
            };
        }
        if me_woken || failed.is_some() {
            return self.flush(stream).await;
        }
        Step::Continue
    }

    async fn on_deadline(&mut self) -> Step {
        let now = clock::now();
        let mut core = self.shared.lock();
        if self.protocol.is_none() {
            tracing::debug!(peer = %self.peer, "no CONNECT in time");
            return Step::Close;
        }
        tracing::debug!(peer = %self.peer, "keep alive expired");
        core.broker.keep_alive_expired(now, self.conn);
        core.notify_woken(Some(self.conn));
        Step::Close
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
