//! CORE. Rebuilding the broker's state from journal records at start (single-node mode):
//! sessions, subscriptions, queued and in-flight messages, inbound QoS 2 state, wills and
//! retained messages, in record order, before any client connects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use super::journal::{MsgId, Record};
use super::message::{Message, SessionKey};
use super::session::{Delivery, Inflight, OutState, Session, SubEntry};
use super::{Broker, Target, Timer};
use crate::mqtt::packet::Will;
use crate::mqtt::topic::parse_shared;

impl Broker {
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
            s.recount();
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
        if self.wills_by_cluster {
            // The session's record in the cluster still holds the will: the session range's
            // leader publishes it, once, when it sees this node's new incarnation.
            return;
        }
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
