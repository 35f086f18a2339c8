//! CORE. The control-packet outbox of each connection (CONNACK, PUBACK, PUBREC, PUBREL,
//! PUBCOMP, SUBACK, PINGRESP, DISCONNECT and retransmissions), bounded in bytes by
//! `max-outbox-bytes`: what the outbox holds is counted as each packet's encoded size plus
//! its in-memory slot. Past the budget the connection does not accept input
//! ([`Broker::accepts_input`]): the shell stops handing it packets until a pull
//! (`poll_transmit`) has emptied the outbox, so a client that sends PINGREQ or QoS 1
//! PUBLISH faster than the broker can write the replies holds at most about the budget.
//!
//! Invariant: `Conn::outbox_bytes` is the sum of the costs of the packets in `Conn::outbox`
//! (pushes go through [`push`], the pull resets both).

use std::time::Instant;

use super::Broker;
use super::session::{Conn, ConnId};
use crate::mqtt::codec::encoded_len;
use crate::mqtt::packet::Packet;
use crate::mqtt::reason;

/// What a packet in the outbox costs against `max-outbox-bytes`.
pub(super) fn cost(c: &Conn, p: &Packet) -> usize {
    size_of::<Packet>() + encoded_len(p, c.protocol)
}

/// Appends a packet to a connection's outbox, counting its cost.
pub(super) fn push(c: &mut Conn, p: Packet) {
    c.outbox_bytes += cost(c, &p);
    c.outbox.push(p);
}

impl Broker {
    /// False while `conn`'s outbox holds `max-outbox-bytes` or more: the shell hands it no
    /// more packets (and reads nothing more from it) until a pull has emptied the outbox.
    pub fn accepts_input(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_none_or(|c| c.outbox_bytes < self.config.max_outbox_bytes)
    }

    /// Bytes `conn`'s outbox holds (see the module doc).
    pub fn outbox_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.outbox_bytes)
    }

    /// The shell gave up on `conn`'s socket: it took none of its pending bytes for
    /// `write-stall-timeout-secs`. A v5 client is sent DISCONNECT 0x97 (written if the socket
    /// ever has room before the shell closes it); the connection closes as a lost one (its
    /// will is published).
    pub fn handle_write_stall(&mut self, now: Instant, conn: ConnId) {
        let connected = self.conns.get(&conn).is_some_and(|c| c.is_connected());
        if connected {
            self.send_disconnect(conn, reason::QUOTA_EXCEEDED, "write stall timeout");
        }
        self.close_now(now, conn, Some(true));
    }
}

/// Removes the reason string and user properties of a control packet.
pub(super) fn strip_diagnostics(p: &mut Packet) {
    match p {
        Packet::ConnAck(a) => a.properties.strip_diagnostics(),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            r.properties.strip_diagnostics()
        }
        Packet::SubAck(a) => a.properties.strip_diagnostics(),
        Packet::UnsubAck(a) => a.properties.strip_diagnostics(),
        Packet::Disconnect(d) => d.properties.strip_diagnostics(),
        Packet::Auth(a) => a.properties.strip_diagnostics(),
        _ => {}
    }
}
