//! CORE. The publish path: inbound PUBLISH (topic aliases, QoS 1/2 handshakes, receive
//! maximum), routing to sessions and shared groups, bounded queues, and the outbound window
//! with its acknowledgements.

use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use super::journal::Record;
use super::message::{Message, SessionKey};
use super::session::{ConnId, Delivery, Inflight, OutState};
use crate::mqtt::codec::encoded_len;
use crate::mqtt::packet::{Packet, PubResp, Publish, QoS};
use crate::mqtt::reason;
use crate::mqtt::topic::validate_topic_name;
use crate::route::plan::Planned;

impl Broker {
    pub(super) fn handle_publish(&mut self, now: Instant, conn: ConnId, mut p: Publish) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(key) = c.session else {
            return;
        };
        let v5 = c.protocol.is_v5();
        self.stats.messages_received += 1;
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > self.config.topic_alias_max {
                return self.protocol_error(
                    now,
                    conn,
                    reason::TOPIC_ALIAS_INVALID,
                    "topic alias out of range",
                );
            }
            if p.topic.is_empty() {
                match c.extras.as_ref().and_then(|x| x.alias_in.get(&alias)) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self.protocol_error(now, conn, reason::PROTOCOL_ERROR, "unknown topic alias");
                    }
                }
            } else {
                c.extras().alias_in.insert(alias, super::connect::own(&p.topic));
            }
        }
        if p.topic.is_empty() || p.topic.contains(['+', '#']) {
            return self.protocol_error(now, conn, reason::TOPIC_NAME_INVALID, "invalid topic name");
        }
        if p.qos as u8 > self.config.max_qos {
            return self.protocol_error(now, conn, reason::QOS_NOT_SUPPORTED, "QoS not supported");
        }
        if p.retain && !self.config.retain_available {
            return self.protocol_error(now, conn, reason::RETAIN_NOT_SUPPORTED, "retain not supported");
        }
        let pid = p.packet_id;
        if p.qos != QoS::AtMostOnce {
            let Some(s) = self.sessions.get(&key) else {
                return;
            };
            if p.qos == QoS::ExactlyOnce && s.qos2_in.contains(&pid) {
                // A retransmission of a message already received (MQTT-4.3.3-10).
                return self.send(conn, Packet::PubRec(PubResp::new(pid)));
            }
            // Only v5 clients were told a Receive Maximum (MQTT-3.3.4-7); a 3.x client's
            // bound is the packet identifier space itself. Unacknowledged means QoS 2 flows
            // before PUBCOMP and QoS 1 messages whose PUBACK waits for the journal.
            let limit = if v5 { usize::from(self.config.max_inflight) } else { usize::from(u16::MAX) };
            if s.qos2_in.len() + self.parked_pubacks(conn) + self.held_pubacks(conn) >= limit {
                return self.protocol_error(
                    now,
                    conn,
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive maximum exceeded",
                );
            }
        }
        let qos = p.qos;
        let (code, forward) = self.accept_publish(now, conn, key, p);
        if !v5 && code >= 0x80 {
            // 3.1.1 has no way to refuse a PUBLISH but closing the connection.
            return self.close_now(now, conn, Some(true));
        }
        let mut resp = PubResp::with_reason(pid, code);
        if code >= 0x80 {
            resp.properties = self.reason_props(conn, reason::describe(code));
        }
        if qos != QoS::AtMostOnce && code < 0x80 && !forward.is_empty() {
            // The acknowledgement waits until every node the message goes to has it (and
            // the retained ranges, for a retained message).
            return self.hold_publish_ack(conn, key, pid, qos, code, forward);
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(conn, Packet::PubAck(resp)),
            QoS::ExactlyOnce => self.send(conn, Packet::PubRec(resp)),
        }
    }

    /// Validates, authorizes and routes an inbound PUBLISH; returns the ack reason code and
    /// the forward to other nodes the ack waits for. A routed QoS 2 message is remembered
    /// until PUBREL so a retransmission is not routed twice; a refused one ends its flow at
    /// PUBREC (MQTT-4.3.3).
    fn accept_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        key: SessionKey,
        p: Publish,
    ) -> (u8, Vec<super::OpId>) {
        let code = |c: u8| (c, Vec::new());
        if p.qos != QoS::AtMostOnce
            && let Some(code) = self.journal_failure()
        {
            // The journal cannot be written: a QoS 1/2 message cannot be made durable.
            return (code, Vec::new());
        }
        if validate_topic_name(&p.topic, self.config.topic_limits()).is_err() {
            return code(reason::TOPIC_NAME_INVALID);
        }
        let (Some(s), Some(c)) = (self.sessions.get(&key), self.conns.get(&conn)) else {
            return code(reason::UNSPECIFIED_ERROR);
        };
        let (client_id, username) = (s.client_id.clone(), c.username.clone());
        if !self.auth.authorize(&client_id, username.as_deref(), super::auth::Action::Publish, &p.topic) {
            return code(reason::NOT_AUTHORIZED);
        }
        if p.properties.payload_format_indicator == Some(1) && std::str::from_utf8(&p.payload).is_err() {
            return code(reason::PAYLOAD_FORMAT_INVALID);
        }
        let (qos, pid) = (p.qos, p.packet_id);
        let msg = Message::new(now, p.topic, p.payload, qos, p.retain, p.properties, Some(key));
        let (matched, forward) = self.route_and_forward(now, Arc::new(msg));
        if qos == QoS::ExactlyOnce
            && let Some(s) = self.sessions.get_mut(&key)
        {
            s.qos2_in.insert(pid);
            if s.journaled {
                let client_id = s.client_id.clone();
                self.emit(Record::Qos2In { client_id, packet_id: pid, present: true });
            }
        }
        (if matched == 0 { reason::NO_MATCHING_SUBSCRIBERS } else { reason::SUCCESS }, forward)
    }

    /// Routes a message to every matching subscription; returns how many sessions got it.
    pub(super) fn route(&mut self, now: Instant, msg: Arc<Message>) -> usize {
        self.route_and_forward(now, msg).0
    }

    /// Routes a message to every matching local subscription and, in a cluster, emits its
    /// forward to the other nodes; returns how many local sessions got it and the forward.
    pub(super) fn route_and_forward(&mut self, now: Instant, msg: Arc<Message>) -> (usize, Vec<super::OpId>) {
        let publisher = msg.publisher.and_then(|k| self.sessions.get(&k)).map(|s| s.client_id.clone());
        let mut ops: Vec<super::OpId> =
            self.forward(&msg, &publisher.unwrap_or_default()).into_iter().collect();
        // A forwarded message's shared subscriptions are served where the forward picks.
        let shared_here = ops.is_empty();
        // In a cluster the retained ranges hold retained messages ($SYS stays per node).
        let retain_here = !self.cluster_enabled() || msg.topic.starts_with('$');
        if !retain_here && msg.retain && !super::test_bugs::drop_retained() {
            ops.extend(self.emit_op(super::ClusterOp::Retain { msg: msg.clone() }));
        }
        let outer = self.begin_route(&msg);
        let delivered = self.route_local(now, msg, retain_here, shared_here);
        self.end_route(outer);
        (delivered, ops)
    }

    /// Delivers `msg` to this node's matching sessions, to shared subscriptions only if
    /// `shared_groups` (and keeps it as the topic's retained message if `retain_here`).
    pub(super) fn route_local(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        retain_here: bool,
        shared_groups: bool,
    ) -> usize {
        let mut journal_retained = false;
        if retain_here && msg.retain && !super::test_bugs::drop_retained() {
            self.retained.set(msg.clone());
            // Journaled after the deliveries, so it can refer to the stored copy.
            journal_retained = self.journal_on() && !msg.topic.starts_with("$SYS/");
        }
        let mut matches = std::mem::take(&mut self.scratch);
        matches.clear();
        self.trie.matches(&msg.topic, &mut matches);
        let mut planned = std::mem::take(&mut self.planned);
        planned.clear();
        crate::route::plan::plan(&msg, &mut matches, &mut planned);
        let mut delivered = 0;
        let mut compacted: Option<Arc<Message>> = None;
        for p in planned.drain(..) {
            match p {
                Planned::Shared(group) => {
                    if shared_groups && self.deliver_shared(now, group, &msg, None) {
                        delivered += 1;
                    }
                }
                Planned::Session { key, qos, retain, sub_ids } => {
                    // An offline session queues the compacted copy (stored once per route).
                    let offline = self.sessions.get(&key).is_some_and(|s| s.conn.is_none());
                    let msg = if offline {
                        match &compacted {
                            Some(copy) => copy.clone(),
                            None => {
                                let copy = Arc::new(msg.compacted());
                                self.route_copy(&copy);
                                compacted.insert(copy).clone()
                            }
                        }
                    } else {
                        msg.clone()
                    };
                    let d = Delivery { msg, qos, retain, sub_ids, shared: None, msg_id: None };
                    self.enqueue(now, key, d);
                    delivered += 1;
                }
            }
        }
        self.scratch = matches;
        self.planned = planned;
        if journal_retained {
            self.journal_retained(&msg);
        }
        delivered
    }

    /// Queues a delivery on a session, applying the queue bounds (`max-queued-messages` and
    /// `max-queue-bytes-per-session`): QoS 0 is dropped first, then an online client is
    /// disconnected with 0x97, an offline one loses the message.
    pub(super) fn enqueue(&mut self, now: Instant, key: SessionKey, d: Delivery) {
        let (max, max_bytes) = (self.config.max_queued_messages, self.config.max_queue_bytes_per_session);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let (fits, dropped) = s.make_room(d.qos, d.msg.queued_bytes(), max, max_bytes);
        let dropped = dropped + u64::from(!fits);
        s.dropped += dropped;
        for _ in 0..dropped {
            self.stats.count_drop(super::DropReason::QueueFull);
        }
        if !fits {
            if d.qos != QoS::AtMostOnce
                && let Some(conn) = s.conn
            {
                tracing::debug!(conn, "queue full: disconnecting slow consumer");
                self.send_disconnect(conn, reason::QUOTA_EXCEEDED, "message queue full");
                self.close_now(now, conn, Some(true));
            }
            return;
        }
        let mut d = d;
        if s.journaled && d.qos != QoS::AtMostOnce {
            let client_id = s.client_id.clone();
            let id = match d.msg_id {
                Some(id) => Some(id),
                None => self.store_message(&d.msg),
            };
            if let Some(id) = id {
                d.msg_id = Some(id);
                let (qos, retain, sub_ids) = (d.qos, d.retain, d.sub_ids.clone());
                self.emit(Record::Enqueue { client_id, id, qos, retain, sub_ids });
            }
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.push_pending(d);
        if let Some(conn) = s.conn {
            self.wake(conn);
        }
    }

    /// Moves queued messages into `out` while the budget and the client's window allow.
    pub(super) fn fill_from_queue(
        &mut self,
        now: Instant,
        conn: ConnId,
        budget: usize,
        out: &mut Vec<Packet>,
    ) {
        let journal_failed = self.journal_failure().is_some();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(s) = c.session.and_then(|k| self.sessions.get_mut(&k)) else {
            return;
        };
        let window = usize::from(c.client_receive_max.min(self.config.max_inflight));
        let journaled = s.journaled && self.journal.is_some();
        let mut records = Vec::new();
        let mut gated = None;
        // `out` may already hold other connections' packets: the budget is for this call,
        // in packets and in bytes (a pull of 256 x 1 MiB would hold 256 MiB per reader).
        let limit = out.len() + budget;
        let mut bytes_left = self.config.max_transmit_bytes;
        while out.len() < limit && bytes_left > 0 {
            let Some(front) = s.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && s.inflight.len() >= window {
                break;
            }
            if journaled && journal_failed && front.qos == QoS::ExactlyOnce {
                // Its packet id can no longer be recorded before the first send: sent now,
                // a restart would send it again under a new id (a duplicate). It waits.
                break;
            }
            let d = s.pop_pending().expect("front exists");
            if d.msg.is_expired(now) {
                s.dropped += 1;
                self.stats.count_drop(super::DropReason::Expired);
                if let (true, Some(id)) = (journaled, d.msg_id) {
                    records.push(Record::Done { client_id: s.client_id.clone(), id });
                }
                continue;
            }
            let packet_id = if d.qos == QoS::AtMostOnce { 0 } else { s.alloc_packet_id() };
            let mut publish = Publish {
                dup: false,
                qos: d.qos,
                retain: d.retain,
                topic: d.msg.topic.clone(),
                packet_id,
                properties: d.msg.properties.clone(),
                payload: d.msg.payload.clone(),
            };
            if c.protocol.is_v5() {
                publish.properties.message_expiry_interval = d.msg.remaining_expiry_secs(now);
                publish.properties.subscription_identifiers.clone_from(&d.sub_ids);
            }
            let new_alias = if c.protocol.is_v5() && c.client_alias_max > 0 {
                apply_alias(c, &mut publish)
            } else {
                None
            };
            let packet = Packet::Publish(publish);
            let len = encoded_len(&packet, c.protocol);
            if len > c.client_max_packet_size as usize {
                // MQTT-3.1.2-25: discard, and behave as if it had been sent. An alias this
                // packet would have established was never sent, so forget it.
                if let (Some(topic), Some(x)) = (new_alias, c.extras.as_mut()) {
                    x.alias_out.remove(&topic);
                }
                s.dropped += 1;
                self.stats.count_drop(super::DropReason::TooLarge);
                if let (true, Some(id)) = (journaled, d.msg_id) {
                    records.push(Record::Done { client_id: s.client_id.clone(), id });
                }
                continue;
            }
            // QoS 2: the packet id is recorded before the first send, so a restart resends
            // the same id and the client's own QoS 2 state removes the duplicate.
            let assign = match (journaled, d.qos, d.msg_id) {
                (true, QoS::ExactlyOnce, Some(id)) => Some(id),
                _ => None,
            };
            if d.qos != QoS::AtMostOnce {
                s.inflight.push_back(Inflight { packet_id, delivery: d, state: OutState::Published });
            }
            self.stats.messages_sent += 1;
            bytes_left = bytes_left.saturating_sub(len);
            if let Some(id) = assign {
                records.push(Record::Assign { client_id: s.client_id.clone(), id, packet_id });
                gated = Some(packet);
                break;
            }
            out.push(packet);
        }
        // Stopped by the byte budget with more to send: ask to be pulled again.
        let more = bytes_left == 0 && !s.pending.is_empty();
        // Drained queues give their memory back, so idle sessions stay small.
        if s.pending.is_empty() && s.pending.capacity() > 0 {
            s.pending = std::collections::VecDeque::new();
        }
        for r in records {
            self.emit(r);
        }
        if let Some(packet) = gated {
            self.send(conn, packet);
        }
        if more {
            self.wake(conn);
        }
        if let Some(key) = self.conns.get(&conn).and_then(|c| c.session) {
            self.refill_retained(now, key);
        }
    }

    pub(super) fn handle_puback(&mut self, now: Instant, conn: ConnId, pid: u16) {
        let _ = now;
        if let Some(s) = self.session_of(conn)
            && let Some(i) = s.inflight.iter().position(|f| {
                f.packet_id == pid && f.state == OutState::Published && f.delivery.qos == QoS::AtLeastOnce
            })
        {
            let done = s.inflight.remove(i);
            if s.inflight.is_empty() {
                s.inflight = std::collections::VecDeque::new();
            }
            self.finish_delivery(conn, done.map(|f| f.delivery));
        }
    }

    pub(super) fn handle_pubrec(&mut self, now: Instant, conn: ConnId, r: PubResp) {
        let pid = r.packet_id;
        let Some(s) = self.session_of(conn) else {
            return;
        };
        let found = s.inflight.iter().position(|f| f.packet_id == pid && f.delivery.qos == QoS::ExactlyOnce);
        match found {
            Some(i) if r.reason_code >= 0x80 => {
                // The receiver refused it; the flow ends (MQTT-4.3.3-4 note).
                let done = s.inflight.remove(i);
                self.finish_delivery(conn, done.map(|f| f.delivery));
            }
            Some(i) => {
                let record = match (s.journaled, s.inflight[i].delivery.msg_id) {
                    (true, Some(id)) => Some(Record::Released { client_id: s.client_id.clone(), id }),
                    _ => None,
                };
                if record.is_some() && self.close_for_failed_journal(now, conn) {
                    return;
                }
                if let Some(s) = self.session_of(conn) {
                    s.inflight[i].state = OutState::Released;
                }
                if let Some(r) = record {
                    self.emit(r);
                }
                self.send(conn, Packet::PubRel(PubResp::new(pid)));
            }
            None => self
                .send(conn, Packet::PubRel(PubResp::with_reason(pid, reason::PACKET_IDENTIFIER_NOT_FOUND))),
        }
    }

    pub(super) fn handle_pubcomp(&mut self, now: Instant, conn: ConnId, pid: u16) {
        let _ = now;
        if let Some(s) = self.session_of(conn)
            && let Some(i) =
                s.inflight.iter().position(|f| f.packet_id == pid && f.state == OutState::Released)
        {
            let done = s.inflight.remove(i);
            self.finish_delivery(conn, done.map(|f| f.delivery));
        }
    }

    /// A delivery's flow ended: journal it and let the window move.
    fn finish_delivery(&mut self, conn: ConnId, delivery: Option<Delivery>) {
        if let (Some(d), Some(key)) = (delivery, self.conns.get(&conn).and_then(|c| c.session)) {
            self.emit_done(key, &d);
        }
        self.wake(conn);
    }

    pub(super) fn handle_pubrel(&mut self, now: Instant, conn: ConnId, pid: u16) {
        if self.session_of(conn).is_some_and(|s| s.journaled && s.qos2_in.contains(&pid))
            && self.close_for_failed_journal(now, conn)
        {
            return;
        }
        let mut record = None;
        let known = self.session_of(conn).is_some_and(|s| {
            let removed = s.qos2_in.remove(&pid);
            if removed && s.journaled {
                record =
                    Some(Record::Qos2In { client_id: s.client_id.clone(), packet_id: pid, present: false });
            }
            removed
        });
        if let Some(r) = record {
            self.emit(r);
        }
        let code = if known { reason::SUCCESS } else { reason::PACKET_IDENTIFIER_NOT_FOUND };
        self.send(conn, Packet::PubComp(PubResp::with_reason(pid, code)));
    }

    /// With the journal failed, a QoS 2 step whose record cannot be written is not
    /// answered: a PUBREL without a durable release lets the message be delivered again
    /// after a restart, and a PUBCOMP without a durable removal makes a reused packet id
    /// look like a retransmission (the new message would be dropped). The connection is
    /// closed instead (5.0: DISCONNECT with the failure's code); on reconnect the flow
    /// resumes from its durable state. True if it closed.
    fn close_for_failed_journal(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(code) = self.journal_failure() else {
            return false;
        };
        self.send_disconnect(conn, code, "journal write failed");
        self.close_now(now, conn, Some(true));
        true
    }

    fn session_of(&mut self, conn: ConnId) -> Option<&mut super::session::Session> {
        let key = self.conns.get(&conn)?.session?;
        self.sessions.get_mut(&key).map(|s| &mut **s)
    }
}

/// Replaces the topic with an alias towards a v5 client that accepts them. Returns the
/// topic if this packet establishes a new alias.
fn apply_alias(c: &mut super::session::Conn, publish: &mut Publish) -> Option<bytestring::ByteString> {
    let max = usize::from(c.client_alias_max);
    let aliases = &mut c.extras().alias_out;
    if let Some(&alias) = aliases.get(&publish.topic) {
        publish.properties.topic_alias = Some(alias);
        publish.topic = bytestring::ByteString::new();
        None
    } else if aliases.len() < max {
        // Aliases are handed out 1..=max and never reused within a connection, so the
        // next free one is len + 1 (a discarded packet removes the alias it added last).
        let alias = aliases.len() as u16 + 1;
        // The message's topic owns its bytes (`Message::new`): shared, not copied.
        let topic = publish.topic.clone();
        aliases.insert(topic.clone(), alias);
        publish.properties.topic_alias = Some(alias);
        Some(topic)
    } else {
        None
    }
}
