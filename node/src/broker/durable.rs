//! CORE. Durability of the broker core: journal emission, holding acknowledgements until the
//! records before them are durable, restoring state from records, and checkpoints.
//!
//! Invariants:
//! - `seq` counts every record ever emitted; `durable <= seq`.
//! - A packet is parked with the `seq` current when it was produced and released, in order,
//!   once `durable >= seq`. While a connection has parked packets, later packets for it and
//!   its queued messages wait too, so the client sees them in the order they were produced.
//! - Message ids are assigned in emission order, one per stored message. A message routed
//!   to many persistent sessions is stored once: the route is a scope ([`RouteStore`]) in
//!   which the message, and the compacted copy offline sessions get, map to one id. Outside
//!   a route every store is a new message (pointer identity is never trusted across
//!   operations: a freed message's address can be reused by the next one).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use super::journal::{MsgId, Record};
use super::message::{Message, SessionKey};
use super::session::{ConnId, Delivery, Inflight, OutState, Session, SubEntry};
use super::{Broker, Target, Timer};
use crate::mqtt::packet::{Packet, PubResp, QoS, Will};
use crate::mqtt::reason;
use crate::mqtt::topic::parse_shared;

/// Journal bookkeeping inside the core (present only when journaling is on).
#[derive(Default)]
pub(super) struct JournalState {
    /// Records emitted and not yet taken by the shell.
    pub(super) records: Vec<Record>,
    /// Sequence number of the last record emitted.
    pub(super) seq: u64,
    /// Sequence number up to which the shell reported records durable.
    pub(super) durable: u64,
    /// Packets waiting for durability: `(seq, conn, packet)`.
    pub(super) parked: VecDeque<(u64, ConnId, Packet)>,
    /// Parked packets per connection.
    pub(super) parked_per_conn: FxHashMap<ConnId, usize>,
    /// Parked PUBACKs per connection: QoS 1 messages the client sent and is not yet
    /// acknowledged for, counted against the Receive Maximum.
    pub(super) parked_pubacks: FxHashMap<ConnId, usize>,
    /// Next message id.
    pub(super) next_msg_id: MsgId,
    /// The message being routed, so one message routed to many sessions is stored once.
    pub(super) route: Option<RouteStore>,
    /// When each journaled session that is offline went offline (journaled as `Offline`, so
    /// its expiry counts from then across restarts).
    pub(super) offline: FxHashMap<SessionKey, Instant>,
    /// Set once the journal cannot be written: the reason code QoS 1/2 publishers get.
    pub(super) failed: Option<u8>,
    /// Approximate bytes of every record emitted so far (see [`record_bytes`]).
    pub(super) emitted_bytes: u64,
    /// `(seq, emitted_bytes)` at each `poll_journal`, until that seq is durable.
    pub(super) taken: VecDeque<(u64, u64)>,
    /// `emitted_bytes` at the last durable seq.
    pub(super) durable_bytes: u64,
}

/// Approximate encoded size of a record: its message's topic and payload, plus framing.
fn record_bytes(r: &Record) -> u64 {
    let message = match r {
        Record::Retain { message, .. } | Record::Message { message, .. } => {
            message.payload.len() + message.topic.len()
        }
        Record::Will { will: Some(w), .. } => w.payload.len() + w.topic.len(),
        _ => 0,
    };
    message as u64 + 64
}

/// The message a route is delivering (its address and that of its compacted copy, both
/// alive for the whole route) and the id it got when first stored.
#[derive(Clone, Copy, Default)]
pub(super) struct RouteStore {
    ptrs: [usize; 2],
    id: Option<MsgId>,
}

impl Broker {
    /// Turns journaling on: from now on durable changes are emitted as records and
    /// acknowledgements wait for `handle_durable`. `next_msg_id` continues the ids of a
    /// restored journal.
    pub fn enable_journal(&mut self, next_msg_id: MsgId) {
        self.journal = Some(Box::new(JournalState { next_msg_id, ..JournalState::default() }));
    }

    /// Moves the records emitted since the last call into `out`; returns the sequence
    /// number of the last one (pass it to `handle_durable` once they are on disk).
    pub fn poll_journal(&mut self, out: &mut Vec<Record>) -> u64 {
        let Some(j) = self.journal.as_mut() else {
            return 0;
        };
        if super::test_bugs::hold_journal(j.records.len()) {
            return j.seq - j.records.len() as u64;
        }
        if j.records.is_empty() {
            return j.seq;
        }
        out.append(&mut j.records);
        j.taken.push_back((j.seq, j.emitted_bytes));
        j.seq
    }

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
                c.outbox.push(packet);
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

    /// The reason code QoS 1/2 publishers get once the journal failed, if it did.
    pub fn journal_failure(&self) -> Option<u8> {
        self.journal.as_ref().and_then(|j| j.failed)
    }

    /// Records emitted but not yet durable.
    pub fn journal_lag(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.seq - j.durable)
    }

    /// Approximate bytes of journal records emitted and not yet durable (0 once the journal
    /// failed: nothing more is journaled).
    pub fn journal_lag_bytes(&self) -> u64 {
        self.journal.as_ref().filter(|j| j.failed.is_none()).map_or(0, |j| j.emitted_bytes - j.durable_bytes)
    }

    pub(super) fn journal_on(&self) -> bool {
        self.journal.is_some()
    }

    pub(super) fn emit(&mut self, record: Record) {
        if let Some(j) = self.journal.as_mut().filter(|j| j.failed.is_none()) {
            j.emitted_bytes += record_bytes(&record);
            j.records.push(record);
            j.seq += 1;
        }
    }

    /// If `packet` for `conn` must wait for durability, parks it and returns `None`.
    pub(super) fn park_if_needed(&mut self, conn: ConnId, packet: Packet) -> Option<Packet> {
        let Some(j) = self.journal.as_mut() else {
            return Some(packet);
        };
        if j.failed.is_some()
            || super::test_bugs::ack_before_durable()
            || (j.seq <= j.durable && !j.parked_per_conn.contains_key(&conn))
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

    /// Starts routing `msg`: until [`Self::end_route`], storing it (or its copy, see
    /// [`Self::route_copy`]) for any number of sessions stores it once. Returns the outer
    /// route's scope (a will published while routing nests a route) for `end_route`.
    pub(super) fn begin_route(&mut self, msg: &Arc<Message>) -> Option<RouteStore> {
        let j = self.journal.as_mut()?;
        let ptrs = [Arc::as_ptr(msg) as usize, 0];
        j.route.replace(RouteStore { ptrs, id: None })
    }

    /// `copy` is the routed message's compacted copy (queued for offline sessions).
    pub(super) fn route_copy(&mut self, copy: &Arc<Message>) {
        if let Some(r) = self.journal.as_mut().and_then(|j| j.route.as_mut()) {
            r.ptrs[1] = Arc::as_ptr(copy) as usize;
        }
    }

    /// Ends the route begun by the matching [`Self::begin_route`].
    pub(super) fn end_route(&mut self, outer: Option<RouteStore>) {
        if let Some(j) = self.journal.as_mut() {
            j.route = outer;
        }
    }

    /// Stores `msg` in the journal (once per route, see [`Self::begin_route`]) and returns
    /// its id.
    pub(super) fn store_message(&mut self, msg: &Arc<Message>) -> Option<MsgId> {
        let j = self.journal.as_mut()?;
        let ptr = Arc::as_ptr(msg) as usize;
        let routed = j.route.as_mut().filter(|r| r.ptrs.contains(&ptr));
        if let Some(id) = routed.as_ref().and_then(|r| r.id) {
            return Some(id);
        }
        let id = j.next_msg_id;
        j.next_msg_id += 1;
        if let Some(r) = routed {
            r.id = Some(id);
        }
        self.emit(Record::Message { id, message: msg.clone() });
        Some(id)
    }

    /// Journals that a session is done with a delivery (acknowledged, dropped, expired).
    pub(super) fn emit_done(&mut self, key: SessionKey, d: &Delivery) {
        if let Some(id) = d.msg_id
            && let Some(s) = self.sessions.get(&key)
            && s.journaled
        {
            let client_id = s.client_id.clone();
            self.emit(Record::Done { client_id, id });
        }
    }

    /// Journals a persistent session's existence and expiry.
    pub(super) fn journal_session(&mut self, key: SessionKey) {
        if !self.journal_on() {
            return;
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.expiry_secs == 0 {
            return;
        }
        s.journaled = true;
        let record = Record::Session { client_id: s.client_id.clone(), expiry_secs: s.expiry_secs };
        if let Some(j) = self.journal.as_mut() {
            j.offline.remove(&key);
        }
        self.emit(record);
    }

    /// Journals that a persistent session went offline at `now`: its expiry counts from
    /// here, also after a restart.
    pub(super) fn journal_offline(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.get(&key).filter(|s| s.journaled) else {
            return;
        };
        let client_id = s.client_id.clone();
        if let Some(j) = self.journal.as_mut() {
            j.offline.insert(key, now);
            self.emit(Record::Offline { client_id, since: now });
        }
    }

    /// Journals the retained message `msg`, which is being routed: as a reference to the
    /// stored message if this route stored it for persistent sessions, else in full.
    pub(super) fn journal_retained(&mut self, msg: &Arc<Message>) {
        let stored = self.journal.as_ref().and_then(|j| j.route).and_then(|r| r.id);
        match stored {
            Some(id) => self.emit(Record::RetainStored { id }),
            None => self.emit(Record::Retain { message: msg.clone() }),
        }
    }

    /// Journals the will of `client_id` (`None`: published or discarded).
    pub(super) fn journal_will(&mut self, client_id: &ByteString, will: Option<&Will>) {
        if self.journal_on() {
            let will = will.map(|w| Box::new(w.clone()));
            self.emit(Record::Will { client_id: client_id.clone(), will });
        }
    }

    /// Rebuilds state from journal records, oldest first, before any client connects.
    /// A session that was offline keeps the time it went offline (its `Offline` record, in
    /// wall-clock time), so its expiry and will delay count the time before the crash and
    /// the downtime; one that was connected when the process died counts as disconnected at
    /// `now` (the moment of the crash is not on disk), and its client's will is published.
    pub fn restore(&mut self, now: Instant, records: impl IntoIterator<Item = Record>) -> RestoreReport {
        let mut r = Restorer {
            messages: FxHashMap::default(),
            wills: FxHashMap::default(),
            offline: FxHashMap::default(),
        };
        let mut report = RestoreReport::default();
        for record in records {
            report.records += 1;
            self.restore_one(&mut r, record);
        }
        if let Some(j) = self.journal.as_mut() {
            let max_id = r.messages.keys().max().copied();
            j.next_msg_id = j.next_msg_id.max(max_id.map_or(0, |m| m + 1));
        }
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            s.generation += 1;
            s.qos0_pending = s.pending.iter().filter(|d| d.qos == QoS::AtMostOnce).count();
            report.sessions += 1;
            report.queued += s.pending.len() + s.inflight.len();
            let (generation, expiry, journaled) = (s.generation, s.expiry_secs, s.journaled);
            let since = match r.offline.get(&s.client_id) {
                Some(&since) => since.min(now),
                None => {
                    let client_id = s.client_id.clone();
                    if journaled {
                        self.emit(Record::Offline { client_id, since: now });
                    }
                    now
                }
            };
            if let Some(j) = self.journal.as_mut() {
                j.offline.insert(key, since);
            }
            if expiry != u32::MAX {
                let at = (since + Duration::from_secs(u64::from(expiry))).max(now);
                self.schedule_for_session(key, at, Timer::Expire { session: key, generation });
            }
        }
        for (client_id, will) in r.wills {
            report.wills += 1;
            let key = self.by_client.get(&client_id).copied();
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let since = r.offline.get(&client_id).map_or(now, |&since| since.min(now));
            match key.and_then(|k| self.sessions.get_mut(&k).map(|s| (k, s))) {
                Some((k, s)) if delay > 0 && s.expiry_secs > 0 => {
                    let at = (since + Duration::from_secs(u64::from(delay.min(s.expiry_secs)))).max(now);
                    let generation = s.generation;
                    s.will_pending = Some(Box::new((*will, None)));
                    self.schedule_for_session(k, at, Timer::Will { session: k, generation });
                }
                _ => self.publish_restored_will(now, &client_id, *will, key),
            }
        }
        report.retained = self.retained.len();
        report
    }

    fn publish_restored_will(
        &mut self,
        now: Instant,
        client_id: &ByteString,
        will: Will,
        key: Option<SessionKey>,
    ) {
        self.journal_will(client_id, None);
        let mut props = will.properties;
        props.will_delay_interval = None;
        let msg = Message::new(now, will.topic, will.payload, will.qos, will.retain, props, key);
        self.route(now, Arc::new(msg));
    }

    fn restore_one(&mut self, r: &mut Restorer, record: Record) {
        match record {
            Record::Session { client_id, expiry_secs } => {
                r.offline.remove(&client_id);
                let key = match self.by_client.get(&client_id) {
                    Some(&k) => k,
                    None => self.create_session(client_id, expiry_secs),
                };
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.expiry_secs = expiry_secs;
                    s.journaled = true;
                }
            }
            Record::SessionEnd { client_id } => {
                r.offline.remove(&client_id);
                if let Some(key) = self.by_client.remove(&client_id)
                    && let Some(s) = self.sessions.remove(&key)
                {
                    for filter in s.subs.keys() {
                        self.unroute(key, filter);
                    }
                }
            }
            Record::Subscribe { client_id, filter, opts, sub_id } => {
                let Some(&key) = self.by_client.get(&client_id) else {
                    return;
                };
                let entry = SubEntry { opts, sub_id };
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.subs.insert(filter.clone(), entry);
                }
                match parse_shared(&filter) {
                    Ok(Some(sf)) => self.join_shared(key, sf.group.into(), sf.filter.into(), entry),
                    Ok(None) => {
                        self.trie.insert(&filter, Target::Session(key), entry);
                    }
                    Err(_) => {}
                }
            }
            Record::Unsubscribe { client_id, filter } => {
                if let Some(&key) = self.by_client.get(&client_id) {
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.subs.remove(&filter);
                    }
                    self.unroute(key, &filter);
                }
            }
            Record::Will { client_id, will } => match will {
                Some(w) => {
                    r.wills.insert(client_id, w);
                }
                None => {
                    r.wills.remove(&client_id);
                }
            },
            Record::Retain { message } => self.retained.set(message),
            Record::RetainStored { id } => {
                if let Some(message) = r.messages.get(&id) {
                    self.retained.set(message.clone());
                }
            }
            Record::Message { id, message } => {
                r.messages.insert(id, message);
            }
            Record::Enqueue { client_id, id, qos, retain, sub_ids } => {
                let (Some(msg), Some(s)) = (r.messages.get(&id), self.session_by_client(&client_id)) else {
                    return;
                };
                let d = Delivery { msg: msg.clone(), qos, retain, sub_ids, shared: None, msg_id: Some(id) };
                s.pending.push_back(d);
            }
            Record::Assign { client_id, id, packet_id } => {
                let Some(s) = self.session_by_client(&client_id) else {
                    return;
                };
                if let Some(i) = s.pending.iter().position(|d| d.msg_id == Some(id)) {
                    let delivery = s.pending.remove(i).expect("index from position");
                    s.inflight.push_back(Inflight { packet_id, delivery, state: OutState::Published });
                    s.next_packet_id = packet_id.checked_add(1).unwrap_or(1);
                }
            }
            Record::Released { client_id, id } => {
                if let Some(s) = self.session_by_client(&client_id)
                    && let Some(f) = s.inflight.iter_mut().find(|f| f.delivery.msg_id == Some(id))
                {
                    f.state = OutState::Released;
                }
            }
            Record::Done { client_id, id } => {
                if let Some(s) = self.session_by_client(&client_id) {
                    s.pending.retain(|d| d.msg_id != Some(id));
                    s.inflight.retain(|f| f.delivery.msg_id != Some(id));
                }
            }
            Record::Reset => {
                // A checkpoint follows: drop what earlier records built.
                r.messages.clear();
                r.wills.clear();
                r.offline.clear();
                self.sessions.clear();
                self.by_client.clear();
                self.trie = super::trie::Trie::default();
                self.shared.clear();
                self.shared_index.clear();
                self.retained = super::retained::Retained::default();
            }
            Record::Qos2In { client_id, packet_id, present } => {
                if let Some(s) = self.session_by_client(&client_id) {
                    if present {
                        s.qos2_in.insert(packet_id);
                    } else {
                        s.qos2_in.remove(&packet_id);
                    }
                }
            }
            Record::Offline { client_id, since } => {
                if self.by_client.contains_key(&client_id) {
                    r.offline.insert(client_id, since);
                }
            }
        }
    }

    fn session_by_client(&mut self, client_id: &ByteString) -> Option<&mut Session> {
        let key = *self.by_client.get(client_id)?;
        self.sessions.get_mut(&key).map(|s| &mut **s)
    }

    /// Removes one subscription from the trie or its shared group (not from the session).
    fn unroute(&mut self, key: SessionKey, filter: &str) {
        match parse_shared(filter) {
            Ok(Some(sf)) => {
                self.leave_shared(key, sf.group, sf.filter);
            }
            Ok(None) => {
                self.trie.remove(filter, Target::Session(key));
            }
            Err(_) => {}
        }
    }

    /// Emits a checkpoint into the journal: a `Reset` and then the snapshot. Once it is
    /// durable, journal segments before the `Reset` can be deleted.
    pub fn checkpoint(&mut self) {
        if !self.journal_on() || self.journal_failure().is_some() {
            return;
        }
        let mut records = vec![Record::Reset];
        self.snapshot(&mut records);
        let sessions = &self.sessions;
        if let Some(j) = self.journal.as_mut() {
            j.offline.retain(|k, _| sessions.get(k).is_some_and(|s| s.conn.is_none()));
            j.seq += records.len() as u64;
            j.emitted_bytes += records.iter().map(record_bytes).sum::<u64>();
            j.records.extend(records);
        }
    }

    /// The minimal records that rebuild the current durable state. A checkpoint writes
    /// these after a reset marker so older journal segments can be deleted.
    pub fn snapshot(&self, out: &mut Vec<Record>) {
        let mut stored: FxHashMap<MsgId, Arc<Message>> = FxHashMap::default();
        let offline = self.journal.as_ref().map(|j| &j.offline);
        for (key, s) in self.sessions.iter().filter(|(_, s)| s.journaled) {
            let client_id = s.client_id.clone();
            out.push(Record::Session { client_id: client_id.clone(), expiry_secs: s.expiry_secs });
            if s.conn.is_none()
                && let Some(&since) = offline.and_then(|o| o.get(key))
            {
                out.push(Record::Offline { client_id: client_id.clone(), since });
            }
            for (filter, e) in &s.subs {
                let (filter, opts, sub_id) = (filter.clone(), e.opts, e.sub_id);
                out.push(Record::Subscribe { client_id: client_id.clone(), filter, opts, sub_id });
            }
            let inflight = s.inflight.iter().map(|f| (&f.delivery, Some((f.packet_id, f.state))));
            let pending = s.pending.iter().map(|d| (d, None));
            for (d, flight) in inflight.chain(pending) {
                let Some(id) = d.msg_id else {
                    continue;
                };
                if stored.insert(id, d.msg.clone()).is_none() {
                    out.push(Record::Message { id, message: d.msg.clone() });
                }
                let (qos, retain, sub_ids) = (d.qos, d.retain, d.sub_ids.clone());
                out.push(Record::Enqueue { client_id: client_id.clone(), id, qos, retain, sub_ids });
                if let Some((packet_id, state)) = flight
                    && d.qos == QoS::ExactlyOnce
                {
                    out.push(Record::Assign { client_id: client_id.clone(), id, packet_id });
                    if state == OutState::Released {
                        out.push(Record::Released { client_id: client_id.clone(), id });
                    }
                }
            }
            for packet_id in &s.qos2_in {
                out.push(Record::Qos2In {
                    client_id: client_id.clone(),
                    packet_id: *packet_id,
                    present: true,
                });
            }
            if let Some(pending) = &s.will_pending {
                out.push(Record::Will {
                    client_id: client_id.clone(),
                    will: Some(Box::new(pending.0.clone())),
                });
            }
        }
        // A retained message that is also queued refers to the stored copy.
        let mut by_topic: FxHashMap<&str, Vec<(MsgId, &Arc<Message>)>> = FxHashMap::default();
        for (id, m) in &stored {
            by_topic.entry(&*m.topic).or_default().push((*id, m));
        }
        let mut retained = Vec::new();
        self.retained.matching("#", &mut retained);
        for message in retained {
            let queued = by_topic.get(&*message.topic).and_then(|candidates| {
                candidates.iter().find(|(_, m)| same_content(m, &message)).map(|(id, _)| *id)
            });
            out.push(match queued {
                Some(id) => Record::RetainStored { id },
                None => Record::Retain { message },
            });
        }
        for c in self.conns.values() {
            if let (Some(w), Some(key)) = (&c.will, c.session)
                && let Some(s) = self.sessions.get(&key)
            {
                out.push(Record::Will { client_id: s.client_id.clone(), will: Some(w.clone()) });
            }
        }
    }
}

/// True if `a` and `b` are the same message as far as any receiver can tell.
fn same_content(a: &Message, b: &Message) -> bool {
    a.topic == b.topic
        && a.payload == b.payload
        && a.qos == b.qos
        && a.retain == b.retain
        && a.expires_at == b.expires_at
        && a.properties == b.properties
}

/// What `restore` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Records replayed.
    pub records: usize,
    /// Persistent sessions restored.
    pub sessions: usize,
    /// Messages queued or in flight across them.
    pub queued: usize,
    /// Wills found (published or scheduled).
    pub wills: usize,
    /// Retained messages restored.
    pub retained: usize,
}

struct Restorer {
    messages: FxHashMap<MsgId, Arc<Message>>,
    wills: FxHashMap<ByteString, Box<Will>>,
    /// When sessions went offline, by client.
    offline: FxHashMap<ByteString, Instant>,
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
