//! SHELL. [`PdService`]: the placement driver's thread on every cluster node.
//!
//! Every node: sends a heartbeat (its capacity and the ranges it leads, chosen by the
//! [`Reporter`]) to the PD leader every `[pd] heartbeat-ms`, learning who leads from `Ack` and
//! `NotLeader` answers; and carries out the operator steps the PD leader sends to the
//! ranges it leads (the [`Executor`]).
//!
//! On the PD voters: the PD group (a raft group, id [`PD_GROUP`], on the same store and
//! transport as every other group) holds the node admin states. The replica that leads it
//! loads them, builds a [`Driver`], answers heartbeats, and every `[pd] schedule-ms` runs a
//! scheduling round and sends the steps. Losing leadership drops the driver; traffic never
//! waits for the PD, so with no PD leader only rebalancing stops.
//!
//! Threads and queues: one thread (`flotilla-pd-N`); its inbox is a bounded channel fed by
//! the transport (full = message dropped; heartbeats repeat and steps are re-sent by the
//! PD); group answers come back on one bounded channel whose outstanding requests are
//! counted, so a group never blocks on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::bootstrap::BootstrapState;
use super::driver::{Driver, DriverConfig, NodeAdminState, PdReport};
use super::executor::Executor;
use super::message::{NodeReport, PdMessage};
use super::registry;
use super::report::Reporter;
use super::{PD_GROUP, PdError};
use crate::cluster::RangeTable;
use crate::group::{
    Command, Epoch, NodeId, Outcome, Query, RangeDescriptor, ReadPolicy, ReadRequest, Response, Role,
    WriteRequest,
};
use crate::raftstore::Store;
use crate::transport::QuicTransport;

/// Messages waiting for the PD thread.
const INBOX_LEN: usize = 4096;
/// Requests to groups awaiting an answer.
const OUTSTANDING_MAX: usize = 256;
/// Heartbeat periods without an `Ack` before the known PD leader is forgotten.
const ACK_MISSES_MAX: u32 = 3;
/// Ranges per heartbeat.
const RANGES_PER_BEAT_MAX: usize = 20_000;
/// A PD-group request with no answer after this long is forgotten.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(30);
/// Delay of the early heartbeat that reports a step's effect.
const SOON: Duration = Duration::from_millis(20);
/// Heartbeat period while a range this node leads has a replica catching up.
const CATCH_UP_BEAT: Duration = Duration::from_millis(250);
/// How often the PD leader re-reads the node states (admin commands change them).
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// The range table is pushed to every node on change at most this often (a node whose
/// heartbeat shows an older version gets it with its ack anyway).
const PUSH_EVERY: Duration = Duration::from_millis(500);

/// What the PD service needs to know.
#[derive(Clone, Debug)]
pub struct PdConfig {
    /// Nodes hosting the PD group.
    pub voters: Vec<NodeId>,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Scheduling round period.
    pub schedule: Duration,
    /// Re-report unchanged ranges every this many heartbeats.
    pub refresh_beats: u64,
    /// This node's capacity.
    pub capacity_bytes: u64,
    /// This node's labels.
    pub labels: BTreeMap<String, String>,
    /// The leader's driver settings.
    pub driver: DriverConfig,
    /// The MQTT keyspace bootstrap (`None`: off).
    pub bootstrap: Option<BootstrapConfig>,
}

/// How the PD leader bootstraps the MQTT keyspace.
#[derive(Clone, Debug)]
pub struct BootstrapConfig {
    /// Voters per range (at most the number of PD voters).
    pub replicas: usize,
    /// Message-log ranges.
    pub log_groups: u32,
}

/// State shared between the PD thread, the transport and the admin API.
struct Shared {
    node: NodeId,
    store: Arc<Store>,
    inbox: Sender<(NodeId, Vec<u8>)>,
    /// The latest report, while this node leads PD.
    report: Mutex<Option<PdReport>>,
    /// The PD leader this node knows, and its admin endpoint.
    leader: Mutex<(Option<NodeId>, Option<SocketAddr>)>,
    /// This node's admin endpoint, once it runs.
    admin: Mutex<Option<SocketAddr>>,
    stop: AtomicBool,
    next_request: AtomicU64,
    /// The node's range table, fed by the PD leader's `Ranges` messages.
    table: Arc<RwLock<RangeTable>>,
}

/// A cheap handle on the PD service for the transport and the admin API.
#[derive(Clone)]
pub struct PdHandle {
    shared: Arc<Shared>,
}

/// The running PD service.
pub struct PdService {
    handle: PdHandle,
    thread: Option<JoinHandle<()>>,
}

impl PdService {
    /// Bootstraps this node's PD replica if it is a PD voter, and starts the thread.
    pub fn start(
        cfg: PdConfig,
        store: Arc<Store>,
        transport: QuicTransport,
        table: Arc<RwLock<RangeTable>>,
    ) -> Result<Self, PdError> {
        let node = store.node_id();
        if cfg.voters.contains(&node) {
            let desc = RangeDescriptor::new(PD_GROUP, Vec::new(), Vec::new(), &cfg.voters);
            let created = store.bootstrap_groups(&[desc]).map_err(|e| PdError::Unavailable(e.to_string()))?;
            if created > 0 {
                tracing::info!(node, voters = ?cfg.voters, "placement driver replica created");
            }
        }
        let (inbox, rx) = bounded(INBOX_LEN);
        let shared = Arc::new(Shared {
            node,
            store,
            inbox,
            report: Mutex::new(None),
            leader: Mutex::new((None, None)),
            admin: Mutex::new(None),
            stop: AtomicBool::new(false),
            next_request: AtomicU64::new(1 << 62),
            table,
        });
        let handle = PdHandle { shared: Arc::clone(&shared) };
        let thread = std::thread::Builder::new()
            .name(format!("flotilla-pd-{node}"))
            .spawn(move || Worker::new(cfg, shared, transport, rx).run())
            .map_err(|e| PdError::Unavailable(format!("spawn PD thread: {e}")))?;
        Ok(Self { handle, thread: Some(thread) })
    }

    /// A handle for the transport and the admin API.
    pub fn handle(&self) -> PdHandle {
        self.handle.clone()
    }
}

impl Drop for PdService {
    fn drop(&mut self) {
        self.handle.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the PD thread is waiting for from the PD group.
enum Pending {
    Load { term: u64 },
    Reload,
    Remove(NodeId),
    BootstrapRead,
    BootstrapWrite(BootstrapState),
}

#[path = "service_bootstrap.rs"]
mod bootstrap_shell;
#[path = "service_handle.rs"]
mod handle;

/// Ranges with their leaders, as the PD leader pushes them.
type RangeList = Vec<(RangeDescriptor, Option<NodeId>)>;

struct Worker {
    cfg: PdConfig,
    shared: Arc<Shared>,
    transport: QuicTransport,
    inbox: Receiver<(NodeId, Vec<u8>)>,
    reporter: Reporter,
    executor: Executor,
    replies: (Sender<Response>, Receiver<Response>),
    pending: BTreeMap<u64, (Instant, Pending)>,
    driver: Option<(u64, Driver)>,
    leader: Option<NodeId>,
    leader_admin: Option<SocketAddr>,
    /// When the oldest heartbeat not answered by an `Ack` was sent.
    unacked_since: Option<Instant>,
    candidate: usize,
    rng: SmallRng,
    epoch: Instant,
    last_reload: Instant,
    beat_soon: bool,
    bootstrap: BootstrapState,
    last_create: Option<Instant>,
    last_push: Option<Instant>,
    /// The leader's range table version and its ranges, rebuilt every round.
    ranges: (u64, Arc<RangeList>),
}

impl Worker {
    fn new(
        cfg: PdConfig,
        shared: Arc<Shared>,
        transport: QuicTransport,
        inbox: Receiver<(NodeId, Vec<u8>)>,
    ) -> Self {
        let node = shared.node;
        let now = Instant::now();
        Self {
            reporter: Reporter::new(cfg.refresh_beats, RANGES_PER_BEAT_MAX),
            executor: Executor::new(node),
            cfg,
            shared,
            transport,
            inbox,
            replies: bounded(OUTSTANDING_MAX),
            pending: BTreeMap::new(),
            driver: None,
            leader: None,
            leader_admin: None,
            unacked_since: None,
            candidate: 0,
            rng: SmallRng::seed_from_u64(node),
            epoch: now,
            last_reload: now,
            beat_soon: false,
            bootstrap: BootstrapState::Unknown,
            last_create: None,
            last_push: None,
            ranges: (0, Arc::new(Vec::new())),
        }
    }

    fn admin(&self) -> Option<SocketAddr> {
        self.shared.admin.lock().ok().and_then(|a| *a)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn run(&mut self) {
        let mut next_beat = Instant::now();
        let mut next_round = Instant::now();
        while !self.shared.stop.load(Ordering::Acquire) {
            let wake = next_beat.min(next_round).min(Instant::now() + Duration::from_millis(100));
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(timeout) {
                Ok((from, body)) => self.on_message(from, &body),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for _ in 0..INBOX_LEN {
                let Ok((from, body)) = self.inbox.try_recv() else { break };
                self.on_message(from, &body);
            }
            self.drain_replies();
            let now = Instant::now();
            if std::mem::take(&mut self.beat_soon) {
                next_beat = next_beat.min(now + SOON);
            }
            if now >= next_beat {
                let catching_up = self.heartbeat();
                // While a learner catches up, look again sooner: its operator waits on it.
                next_beat = now
                    + if catching_up { self.cfg.heartbeat.min(CATCH_UP_BEAT) } else { self.cfg.heartbeat };
            }
            if now >= next_round {
                self.lead();
                next_round = now + self.cfg.schedule;
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: &PdMessage) {
        if to == self.shared.node {
            self.on_message(to, &msg.encode());
        } else {
            self.transport.send_pd(to, msg.encode());
        }
    }

    fn on_message(&mut self, from: NodeId, body: &[u8]) {
        let msg = match PdMessage::decode(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(from, error = %e, "malformed placement-driver message dropped");
                return;
            }
        };
        match msg {
            PdMessage::Heartbeat(report) => self.on_heartbeat(from, report),
            PdMessage::Ack { leader, admin } => {
                if self.leader != Some(leader) {
                    tracing::info!(
                        node = self.shared.node,
                        pd_leader = leader,
                        "placement driver leader found"
                    );
                    self.reporter.reset();
                }
                self.set_leader(Some(leader), admin);
                self.unacked_since = None;
            }
            PdMessage::NotLeader { leader } => {
                let hint = leader.filter(|&l| l != from);
                if hint.is_none() {
                    self.candidate += 1;
                }
                self.set_leader(hint, None);
            }
            PdMessage::Create(desc) => {
                match self.shared.store.bootstrap_groups(std::slice::from_ref(&desc)) {
                    Ok(n) if n > 0 => tracing::info!(group = desc.id, "bootstrap range created"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(group = desc.id, error = %e, "bootstrap range not created"),
                }
            }
            PdMessage::Ranges { version, ranges } => {
                let mut table = self.shared.table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                table.replace(version, ranges);
            }
            PdMessage::Step(step) => {
                let (tx, outstanding) = (&self.replies.0, self.pending.len() + self.executor.outstanding());
                if outstanding < OUTSTANDING_MAX {
                    self.executor.execute(&self.shared.store, step, tx);
                } else {
                    tracing::debug!(group = step.group, "operator step dropped: too many requests in flight");
                }
            }
        }
    }

    fn set_leader(&mut self, leader: Option<NodeId>, admin: Option<SocketAddr>) {
        // A hint without an address keeps the known address only for the same leader.
        let kept = if leader.is_some() && leader == self.leader { self.leader_admin } else { None };
        self.leader = leader;
        self.leader_admin = admin.or(kept);
        if let Ok(mut l) = self.shared.leader.lock() {
            *l = (self.leader, self.leader_admin);
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, report: NodeReport) {
        if report.node != from {
            tracing::warn!(from, claimed = report.node, "heartbeat for another node dropped");
            return;
        }
        let now_ms = self.now_ms();
        let me = self.shared.node;
        let stale_table = report.ranges_version != self.ranges.0 && self.ranges.0 != 0;
        let reply = match &mut self.driver {
            Some((_, driver)) => {
                driver.on_heartbeat(report, now_ms);
                if stale_table {
                    let ranges = self.ranges.1.as_ref().clone();
                    let msg = PdMessage::Ranges { version: self.ranges.0, ranges };
                    self.send(from, &msg);
                }
                PdMessage::Ack { leader: me, admin: self.admin() }
            }
            None => {
                let local = self.shared.store.status(PD_GROUP).and_then(|s| s.leader).filter(|&l| l != me);
                PdMessage::NotLeader { leader: local.or(self.leader.filter(|&l| l != me)) }
            }
        };
        self.send(from, &reply);
    }

    /// The node to send the next heartbeat to.
    fn target(&mut self) -> Option<NodeId> {
        let silent = self.unacked_since.is_some_and(|t| t.elapsed() >= self.cfg.heartbeat * ACK_MISSES_MAX);
        if silent {
            self.set_leader(None, None);
            self.unacked_since = None;
            self.candidate += 1;
        }
        if let Some(l) = self.leader {
            return Some(l);
        }
        let mut candidates = self.cfg.voters.clone();
        if candidates.is_empty() {
            candidates = self.transport.peers().iter().map(|p| p.node_id).collect();
            candidates.push(self.shared.node);
            candidates.sort_unstable();
        }
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.candidate % candidates.len()])
    }

    /// Sends a heartbeat; true if a range this node leads has a replica catching up.
    fn heartbeat(&mut self) -> bool {
        let statuses = self.shared.store.statuses();
        let catching_up = statuses.iter().any(|s| !s.pending.is_empty());
        let now_ms = self.now_ms();
        let used: u64 = statuses.iter().map(|s| s.size_bytes).sum();
        let report = NodeReport {
            node: self.shared.node,
            admin: self.admin(),
            capacity_bytes: self.cfg.capacity_bytes,
            available_bytes: self.cfg.capacity_bytes.saturating_sub(used),
            busy: false,
            labels: self.cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            replicas: statuses.iter().filter(|s| s.group_id != PD_GROUP).count() as u64,
            ranges: self.reporter.next(&statuses, PD_GROUP, now_ms),
            ranges_version: self.shared.table.read().map_or(0, |t| t.pd_version()),
        };
        let Some(to) = self.target() else { return catching_up };
        self.unacked_since.get_or_insert_with(Instant::now);
        self.send(to, &PdMessage::Heartbeat(report));
        catching_up
    }

    /// The PD leader's round: keep the driver in step with leadership, schedule, send.
    fn lead(&mut self) {
        let status = self.shared.store.status(PD_GROUP);
        let leading = status.as_ref().filter(|s| s.role == Role::Leader);
        let Some(status) = leading else {
            if self.driver.take().is_some() {
                self.bootstrap = BootstrapState::Unknown;
                self.ranges = (0, Arc::new(Vec::new()));
                tracing::info!(node = self.shared.node, "placement driver leadership lost");
                if let Ok(mut r) = self.shared.report.lock() {
                    *r = None;
                }
            }
            return;
        };
        let (term, epoch) = (status.term, status.desc.epoch);
        if self.driver.as_ref().is_some_and(|(t, _)| *t != term) {
            self.driver = None;
            self.bootstrap = BootstrapState::Unknown;
        }
        if self.driver.is_none() {
            if !self.pending.values().any(|(_, p)| matches!(p, Pending::Load { term: t } if *t == term)) {
                self.read_states(epoch, Pending::Load { term });
            }
            return;
        }
        if self.last_reload.elapsed() >= RELOAD_EVERY
            && !self.pending.values().any(|(_, p)| matches!(p, Pending::Reload))
        {
            self.last_reload = Instant::now();
            self.read_states(epoch, Pending::Reload);
        }
        let now_ms = self.now_ms();
        let Some((_, driver)) = &mut self.driver else { return };
        let tick = driver.tick(now_ms, &mut self.rng);
        let mut report = driver.report(now_ms);
        report.mqtt_bootstrap = self.bootstrap.name().to_string();
        if let Ok(mut r) = self.shared.report.lock() {
            *r = Some(report);
        }
        let (version, ranges) = driver.range_table();
        let nodes: Vec<NodeId> = driver.view().nodes().map(|n| n.id.0).collect();
        if version != self.ranges.0 {
            self.ranges = (version, Arc::new(ranges));
            // Every node hears of a split or a leader move at once, not at its next beat;
            // at most once per PUSH_EVERY, as the table is sent whole.
            if self.last_push.is_none_or(|t| t.elapsed() >= PUSH_EVERY) {
                self.last_push = Some(Instant::now());
                let msg = PdMessage::Ranges { version, ranges: self.ranges.1.as_ref().clone() };
                for node in nodes {
                    self.send(node, &msg);
                }
            }
        }
        for (to, step) in tick.steps {
            tracing::debug!(to, group = step.group, op = step.operator, action = ?step.action, "operator step");
            self.send(to, &PdMessage::Step(step));
        }
        for node in tick.removed {
            if self.pending.values().any(|(_, p)| matches!(p, Pending::Remove(n) if *n == node)) {
                continue;
            }
            let command = Command::Put {
                key: registry::node_key(node),
                value: vec![NodeAdminState::Removed.to_byte()],
            };
            self.request(Pending::Remove(node), |id, tx, store| {
                store.propose(PD_GROUP, WriteRequest { request_id: id, epoch, command }, tx)
            });
        }
        self.bootstrap(epoch);
    }

    fn read_states(&mut self, epoch: Epoch, why: Pending) {
        let (start, end) = registry::node_span();
        let query = Query::Scan { start, end, limit: registry::NODES_MAX };
        self.request(why, |id, tx, store| {
            store.read(
                PD_GROUP,
                ReadRequest { request_id: id, epoch, query, policy: ReadPolicy::ReadIndex },
                tx,
            )
        });
    }

    fn request(
        &mut self,
        why: Pending,
        send: impl FnOnce(u64, &Sender<Response>, &Store) -> Result<(), crate::raftstore::StoreError>,
    ) {
        if self.pending.len() + self.executor.outstanding() >= OUTSTANDING_MAX {
            return;
        }
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        match send(id, &self.replies.0, &self.shared.store) {
            Ok(()) => {
                self.pending.insert(id, (Instant::now(), why));
            }
            Err(e) => tracing::debug!(error = %e, "PD group request not sent"),
        }
    }

    fn drain_replies(&mut self) {
        let now = Instant::now();
        self.executor.expire(now);
        self.pending.retain(|_, (sent, _)| now.duration_since(*sent) < ANSWER_WAIT_MAX);
        while let Ok(resp) = self.replies.1.try_recv() {
            if let Some(done) = self.executor.on_response(&resp) {
                // A step took effect: report its range now rather than at the next beat.
                self.beat_soon |= done;
                continue;
            }
            let Some((_, why)) = self.pending.remove(&resp.request_id) else { continue };
            match (why, resp.result) {
                (Pending::Load { term }, Ok(Outcome::Rows(rows))) => {
                    let states = registry::decode_states(&rows);
                    match Driver::new(
                        self.shared.node,
                        term,
                        self.cfg.driver.clone(),
                        super::schedulers(),
                        self.now_ms(),
                    ) {
                        Ok(mut driver) => {
                            driver.set_node_states(states);
                            tracing::info!(node = self.shared.node, term, "placement driver leading");
                            self.driver = Some((term, driver));
                            self.last_reload = Instant::now();
                        }
                        Err(e) => tracing::error!(error = %e, "placement driver configuration refused"),
                    }
                }
                (Pending::Reload, Ok(Outcome::Rows(rows))) => {
                    if let Some((_, driver)) = &mut self.driver {
                        driver.set_node_states(registry::decode_states(&rows));
                    }
                }
                (Pending::Remove(node), Ok(_)) => tracing::info!(node, "node removed from the cluster"),
                (Pending::BootstrapRead, Ok(Outcome::Value(v))) => self.on_bootstrap_record(v.as_deref()),
                (Pending::BootstrapWrite(next), Ok(Outcome::Cas { succeeded: false, previous })) => {
                    tracing::info!(state = next.name(), "bootstrap already recorded by another leader");
                    self.on_bootstrap_record(previous.as_deref());
                }
                (Pending::BootstrapWrite(next), Ok(_)) => {
                    tracing::info!(state = next.name(), "MQTT keyspace bootstrap recorded");
                    self.bootstrap = next;
                }
                (_, Err(e)) => tracing::debug!(error = %e, "PD group request failed"),
                (_, Ok(other)) => tracing::warn!(?other, "unexpected PD group answer"),
            }
        }
    }
}
