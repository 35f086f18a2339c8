//! SHELL. State shared by the tasks of one worker: the control channel, counters, delivery
//! accounting, per-step accumulators, per-member status and the connect pacer.
//!
//! A worker runs on one thread (a current-thread runtime and a `LocalSet`), so sharing is
//! `Rc` plus `Cell`/`RefCell`: no locks, no atomics. No `RefCell` borrow is held across an
//! `.await`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use super::pattern::Vars;
use super::proto::{
    Event, GroupSpec, PhaseStats, Progress, TrafficWindow, WorkerReport, WorkerSpec, broker_slot,
    global_index,
};
use crate::client::ConnectOpts;
use crate::stamp::Stamp;
use crate::stats::{Latency, Seen, Tracker};
use crate::tls::TlsConnector;

/// What every member task watches. `epoch` changes whenever members have new work in their
/// `todo` cells; `traffic` and `shutdown` are read directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Control {
    pub(crate) epoch: u64,
    pub(crate) traffic: Option<TrafficWindow>,
    /// `Some(purge_sessions)` once shutdown is requested.
    pub(crate) shutdown: Option<bool>,
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Task not started or connecting.
    Connecting,
    /// Connected.
    Up,
    /// Disconnected on command.
    Down,
    /// Connect failed or connection lost.
    Failed,
    /// Task finished.
    Gone,
}

/// Work assigned to one member by the current step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Todo {
    None,
    Connect,
    Subscribe,
    Disconnect { abrupt: bool },
    Reconnect,
}

/// One member's shared cells.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) status: Cell<Status>,
    pub(crate) todo: Cell<Todo>,
    /// The broker holds this member's subscriptions.
    pub(crate) subscribed: Cell<bool>,
    /// Listed in `Group::peers` already.
    pub(crate) listed: Cell<bool>,
}

/// A group at run time.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) spec: GroupSpec,
    pub(crate) connect: ConnectOpts,
    pub(crate) members: Vec<Member>,
    /// Local indices of subscribed members, in the order they first subscribed (targets of
    /// `TopicSpec::Peer`).
    pub(crate) peers: RefCell<Vec<u64>>,
    /// Messages sent by members, by region of the sender.
    pub(crate) sent_by_region: Vec<Cell<u64>>,
    pub(crate) spawned: Cell<bool>,
}

impl Group {
    /// Pattern variables of local member `idx`.
    pub(crate) fn vars<'a>(&self, run: &'a str, idx: u64) -> Vars<'a> {
        let k = self.spec.offset + idx;
        let r = if self.spec.regions > 0 { k % self.spec.regions } else { 0 };
        Vars { run, i: global_index(self.spec.id, k), k, r, j: 0 }
    }

    /// Region of local member `idx`.
    pub(crate) fn region(&self, idx: u64) -> usize {
        let k = self.spec.offset + idx;
        if self.spec.regions > 0 { (k % self.spec.regions) as usize } else { 0 }
    }

    /// Subscribed members by region.
    pub(crate) fn subscribed_by_region(&self) -> Vec<u64> {
        let mut v = vec![0; self.spec.regions.max(1) as usize];
        for (idx, m) in self.members.iter().enumerate() {
            if m.subscribed.get() {
                v[self.region(idx as u64)] += 1;
            }
        }
        v
    }
}

/// Cumulative counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connected: Cell<u64>,
    pub(crate) subscriptions: Cell<u64>,
    pub(crate) sent: Cell<u64>,
    pub(crate) sent_in_window: Cell<u64>,
    pub(crate) acked: Cell<u64>,
    pub(crate) inflight: Cell<u64>,
    pub(crate) unacked: Cell<u64>,
    pub(crate) no_target: Cell<u64>,
    pub(crate) errors: Cell<u64>,
    pub(crate) lag_max_us: Cell<u64>,
}

/// Adds `n` to a counter cell.
pub(crate) fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// Subtracts `n` from a counter cell, never below zero.
pub(crate) fn sub(c: &Cell<u64>, n: u64) {
    c.set(c.get().saturating_sub(n));
}

/// Delivery accounting.
#[derive(Debug, Default)]
pub(crate) struct Rx {
    pub(crate) tracker: Tracker,
    pub(crate) latency: Latency,
    /// Measurement window `[start, end)` on the harness clock.
    pub(crate) window: Option<(u64, u64)>,
    pub(crate) received: u64,
    pub(crate) received_in_window: u64,
    pub(crate) foreign: u64,
    pub(crate) misrouted: u64,
    pub(crate) corrupt: u64,
    pub(crate) first_rx_ns: u64,
    pub(crate) last_rx_ns: u64,
}

impl Rx {
    /// Accounts one delivery received at `rx_ns`.
    /// `ordered`: see [`Tracker::insert`].
    pub(crate) fn record(
        &mut self,
        slot: u64,
        ordered: bool,
        stamp: Option<Stamp>,
        rx_ns: u64,
        misrouted: bool,
    ) {
        self.received += 1;
        if self.first_rx_ns == 0 {
            self.first_rx_ns = rx_ns;
        }
        self.last_rx_ns = rx_ns;
        self.misrouted += u64::from(misrouted);
        let Some(stamp) = stamp else {
            self.foreign += 1;
            return;
        };
        if self.tracker.insert(slot, stamp.publisher, stamp.seq, ordered) == Seen::Corrupt {
            self.corrupt += 1;
        }
        if let Some((start, end)) = self.window {
            if (start..end).contains(&rx_ns) {
                self.received_in_window += 1;
            }
            if (start..end).contains(&stamp.sent_ns) {
                self.latency.record_us(rx_ns.saturating_sub(stamp.sent_ns) / 1000);
            }
        }
    }
}

/// Accumulates one step's outcome across members.
#[derive(Debug, Default)]
pub(crate) struct PhaseAcc {
    pub(crate) stats: PhaseStats,
    pub(crate) latency: Latency,
}

impl PhaseAcc {
    fn finished(&mut self) {
        self.stats.finished_ns = self.stats.finished_ns.max(crate::clock::now_ns());
    }
}

/// Spaces connection attempts evenly at a target rate.
#[derive(Debug)]
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn slot(&mut self) -> Instant {
        let now = Instant::now();
        let Some(interval) = self.interval else {
            return now;
        };
        let at = self.next.max(now);
        self.next = at + interval;
        at
    }
}

/// The shared state of one worker.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) spec: WorkerSpec,
    pub(crate) groups: Vec<Group>,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) counters: Counters,
    pub(crate) rx: RefCell<Rx>,
    pub(crate) phase: RefCell<PhaseAcc>,
    pub(crate) errors: RefCell<BTreeMap<String, u64>>,
    pub(crate) connect_slots: Semaphore,
    pub(crate) events: mpsc::Sender<Event>,
    pacer: RefCell<Pacer>,
    pending: Cell<u64>,
    pending_done: Notify,
    pub(crate) live_tasks: Cell<u64>,
    pub(crate) tasks_done: Notify,
    rng: RefCell<SmallRng>,
}

impl Ctx {
    /// Builds the state for `spec`.
    /// `tls` is built from `spec.tls` once per worker and shared by every connection.
    pub(crate) fn new(spec: WorkerSpec, tls: Option<TlsConnector>, events: mpsc::Sender<Event>) -> Rc<Self> {
        let protocol = spec.protocol.protocol();
        let groups = spec
            .groups
            .iter()
            .map(|g| Group {
                connect: ConnectOpts {
                    broker: spec.brokers[0],
                    source: None,
                    protocol,
                    keep_alive_secs: spec.keep_alive_secs,
                    timeout: Duration::from_millis(spec.op_timeout_ms),
                    session_expiry_secs: g.session_expiry_secs,
                    lean: g.lean,
                    tls: tls.clone(),
                },
                members: (0..g.count)
                    .map(|_| Member {
                        status: Cell::new(Status::Connecting),
                        todo: Cell::new(Todo::None),
                        subscribed: Cell::new(false),
                        listed: Cell::new(false),
                    })
                    .collect(),
                peers: RefCell::new(Vec::new()),
                sent_by_region: (0..g.regions.max(1)).map(|_| Cell::new(0)).collect(),
                spawned: Cell::new(false),
                spec: g.clone(),
            })
            .collect();
        let interval = (spec.connect_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.connect_rate));
        let seed = u64::from(spec.worker) ^ crate::clock::now_ns();
        Rc::new(Self {
            connect_slots: Semaphore::new(spec.connect_concurrency.max(1) as usize),
            pacer: RefCell::new(Pacer { interval, next: Instant::now() }),
            groups,
            control: watch::Sender::new(Control::default()),
            counters: Counters::default(),
            rx: RefCell::new(Rx::default()),
            phase: RefCell::new(PhaseAcc::default()),
            errors: RefCell::new(BTreeMap::new()),
            events,
            pending: Cell::new(0),
            pending_done: Notify::new(),
            live_tasks: Cell::new(0),
            tasks_done: Notify::new(),
            rng: RefCell::new(SmallRng::seed_from_u64(seed)),
            spec,
        })
    }

    /// Index of the group called `name`.
    pub(crate) fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.spec.name == name)
    }

    /// The source address for the member with global index `global`.
    pub(crate) fn source(&self, global: u64) -> Option<IpAddr> {
        let n = self.spec.sources.len();
        (n > 0).then(|| self.spec.sources[(global % n as u64) as usize])
    }

    /// When the next connection attempt may start.
    pub(crate) fn connect_slot(&self) -> Instant {
        self.pacer.borrow_mut().slot()
    }

    /// A random number below `n` (`n > 0`).
    pub(crate) fn random_below(&self, n: u64) -> u64 {
        self.rng.borrow_mut().random_range(0..n)
    }

    /// Wakes every member task (after assigning `todo`s).
    pub(crate) fn bump(&self) {
        self.control.send_modify(|c| c.epoch += 1);
    }

    /// Starts a step over `n` members.
    pub(crate) fn begin_step(&self, n: u64) {
        let mut p = PhaseAcc::default();
        p.stats.attempted = n;
        p.stats.started_ns = crate::clock::now_ns();
        *self.phase.borrow_mut() = p;
        self.pending.set(n);
    }

    /// One member finished its part of the step.
    pub(crate) fn member_done(&self, outcome: Result<Duration, &str>) {
        {
            let mut p = self.phase.borrow_mut();
            match outcome {
                Ok(took) => {
                    p.stats.ok += 1;
                    p.latency.record_us(took.as_micros() as u64);
                }
                Err(kind) => {
                    p.stats.failed += 1;
                    *p.stats.failures.entry(kind.to_string()).or_default() += 1;
                }
            }
            p.finished();
        }
        let left = self.pending.get().saturating_sub(1);
        self.pending.set(left);
        if left == 0 {
            self.pending_done.notify_one();
        }
    }

    /// Waits until every member of the step is done, or `timeout`. Returns the step's stats
    /// (members still pending are failures of kind `step_timeout`).
    pub(crate) async fn end_step(&self, timeout: Duration) -> PhaseStats {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending.get() > 0 {
            if tokio::time::timeout_at(deadline, self.pending_done.notified()).await.is_err() {
                break;
            }
        }
        let left = self.pending.replace(0);
        let mut p = std::mem::take(&mut *self.phase.borrow_mut());
        if left > 0 {
            p.stats.failed += left;
            *p.stats.failures.entry("step_timeout".into()).or_default() += left;
        }
        p.stats.latency = p.latency.to_wire();
        p.stats.worker = self.spec.worker;
        for g in &self.groups {
            if g.spec.subscribe.is_some() {
                p.stats.subscribed_by_region.insert(g.spec.name.clone(), g.subscribed_by_region());
            }
        }
        p.stats
    }

    /// Counts a connection loss or protocol error.
    pub(crate) fn error(&self, kind: &str) {
        add(&self.counters.errors, 1);
        *self.errors.borrow_mut().entry(kind.to_string()).or_default() += 1;
    }

    /// The periodic counters.
    pub(crate) fn progress(&self) -> Progress {
        let c = &self.counters;
        Progress {
            worker: self.spec.worker,
            at_ns: crate::clock::now_ns(),
            connected: c.connected.get(),
            subscriptions: c.subscriptions.get(),
            sent: c.sent.get(),
            acked: c.acked.get(),
            received: self.rx.borrow().received,
            errors: c.errors.get(),
        }
    }

    /// The accounting report.
    pub(crate) fn report(&self) -> WorkerReport {
        let rx = self.rx.borrow();
        WorkerReport {
            worker: self.spec.worker,
            streams: rx.tracker.to_wire(),
            latency: rx.latency.to_wire(),
            received: rx.received,
            foreign: rx.foreign,
            misrouted: rx.misrouted,
            corrupt: rx.corrupt,
            errors: self.errors.borrow().clone(),
        }
    }

    /// The broker address (index and address) local member `idx` of group `group` connects
    /// to (see [`crate::scenario::layout::broker_slot`]).
    pub(crate) fn broker_of(&self, group: usize, idx: u64) -> (usize, std::net::SocketAddr) {
        let g = &self.groups[group].spec;
        let slot = broker_slot(g.offset + idx, g.broker_shift, self.spec.brokers.len());
        (slot, self.spec.brokers[slot])
    }

    /// A random subscribed member (local index) of group `to`, the target of a
    /// `TopicSpec::Peer` message; `None` if no member is subscribed. With several broker
    /// addresses, a member connected to another address than `avoid` (the publisher's) when
    /// one is subscribed, so every message crosses nodes.
    pub(crate) fn peer_pick(&self, to: usize, avoid: Option<usize>) -> Option<u64> {
        let peers = self.groups[to].peers.borrow();
        if peers.is_empty() {
            return None;
        }
        let n = self.spec.brokers.len();
        let start = self.random_below(peers.len() as u64) as usize;
        let Some(avoid) = avoid.filter(|_| n > 1) else {
            return Some(peers[start]);
        };
        let g = &self.groups[to].spec;
        let elsewhere = |idx: u64| broker_slot(g.offset + idx, g.broker_shift, n) != avoid;
        // A few random draws (each hits another node with probability about (n-1)/n), then a
        // scan from the random start, so the choice stays bounded and uniform enough.
        if elsewhere(peers[start]) {
            return Some(peers[start]);
        }
        for _ in 0..4 {
            let p = peers[self.random_below(peers.len() as u64) as usize];
            if elsewhere(p) {
                return Some(p);
            }
        }
        let found = (1..peers.len()).map(|d| peers[(start + d) % peers.len()]).find(|&p| elsewhere(p));
        Some(found.unwrap_or(peers[start]))
    }
}
