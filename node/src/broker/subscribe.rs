//! CORE. SUBSCRIBE and UNSUBSCRIBE: validation, the session's subscription map, the trie,
//! shared groups, and retained delivery per Retain Handling.

use std::time::Instant;

use bytestring::ByteString;

use super::journal::Record;
use super::message::SessionKey;
use super::session::{ConnId, Delivery, SubEntry};
use super::{Broker, Target};
use crate::mqtt::packet::{Packet, SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe};
use crate::mqtt::reason;
use crate::mqtt::topic::{parse_shared, validate_filter};

/// One filter's SUBACK code, the operations it waits for (with its filter), and its
/// retained read, if any.
type SubscribeOutcome = (u8, Vec<(super::OpId, ByteString)>, Option<(super::OpId, SubEntry)>);

impl Broker {
    pub(super) fn handle_subscribe(&mut self, now: Instant, conn: ConnId, sub: Subscribe) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(key) = c.session else {
            return;
        };
        let v5 = c.protocol.is_v5();
        let username = c.username.clone();
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        if sub.filters.iter().any(|(f, o)| o.no_local && f.starts_with("$share/")) {
            // MQTT-3.8.3-4.
            return self.protocol_error(
                now,
                conn,
                reason::PROTOCOL_ERROR,
                "no local on a shared subscription",
            );
        }
        if sub.filters.len() > self.config.max_filters_per_subscribe {
            return self.protocol_error(
                now,
                conn,
                reason::QUOTA_EXCEEDED,
                "too many topic filters in one SUBSCRIBE (max-filters-per-subscribe)",
            );
        }
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut waits = Vec::new();
        let mut reads = Vec::new();
        for (filter, opts) in sub.filters {
            let (code, wait, read) = self.subscribe_one(now, key, username.as_deref(), filter, opts, sub_id);
            waits.extend(wait.into_iter().map(|(op, filter)| (codes.len(), op, filter)));
            reads.extend(read);
            codes.push(if !v5 && code >= 0x80 { reason::UNSPECIFIED_ERROR } else { code });
        }
        if !waits.is_empty() {
            // Granted only once this node's route rows are committed.
            return self.hold_suback(conn, key, sub.packet_id, codes, waits, reads, v5);
        }
        let properties = match codes.iter().find(|c| **c >= 0x80) {
            Some(&code) if v5 => self.reason_props(conn, reason::describe(code)),
            _ => crate::mqtt::properties::Properties::default(),
        };
        self.send(conn, Packet::SubAck(SubAck { packet_id: sub.packet_id, properties, reason_codes: codes }));
        self.wake(conn);
    }

    fn subscribe_one(
        &mut self,
        now: Instant,
        key: SessionKey,
        username: Option<&str>,
        filter: ByteString,
        mut opts: SubOptions,
        sub_id: Option<u32>,
    ) -> SubscribeOutcome {
        let code = |c: u8| (c, Vec::new(), None);
        let limits = self.config.topic_limits();
        let shared = match parse_shared(&filter) {
            Ok(s) => s,
            Err(c) => return code(c),
        };
        let inner = shared.map_or(&*filter, |s| s.filter);
        if let Err(c) = validate_filter(inner, limits) {
            return code(c);
        }
        let Some(client_id) = self.sessions.get(&key).map(|s| s.client_id.clone()) else {
            return code(reason::UNSPECIFIED_ERROR);
        };
        if !self.auth.authorize(&client_id, username, super::auth::Action::Subscribe, inner) {
            return code(reason::NOT_AUTHORIZED);
        }
        let filter = super::connect::own(&filter);
        let Some(s) = self.sessions.get_mut(&key) else {
            return code(reason::UNSPECIFIED_ERROR);
        };
        let existed = s.subs.contains_key(&filter);
        let max = self.config.max_subscriptions_per_client;
        if !existed && max > 0 && s.subs.len() >= max {
            return code(reason::QUOTA_EXCEEDED);
        }
        let bytes_max = self.config.max_subscription_bytes_per_client;
        if !existed && s.subs.keys().map(|f| f.len()).sum::<usize>() + filter.len() > bytes_max {
            return code(reason::QUOTA_EXCEEDED);
        }
        opts.qos = opts.qos.min(crate::mqtt::packet::QoS::from_u8(self.config.max_qos).unwrap_or_default());
        let entry = SubEntry { opts, sub_id };
        s.subs.insert(filter.clone(), entry);
        if s.journaled {
            let client_id = s.client_id.clone();
            self.emit(Record::Subscribe { client_id, filter: filter.clone(), opts, sub_id });
        }
        let mut read = None;
        match shared {
            Some(sf) => {
                let group = ByteString::from(sf.group);
                let inner = ByteString::from(sf.filter);
                self.join_shared(key, group, inner, entry);
            }
            None => {
                self.trie.insert(&filter, Target::Session(key), entry);
                let send_retained = match opts.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
                if send_retained {
                    if self.cluster_enabled() && !filter.starts_with('$') {
                        // The retained ranges hold them: read there, delivered after SUBACK.
                        let op = self.emit_op(super::ClusterOp::RetainedRead { filter: filter.clone() });
                        read = op.map(|op| (op, entry));
                    } else {
                        self.deliver_retained(now, key, &filter, entry);
                    }
                }
            }
        }
        // Granted once this node's route row and, for a persistent session, the session's
        // subscription row are committed.
        let route = if existed { self.route_pending(&filter) } else { self.route_ref(&filter) };
        let row = self.sub_row(key, &filter, Some(entry));
        let waits =
            route.into_iter().chain(row).chain(read.map(|r| r.0)).map(|op| (op, filter.clone())).collect();
        (opts.qos as u8, waits, read)
    }

    /// Sends the retained messages matching a new subscription, with RETAIN set
    /// (MQTT-3.3.1-8, MQTT-3.8.4-4), through the session's retained backlog: they enter the
    /// queue as it has room (see [`Self::refill_retained`]).
    fn deliver_retained(&mut self, now: Instant, key: SessionKey, filter: &str, entry: SubEntry) {
        let mut found = Vec::new();
        self.retained.matching(filter, &mut found);
        self.queue_retained(now, key, entry, found);
    }

    /// Queues `found` retained messages for a new subscription of session `key`.
    pub(super) fn queue_retained(
        &mut self,
        now: Instant,
        key: SessionKey,
        entry: SubEntry,
        found: Vec<std::sync::Arc<super::message::Message>>,
    ) {
        if found.is_empty() {
            return;
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let backlog = s.retained_backlog.get_or_insert_with(Box::default);
        for msg in found {
            backlog.push_back(Delivery {
                qos: msg.qos.min(entry.opts.qos),
                retain: true,
                sub_ids: entry.sub_id.into_iter().collect(),
                shared: None,
                msg_id: None,
                msg,
            });
        }
        self.refill_retained(now, key);
    }

    /// Moves retained messages from the session's backlog into its queue while the queue has
    /// room; called when a subscription adds to the backlog and after each pull.
    pub(super) fn refill_retained(&mut self, now: Instant, key: SessionKey) {
        let (max, max_bytes) = (self.config.max_queued_messages, self.config.max_queue_bytes_per_session);
        loop {
            let Some(s) = self.sessions.get_mut(&key) else {
                return;
            };
            let Some(backlog) = s.retained_backlog.as_ref() else {
                return;
            };
            let Some(front) = backlog.front() else {
                s.retained_backlog = None;
                return;
            };
            if !s.fits(front.msg.queued_bytes(), max, max_bytes) {
                return;
            }
            let Some(d) = s.retained_backlog.as_mut().and_then(|b| b.pop_front()) else {
                return;
            };
            if !d.msg.is_expired(now) {
                self.enqueue(now, key, d);
            }
        }
    }

    pub(super) fn handle_unsubscribe(&mut self, now: Instant, conn: ConnId, u: Unsubscribe) {
        let _ = now;
        let Some(key) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = self.remove_subscription(key, filter);
            codes.push(if existed { reason::SUCCESS } else { reason::NO_SUBSCRIPTION_EXISTED });
        }
        let properties = crate::mqtt::properties::Properties::default();
        self.send(
            conn,
            Packet::UnsubAck(UnsubAck { packet_id: u.packet_id, properties, reason_codes: codes }),
        );
    }

    /// Removes one subscription of a session from its map, the trie or its shared group.
    pub(super) fn remove_subscription(&mut self, key: SessionKey, filter: &str) -> bool {
        if let Some(s) = self.sessions.get_mut(&key)
            && s.subs.remove(filter).is_some()
        {
            if s.journaled {
                let client_id = s.client_id.clone();
                self.emit(Record::Unsubscribe { client_id, filter: filter.into() });
            }
            self.sub_row(key, &ByteString::from(filter), None);
        }
        let removed = match parse_shared(filter) {
            Ok(Some(sf)) => self.leave_shared(key, sf.group, sf.filter),
            Ok(None) => self.trie.remove(filter, Target::Session(key)).is_some(),
            Err(_) => false,
        };
        if removed {
            self.route_unref(filter);
        }
        removed
    }
}
