//! SHELL. The reactor's read path: readable clients are read and decoded, and all of a
//! round's packets go to the core in one locked section.

use std::time::Instant;

use super::{LAG_RECHECK, ROUND_PACKETS, Reactor};
use crate::broker::session::ConnId;
use crate::clock;
use crate::mqtt::error::DecodeError;
use crate::mqtt::packet::{Packet, Protocol};
use crate::server::client::ReadOutcome;

/// One round's input from one client.
pub(super) struct Input {
    token: u32,
    conn: ConnId,
    /// End of this client's packets in the round's packet list.
    end: usize,
    failed: Option<DecodeError>,
    closed: bool,
    protocol: Option<Protocol>,
    /// Packets the core would not take yet (the client's outbox is full): kept by the client
    /// for a later round.
    held: Vec<Packet>,
}

impl Reactor {
    /// Reads every readable client and hands all the packets to the core at once.
    pub(super) fn read_round(&mut self) {
        if self.read_list.is_empty() {
            return;
        }
        // The journal is too far behind: read nobody (the list waits) until it catches up.
        if self.shared.journal_lagging() {
            self.reads_paused_until = Some(Instant::now() + LAG_RECHECK);
            return;
        }
        self.reads_paused_until = None;
        let list = std::mem::take(&mut self.read_list);
        let max = self.shared.config.broker.max_packet_size as usize;
        self.packets.clear();
        self.inputs.clear();
        for (i, &k) in list.iter().enumerate() {
            if self.packets.len() >= ROUND_PACKETS {
                // Enough for one locked section: the rest (still marked) go first next round.
                self.read_list.extend_from_slice(&list[i..]);
                break;
            }
            let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) else {
                continue;
            };
            c.read_again = false;
            // A client whose bytes wait for its socket is not read: what it sends would only
            // queue more replies it does not take (a PINGREQ flood without reading). It is
            // read again once the backlog has left (`write_round`).
            if c.closing || c.has_backlog() {
                continue;
            }
            let start = self.packets.len();
            let mut failed = None;
            let outcome = c.read(&mut self.read_chunk, max, &mut self.packets, &mut failed);
            let closed = matches!(outcome, ReadOutcome::Closed);
            if matches!(outcome, ReadOutcome::More) && failed.is_none() {
                c.read_again = true;
                self.read_list.push(k);
            }
            if failed.is_some() {
                c.closing = true;
            }
            if self.packets.len() > start || failed.is_some() || closed {
                let end = self.packets.len();
                let held = Vec::new();
                self.inputs.push(Input { token: k, conn: c.conn, end, failed, closed, protocol: None, held });
            }
        }
        drop(list);
        if self.inputs.is_empty() {
            return;
        }
        self.hand_to_core();
        self.settle_inputs();
    }

    /// Hands the round's packets to the core in one locked section. A client whose outbox
    /// is past `max-outbox-bytes` keeps the rest of its packets for a later round, unless
    /// they are its last (it closed, or sent bytes that do not decode).
    fn hand_to_core(&mut self) {
        let now = clock::now();
        let mut core = self.shared.lock();
        let mut packets = self.packets.drain(..);
        let mut at = 0;
        for input in &mut self.inputs {
            let last = input.failed.is_some() || input.closed;
            for p in packets.by_ref().take(input.end - at) {
                if !last && (!input.held.is_empty() || !core.broker.accepts_input(input.conn)) {
                    input.held.push(p);
                } else {
                    core.broker.handle_packet(now, input.conn, p);
                }
            }
            at = input.end;
            if let Some(e) = &input.failed {
                tracing::debug!(conn = input.conn, error = %e, "bad packet from client");
                core.broker.handle_decode_error(now, input.conn, e);
            }
            input.protocol = core.broker.conn_params(input.conn).and_then(|p| p.protocol);
        }
        core.notify_woken(Some((self.index, &mut self.flush)));
    }

    /// After the core has the round's packets: protocols learnt, held packets kept, address
    /// slots released, closed clients closed.
    fn settle_inputs(&mut self) {
        let mut inputs = std::mem::take(&mut self.inputs);
        for input in &mut inputs {
            let Some(c) = self.client_mut(input.token).filter(|c| c.conn == input.conn) else {
                continue;
            };
            if input.protocol.is_some() {
                c.protocol = input.protocol;
            }
            let known = c.protocol.is_some();
            let held = !input.held.is_empty();
            if held {
                c.keep_unread(std::mem::take(&mut input.held));
            }
            if known && let Some(ip) = self.pending_ip.remove(&input.token) {
                self.shared.pending.release(ip);
            }
            if held {
                // Read again (the held packets first) once the outbox has been pulled.
                self.want_read(input.token);
            }
            if input.closed {
                self.close(input.token);
            }
        }
        self.inputs = inputs;
    }
}
