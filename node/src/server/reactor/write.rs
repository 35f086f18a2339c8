//! SHELL. The reactor's write path: clients woken by the core pull their packets, which are
//! encoded and written outside the lock; what a socket does not take waits, watched by the
//! stall clock; closing clients linger until their last bytes leave.

use std::time::Instant;

use bytes::BytesMut;

use super::{FlushItem, LINGER, ROUND_PACKETS, Reactor, TRANSMIT_BUDGET};
use crate::broker::Transmit;
use crate::broker::session::ConnId;
use crate::clock;
use crate::mqtt::codec;
use crate::mqtt::packet::Protocol;
use crate::server::client::{Client, WriteOutcome};

/// One round's output to one client.
pub(super) struct Output {
    token: u32,
    conn: ConnId,
    end: usize,
    protocol: Protocol,
    close: bool,
    more: bool,
}

impl Reactor {
    /// Writes the bytes clients kept back, now that their sockets have room.
    pub(super) fn write_round(&mut self) {
        let list = std::mem::take(&mut self.write_list);
        let stall_at = Instant::now() + self.stall_timeout;
        for &k in &list {
            let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) else {
                continue;
            };
            if !c.has_backlog() {
                continue;
            }
            let conn = c.conn;
            let outcome = c.write_backlog();
            if outcome == WriteOutcome::Blocked && c.start_stall_clock(stall_at) {
                self.stalled.push((k, conn));
            }
            match outcome {
                WriteOutcome::Done if c.closing => self.close(k),
                // The core may hold more for it, and it may have sent more while unread.
                WriteOutcome::Done => {
                    self.flush.push((k, conn));
                    self.want_read(k);
                }
                WriteOutcome::Blocked => {}
                WriteOutcome::Failed => self.close(k),
            }
        }
        self.write_list = list;
        self.write_list.clear();
    }

    /// Pulls the woken clients' packets from the core and writes them.
    pub(super) fn flush_round(&mut self) {
        if self.flush.is_empty() {
            return;
        }
        let mut items = std::mem::take(&mut self.flush);
        items.retain(|&(k, conn)| match self.clients.get_mut(k as usize).and_then(Option::as_mut) {
            Some(c) if c.conn == conn && !c.queued => {
                c.queued = true;
                true
            }
            _ => false,
        });
        self.pull(&items);
        for &(k, _) in &items {
            if let Some(c) = self.client_mut(k) {
                c.queued = false;
            }
        }
        items.clear();
        self.write_outputs();
        if self.flush.is_empty() {
            self.flush = items;
        }
        if self.encoded.capacity() > 1 << 20 {
            self.encoded = BytesMut::new();
        }
    }

    /// In one locked section, pulls the packets of `items` (up to the round's bound; the
    /// rest go back to the flush list) into `packets`, one `Output` per client.
    fn pull(&mut self, items: &[FlushItem]) {
        let now = clock::now();
        self.packets.clear();
        self.outputs.clear();
        {
            let mut core = self.shared.lock();
            for (i, &(k, conn)) in items.iter().enumerate() {
                if self.packets.len() >= ROUND_PACKETS {
                    // Bounded per round: the rest stay queued (and pending) for the next.
                    self.flush.extend_from_slice(&items[i..]);
                    break;
                }
                if let Some(r) = core.routes.get_mut(&conn) {
                    r.pending = false;
                }
                let Some(c) = self.clients.get(k as usize).and_then(Option::as_ref) else {
                    continue;
                };
                if c.has_backlog() {
                    // Pulled again once the socket has taken the backlog.
                    continue;
                }
                let start = self.packets.len();
                let t = core.broker.poll_transmit(now, conn, TRANSMIT_BUDGET, &mut self.packets);
                let protocol = core
                    .broker
                    .conn_params(conn)
                    .and_then(|p| p.protocol)
                    .or(c.protocol)
                    .unwrap_or(Protocol::V3_1_1);
                let end = self.packets.len();
                let more = end - start >= TRANSMIT_BUDGET;
                self.outputs.push(Output {
                    token: k,
                    conn,
                    end,
                    protocol,
                    close: t == Transmit::Close,
                    more,
                });
            }
            core.notify_woken(Some((self.index, &mut self.flush)));
        }
    }

    /// Encodes each pulled client's packets and writes them to its socket.
    fn write_outputs(&mut self) {
        let outputs = std::mem::take(&mut self.outputs);
        let mut packets = std::mem::take(&mut self.packets);
        let mut drained = packets.drain(..);
        let mut at = 0;
        for out in &outputs {
            self.encoded.clear();
            for p in drained.by_ref().take(out.end - at) {
                codec::encode(&p, out.protocol, &mut self.encoded);
            }
            at = out.end;
            let Some(c) = self.clients.get_mut(out.token as usize).and_then(Option::as_mut) else {
                continue;
            };
            self.shared.counters.add_sent(self.encoded.len());
            let outcome = if self.encoded.is_empty() { WriteOutcome::Done } else { c.write(&self.encoded) };
            match outcome {
                WriteOutcome::Failed => self.close(out.token),
                WriteOutcome::Done if out.close => self.close(out.token),
                WriteOutcome::Done if out.more => self.flush.push((out.token, out.conn)),
                WriteOutcome::Done => {}
                WriteOutcome::Blocked if out.close => {
                    c.closing = true;
                    self.lingering.push((out.token, out.conn, Instant::now() + LINGER));
                }
                WriteOutcome::Blocked => {
                    if c.start_stall_clock(Instant::now() + self.stall_timeout) {
                        self.stalled.push((out.token, out.conn));
                    }
                }
            }
        }
        drop(drained);
        self.packets = packets;
        self.outputs = outputs;
    }

    /// Closes clients that did not take their last bytes in time.
    pub(super) fn linger_round(&mut self) {
        if self.lingering.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        self.lingering.retain(|&(k, conn, at)| {
            let alive = self.clients.get(k as usize).and_then(Option::as_ref).is_some_and(|c| c.conn == conn);
            if alive && now >= at {
                due.push(k);
            }
            alive && now < at
        });
        for k in due {
            self.close(k);
        }
    }

    /// Closes clients whose backlog has not left their socket by its deadline: a reader that
    /// stopped reading holds at most one pull of bytes, and only for `write-stall-timeout-secs`.
    pub(super) fn stall_round(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        self.stalled.retain(|&(k, conn)| {
            let client = self.clients.get(k as usize).and_then(Option::as_ref).filter(|c| c.conn == conn);
            match client.and_then(Client::stall_deadline) {
                Some(at) if now >= at => {
                    due.push((k, conn));
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
        for (k, conn) in due {
            tracing::info!(
                conn,
                "closing a client that took none of its backlog in write-stall-timeout-secs"
            );
            self.give_up(k, conn);
        }
    }

    /// Ends a stalled client: its backlog is cut at a packet boundary, the core closes the
    /// connection (DISCONNECT 0x97 for v5), and that last packet is written if the socket has
    /// room, now or within `LINGER`; then the socket closes.
    fn give_up(&mut self, k: u32, conn: ConnId) {
        let now = clock::now();
        self.packets.clear();
        let protocol = {
            let mut core = self.shared.lock();
            core.broker.handle_write_stall(now, conn);
            core.broker.poll_transmit(now, conn, TRANSMIT_BUDGET, &mut self.packets);
            let protocol = core.broker.conn_params(conn).and_then(|p| p.protocol);
            core.notify_woken(Some((self.index, &mut self.flush)));
            protocol
        };
        let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) else {
            return;
        };
        let protocol = protocol.or(c.protocol).unwrap_or(Protocol::V3_1_1);
        self.encoded.clear();
        for p in self.packets.drain(..) {
            codec::encode(&p, protocol, &mut self.encoded);
        }
        c.cut_backlog();
        c.closing = true;
        self.shared.counters.add_sent(self.encoded.len());
        match c.write(&self.encoded) {
            WriteOutcome::Blocked => self.lingering.push((k, conn, Instant::now() + LINGER)),
            WriteOutcome::Done | WriteOutcome::Failed => self.close(k),
        }
    }
}
