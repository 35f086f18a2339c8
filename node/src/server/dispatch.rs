//! SHELL. Performs the cluster operations the broker core emits (see `broker::cluster`)
//! and reports their outcomes back into the core.
//!
//! - Route rows: one task per lane (the filter's hash picks the lane) proposes this node's
//!   row writes through the [`KvClient`], one at a time, so one filter's add, remove, add
//!   land in the order the core emitted them.
//! - Forwards go to the [`forwarder`](super::forwarder) pipeline.
//!
//! Ops in flight are counted: past [`OPS_IN_FLIGHT_MAX`] the reactors stop reading clients
//! (as for a lagging journal), so a cluster that cannot keep up slows publishers down
//! instead of queueing without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::Shared;
use super::forwarder::{ForwardOp, Forwarder};
use super::liveness::Liveness;
use super::{retained, sessions};
use crate::broker::{ClusterOp, OpId, OpOutcome, ShareName};
use crate::cluster::KvClient;
use crate::cluster::route_keys::{self, NodeRow};
use crate::group::{Command, NodeId, ReadPolicy};
use crate::transport::QuicTransport;

/// Operations in flight past which the reactors pause reading clients.
pub(crate) const OPS_IN_FLIGHT_MAX: usize = 200_000;
/// Route lanes (tasks writing route rows, one filter always on the same lane).
const ROUTE_LANES: usize = 16;
/// Forwards submitted at once without waiting out the linger.
const FORWARDS_PER_BATCH: usize = 1024;

/// What the server needs from the cluster half of its node.
#[derive(Clone)]
pub struct ClusterLink {
    /// Reads and writes the cluster's ranges.
    pub client: KvClient,
    /// The node-to-node transport.
    pub transport: QuicTransport,
    /// The tenant every key of this node's clients belongs to (empty: single tenant).
    pub tenant: Vec<u8>,
    /// How long a forward waits for its acknowledgement (`request-timeout-ms`).
    pub request_timeout: Duration,
    /// How long a node may be unreachable before it is taken to have fenced itself off (its
    /// clients closed), so forwards stop waiting for it (`isolation-fence-ms`).
    pub isolation_fence: Duration,
    /// How long forwards wait for others to share a match and a batch
    /// (`transport.forward-linger-us`).
    pub forward_linger: Duration,
    /// Topic bounds (retained reads scan up to `levels_max` levels).
    pub topic_limits: crate::mqtt::topic::TopicLimits,
}

/// The core's end of the dispatcher.
pub(crate) struct Dispatch {
    tx: mpsc::UnboundedSender<Vec<(OpId, ClusterOp)>>,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) forwarder: Arc<Forwarder>,
}

impl Dispatch {
    /// Starts the dispatcher tasks (inside a tokio runtime).
    pub(crate) fn start(shared: Weak<Shared>, link: ClusterLink, liveness: Arc<Liveness>) -> Self {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let done = Completions { shared: shared.clone(), in_flight: in_flight.clone() };
        let forwarder = Forwarder::start(link.clone(), liveness, done.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(intake(rx, link, done, forwarder.clone()));
        Self { tx, in_flight, forwarder }
    }

    /// Hands the core's operations over.
    pub(crate) fn submit(&self, ops: Vec<(OpId, ClusterOp)>) {
        self.in_flight.fetch_add(ops.len(), Ordering::Relaxed);
        let _ = self.tx.send(ops);
    }
}

/// Reports outcomes into the core.
#[derive(Clone)]
pub(crate) struct Completions {
    shared: Weak<Shared>,
    in_flight: Arc<AtomicUsize>,
}

impl Completions {
    /// Delivers messages to one member each of this node's shared subscriptions named.
    pub(crate) fn deliver_local(&self, items: Vec<(Arc<crate::broker::message::Message>, Vec<ShareName>)>) {
        if items.is_empty() {
            return;
        }
        let Some(shared) = self.shared.upgrade() else { return };
        let now = crate::clock::now();
        let mut core = shared.lock();
        for (msg, shares) in items {
            core.broker.deliver_forwarded(now, msg, false, &shares);
        }
        core.notify_woken(None);
    }

    /// Completes `done` in the core and writes what it released.
    pub(crate) fn complete(&self, done: Vec<(OpId, OpOutcome)>) {
        if done.is_empty() {
            return;
        }
        self.in_flight.fetch_sub(done.len(), Ordering::Relaxed);
        let Some(shared) = self.shared.upgrade() else { return };
        let now = crate::clock::now();
        let mut core = shared.lock();
        for (id, outcome) in done {
            core.broker.complete_op(now, id, outcome);
        }
        core.notify_woken(None);
    }
}

async fn intake(
    mut rx: mpsc::UnboundedReceiver<Vec<(OpId, ClusterOp)>>,
    link: ClusterLink,
    done: Completions,
    forwarder: Arc<Forwarder>,
) {
    let node = link.transport.node_id();
    let incarnation = link.transport.incarnation();
    let (client, tenant) = (link.client.clone(), link.tenant.clone());
    tokio::spawn(async move { remove_stale_rows(&client, &tenant, node, incarnation).await });
    let mut lanes = Vec::with_capacity(ROUTE_LANES);
    for _ in 0..ROUTE_LANES {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(route_lane(rx, link.clone(), done.clone()));
        lanes.push(tx);
    }
    // Forwards gather until the first of them has waited `forward_linger` (or a match's
    // worth is there); every other operation goes out at once.
    let mut forwards = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let (batch, timed_out) = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(Some(b)) => (b, false),
                Ok(None) => break,
                Err(_) => (Vec::new(), true),
            },
            None => match rx.recv().await {
                Some(b) => (b, false),
                None => break,
            },
        };
        for (id, op) in batch {
            dispatch_op(id, op, &link, &done, &lanes, &mut forwards);
        }
        if forwards.is_empty() {
            continue;
        }
        if timed_out || link.forward_linger.is_zero() || forwards.len() >= FORWARDS_PER_BATCH {
            deadline = None;
            forwarder.submit(std::mem::take(&mut forwards)).await;
        } else if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + link.forward_linger);
        }
    }
}

/// Sends one operation where it is performed: a route lane, its own task, or (a forward)
/// `forwards`.
fn dispatch_op(
    id: OpId,
    op: ClusterOp,
    link: &ClusterLink,
    done: &Completions,
    lanes: &[mpsc::UnboundedSender<(OpId, ClusterOp)>],
    forwards: &mut Vec<ForwardOp>,
) {
    match op {
        ClusterOp::RouteAdd { ref filter } | ClusterOp::RouteRemove { ref filter } => {
            let _ = lanes[lane_of(filter)].send((id, op));
        }
        // One topic's retained writes stay in order on its lane.
        ClusterOp::Retain { ref msg } => {
            let _ = lanes[lane_of(&msg.topic)].send((id, op));
        }
        ClusterOp::RetainedRead { filter } => {
            let (link, done) = (link.clone(), done.clone());
            tokio::spawn(async move {
                let outcome = retained::read(&link, &filter, link.topic_limits).await;
                done.complete(vec![(id, outcome)]);
            });
        }
        // One session's writes stay in order on its lane.
        ClusterOp::Release { ref client_id, .. } | ClusterOp::SubRow { ref client_id, .. } => {
            let _ = lanes[lane_of(client_id)].send((id, op));
        }
        // A fence may wait seconds for a kicked node: off the lanes.
        ClusterOp::Acquire { client_id, clean_start, expiry_secs, will } => {
            let (link, done) = (link.clone(), done.clone());
            tokio::spawn(async move {
                let will = will.map(|w| *w);
                let outcome = sessions::acquire(&link, &client_id, clean_start, expiry_secs, will).await;
                done.complete(vec![(id, outcome)]);
            });
        }
        ClusterOp::Forward { msg, publisher, share } => {
            forwards.push(ForwardOp { id, msg, publisher, share })
        }
    }
}

fn lane_of(filter: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    filter.hash(&mut h);
    (h.finish() as usize) % ROUTE_LANES
}

/// Performs one lane's operations (route rows, session writes) in order.
async fn route_lane(
    mut rx: mpsc::UnboundedReceiver<(OpId, ClusterOp)>,
    link: ClusterLink,
    done: Completions,
) {
    let row = NodeRow { incarnation: link.transport.incarnation(), max_qos: 2 }.encode();
    while let Some((id, op)) = rx.recv().await {
        let outcome = match op {
            ClusterOp::RouteAdd { filter } => route_row(&link, &filter, Some(&row)).await,
            ClusterOp::RouteRemove { filter } => route_row(&link, &filter, None).await,
            ClusterOp::Release { client_id, epoch, generation, expiry_secs, delete } => {
                sessions::release(&link, &client_id, epoch, generation, expiry_secs, delete).await
            }
            ClusterOp::SubRow { client_id, epoch, filter, entry } => {
                sessions::sub_row(&link, &client_id, epoch, &filter, entry).await
            }
            ClusterOp::Retain { msg } => retained::write(&link, &msg).await,
            ClusterOp::Acquire { .. } | ClusterOp::Forward { .. } | ClusterOp::RetainedRead { .. } => {
                OpOutcome::Failed
            }
        };
        done.complete(vec![(id, outcome)]);
    }
}

/// Writes (`Some(value)`) or deletes this node's route row for `filter`.
async fn route_row(link: &ClusterLink, filter: &str, value: Option<&[u8]>) -> OpOutcome {
    let key = match route_keys::subscription_row_key(&link.tenant, filter, link.transport.node_id()) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "route row key");
            return OpOutcome::Failed;
        }
    };
    let command = match value {
        Some(v) => Command::Put { key, value: v.to_vec() },
        None => Command::Delete { key },
    };
    match link.client.propose(command).await {
        Ok(_) => OpOutcome::Done { nodes: 0 },
        Err(e) => {
            tracing::debug!(filter, add = value.is_some(), error = %e, "route row write failed");
            OpOutcome::Failed
        }
    }
}

/// Deletes the route rows an earlier incarnation of this node left (its sessions died with
/// it). Each delete is a compare-and-set on the stale value, so a row this incarnation
/// rewrote meanwhile stays.
async fn remove_stale_rows(client: &KvClient, tenant: &[u8], node: NodeId, incarnation: u64) {
    let Ok((start, end)) = route_keys::family_span(tenant) else { return };
    let prefix_len = start.len();
    for attempt in 0..60 {
        match client.scan(&start, &end, usize::MAX, ReadPolicy::ReadIndex).await {
            Ok(rows) => {
                let mut removed = 0usize;
                for (key, value) in rows {
                    let mine =
                        route_keys::parse_row_key(prefix_len, &key).is_some_and(|r| r.node == Some(node));
                    let stale = NodeRow::decode(&value).is_none_or(|r| r.incarnation != incarnation);
                    if mine && stale {
                        let cas = Command::CompareAndSet { key, expected: Some(value), new: None };
                        removed += usize::from(client.propose(cas).await.is_ok());
                    }
                }
                if removed > 0 {
                    tracing::info!(removed, "removed route rows of an earlier incarnation of this node");
                }
                return;
            }
            Err(e) => {
                tracing::debug!(attempt, error = %e, "cannot scan route rows yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
