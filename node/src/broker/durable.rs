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
use std::time::Instant;

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use super::Broker;
use super::journal::{MsgId, Record};
use super::message::{Message, SessionKey};
use super::session::{ConnId, Delivery, OutState};
use crate::mqtt::packet::{Packet, QoS, Will};

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
