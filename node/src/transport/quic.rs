//! SHELL. [`QuicTransport`]: the raftstore [`Transport`] over quinn.
//!
//! Per known peer node there is one outgoing QUIC connection (this node dials it; the
//! peer's messages to us come on the connection it dials) and two tasks:
//! - the *raft* task owns a long-lived uni stream and writes queued batches, coalescing
//!   everything queued into frames of about `frame-bytes-target` (see `sender`);
//! - the *snapshot* task sends each snapshot on its own lower-priority uni stream, so a
//!   large snapshot never delays heartbeats;
//! - the *control* task (requests, replies, pings, forward acks) and `forward-streams`
//!   *data* tasks (forwarded publishes; see `data`) use streams of the same connection.
//!
//! [`Transport::send`] runs on raft poller threads and never blocks: it `try_send`s into
//! the peer's bounded queue and counts a drop when the queue is full or the peer has no
//! known address (raft retries lost messages). Lost connections are redialed with
//! exponential backoff; the [`Inbound`] hears `peer_down` so hibernated groups wake up.
//!
//! Discovery: every stream opens with a `Hello` (node id and cluster address) followed by
//! the sender's address book (`Peers`); a node that learns a new peer re-broadcasts its
//! book, so the cluster converges from any `join` address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use raft::eraftpb::MessageType;
use tokio::sync::{mpsc, watch};

use super::config::TransportConfig;
pub use super::inbound::Inbound;
use super::metrics::{TransportMetrics, TransportSnapshot};
use super::request::{Reply, Request};
use super::tls::TlsConfigs;
use super::{data, receiver, sender};
use crate::group::{GroupId, GroupMessage, MessageBody, NodeId};
use crate::raftstore::Transport;

/// What the control task of a peer sends: requests, replies and liveness probes, ahead of
/// raft traffic.
#[derive(Debug)]
pub(crate) enum Control {
    Request(Request),
    Reply(Reply),
    Ping { incarnation: u64, nonce: u64 },
    Pong { incarnation: u64, nonce: u64 },
    ForwardAck(Vec<u64>),
}

/// Nodes learned from other nodes' address books at most (a node that says hello itself,
/// with a certificate of the cluster, is always learned).
const PEERS_MAX: usize = 1024;

/// Control items queued per peer before new ones are refused.
const CONTROL_QUEUE_LEN: usize = 8192;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error("cannot bind cluster address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The transport settings are invalid.
    #[error("transport config: {0}")]
    Config(String),
}

/// What the raft task of a peer sends.
pub(crate) enum Outgoing {
    /// Group messages of one poll round.
    Raft(Vec<GroupMessage>),
    /// The address book changed.
    Peers(Vec<(NodeId, SocketAddr)>),
    /// A placement-driver message.
    Pd(Vec<u8>),
}

/// One known peer node.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    addr: Mutex<SocketAddr>,
    raft_tx: mpsc::Sender<Outgoing>,
    snap_tx: mpsc::Sender<GroupMessage>,
    ctrl_tx: mpsc::Sender<Control>,
    pub(crate) data: data::DataQueues,
    pub(crate) connected: AtomicBool,
}

impl Peer {
    pub(crate) fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A peer as shown by the admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerInfo {
    /// The node.
    pub node_id: NodeId,
    /// Its cluster address.
    pub addr: SocketAddr,
    /// Whether our outgoing connection to it is up.
    pub connected: bool,
}

/// State shared by the transport handle and its tasks.
pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) cfg: TransportConfig,
    pub(crate) endpoint: quinn::Endpoint,
    /// Check that peers' certificates name the node they claim (mutual TLS).
    pub(crate) check_names: bool,
    pub(crate) metrics: TransportMetrics,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    inbound: RwLock<Option<Arc<dyn Inbound>>>,
    /// Live connections (both directions), by `stable_id`, for UDP byte counts.
    live: Mutex<HashMap<usize, quinn::Connection>>,
    pub(crate) shutdown: watch::Sender<bool>,
    runtime: tokio::runtime::Handle,
    /// This process's incarnation, sent in pongs: a restarted node answers with a new one.
    pub(crate) incarnation: u64,
    /// Fault injection (`[admin] fault-injection`): whether `blocked` may be set.
    pub(crate) faults_allowed: AtomicBool,
    /// Fault injection: every frame to and from other nodes is dropped (an isolated node).
    pub(crate) blocked: AtomicBool,
    /// Handshake failures logged at warn level (ms since `started`).
    handshake_warns: super::rate_limit::RateLimit,
    started: std::time::Instant,
}

impl Shared {
    /// The address book, this node included.
    pub(crate) fn book(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut book: Vec<_> = self.read_peers().values().map(|p| (p.id, p.addr())).collect();
        book.push((self.node_id, self.addr));
        book.sort_unstable();
        book
    }

    pub(crate) fn read_peers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NodeId, Arc<Peer>>> {
        self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn peer(&self, node: NodeId) -> Option<Arc<Peer>> {
        self.read_peers().get(&node).cloned()
    }

    pub(crate) fn inbound(&self) -> Option<Arc<dyn Inbound>> {
        self.inbound.read().ok().and_then(|i| i.clone())
    }

    /// Whether some known node listens on `addr`.
    pub(crate) fn knows_addr(&self, addr: SocketAddr) -> bool {
        self.read_peers().values().any(|p| p.addr() == addr)
    }

    /// Records that `node` listens at `addr` (`authoritative`: the node said so itself in
    /// a `Hello`; gossip never overrides a known address). A new peer gets its tasks and
    /// everyone hears of it.
    pub(crate) fn learn(self: &Arc<Self>, node: NodeId, addr: SocketAddr, authoritative: bool) {
        if self.learn_quiet(node, addr, authoritative) {
            self.broadcast_book();
        }
    }

    /// Learns every entry of a peer's address book, then tells everyone once (not once per
    /// new entry: a book of n new peers would otherwise cost n broadcasts of n entries).
    pub(crate) fn learn_book(self: &Arc<Self>, book: Vec<(NodeId, SocketAddr)>) {
        let mut new = false;
        for (id, addr) in book {
            new |= self.learn_quiet(id, addr, false);
        }
        if new {
            self.broadcast_book();
        }
    }

    /// Records `node` at `addr` as `learn` does; true if it is a new peer (whose tasks now
    /// run), for the caller to broadcast the book.
    fn learn_quiet(self: &Arc<Self>, node: NodeId, addr: SocketAddr, authoritative: bool) -> bool {
        if node == self.node_id || node == 0 {
            return false;
        }
        if !authoritative && !self.read_peers().contains_key(&node) && self.read_peers().len() >= PEERS_MAX {
            TransportMetrics::add(&self.metrics.peers_refused, 1);
            return false;
        }
        if let Some(peer) = self.read_peers().get(&node) {
            if !authoritative {
                return false;
            }
            let mut a = peer.addr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *a != addr {
                tracing::info!(node, old = %a, new = %addr, "peer address changed");
                *a = addr;
            }
            return false;
        }
        let (raft_tx, raft_rx) = mpsc::channel(self.cfg.send_queue_batches);
        let (snap_tx, snap_rx) = mpsc::channel(self.cfg.snapshot_queue_len);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_QUEUE_LEN);
        let (data, data_rx) = data::DataQueues::new(self.cfg.forward_streams, self.cfg.forward_queue_bytes);
        let peer = Arc::new(Peer {
            id: node,
            addr: Mutex::new(addr),
            raft_tx,
            snap_tx,
            ctrl_tx,
            data,
            connected: AtomicBool::new(false),
        });
        {
            let mut peers = self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if peers.contains_key(&node) {
                return false;
            }
            peers.insert(node, Arc::clone(&peer));
        }
        tracing::info!(node, %addr, "learned peer");
        let (conn_tx, conn_rx) = watch::channel(None);
        self.runtime.spawn(sender::run_raft(Arc::clone(self), Arc::clone(&peer), raft_rx, conn_tx));
        self.runtime.spawn(sender::run_control(
            Arc::clone(self),
            Arc::clone(&peer),
            ctrl_rx,
            conn_rx.clone(),
        ));
        for (i, rx) in data_rx.into_iter().enumerate() {
            let task = data::run_stream(Arc::clone(self), Arc::clone(&peer), i, rx, conn_rx.clone());
            self.runtime.spawn(task);
        }
        self.runtime.spawn(sender::run_snapshots(Arc::clone(self), peer, snap_rx, conn_rx));
        true
    }

    fn broadcast_book(&self) {
        let book = self.book();
        for peer in self.read_peers().values() {
            // A full queue drops the update; the next connection sends the book anyway.
            let _ = peer.raft_tx.try_send(Outgoing::Peers(book.clone()));
        }
    }

    /// Hands a received message to the store.
    pub(crate) fn deliver(&self, msg: GroupMessage) {
        let inbound = self.inbound.read().ok().and_then(|i| i.clone());
        let delivered = inbound.is_some_and(|i| i.deliver(msg));
        if delivered {
            TransportMetrics::add(&self.metrics.messages_received, 1);
        } else {
            TransportMetrics::add(&self.metrics.messages_undelivered, 1);
        }
    }

    /// Hands a placement-driver message to the node.
    pub(crate) fn deliver_pd(&self, from: NodeId, body: Vec<u8>) {
        let inbound = self.inbound.read().ok().and_then(|i| i.clone());
        if inbound.is_some_and(|i| i.deliver_pd(from, body)) {
            TransportMetrics::add(&self.metrics.pd_received, 1);
        } else {
            TransportMetrics::add(&self.metrics.messages_undelivered, 1);
        }
    }

    /// Hands received requests to the node.
    pub(crate) fn deliver_requests(&self, from: NodeId, requests: Vec<Request>) {
        TransportMetrics::add(&self.metrics.requests_received, requests.len() as u64);
        if let Some(i) = self.inbound.read().ok().and_then(|i| i.clone()) {
            i.deliver_requests(from, requests);
        }
    }

    /// Hands received replies to the node.
    pub(crate) fn deliver_replies(&self, from: NodeId, replies: Vec<Reply>) {
        TransportMetrics::add(&self.metrics.replies_received, replies.len() as u64);
        if let Some(i) = self.inbound.read().ok().and_then(|i| i.clone()) {
            i.deliver_replies(from, replies);
        }
    }

    /// Hands a pong to the node.
    pub(crate) fn pong(&self, from: NodeId, incarnation: u64) {
        if let Some(i) = self.inbound.read().ok().and_then(|i| i.clone()) {
            i.pong(from, incarnation);
        }
    }

    /// Queues `item` on `to`'s control stream; false if there is no route or the queue is
    /// full (counted).
    pub(crate) fn send_control(&self, to: NodeId, item: Control) -> bool {
        let peer = self.read_peers().get(&to).cloned();
        let Some(peer) = peer else {
            TransportMetrics::add(&self.metrics.dropped_no_route, 1);
            return false;
        };
        if peer.ctrl_tx.try_send(item).is_err() {
            TransportMetrics::add(&self.metrics.dropped_queue_full, 1);
            return false;
        }
        true
    }

    /// Reports dropped messages of `group` to `to`.
    pub(crate) fn unreachable(&self, group: GroupId, to: NodeId, snapshot: bool) {
        if let Some(i) = self.inbound.read().ok().and_then(|i| i.clone()) {
            i.unreachable(group, to, snapshot);
        }
    }

    /// Reports a lost connection to `node`.
    pub(crate) fn peer_down(&self, node: NodeId) {
        let inbound = self.inbound.read().ok().and_then(|i| i.clone());
        if let Some(i) = inbound {
            i.peer_down(node);
        }
    }

    /// Counts `conn`'s traffic from now on.
    pub(crate) fn track(&self, conn: &quinn::Connection) {
        if let Ok(mut live) = self.live.lock() {
            live.insert(conn.stable_id(), conn.clone());
        }
    }

    /// `conn` is closed: folds its traffic into the counters.
    pub(crate) fn untrack(&self, conn: &quinn::Connection) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&conn.stable_id());
        }
        TransportMetrics::add(&self.metrics.udp_bytes_sent, conn.stats().udp_tx.bytes);
    }

    fn live_udp_bytes(&self) -> u64 {
        self.live.lock().map(|l| l.values().map(|c| c.stats().udp_tx.bytes).sum()).unwrap_or(0)
    }

    /// Whether a handshake failure may be logged at warn level now (at most once per
    /// `every_ms`); the others are counted and logged at debug level.
    pub(crate) fn warn_handshake_now(&self, every_ms: u64) -> bool {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.handshake_warns.allow(now_ms, every_ms)
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Completes once `rx` reads `true` (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The cluster transport of one node.
#[derive(Clone)]
pub struct QuicTransport {
    pub(crate) shared: Arc<Shared>,
}

fn transport_config(cfg: &TransportConfig) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout())
        .map_err(|e| TransportError::Config(e.to_string()))?;
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(cfg.keep_alive()))
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(0u32.into())
        // Raft, control, snapshots and introductions, plus up to 64 data streams.
        .max_concurrent_uni_streams(128u32.into())
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20);
    Ok(Arc::new(t))
}

impl QuicTransport {
    /// Binds `listen` for node `node_id` (peers dial `advertise`, or the bound address)
    /// and starts accepting. Must be called inside a tokio runtime.
    pub fn bind(
        node_id: NodeId,
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        cfg: &TransportConfig,
        mut tls: TlsConfigs,
    ) -> Result<Self, TransportError> {
        let transport = transport_config(cfg)?;
        tls.server.transport_config(Arc::clone(&transport));
        tls.client.transport_config(transport);
        let mut endpoint = quinn::Endpoint::server(tls.server, listen)
            .map_err(|source| TransportError::Bind { addr: listen, source })?;
        endpoint.set_default_client_config(tls.client);
        let local = endpoint.local_addr().map_err(|source| TransportError::Bind { addr: listen, source })?;
        let addr = advertise.unwrap_or(local);
        let shared = Arc::new(Shared {
            node_id,
            addr,
            cfg: cfg.clone(),
            endpoint,
            check_names: tls.mutual,
            metrics: TransportMetrics::default(),
            peers: RwLock::new(HashMap::new()),
            inbound: RwLock::new(None),
            live: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            runtime: tokio::runtime::Handle::current(),
            incarnation: crate::clock::seed() | 1,
            faults_allowed: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            handshake_warns: super::rate_limit::RateLimit::default(),
            started: crate::clock::now(),
        });
        tokio::spawn(receiver::accept_loop(Arc::clone(&shared)));
        Ok(Self { shared })
    }

    /// The address peers dial.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Where received messages go from now on.
    pub fn attach(&self, inbound: Arc<dyn Inbound>) {
        if let Ok(mut i) = self.shared.inbound.write() {
            *i = Some(inbound);
        }
    }

    /// Adds a peer whose id and address are known.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        self.shared.learn(node, addr, true);
    }

    /// Introduces this node to the nodes at `seeds` (in the background, retrying until
    /// each seed is known by id).
    pub fn join(&self, seeds: &[SocketAddr]) {
        for &seed in seeds.iter().filter(|s| **s != self.shared.addr) {
            self.shared.runtime.spawn(sender::introduce(Arc::clone(&self.shared), seed));
        }
    }

    /// Known peers, by id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .shared
            .read_peers()
            .values()
            .map(|p| PeerInfo {
                node_id: p.id,
                addr: p.addr(),
                connected: p.connected.load(Ordering::Relaxed),
            })
            .collect();
        peers.sort_unstable_by_key(|p| p.node_id);
        peers
    }

    /// The counters.
    pub fn metrics(&self) -> TransportSnapshot {
        let mut m = self.shared.metrics.snapshot();
        m.udp_bytes_sent += self.shared.live_udp_bytes();
        m
    }

    /// Stops every task and closes the endpoint.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.endpoint.close(0u32.into(), b"shutdown");
    }

    /// Waits until every connection is closed (after [`Self::shutdown`]), at most `limit`.
    pub async fn closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.shared.endpoint.wait_idle()).await;
    }
}

impl QuicTransport {
    /// Queues `req` on `to`'s control stream (batched with other requests to that node);
    /// false if there is no route or the queue is full.
    pub fn send_request(&self, to: NodeId, req: Request) -> bool {
        self.shared.send_control(to, Control::Request(req))
    }

    /// Queues `reply` on `to`'s control stream; false if it was dropped.
    pub fn send_reply(&self, to: NodeId, reply: Reply) -> bool {
        self.shared.send_control(to, Control::Reply(reply))
    }

    /// Sends a ping to `to`; its pong reaches [`Inbound::pong`].
    pub fn ping(&self, to: NodeId, nonce: u64) -> bool {
        self.shared.send_control(to, Control::Ping { incarnation: self.shared.incarnation, nonce })
    }

    /// Whether the outgoing connection to `node` is up (always true for this node).
    pub fn is_connected(&self, node: NodeId) -> bool {
        node == self.shared.node_id
            || self.shared.read_peers().get(&node).is_some_and(|p| p.connected.load(Ordering::Relaxed))
    }

    /// Allows fault injection (`[admin] fault-injection`): [`Self::set_blocked`] works.
    pub fn allow_faults(&self, allowed: bool) {
        self.shared.faults_allowed.store(allowed, Ordering::Relaxed);
    }

    /// Fault injection: drop every frame to and from other nodes (`true`), as a network
    /// partition around this node would, or stop dropping. Returns false (and changes
    /// nothing) unless faults are allowed.
    pub fn set_blocked(&self, blocked: bool) -> bool {
        if !self.shared.faults_allowed.load(Ordering::Relaxed) {
            return false;
        }
        tracing::warn!(blocked, "fault injection: cluster traffic blocked");
        self.shared.blocked.store(blocked, Ordering::Relaxed);
        true
    }

    /// `node` stopped answering pings (the connection may still look open): groups that
    /// hibernate wake up and look for their leader, as when the connection drops.
    pub fn report_silent(&self, node: NodeId) {
        self.shared.peer_down(node);
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Data streams per peer for forwards (`forward-streams`).
    pub fn forward_streams(&self) -> usize {
        self.shared.cfg.forward_streams.max(1)
    }

    /// Queues a placement-driver message for `to` on its raft stream; false if there is
    /// no route or the queue is full (the caller's protocol retries: heartbeats repeat and
    /// operator steps are re-sent).
    pub fn send_pd(&self, to: NodeId, body: Vec<u8>) -> bool {
        let metrics = &self.shared.metrics;
        let peer = self.shared.read_peers().get(&to).cloned();
        let Some(peer) = peer else {
            TransportMetrics::add(&metrics.dropped_no_route, 1);
            return false;
        };
        if peer.raft_tx.try_send(Outgoing::Pd(body)).is_err() {
            TransportMetrics::add(&metrics.dropped_queue_full, 1);
            return false;
        }
        true
    }
}

impl QuicTransport {
    /// Tells each group with a dropped raft message that `to` was unreachable.
    fn report_dropped(&self, to: NodeId, msgs: &[GroupMessage]) {
        let mut groups: Vec<GroupId> =
            msgs.iter().filter(|m| matches!(m.body, MessageBody::Raft(_))).map(|m| m.group_id).collect();
        groups.sort_unstable();
        groups.dedup();
        for g in groups {
            self.shared.unreachable(g, to, false);
        }
    }
}

fn is_snapshot(msg: &GroupMessage) -> bool {
    matches!(&msg.body, MessageBody::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot)
}

impl Transport for QuicTransport {
    fn send(&self, to: NodeId, mut msgs: Vec<GroupMessage>) {
        let metrics = &self.shared.metrics;
        let peer = self.shared.read_peers().get(&to).cloned();
        let Some(peer) = peer else {
            TransportMetrics::add(&metrics.dropped_no_route, msgs.len() as u64);
            self.report_dropped(to, &msgs);
            return;
        };
        if msgs.iter().any(is_snapshot) {
            let (snaps, rest): (Vec<_>, Vec<_>) = msgs.into_iter().partition(is_snapshot);
            for snap in snaps {
                let group = snap.group_id;
                if peer.snap_tx.try_send(snap).is_err() {
                    TransportMetrics::add(&metrics.dropped_queue_full, 1);
                    self.shared.unreachable(group, to, true);
                }
            }
            msgs = rest;
        }
        if msgs.is_empty() {
            return;
        }
        let n = msgs.len() as u64;
        if let Err(e) = peer.raft_tx.try_send(Outgoing::Raft(msgs)) {
            TransportMetrics::add(&metrics.dropped_queue_full, n);
            if let Outgoing::Raft(msgs) = e.into_inner() {
                self.report_dropped(to, &msgs);
            }
        }
    }
}
