//! SHELL. The forward pipeline: each batch of messages the core routed is matched on the
//! route ranges (one `Match` query per range for all its topics, a lease read on the
//! leader), then sent once per destination node over the transport's data streams, the
//! stream chosen by the publisher so one publisher's messages stay in
//! order. Matches of up to [`MATCHES_IN_FLIGHT`] batches run concurrently; their forwards
//! leave in the order the batches arrived.
//!
//! Shared subscriptions: for each `(group, filter)` matching a topic, one node holding
//! members is picked round robin among the reachable ones (this node included), and only
//! that node delivers the message to one of its members.
//!
//! A QoS 1/2 message is done when every destination acknowledged its batch (the
//! destination has queued it to its sessions). A destination that is unreachable for
//! longer than the isolation fence has closed its clients (see CLUSTER.md section 4), so
//! it is skipped; one unreachable for less fails the message (the publisher gets 0x80).
//! On the receiving side, [`deliver`] hands forwarded messages to the local core.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use super::dispatch::{ClusterLink, Completions};
use super::liveness::Liveness;
use crate::broker::message::Message;
use crate::broker::{OpId, OpOutcome, ShareName};
use crate::cluster::route_keys::{self, Targets};
use crate::group::NodeId;
use crate::mqtt::packet::QoS;
use crate::mqtt::properties::{Properties, PropertyContext};
use crate::transport::forward::{ForwardBatch, ForwardMsg};

/// Batches whose match runs while earlier ones are sent.
const MATCHES_IN_FLIGHT: usize = 8;
/// Topics per match query.
const TOPICS_PER_MATCH: usize = 1024;
/// Shared subscriptions whose round-robin position is kept (forgotten all at once beyond).
const SHARE_CURSORS_MAX: usize = 65_536;

/// One message to forward.
pub(crate) struct ForwardOp {
    pub(crate) id: OpId,
    pub(crate) msg: Arc<Message>,
    pub(crate) publisher: ByteString,
    /// Only to this shared subscription, on another node if one holds members.
    pub(crate) share: Option<ShareName>,
}

/// What a matched batch carries to the sender: the ops and, per op, its targets.
type Matched = (Vec<ForwardOp>, Result<Vec<Targets>, String>);

/// What one destination node gets of one message.
#[derive(Default)]
struct Dest {
    /// Its subscriptions that are not shared.
    plain: bool,
    /// Shared subscriptions it serves the message to.
    shares: Vec<(String, String)>,
}

/// A forward waiting for acknowledgements.
struct Waiting {
    batches: usize,
    nodes: usize,
}

#[derive(Default)]
struct Acks {
    /// Batch id -> (destination, ops in it, when sent).
    batches: HashMap<u64, (NodeId, Vec<OpId>, Instant)>,
    ops: HashMap<OpId, Waiting>,
}

/// The forward pipeline of one node.
pub(crate) struct Forwarder {
    link: ClusterLink,
    liveness: Arc<Liveness>,
    done: Completions,
    matched: mpsc::Sender<JoinHandle<Matched>>,
    acks: Mutex<Acks>,
    next_batch: AtomicU64,
    down_since: Mutex<HashMap<NodeId, Instant>>,
    /// Round-robin position per shared subscription `(group, filter)`.
    share_cursors: Mutex<HashMap<(String, String), usize>>,
    /// Messages not forwarded to a node: QoS 0 to an unreachable node, or skipped nodes.
    pub(crate) dropped: AtomicU64,
}

impl Forwarder {
    pub(crate) fn start(link: ClusterLink, liveness: Arc<Liveness>, done: Completions) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(MATCHES_IN_FLIGHT);
        let f = Arc::new(Self {
            link,
            liveness,
            done,
            matched: tx,
            acks: Mutex::new(Acks::default()),
            next_batch: AtomicU64::new(1),
            down_since: Mutex::new(HashMap::new()),
            share_cursors: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(send_loop(Arc::downgrade(&f), rx));
        tokio::spawn(sweep_loop(Arc::downgrade(&f)));
        f
    }

    /// Matches `ops` (in chunks) and queues them for sending, in order; waits while
    /// [`MATCHES_IN_FLIGHT`] batches are being matched.
    pub(crate) async fn submit(&self, mut ops: Vec<ForwardOp>) {
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(TOPICS_PER_MATCH));
            let chunk = std::mem::replace(&mut ops, rest);
            let client = self.link.client.clone();
            let tenant = self.link.tenant.clone();
            let task = tokio::spawn(async move {
                let topics: Vec<String> = chunk.iter().map(|o| o.msg.topic.to_string()).collect();
                let result = match client.match_topics(&tenant, &topics).await {
                    Ok(rows) => Ok(rows.iter().map(|r| route_keys::targets(r)).collect()),
                    Err(e) => Err(e.to_string()),
                };
                (chunk, result)
            });
            if self.matched.send(task).await.is_err() {
                return;
            }
        }
    }

    /// Acknowledgements from `from` for batches this node sent.
    pub(crate) fn acked(&self, from: NodeId, ids: &[u64]) {
        let mut done = Vec::new();
        {
            let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                // Only the destination acknowledges its batch.
                if acks.batches.get(id).is_none_or(|b| b.0 != from) {
                    continue;
                }
                let Some((_, ops, _)) = acks.batches.remove(id) else { continue };
                for op in ops {
                    if let Some(w) = acks.ops.get_mut(&op) {
                        w.batches -= 1;
                        if w.batches == 0 {
                            let nodes = w.nodes;
                            acks.ops.remove(&op);
                            done.push((op, OpOutcome::Done { nodes }));
                        }
                    }
                }
            }
        }
        self.done.complete(done);
    }

    /// Whether `node` can be sent to; `None` if it is to be skipped (silent for longer than
    /// the isolation fence: it has closed its clients). A node is reachable while it
    /// answers pings, not merely while a QUIC connection to it is open.
    fn reachable(&self, node: NodeId, now: Instant) -> Option<bool> {
        let mut down = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        if self.link.transport.is_connected(node) && self.liveness.fresh(node, now) {
            down.remove(&node);
            return Some(true);
        }
        let since = *down.entry(node).or_insert(now);
        if now.duration_since(since) > self.link.isolation_fence { None } else { Some(false) }
    }

    /// The node `(group, filter)`'s next message goes to: round robin over `candidates`
    /// (not empty).
    fn pick(&self, group: &str, filter: &str, candidates: &[NodeId]) -> NodeId {
        let mut cursors = self.share_cursors.lock().unwrap_or_else(|e| e.into_inner());
        if cursors.len() >= SHARE_CURSORS_MAX {
            cursors.clear();
        }
        let cursor = cursors.entry((group.to_owned(), filter.to_owned())).or_insert(0);
        let node = candidates[*cursor % candidates.len()];
        *cursor = cursor.wrapping_add(1);
        node
    }

    /// Where `op` goes, per destination node, and the shared subscriptions this node
    /// serves it to.
    fn plan(
        &self,
        op: &ForwardOp,
        t: &Targets,
        me: NodeId,
        now: Instant,
    ) -> (Vec<(NodeId, Dest)>, Vec<ShareName>) {
        let mut dests: std::collections::BTreeMap<NodeId, Dest> = std::collections::BTreeMap::new();
        let mut local = Vec::new();
        if op.share.is_none() {
            for &n in t.nodes.iter().filter(|n| **n != me) {
                dests.entry(n).or_default().plain = true;
            }
        }
        for s in &t.shared {
            if op.share.as_ref().is_some_and(|(g, f)| *g != *s.group || *f != *s.filter) {
                continue;
            }
            // A redelivery goes to another node; a new message to any reachable one.
            let mut candidates: Vec<NodeId> = if op.share.is_some() {
                s.nodes.iter().copied().filter(|&n| n != me && self.reachable(n, now) == Some(true)).collect()
            } else {
                s.nodes.iter().copied().filter(|&n| n == me || self.reachable(n, now) == Some(true)).collect()
            };
            if candidates.is_empty() && op.share.is_none() {
                candidates.clone_from(&s.nodes);
            }
            let node = if candidates.is_empty() { me } else { self.pick(&s.group, &s.filter, &candidates) };
            if node == me {
                local.push((ByteString::from(s.group.as_str()), ByteString::from(s.filter.as_str())));
            } else {
                dests.entry(node).or_default().shares.push((s.group.clone(), s.filter.clone()));
            }
        }
        // A redelivery whose group holds no member elsewhere stays here.
        if let Some(share) = &op.share
            && local.is_empty()
            && dests.is_empty()
        {
            local.push(share.clone());
        }
        (dests.into_iter().collect(), local)
    }

    /// Sends one matched batch.
    fn send(&self, ops: Vec<ForwardOp>, targets: Result<Vec<Targets>, String>) {
        let targets = match targets {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, messages = ops.len(), "route match failed");
                let failed: Vec<_> = ops.iter().map(|o| (o.id, OpOutcome::Failed)).collect();
                return self.done.complete(failed);
            }
        };
        let me = self.link.transport.node_id();
        let now = Instant::now();
        let mut groups: HashMap<(NodeId, usize), Vec<(usize, Dest)>> = HashMap::new();
        let mut local: Vec<(Arc<Message>, Vec<ShareName>)> = Vec::new();
        // Per op: batches sent, nodes reached, failed.
        let mut state: Vec<(usize, usize, bool)> = vec![(0, 0, false); ops.len()];
        let streams = self.link.transport.forward_streams();
        for (i, (op, t)) in ops.iter().zip(&targets).enumerate() {
            // One batch per destination stream: every publisher hashed to it shares it.
            let stream = stream_of(&op.publisher) % streams;
            let (dests, shares) = self.plan(op, t, me, now);
            for (n, d) in dests {
                groups.entry((n, stream)).or_default().push((i, d));
            }
            if !shares.is_empty() {
                state[i].1 += 1;
                local.push((op.msg.clone(), shares));
            }
        }
        // Before any completion: a PUBACK released by one must follow these deliveries.
        self.done.deliver_local(local);
        // The acknowledgements of these batches may come back before this function ends (on
        // loopback they do): they wait for this lock until every batch is registered.
        let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent: Vec<(u64, NodeId, Vec<OpId>)> = Vec::new();
        for ((node, stream), members) in groups {
            let acked = members.iter().any(|(i, _)| ops[*i].msg.qos != QoS::AtMostOnce);
            match self.reachable(node, now) {
                None => {
                    self.dropped.fetch_add(members.len() as u64, Ordering::Relaxed);
                    continue;
                }
                Some(false) => {
                    self.dropped.fetch_add(members.len() as u64, Ordering::Relaxed);
                    members.iter().for_each(|(i, _)| state[*i].2 = true);
                    continue;
                }
                Some(true) => {}
            }
            let id = if acked { self.next_batch.fetch_add(1, Ordering::Relaxed) } else { 0 };
            let messages = members.iter().map(|(i, d)| to_wire(&ops[*i], d, now)).collect();
            if !self.link.transport.send_forward(node, stream, ForwardBatch { id, messages }) {
                self.dropped.fetch_add(members.len() as u64, Ordering::Relaxed);
                members.iter().for_each(|(i, _)| state[*i].2 = true);
                continue;
            }
            for (i, _) in &members {
                state[*i].1 += 1;
                if ops[*i].msg.qos != QoS::AtMostOnce {
                    state[*i].0 += 1;
                }
            }
            if acked {
                let waiting = members
                    .iter()
                    .filter(|(i, _)| ops[*i].msg.qos != QoS::AtMostOnce)
                    .map(|(i, _)| ops[*i].id);
                sent.push((id, node, waiting.collect()));
            }
        }
        let mut done = Vec::new();
        for (op, &(batches, nodes, failed)) in ops.iter().zip(&state) {
            let qos0 = op.msg.qos == QoS::AtMostOnce;
            if failed && !qos0 {
                done.push((op.id, OpOutcome::Failed));
            } else if batches == 0 || qos0 {
                done.push((op.id, OpOutcome::Done { nodes }));
            } else {
                acks.ops.insert(op.id, Waiting { batches, nodes });
            }
        }
        for (id, node, waiting) in sent {
            // Ops that failed elsewhere are not waited for: their acks are ignored.
            let waiting: Vec<OpId> = waiting.into_iter().filter(|o| acks.ops.contains_key(o)).collect();
            acks.batches.insert(id, (node, waiting, now));
        }
        drop(acks);
        self.done.complete(done);
    }

    /// Fails forwards whose acknowledgement did not come within the request timeout.
    fn sweep(&self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        {
            let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            let timeout = self.link.request_timeout;
            let expired: Vec<u64> = acks
                .batches
                .iter()
                .filter(|(_, b)| now.duration_since(b.2) > timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Some((node, ops, _)) = acks.batches.remove(&id) {
                    tracing::debug!(node, batch = id, "forward not acknowledged in time");
                    for op in ops {
                        if acks.ops.remove(&op).is_some() {
                            failed.push((op, OpOutcome::Failed));
                        }
                    }
                }
            }
        }
        self.done.complete(failed);
    }
}

async fn send_loop(f: std::sync::Weak<Forwarder>, mut rx: mpsc::Receiver<JoinHandle<Matched>>) {
    while let Some(task) = rx.recv().await {
        let Ok((ops, nodes)) = task.await else { continue };
        let Some(f) = f.upgrade() else { return };
        f.send(ops, nodes);
    }
}

async fn sweep_loop(f: std::sync::Weak<Forwarder>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Some(f) = f.upgrade() else { return };
        f.sweep();
    }
}

/// The data stream of a publisher's messages: all on one, so they arrive in the order it
/// sent them, across topics too (as on a single broker; MQTT asks it per topic only).
fn stream_of(publisher: &str) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    publisher.hash(&mut h);
    h.finish() as usize
}

/// The wire form of a message for a destination; its expiry interval is what is left of
/// it now.
fn to_wire(op: &ForwardOp, dest: &Dest, now: Instant) -> ForwardMsg {
    let msg = &op.msg;
    let mut properties = BytesMut::new();
    if msg.expires_at.is_some() || !msg.properties.is_empty() {
        let mut props = msg.properties.clone();
        props.message_expiry_interval = msg.remaining_expiry_secs(now);
        props.encode(&mut properties);
    }
    ForwardMsg {
        topic: msg.topic.to_string(),
        payload: msg.payload.clone(),
        qos: msg.qos as u8,
        retain: msg.retain,
        properties: properties.to_vec(),
        plain: dest.plain,
        shares: dest.shares.clone(),
    }
}

/// Why a forwarded message was not delivered.
#[derive(Debug)]
enum Refused {
    Qos,
    Topic,
    Properties,
}

/// A forwarded message as the local core takes it.
fn from_wire(
    m: ForwardMsg,
    now: Instant,
    limits: crate::mqtt::topic::TopicLimits,
) -> Result<Message, Refused> {
    let qos = QoS::from_u8(m.qos).ok_or(Refused::Qos)?;
    crate::mqtt::topic::validate_topic_name(&m.topic, limits).map_err(|_| Refused::Topic)?;
    let properties = if m.properties.is_empty() {
        Properties::default()
    } else {
        let mut buf = Bytes::from(m.properties);
        Properties::decode(&mut buf, PropertyContext::Publish).map_err(|_| Refused::Properties)?
    };
    Ok(Message::new(now, m.topic.into(), m.payload, qos, m.retain, properties, None))
}

/// Delivers a batch forwarded by another node to the local sessions; true if it was taken
/// (the caller then acknowledges it).
pub(crate) fn deliver(shared: &Shared, from: NodeId, batch: ForwardBatch) {
    let now = crate::clock::now();
    let limits = shared.config.broker.topic_limits();
    let mut core = shared.lock();
    for mut m in batch.messages {
        let (plain, shares) = (m.plain, std::mem::take(&mut m.shares));
        match from_wire(m, now, limits) {
            Ok(msg) => {
                let shares: Vec<ShareName> =
                    shares.into_iter().map(|(g, f)| (ByteString::from(g), ByteString::from(f))).collect();
                core.broker.deliver_forwarded(now, Arc::new(msg), plain, &shares);
            }
            Err(why) => tracing::debug!(from, ?why, "refused a forwarded message"),
        }
    }
    core.notify_woken(None);
}
