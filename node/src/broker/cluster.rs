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
use crate::mqtt::packet::{Packet, QoS};

/// Identifies an operation the core emitted.
pub type OpId = u64;

/// An operation the shell performs for the core.
#[derive(Clone, Debug)]
pub enum ClusterOp {
    /// A local session subscribed to `filter` and no route row of this node exists yet:
    /// write it (idempotent). The filter is as clients send it: `$share/{group}/{filter}`
    /// stands for the group's shared row, any other filter for the node row.
    RouteAdd {
        /// The topic filter.
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
        /// The connection's will, kept in the record for the majority to publish if this
        /// node dies.
        will: Option<Box<crate::cluster::session_keys::StoredWill>>,
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
    /// Store `msg` as its topic's retained message in the retained ranges (an empty
    /// payload clears it).
    Retain {
        /// The message.
        msg: Arc<Message>,
    },
    /// Read the retained messages matching `filter` (a new subscription's).
    RetainedRead {
        /// The topic filter.
        filter: ByteString,
    },
    /// Match `msg.topic` on the route ranges and send `msg` once to every other node
    /// holding a node row for a matching filter; for each matching shared subscription pick
    /// one node holding members (this one included) and have it deliver to one member.
    Forward {
        /// The message.
        msg: Arc<Message>,
        /// The publisher's client id (orders forwards: one publisher's messages to one
        /// topic stay in order).
        publisher: ByteString,
        /// Only to this shared subscription, on another node if one holds members (a member
        /// here left the message unacknowledged and no connected member remains here).
        share: Option<ShareName>,
    },
}

/// A shared subscription: its group name and filter (`$share/{group}/{filter}`).
pub type ShareName = (ByteString, ByteString);

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum OpOutcome {
    /// A `RetainedRead` found these messages.
    Retained(Vec<Arc<Message>>),
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
    /// It was last held by another node: any copy of it here is stale.
    pub remote: bool,
    /// Its subscriptions, when `present` and held elsewhere or by an earlier incarnation
    /// of this node (used when there is no copy here).
    pub subs: Vec<(ByteString, SubEntry)>,
}

/// This node's route row for one filter.
#[derive(Debug)]
pub(super) struct FilterRoute {
    /// Local subscriptions to the filter.
    subscribers: u32,
    /// The add in flight, while there is one.
    adding: Option<OpId>,
}

/// Something waiting for operations.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A SUBACK: `codes` as granted so far; `pending` the filters still waiting.
    SubAck {
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        codes: Vec<u8>,
        pending: Vec<(usize, OpId, ByteString)>,
        v5: bool,
        /// Retained reads among `pending`, with the subscription they are for.
        reads: Vec<(OpId, SubEntry)>,
        /// What they found, delivered after the SUBACK.
        found: Vec<(SubEntry, Vec<Arc<Message>>)>,
    },
    /// A PUBACK or PUBREC: `code` as decided locally; `left` operations to wait for.
    Publish {
        conn: ConnId,
        key: SessionKey,
        packet_id: u16,
        qos: QoS,
        code: u8,
        left: usize,
        remote: usize,
        failed: bool,
    },
    /// A CONNECT waiting for its session record.
    Connect { conn: ConnId, client_id: ByteString, expiry_secs: u32 },
}

/// A packet held for a connection: `None` until its waiter is done.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) waiter: u64,
    pub(super) packet: Option<Packet>,
}

/// The cluster side of the core; `None` in a single-node broker.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    pub(super) ops: VecDeque<(OpId, ClusterOp)>,
    pub(super) next_op: OpId,
    pub(super) routes: FxHashMap<ByteString, FilterRoute>,
    /// Route adds in flight, by op.
    pub(super) adds: FxHashMap<OpId, ByteString>,
    pub(super) by_op: FxHashMap<OpId, Vec<u64>>,
    pub(super) waiters: FxHashMap<u64, Waiter>,
    pub(super) next_waiter: u64,
    pub(super) held: FxHashMap<ConnId, VecDeque<Held>>,
    /// QoS 1 PUBACKs held per connection (they count against Receive Maximum).
    pub(super) held_pubacks: FxHashMap<ConnId, usize>,
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

    pub(super) fn add_waiter(
        &mut self,
        conn: ConnId,
        waiter: Waiter,
        ops: impl IntoIterator<Item = OpId>,
    ) -> u64 {
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
        let filters: Vec<ByteString> = self.sessions.values().flat_map(|s| s.subs.keys().cloned()).collect();
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

    /// A message routed by the cluster to this node: to every matching local subscription
    /// that is not shared if `plain` (a node row of this node matched), and to one member
    /// each of the shared subscriptions `shares`. Returns how many sessions took it.
    pub fn deliver_forwarded(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        plain: bool,
        shares: &[ShareName],
    ) -> usize {
        let outer = self.begin_route(&msg);
        let mut n = if plain { self.route_local(now, msg.clone(), false, false) } else { 0 };
        n += self.deliver_shares(now, &msg, shares);
        self.end_route(outer);
        n
    }

    /// A local subscription to `filter` (as the client sent it) was added; returns the op
    /// its SUBACK must wait for, if any.
    pub(super) fn route_ref(&mut self, filter: &str) -> Option<OpId> {
        let c = self.cluster.as_mut()?;
        let f = ByteString::from(filter);
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
        self.cluster.as_ref()?.routes.get(filter)?.adding
    }

    /// A local subscription to `filter` was removed.
    pub(super) fn route_unref(&mut self, filter: &str) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let f = ByteString::from(filter);
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
        Some(c.emit(ClusterOp::Forward { msg: msg.clone(), publisher: publisher.clone(), share: None }))
    }

    /// Emits the forward of `msg` to one member of `share` on another node (nobody waits
    /// for it; a failure is counted).
    pub(super) fn forward_shared(&mut self, msg: &Arc<Message>, share: ShareName) {
        if let Some(c) = self.cluster.as_mut() {
            c.emit(ClusterOp::Forward { msg: msg.clone(), publisher: ByteString::new(), share: Some(share) });
        }
    }
}
