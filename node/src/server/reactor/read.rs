//! SHELL. The reactor's read path: readable clients are read and decoded, and all of a
//! round's packets go to the core in one locked section.
//!
//! While the journal lags past `max-journal-lag-bytes` (or the cluster has too many
//! operations in flight), a client's PUBLISH, SUBSCRIBE, UNSUBSCRIBE or CONNECT (and
//! whatever follows it) is kept unread and the client waits in `lag_held`, not read, until
//! the lag is gone; other clients go on being read, so a subscriber's PUBACKs and PINGREQs
//! still drain its deliveries and keep it alive.

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
    /// Packets the core would not take yet (the client's outbox is full, or a PUBLISH while
    /// the journal lags): kept by the client for a later round.
    held: Vec<Packet>,
}

/// Whether the core takes `p` from `conn` now, given the packets of the client held so far
/// this round (order is kept: once one is held, the rest are too).
fn takes(core: &crate::server::Core, conn: ConnId, p: &Packet, held: &[Packet], lagging: bool) -> bool {
    held.is_empty() && !(lagging && adds_records(p)) && core.broker.accepts_input(conn)
}

/// Packets that add journal records or cluster operations by the volume a client chooses:
/// they wait while the journal lags. Acknowledgements, PINGREQ and DISCONNECT do not.
fn adds_records(p: &Packet) -> bool {
    matches!(p, Packet::Publish(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::Connect(_))
}

impl Reactor {
    /// Reads every readable client and hands all the packets to the core at once.
    pub(super) fn read_round(&mut self) {
        let lagging = self.shared.journal_lagging();
        if !self.read_list.is_empty() {
            self.read_ready(lagging);
        }
        self.release_lag_held(lagging);
    }

    /// Once the journal has caught up, clients held for it are read again; until then the
    /// lag is looked at every `LAG_RECHECK`.
    fn release_lag_held(&mut self, lagging: bool) {
        if self.lag_held.is_empty() {
            self.lag_recheck_at = None;
            return;
        }
        if lagging {
            self.lag_recheck_at = Some(Instant::now() + LAG_RECHECK);
            return;
        }
        self.lag_recheck_at = None;
        for k in std::mem::take(&mut self.lag_held) {
            if let Some(c) = self.client_mut(k)
                && std::mem::take(&mut c.lag_wait)
            {
                c.read_again = true;
                self.read_list.push(k);
            }
        }
    }

    fn read_ready(&mut self, lagging: bool) {
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
            if c.lag_wait {
                // Waits in `lag_held` (this entry is stale).
                continue;
            }
            c.read_again = false;
            // A client whose bytes wait for its socket is not read: what it sends would only
            // queue more replies it does not take (a PINGREQ flood without reading). It is
            // read again once the backlog has left (`write_round`).
            if c.closing || c.has_backlog() {
                continue;
            }
            let start = self.packets.len();
            let mut failed = None;
            let (outcome, read) = c.read(&mut self.read_chunk, max, &mut self.packets, &mut failed);
            self.shared.counters.add_received(read);
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
        self.hand_to_core(lagging);
        self.settle_inputs(lagging);
    }

    /// Hands the round's packets to the core in one locked section. A client whose outbox
    /// is past `max-outbox-bytes` keeps the rest of its packets for a later round, unless
    /// they are its last (it closed, or sent bytes that do not decode).
    fn hand_to_core(&mut self, lagging: bool) {
        let now = clock::now();
        let mut core = self.shared.lock();
        let mut packets = self.packets.drain(..);
        let mut at = 0;
        for input in &mut self.inputs {
            let last = input.failed.is_some() || input.closed;
            for p in packets.by_ref().take(input.end - at) {
                if last || takes(&core, input.conn, &p, &input.held, lagging) {
                    core.broker.handle_packet(now, input.conn, p);
                } else {
                    input.held.push(p);
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
    fn settle_inputs(&mut self, lagging: bool) {
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
            // Held for the journal: not read at all until it catches up.
            let lag_wait = held && lagging && input.held.iter().any(adds_records);
            if held {
                c.keep_unread(std::mem::take(&mut input.held));
                c.lag_wait = lag_wait;
            }
            if known && let Some(ip) = self.pending_ip.remove(&input.token) {
                self.shared.pending.release(ip);
            }
            if lag_wait {
                self.lag_held.push(input.token);
            } else if held {
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
