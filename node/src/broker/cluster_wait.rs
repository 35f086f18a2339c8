//! CORE. The packets that wait for cluster operations (see `cluster`): a SUBACK until its
//! route rows, session rows and retained reads are done, a PUBACK/PUBREC until its forward
//! and retained write are, each held in its connection's order; what they become when an
//! operation fails (0x80 per filter, 0x80 or a closed 3.1.1 connection for a publish).

use std::time::Instant;

use bytestring::ByteString;

use super::Broker;
use super::cluster::{Held, OpId, OpOutcome, Waiter};
use super::message::SessionKey;
use super::session::{ConnId, SubEntry};
use crate::mqtt::packet::{Packet, PubResp, QoS, SubAck};
use crate::mqtt::reason;

impl Broker {
    /// Holds the SUBACK of `packet_id` until the `pending` operations of its filters end;
    /// `reads` are the retained reads among them, with their subscriptions.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold_suback(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        codes: Vec<u8>,
        pending: Vec<(usize, OpId, ByteString)>,
        reads: Vec<(OpId, SubEntry)>,
        v5: bool,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let ops: Vec<OpId> = pending.iter().map(|p| p.1).collect();
        let w = Waiter::SubAck { conn, key, packet_id, codes, pending, v5, reads, found: Vec::new() };
        c.add_waiter(conn, w, ops);
    }

    /// Holds the PUBACK (QoS 1) or PUBREC (QoS 2) of `packet_id` until `ops` (the forward,
    /// the retained write) end.
    pub(super) fn hold_publish_ack(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        qos: QoS,
        code: u8,
        ops: Vec<OpId>,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if qos == QoS::AtLeastOnce {
            *c.held_pubacks.entry(conn).or_default() += 1;
        }
        let left = ops.len();
        let w = Waiter::Publish { conn, key, packet_id, qos, code, left, remote: 0, failed: false };
        c.add_waiter(conn, w, ops);
    }

    /// QoS 1 PUBACKs of `conn` held for forwards.
    pub(super) fn held_pubacks(&self, conn: ConnId) -> usize {
        self.cluster.as_ref().and_then(|c| c.held_pubacks.get(&conn)).copied().unwrap_or(0)
    }

    /// If `conn` has held packets, `packet` queues behind them (returns `None`).
    pub(super) fn hold_behind(&mut self, conn: ConnId, packet: Packet) -> Option<Packet> {
        let Some(q) = self.cluster.as_mut().and_then(|c| c.held.get_mut(&conn)) else {
            return Some(packet);
        };
        q.push_back(Held { waiter: 0, packet: Some(packet) });
        None
    }

    /// Forgets the held packets of a closed connection.
    pub(super) fn drop_held(&mut self, conn: ConnId) {
        if let Some(c) = self.cluster.as_mut() {
            c.held.remove(&conn);
            c.held_pubacks.remove(&conn);
        }
    }

    pub(super) fn advance_waiter(&mut self, now: Instant, w: u64, op: OpId, outcome: OpOutcome) {
        let Some(waiter) = self.cluster.as_mut().and_then(|c| c.waiters.get_mut(&w)) else {
            return;
        };
        let mut failed = Vec::new();
        let (conn, key, done) = match waiter {
            Waiter::SubAck { conn, key, pending, codes, reads, found, .. } => {
                if let OpOutcome::Retained(msgs) = &outcome
                    && let Some(&(_, entry)) = reads.iter().find(|(o, _)| *o == op)
                {
                    found.push((entry, msgs.clone()));
                }
                pending.retain(|(i, o, f)| {
                    if *o != op {
                        return true;
                    }
                    if outcome == OpOutcome::Failed {
                        codes[*i] = reason::UNSPECIFIED_ERROR;
                        failed.push(f.clone());
                    }
                    false
                });
                (*conn, *key, pending.is_empty())
            }
            Waiter::Publish { conn, key, left, remote, failed, .. } => {
                *left -= 1;
                match &outcome {
                    OpOutcome::Done { nodes } => *remote += nodes,
                    OpOutcome::Failed => *failed = true,
                    _ => {}
                }
                (*conn, *key, *left == 0)
            }
            Waiter::Connect { conn, .. } => (*conn, 0, true),
        };
        for f in failed {
            // The route is not known to be committed: the filter is refused and the
            // subscription goes (0x80 for that filter).
            self.remove_subscription(key, &f);
        }
        if done {
            self.finish_waiter(now, conn, w, outcome);
        }
    }

    fn finish_waiter(&mut self, now: Instant, conn: ConnId, w: u64, outcome: OpOutcome) {
        let Some(waiter) = self.cluster.as_mut().and_then(|c| c.waiters.remove(&w)) else {
            return;
        };
        let v5 = self.conns.get(&conn).is_some_and(|c| c.protocol.is_v5());
        let packet = match waiter {
            Waiter::Connect { client_id, expiry_secs, .. } => {
                return self.acquired(now, conn, client_id, expiry_secs, outcome);
            }
            Waiter::SubAck { key, packet_id, codes, v5, found, .. } => {
                let properties = match codes.iter().find(|c| **c >= 0x80) {
                    Some(&code) if v5 => self.reason_props(conn, reason::describe(code)),
                    _ => Default::default(),
                };
                let ack = Packet::SubAck(SubAck { packet_id, properties, reason_codes: codes });
                self.release_held(conn, w, ack);
                // Retained messages follow the SUBACK (MQTT-3.8.4-4 lets them precede it;
                // after it, a client sees its grant first).
                for (entry, msgs) in found {
                    self.queue_retained(now, key, entry, msgs);
                }
                return;
            }
            Waiter::Publish { key, packet_id, qos, code, remote, failed, .. } => {
                if let Some(c) = self.cluster.as_mut()
                    && qos == QoS::AtLeastOnce
                    && let Some(n) = c.held_pubacks.get_mut(&conn)
                {
                    *n = n.saturating_sub(1);
                }
                let _ = outcome;
                let code = if failed {
                    reason::UNSPECIFIED_ERROR
                } else if remote > 0 && code == reason::NO_MATCHING_SUBSCRIBERS {
                    reason::SUCCESS
                } else {
                    code
                };
                if code >= 0x80 {
                    if qos == QoS::ExactlyOnce
                        && let Some(s) = self.sessions.get_mut(&key)
                    {
                        // A refused QoS 2 message ends its flow at PUBREC (MQTT-4.3.3).
                        s.qos2_in.remove(&packet_id);
                    }
                    if !v5 {
                        // 3.1.1 has no way to refuse a PUBLISH but closing the connection.
                        self.drop_held(conn);
                        self.close_now(now, conn, Some(true));
                        return;
                    }
                }
                let mut resp = PubResp::with_reason(packet_id, code);
                if code >= 0x80 {
                    resp.properties = self.reason_props(conn, reason::describe(code));
                }
                match qos {
                    QoS::ExactlyOnce => Packet::PubRec(resp),
                    _ => Packet::PubAck(resp),
                }
            }
        };
        self.release_held(conn, w, packet);
    }

    /// Fills held slot `w` of `conn` and sends every ready packet at the front.
    fn release_held(&mut self, conn: ConnId, w: u64, packet: Packet) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(q) = c.held.get_mut(&conn) else {
            return;
        };
        if let Some(h) = q.iter_mut().find(|h| h.waiter == w) {
            h.packet = Some(packet);
        }
        let mut ready = Vec::new();
        while q.front().is_some_and(|h| h.packet.is_some()) {
            ready.extend(q.pop_front().and_then(|h| h.packet));
        }
        if q.is_empty() {
            c.held.remove(&conn);
        }
        for p in ready {
            self.send_now(conn, p);
        }
    }
}
