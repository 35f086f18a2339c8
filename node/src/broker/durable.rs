//! CORE. Durability of the broker core: journal emission, holding acknowledgements until the
//! records before them are durable, restoring state from records, and checkpoints.
//!
//! Invariants:
//! - `seq` counts every record ever emitted; `durable <= seq`.
//! - A packet is parked with the `seq` current when it was produced and released, in order,
//!   once `durable >= seq`. While a connection has parked packets, later packets for it and
//!   its queued messages wait too, so the client sees them in the order they were produced.
//! - Message ids are assigned in emission order, one per stored message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use super::journal::{MsgId, Record};
use super::message::{Message, SessionKey};
use super::session::{ConnId, Delivery, Inflight, OutState, Session, SubEntry};
use super::{Broker, Target, Timer};
use crate::mqtt::packet::{Packet, QoS, Will};
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
    /// Next message id.
    pub(super) next_msg_id: MsgId,
    /// The last message stored, so one message routed to many sessions is stored once.
    pub(super) last_stored: Option<(usize, MsgId)>,
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
        out.append(&mut j.records);
        j.seq
    }

    /// Records up to `seq` are durable: release the packets that waited for them.
    pub fn handle_durable(&mut self, seq: u64) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        debug_assert!(seq <= j.seq);
        j.durable = j.durable.max(seq);
        let mut released = Vec::new();
        while let Some((s, _, _)) = j.parked.front() {
            if *s > j.durable {
                break;
            }
            let (_, conn, packet) = j.parked.pop_front().expect("front exists");
            if let Some(n) = j.parked_per_conn.get_mut(&conn) {
                *n -= 1;
                if *n == 0 {
                    j.parked_per_conn.remove(&conn);
                }
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

    /// Records emitted but not yet durable.
    pub fn journal_lag(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.seq - j.durable)
    }

    pub(super) fn journal_on(&self) -> bool {
        self.journal.is_some()
    }

    pub(super) fn emit(&mut self, record: Record) {
        if let Some(j) = self.journal.as_mut() {
            j.records.push(record);
            j.seq += 1;
        }
    }

    /// If `packet` for `conn` must wait for durability, parks it and returns `None`.
    pub(super) fn park_if_needed(&mut self, conn: ConnId, packet: Packet) -> Option<Packet> {
        let Some(j) = self.journal.as_mut() else {
            return Some(packet);
        };
        if j.seq <= j.durable && !j.parked_per_conn.contains_key(&conn) {
            return Some(packet);
        }
        j.parked.push_back((j.seq, conn, packet));
        *j.parked_per_conn.entry(conn).or_default() += 1;
        None
    }

    /// True while `conn` has packets waiting for durability.
    pub(super) fn has_parked(&self, conn: ConnId) -> bool {
        self.journal.as_ref().is_some_and(|j| j.parked_per_conn.contains_key(&conn))
    }

    /// Stores `msg` in the journal once (per consecutive run of enqueues) and returns its id.
    pub(super) fn store_message(&mut self, msg: &Arc<Message>) -> Option<MsgId> {
        let j = self.journal.as_mut()?;
        let ptr = Arc::as_ptr(msg) as usize;
        if let Some((p, id)) = j.last_stored
            && p == ptr
        {
            return Some(id);
        }
        let id = j.next_msg_id;
        j.next_msg_id += 1;
        j.last_stored = Some((ptr, id));
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
        self.emit(record);
    }

    /// Journals the will of `client_id` (`None`: published or discarded).
    pub(super) fn journal_will(&mut self, client_id: &ByteString, will: Option<&Will>) {
        if self.journal_on() {
            let will = will.map(|w| Box::new(w.clone()));
            self.emit(Record::Will { client_id: client_id.clone(), will });
        }
    }

    /// Rebuilds state from journal records, oldest first, before any client connects.
    /// Every restored session counts as disconnected at `now`: expiry clocks and will delays
    /// start again, and wills of clients whose connection the crash closed are published.
    pub fn restore(&mut self, now: Instant, records: impl IntoIterator<Item = Record>) -> RestoreReport {
        let mut r = Restorer { messages: FxHashMap::default(), wills: FxHashMap::default() };
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
            let (generation, expiry) = (s.generation, s.expiry_secs);
            if expiry != u32::MAX {
                let at = now + Duration::from_secs(u64::from(expiry));
                self.schedule(at, Timer::Expire { session: key, generation });
            }
        }
        for (client_id, will) in r.wills {
            report.wills += 1;
            let key = self.by_client.get(&client_id).copied();
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            match key.and_then(|k| self.sessions.get_mut(&k).map(|s| (k, s))) {
                Some((k, s)) if delay > 0 && s.expiry_secs > 0 => {
                    let at = now + Duration::from_secs(u64::from(delay.min(s.expiry_secs)));
                    let generation = s.generation;
                    s.will_pending = Some(Box::new((*will, None)));
                    self.schedule(at, Timer::Will { session: k, generation });
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
        if !self.journal_on() {
            return;
        }
        let mut records = vec![Record::Reset];
        self.snapshot(&mut records);
        if let Some(j) = self.journal.as_mut() {
            j.seq += records.len() as u64;
            j.records.extend(records);
            j.last_stored = None;
        }
    }

    /// The minimal records that rebuild the current durable state. A checkpoint writes
    /// these after a reset marker so older journal segments can be deleted.
    pub fn snapshot(&self, out: &mut Vec<Record>) {
        let mut stored: FxHashMap<MsgId, ()> = FxHashMap::default();
        let mut retained = Vec::new();
        self.retained.matching("#", &mut retained);
        for message in retained {
            out.push(Record::Retain { message });
        }
        for s in self.sessions.values().filter(|s| s.journaled) {
            let client_id = s.client_id.clone();
            out.push(Record::Session { client_id: client_id.clone(), expiry_secs: s.expiry_secs });
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
                if stored.insert(id, ()).is_none() {
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
        for c in self.conns.values() {
            if let (Some(w), Some(key)) = (&c.will, c.session)
                && let Some(s) = self.sessions.get(&key)
            {
                out.push(Record::Will { client_id: s.client_id.clone(), will: Some(w.clone()) });
            }
        }
    }
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
}
