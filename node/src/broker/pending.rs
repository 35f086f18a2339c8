//! CORE. Acknowledgements that wait for a completion: a packet for a connection (PUBACK,
//! PUBREC, SUBACK, CONNACK, ...) is parked with the journal sequence number current when it
//! was produced and released, in order, once the shell reports that sequence durable; or
//! refused with a reason code once the journal failed. The generalisation the cluster needs
//! (waiting on a raft commit or a request's reply instead of a journal sequence) lands here.
//!
//! Invariant: while a connection has parked packets, later packets for it wait too, so the
//! client sees them in the order they were produced.

use std::time::Instant;

use rustc_hash::FxHashMap;

use super::Broker;
use super::session::ConnId;
use crate::mqtt::packet::{Packet, PubResp};
use crate::mqtt::reason;

impl Broker {
    /// Records up to `seq` are durable: release the packets that waited for them.
    pub fn handle_durable(&mut self, seq: u64) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        debug_assert!(seq <= j.seq);
        j.durable = j.durable.max(seq);
        while let Some(&(taken_seq, bytes)) = j.taken.front()
            && taken_seq <= j.durable
        {
            j.durable_bytes = bytes;
            j.taken.pop_front();
        }
        let mut released = Vec::new();
        while let Some((s, _, _)) = j.parked.front() {
            if *s > j.durable {
                break;
            }
            let (_, conn, packet) = j.parked.pop_front().expect("front exists");
            uncount(&mut j.parked_per_conn, conn);
            if matches!(packet, Packet::PubAck(_)) {
                uncount(&mut j.parked_pubacks, conn);
            }
            released.push((conn, packet));
        }
        for (conn, packet) in released {
            if let Some(c) = self.conns.get_mut(&conn) {
                super::outbox::push(c, packet);
            }
            self.wake(conn);
        }
    }

    /// The journal can no longer be written (`disk_full`: for lack of space). Nothing
    /// emitted since the last `handle_durable` will become durable, so nothing waiting for
    /// it may be acknowledged as a success:
    /// - a waiting PUBACK or PUBREC goes out with reason 0x97 Quota exceeded (disk full) or
    ///   0x80 Unspecified error to a 5.0 client; a 3.1.1 client, which has no way to hear
    ///   it, is disconnected;
    /// - a connection with any other packet waiting (SUBACK, CONNACK, a QoS 2 PUBLISH, ...)
    ///   is disconnected, with DISCONNECT carrying that reason for 5.0;
    /// - from now on QoS 1/2 PUBLISH packets are refused the same way (see
    ///   [`Self::journal_failure`]), nothing more is journaled, and QoS 0 goes on.
    pub fn journal_failed(&mut self, now: Instant, disk_full: bool) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if j.failed.is_some() {
            return;
        }
        let code = if disk_full { reason::QUOTA_EXCEEDED } else { reason::UNSPECIFIED_ERROR };
        j.failed = Some(code);
        j.records.clear();
        j.parked_per_conn.clear();
        j.parked_pubacks.clear();
        let parked = std::mem::take(&mut j.parked);
        let text = if disk_full { "journal write failed: disk full" } else { "journal write failed" };
        let mut close = Vec::new();
        for (_, conn, packet) in parked {
            if close.contains(&conn) {
                continue;
            }
            let v5 = self.conns.get(&conn).is_some_and(|c| c.protocol.is_v5());
            let refuse = |mut r: PubResp| {
                if r.reason_code < 0x80 {
                    r.reason_code = code;
                    r.properties = self.reason_props(conn, text);
                }
                r
            };
            match packet {
                Packet::PubAck(r) if v5 => self.send(conn, Packet::PubAck(refuse(r))),
                Packet::PubRec(r) if v5 => self.send(conn, Packet::PubRec(refuse(r))),
                _ => close.push(conn),
            }
        }
        for conn in close {
            self.send_disconnect(conn, code, text);
            self.close_now(now, conn, Some(true));
        }
    }

    /// If `packet` for `conn` must wait for durability, parks it and returns `None`. A
    /// PINGRESP acknowledges no record: it waits only behind the connection's own parked
    /// packets (a subscriber pinging while the journal lags is answered).
    pub(super) fn park_if_needed(&mut self, conn: ConnId, packet: Packet) -> Option<Packet> {
        let Some(j) = self.journal.as_mut() else {
            return Some(packet);
        };
        let durable = j.seq <= j.durable || matches!(packet, Packet::PingResp);
        if j.failed.is_some()
            || super::test_bugs::ack_before_durable()
            || (durable && !j.parked_per_conn.contains_key(&conn))
        {
            return Some(packet);
        }
        if matches!(packet, Packet::PubAck(_)) {
            *j.parked_pubacks.entry(conn).or_default() += 1;
        }
        j.parked.push_back((j.seq, conn, packet));
        *j.parked_per_conn.entry(conn).or_default() += 1;
        None
    }

    /// QoS 1 messages from `conn` whose PUBACK waits for durability.
    pub(super) fn parked_pubacks(&self, conn: ConnId) -> usize {
        self.journal.as_ref().and_then(|j| j.parked_pubacks.get(&conn)).copied().unwrap_or(0)
    }

    /// True while `conn` has packets waiting for durability.
    pub(super) fn has_parked(&self, conn: ConnId) -> bool {
        self.journal.as_ref().is_some_and(|j| j.parked_per_conn.contains_key(&conn))
    }
}

/// Counts one parked packet of `conn` off `counts`.
fn uncount(counts: &mut FxHashMap<ConnId, usize>, conn: ConnId) {
    if let Some(n) = counts.get_mut(&conn) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&conn);
        }
    }
}
