//! CORE. Sessions across nodes (CLUSTER.md section 4): a CONNECT fences the session's
//! record before its CONNACK (one live connection per client id cluster-wide), a node told
//! that a newer epoch took its client over closes the old connection with 0x8E and forgets
//! the session, a disconnect marks the record offline (or deletes it), and a persistent
//! session's subscriptions are rows of the record, so another node can restore them.

use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use super::Broker;
use super::Target;
use super::cluster::{Acquired, ClusterOp, OpId, OpOutcome};
use super::message::SessionKey;
use super::session::{Acquiring, ConnId, Phase, SubEntry};
use crate::mqtt::packet::{Connect, Packet};
use crate::mqtt::reason;
use crate::mqtt::topic::parse_shared;

/// Packets a client may send between CONNECT and CONNACK while its session is acquired.
const EARLY_PACKETS_MAX: usize = 64;

impl Broker {
    /// This broker will run in a cluster: the wills of sessions its journal restores are
    /// left to the cluster (their records hold them; see `server::sweeper`). Call before
    /// the journal is replayed.
    pub fn defer_wills_to_cluster(&mut self) {
        self.wills_by_cluster = true;
    }

    /// Starts fencing the session record for a CONNECT that passed every local check.
    pub(super) fn acquire(
        &mut self,
        conn: ConnId,
        connect: Connect,
        assigned_id: bool,
        auth_data: Option<Bytes>,
        expiry_secs: u32,
    ) {
        let client_id = super::connect::own(&connect.client_id);
        let will = connect.will.as_ref().map(|w| Box::new(stored_will(w)));
        let op = ClusterOp::Acquire {
            client_id: client_id.clone(),
            clean_start: connect.clean_start,
            expiry_secs,
            will,
        };
        let Some(id) = self.emit_op(op) else { return };
        self.wait_connect(conn, id, client_id, expiry_secs);
        if let Some(c) = self.conns.get_mut(&conn) {
            let pending = Acquiring { connect, assigned_id, auth_data, early: Vec::new() };
            c.phase = Phase::Acquiring(Box::new(pending));
        }
    }

    /// A packet that arrived while the session is acquired: handled after CONNACK.
    pub(super) fn hold_early(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        let full = match self.conns.get_mut(&conn).map(|c| &mut c.phase) {
            Some(Phase::Acquiring(a)) if a.early.len() < EARLY_PACKETS_MAX => {
                a.early.push(packet);
                false
            }
            _ => true,
        };
        if full {
            self.protocol_error(now, conn, reason::QUOTA_EXCEEDED, "too many packets before CONNACK");
        }
    }

    /// The fence of a CONNECT's session record ended.
    pub(super) fn acquired(
        &mut self,
        now: Instant,
        conn: ConnId,
        client_id: ByteString,
        expiry_secs: u32,
        outcome: OpOutcome,
    ) {
        let pending = match self.conns.get_mut(&conn) {
            Some(c) if matches!(c.phase, Phase::Acquiring(_)) => {
                match std::mem::replace(&mut c.phase, Phase::AwaitConnect) {
                    Phase::Acquiring(p) => Some(p),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(pending) = pending else {
            // The connection went before its CONNACK: give the record up.
            if let OpOutcome::Acquired(a) = outcome {
                let op = ClusterOp::Release {
                    client_id,
                    epoch: a.epoch,
                    generation: a.generation,
                    expiry_secs,
                    delete: expiry_secs == 0,
                };
                self.emit_op(op);
            }
            return;
        };
        let Acquiring { connect, assigned_id, auth_data, early } = *pending;
        let OpOutcome::Acquired(a) = outcome else {
            // Strict CP: the record could not be fenced, so the client is not connected
            // (0x88 Server unavailable; 3.1.1 return code 3).
            return self.refuse(now, conn, reason::SERVER_UNAVAILABLE, "session store unreachable");
        };
        self.finish_connect(now, conn, connect, assigned_id, auth_data, Some(a));
        for p in early {
            self.handle_packet(now, conn, p);
        }
    }

    /// Applies what the fence said to the local copy of the session before it attaches:
    /// a stale copy goes, a session held elsewhere is restored here. Returns the session
    /// to attach, if one continues, and whether it is present.
    pub(super) fn adopt_session(
        &mut self,
        now: Instant,
        client_id: &ByteString,
        clean_start: bool,
        a: &Acquired,
    ) -> Option<SessionKey> {
        let existing = self.by_client.get(client_id).copied();
        if let Some(key) = existing
            && (a.remote || !a.present)
            && self.sessions.get(&key).is_some_and(|s| s.conn.is_none())
        {
            self.forget_session(key);
        }
        if clean_start || !a.present || self.by_client.contains_key(client_id) {
            return None;
        }
        let key = self.create_session(client_id.clone(), 0);
        for (filter, entry) in &a.subs {
            self.restore_subscription(key, filter.clone(), *entry);
        }
        let _ = now;
        Some(key)
    }

    /// Remembers the fencing token of the session attached to `key`.
    pub(super) fn set_cluster_epoch(&mut self, key: SessionKey, a: &Acquired) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.cluster_epoch = a.epoch;
            s.cluster_generation = a.generation;
        }
    }

    /// Another node fenced `client_id` at `epoch`: a connection here with an older epoch
    /// gets DISCONNECT 0x8E and closes, and the session is forgotten (it continues there).
    /// Returns whether the client was here.
    pub fn kick(&mut self, now: Instant, client_id: &str, epoch: u64) -> bool {
        let Some(&key) = self.by_client.get(client_id) else {
            return false;
        };
        let Some(s) = self.sessions.get(&key) else {
            return false;
        };
        tracing::debug!(client_id, epoch, here = s.cluster_epoch, "kick");
        if s.cluster_epoch >= epoch {
            return false;
        }
        let conn = s.conn;
        if let Some(s) = self.sessions.get_mut(&key) {
            // The record is the new owner's: nothing here writes it any more.
            s.cluster_epoch = u64::MAX;
        }
        if let Some(conn) = conn {
            self.send_disconnect(conn, reason::SESSION_TAKEN_OVER, "session taken over");
            // As on one node: an immediate will is published; a delayed one goes with the
            // session, which the new connection continues.
            self.close_now(now, conn, Some(true));
        }
        self.forget_session(key);
        true
    }

    /// Drops the local copy of a session without its will and without touching its record
    /// (which another connection owns now, or which is gone).
    fn forget_session(&mut self, key: SessionKey) {
        self.cancel_session_timers(key);
        if let Some(s) = self.sessions.get_mut(&key) {
            s.will_pending = None;
            s.cluster_epoch = u64::MAX;
        }
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        if self.by_client.get(&s.client_id) == Some(&key) {
            self.by_client.remove(&s.client_id);
        }
        if s.journaled {
            self.emit(super::journal::Record::SessionEnd { client_id: s.client_id.clone() });
        }
        for filter in s.subs.keys() {
            self.remove_subscription(key, filter);
        }
    }

    /// Adds a subscription read from the session's record.
    fn restore_subscription(&mut self, key: SessionKey, filter: ByteString, entry: SubEntry) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.subs.insert(filter.clone(), entry).is_some() {
            return;
        }
        match parse_shared(&filter) {
            Ok(Some(sf)) => self.join_shared(key, sf.group.into(), sf.filter.into(), entry),
            Ok(None) => {
                self.trie.insert(&filter, Target::Session(key), entry);
            }
            Err(_) => return,
        }
        self.route_ref(&filter);
    }

    /// Emits the release of a session's record when its connection ends (`delete` when the
    /// session ends too).
    pub(super) fn release_record(&mut self, key: SessionKey, delete: bool) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        if !self.cluster_enabled() || s.cluster_epoch == 0 || s.cluster_epoch == u64::MAX {
            return;
        }
        let op = ClusterOp::Release {
            client_id: s.client_id.clone(),
            epoch: s.cluster_epoch,
            generation: s.cluster_generation,
            expiry_secs: s.expiry_secs,
            delete,
        };
        self.emit_op(op);
    }

    /// Emits the write (or delete) of a persistent session's subscription row; returns the
    /// op its SUBACK waits for.
    pub(super) fn sub_row(
        &mut self,
        key: SessionKey,
        filter: &ByteString,
        entry: Option<SubEntry>,
    ) -> Option<OpId> {
        let s = self.sessions.get(&key)?;
        if !self.cluster_enabled()
            || s.expiry_secs == 0
            || s.cluster_epoch == 0
            || s.cluster_epoch == u64::MAX
        {
            return None;
        }
        let op = ClusterOp::SubRow {
            client_id: s.client_id.clone(),
            epoch: s.cluster_epoch,
            filter: filter.clone(),
            entry,
        };
        self.emit_op(op)
    }

    /// The shell's isolation detector: this node cannot reach a majority of the cluster
    /// (`true`) or can again. Isolated, it closes every client with DISCONNECT 0x9C (use
    /// another server; 3.1.1: closed) and refuses CONNECT with 0x88 until it is not: strict
    /// CP, a partitioned node never serves what the majority may have changed.
    pub fn set_isolated(&mut self, now: Instant, isolated: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if c.isolated == isolated {
            return;
        }
        c.isolated = isolated;
        tracing::warn!(isolated, "cluster isolation changed");
        if !isolated {
            return;
        }
        let conns: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.is_connected()).map(|(id, _)| *id).collect();
        for conn in conns {
            self.send_disconnect(conn, reason::USE_ANOTHER_SERVER, "node isolated from the cluster");
            self.close_now(now, conn, Some(true));
        }
    }

    /// True while the node is isolated from the cluster's majority.
    pub fn isolated(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.isolated)
    }

    /// Publishes the will of a connection whose node died, taken from its session record by
    /// the session range's leader here (see `server::sweeper`): delivered here and forwarded.
    pub fn publish_swept_will(&mut self, now: Instant, will: &crate::cluster::session_keys::StoredWill) {
        let Some(qos) = crate::mqtt::packet::QoS::from_u8(will.qos) else { return };
        let mut props = if will.properties.is_empty() {
            crate::mqtt::properties::Properties::default()
        } else {
            let mut buf = Bytes::from(will.properties.clone());
            match crate::mqtt::properties::Properties::decode(
                &mut buf,
                crate::mqtt::properties::PropertyContext::Will,
            ) {
                Ok(p) => p,
                Err(_) => return,
            }
        };
        props.will_delay_interval = None;
        let retain = will.retain && self.config.retain_available;
        let payload = Bytes::from(will.payload.clone());
        let msg =
            super::message::Message::new(now, will.topic.as_str().into(), payload, qos, retain, props, None);
        tracing::debug!(topic = %msg.topic, "publishing the will of a connection on a dead node");
        self.route(now, std::sync::Arc::new(msg));
    }
}

/// A will as its session record keeps it.
fn stored_will(w: &crate::mqtt::packet::Will) -> crate::cluster::session_keys::StoredWill {
    let mut properties = bytes::BytesMut::new();
    if !w.properties.is_empty() {
        w.properties.encode(&mut properties);
    }
    crate::cluster::session_keys::StoredWill {
        qos: w.qos as u8,
        retain: w.retain,
        delay_secs: w.properties.will_delay_interval.unwrap_or(0),
        topic: w.topic.to_string(),
        properties: properties.to_vec(),
        payload: w.payload.to_vec(),
    }
}
