//! CORE. The broker's seam to the cluster: operations the core cannot finish alone
//! (writing this node's route row for a filter, matching a topic on the route ranges and
//! forwarding the message to the nodes subscribed to it) are emitted as [`ClusterOp`]s that
//! the shell performs, and the packets that must wait for them (SUBACK until the route row
//! is committed, PUBACK/PUBREC until every forward target has the message) are held per
//! connection until the shell reports each [`OpOutcome`].
//!
//! Call order, for the shell: after any call into the core, `poll_op()` until `None`,
//! perform each op, then `complete_op(now, id, outcome)` once per op (in any order).
//!
//! Invariants:
//! - a SUBACK granting a filter is sent only once this node's route row for it was
//!   committed (a failure refuses the filter with 0x80 and removes the subscription);
//! - route ops for one filter are emitted in the order the node's need changed (add,
//!   remove, add ...), so a shell that performs one filter's ops in order keeps the row
//!   present exactly while a local session subscribes to it;
//! - a connection's packets leave in the order they were produced: while one waits, later
//!   ones wait behind it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use super::Broker;
use super::message::{Message, SessionKey};
use super::session::{ConnId, SubEntry};
use crate::mqtt::packet::{Packet, PubResp, QoS, SubAck};
use crate::mqtt::reason;

/// Identifies an operation the core emitted.
pub type OpId = u64;

/// An operation the shell performs for the core.
#[derive(Clone, Debug)]
pub enum ClusterOp {
    /// A local session subscribed to `filter` and no route row of this node exists yet:
    /// write it (idempotent).
    RouteAdd {
        /// The topic filter (the inner filter of a shared subscription).
        filter: ByteString,
    },
    /// No local session subscribes to `filter` any more: delete this node's row.
    RouteRemove {
        /// The topic filter.
        filter: ByteString,
    },
    /// CONNECT: fence the session record of `client_id` (bump its connection epoch; with
    /// `clean_start` also its generation, deleting its subscription rows), tell its previous
    /// owner, if another node, to close the old connection, and load the session.
    Acquire {
        /// The client id.
        client_id: ByteString,
        /// Clean Start.
        clean_start: bool,
        /// The Session Expiry Interval in force.
        expiry_secs: u32,
    },
    /// The session's connection ended: mark the record offline at `expiry_secs`, or delete
    /// it with its subscription rows if `delete`; guarded by `epoch` (a newer owner wins).
    Release {
        /// The client id.
        client_id: ByteString,
        /// The epoch this node acquired the record at.
        epoch: u64,
        /// The record's generation then.
        generation: u64,
        /// The Session Expiry Interval in force.
        expiry_secs: u32,
        /// The session ended.
        delete: bool,
    },
    /// A persistent session's subscription changed: write (`Some`) or delete its row,
    /// guarded by `epoch`.
    SubRow {
        /// The client id.
        client_id: ByteString,
        /// The epoch this node acquired the record at.
        epoch: u64,
        /// The filter as the client sent it.
        filter: ByteString,
        /// The subscription, or `None` to delete it.
        entry: Option<SubEntry>,
    },
    /// Match `msg.topic` on the route ranges and send `msg` once to every other node
    /// holding a row for a matching filter.
    Forward {
        /// The message.
        msg: Arc<Message>,
        /// The publisher's client id (orders forwards: one publisher's messages to one
        /// topic stay in order).
        publisher: ByteString,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    /// Done; for a forward, how many other nodes took the message.
    Done {
        /// Nodes the message was forwarded to.
        nodes: usize,
    },
    /// An `Acquire` fenced the session record.
    Acquired(Box<Acquired>),
    /// The cluster could not do it (a range without a reachable leader, a timeout).
    Failed,
}

/// What fencing a session record gave the new owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The record's connection epoch now (this connection's fencing token).
    pub epoch: u64,
    /// Its generation now.
    pub generation: u64,
    /// The session existed and continues (Session Present).
    pub present: bool,
    /// It was last held by another node (or another incarnation of this one): any copy
    /// of it here is stale.
    pub remote: bool,
    /// Its subscriptions, when `present` and `remote`.
    pub subs: Vec<(ByteString, SubEntry)>,
}

/// This node's route row for one filter.
#[derive(Debug)]
struct FilterRoute {
    /// Local subscriptions to the filter.
    subscribers: u32,
    /// The add in flight, while there is one.
    adding: Option<OpId>,
}

/// Something waiting for operations.
#[derive(Debug)]
enum Waiter {
    /// A SUBACK: `codes` as granted so far; `pending` the filters still waiting.
    SubAck {
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        codes: Vec<u8>,
        pending: Vec<(usize, OpId, ByteString)>,
        v5: bool,
    },
    /// A PUBACK or PUBREC: `code` as decided locally.
    Publish { conn: ConnId, key: SessionKey, packet_id: u16, qos: QoS, code: u8 },
    /// A CONNECT waiting for its session record.
    Connect { conn: ConnId, client_id: ByteString, expiry_secs: u32 },
}

/// A packet held for a connection: `None` until its waiter is done.
#[derive(Debug)]
struct Held {
    waiter: u64,
    packet: Option<Packet>,
}

/// The cluster side of the core; `None` in a single-node broker.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    ops: VecDeque<(OpId, ClusterOp)>,
    next_op: OpId,
    routes: FxHashMap<ByteString, FilterRoute>,
    /// Route adds in flight, by op.
    adds: FxHashMap<OpId, ByteString>,
    by_op: FxHashMap<OpId, Vec<u64>>,
    waiters: FxHashMap<u64, Waiter>,
    next_waiter: u64,
    held: FxHashMap<ConnId, VecDeque<Held>>,
    /// QoS 1 PUBACKs held per connection (they count against Receive Maximum).
    held_pubacks: FxHashMap<ConnId, usize>,
    /// Forwards that failed (QoS 0 ones are dropped and counted here).
    pub(super) forwards_failed: u64,
    /// This node cannot reach a majority of the cluster (see `set_isolated`).
    pub(super) isolated: bool,
}

impl ClusterState {
    fn emit(&mut self, op: ClusterOp) -> OpId {
        self.next_op += 1;
        self.ops.push_back((self.next_op, op));
        self.next_op
    }

    fn add_waiter(&mut self, conn: ConnId, waiter: Waiter, ops: impl IntoIterator<Item = OpId>) -> u64 {
        self.next_waiter += 1;
        let id = self.next_waiter;
        for op in ops {
            self.by_op.entry(op).or_default().push(id);
        }
        let holds = !matches!(waiter, Waiter::Connect { .. });
        self.waiters.insert(id, waiter);
        if holds {
            self.held.entry(conn).or_default().push_back(Held { waiter: id, packet: None });
        }
        id
    }
}

impl Broker {
    /// Turns on the cluster seam: from now on SUBSCRIBE waits for route rows and publishes
    /// are forwarded. Every filter already subscribed (sessions restored from the journal)
    /// gets its route row written.
    pub fn enable_cluster(&mut self) {
        let mut state = ClusterState::default();
        let filters: Vec<ByteString> =
            self.sessions.values().flat_map(|s| s.subs.keys().map(|f| route_filter(f))).collect();
        for f in filters {
            let r = state.routes.entry(f.clone()).or_insert(FilterRoute { subscribers: 0, adding: None });
            r.subscribers += 1;
            let first = r.subscribers == 1;
            if first {
                let id = state.emit(ClusterOp::RouteAdd { filter: f.clone() });
                state.adds.insert(id, f.clone());
                if let Some(r) = state.routes.get_mut(&f) {
                    r.adding = Some(id);
                }
            }
        }
        self.cluster = Some(Box::new(state));
    }

    /// True when the cluster seam is on.
    pub fn cluster_enabled(&self) -> bool {
        self.cluster.is_some()
    }

    /// The next operation for the shell to perform.
    pub fn poll_op(&mut self) -> Option<(OpId, ClusterOp)> {
        self.cluster.as_mut()?.ops.pop_front()
    }

    /// Forwards that failed since start (QoS 0 ones are dropped).
    pub fn forwards_failed(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.forwards_failed)
    }

    /// The shell finished operation `id`.
    pub fn complete_op(&mut self, now: Instant, id: OpId, outcome: OpOutcome) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if let Some(f) = c.adds.remove(&id)
            && let Some(r) = c.routes.get_mut(&f)
            && r.adding == Some(id)
        {
            r.adding = None;
        }
        let waiting = c.by_op.remove(&id).unwrap_or_default();
        if waiting.is_empty() && outcome == OpOutcome::Failed {
            c.forwards_failed += 1;
        }
        for w in waiting {
            self.advance_waiter(now, w, id, outcome.clone());
        }
    }

    /// A locally delivered message that arrived from another node.
    pub fn deliver_forwarded(&mut self, now: Instant, msg: Message) -> usize {
        let msg = Arc::new(msg);
        let outer = self.begin_route(&msg);
        let n = self.route_local(now, msg, false);
        self.end_route(outer);
        n
    }

    /// A local subscription to `filter` (as the client sent it) was added; returns the op
    /// its SUBACK must wait for, if any.
    pub(super) fn route_ref(&mut self, filter: &str) -> Option<OpId> {
        let c = self.cluster.as_mut()?;
        let f = route_filter(filter);
        let r = c.routes.entry(f.clone()).or_insert(FilterRoute { subscribers: 0, adding: None });
        r.subscribers += 1;
        if r.subscribers == 1 {
            let id = c.emit(ClusterOp::RouteAdd { filter: f.clone() });
            c.adds.insert(id, f.clone());
            if let Some(r) = c.routes.get_mut(&f) {
                r.adding = Some(id);
            }
        }
        c.routes.get(&f).and_then(|r| r.adding)
    }

    /// The add in flight for an existing subscription's filter, if any (a repeated
    /// SUBSCRIBE waits for it like the first).
    pub(super) fn route_pending(&self, filter: &str) -> Option<OpId> {
        self.cluster.as_ref()?.routes.get(&*route_filter(filter))?.adding
    }

    /// A local subscription to `filter` was removed.
    pub(super) fn route_unref(&mut self, filter: &str) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let f = route_filter(filter);
        let Some(r) = c.routes.get_mut(&f) else {
            return;
        };
        r.subscribers = r.subscribers.saturating_sub(1);
        if r.subscribers == 0 {
            c.routes.remove(&f);
            c.emit(ClusterOp::RouteRemove { filter: f });
        }
    }

    /// Emits an operation; `None` without the cluster.
    pub(super) fn emit_op(&mut self, op: ClusterOp) -> Option<OpId> {
        Some(self.cluster.as_mut()?.emit(op))
    }

    /// Makes `conn`'s CONNECT wait for `op`.
    pub(super) fn wait_connect(&mut self, conn: ConnId, op: OpId, client_id: ByteString, expiry_secs: u32) {
        if let Some(c) = self.cluster.as_mut() {
            c.add_waiter(conn, Waiter::Connect { conn, client_id, expiry_secs }, [op]);
        }
    }

    /// Emits the forward of a routed message; `None` without the cluster or for `$SYS`.
    pub(super) fn forward(&mut self, msg: &Arc<Message>, publisher: &ByteString) -> Option<OpId> {
        let c = self.cluster.as_mut()?;
        if msg.topic.starts_with("$SYS/") {
            return None;
        }
        Some(c.emit(ClusterOp::Forward { msg: msg.clone(), publisher: publisher.clone() }))
    }

    /// Holds the SUBACK of `packet_id` until `pending` filters' routes are committed.
    pub(super) fn hold_suback(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        codes: Vec<u8>,
        pending: Vec<(usize, OpId, ByteString)>,
        v5: bool,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let ops: Vec<OpId> = pending.iter().map(|p| p.1).collect();
        let w = Waiter::SubAck { conn, key, packet_id, codes, pending, v5 };
        c.add_waiter(conn, w, ops);
    }

    /// Holds the PUBACK (QoS 1) or PUBREC (QoS 2) of `packet_id` until forward `op` ends.
    pub(super) fn hold_publish_ack(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        qos: QoS,
        code: u8,
        op: OpId,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if qos == QoS::AtLeastOnce {
            *c.held_pubacks.entry(conn).or_default() += 1;
        }
        c.add_waiter(conn, Waiter::Publish { conn, key, packet_id, qos, code }, [op]);
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

    fn advance_waiter(&mut self, now: Instant, w: u64, op: OpId, outcome: OpOutcome) {
        let Some(waiter) = self.cluster.as_mut().and_then(|c| c.waiters.get_mut(&w)) else {
            return;
        };
        let mut failed = Vec::new();
        let (conn, key, done) = match waiter {
            Waiter::SubAck { conn, key, pending, codes, .. } => {
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
            Waiter::Publish { conn, key, .. } => (*conn, *key, true),
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
            Waiter::SubAck { packet_id, codes, v5, .. } => {
                let properties = match codes.iter().find(|c| **c >= 0x80) {
                    Some(&code) if v5 => self.reason_props(conn, reason::describe(code)),
                    _ => Default::default(),
                };
                Packet::SubAck(SubAck { packet_id, properties, reason_codes: codes })
            }
            Waiter::Publish { key, packet_id, qos, code, .. } => {
                if let Some(c) = self.cluster.as_mut()
                    && qos == QoS::AtLeastOnce
                    && let Some(n) = c.held_pubacks.get_mut(&conn)
                {
                    *n = n.saturating_sub(1);
                }
                let code = match outcome {
                    OpOutcome::Failed | OpOutcome::Acquired(_) => reason::UNSPECIFIED_ERROR,
                    OpOutcome::Done { nodes } if nodes > 0 && code == reason::NO_MATCHING_SUBSCRIBERS => {
                        reason::SUCCESS
                    }
                    OpOutcome::Done { .. } => code,
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

/// The filter a subscription needs a route row for: the inner filter of a shared
/// subscription, the filter itself otherwise.
fn route_filter(filter: &str) -> ByteString {
    match crate::mqtt::topic::parse_shared(filter) {
        Ok(Some(sf)) => ByteString::from(sf.filter),
        _ => ByteString::from(filter),
    }
}
