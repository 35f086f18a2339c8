//! SHELL. What the admin endpoint may see of and do to a running MQTT server: a snapshot of
//! the core's counters and the shell's own (bytes, journal sync latency), and readiness.
//! Plain values only: the admin module turns them into Prometheus text.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Shared;
use crate::broker::{BANS_MAX, BanError, BanKind, ClientInfo, OperatorError, RetainedInfo, Stats};
use crate::clock;
use crate::mqtt::packet::QoS;

/// Addresses banned until a deadline (at most [`BANS_MAX`]).
#[derive(Default)]
pub(crate) struct AddrBans(Mutex<BTreeMap<IpAddr, Instant>>);

impl AddrBans {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<IpAddr, Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is banned now (checked at every accept; usually empty).
    pub(crate) fn banned(&self, ip: IpAddr) -> bool {
        let bans = self.lock();
        !bans.is_empty() && bans.get(&ip).is_some_and(|until| *until > Instant::now())
    }

    fn ban(&self, ip: IpAddr, until: Instant) -> Result<(), BanError> {
        let mut bans = self.lock();
        let now = Instant::now();
        bans.retain(|_, u| *u > now);
        if !bans.contains_key(&ip) && bans.len() >= BANS_MAX {
            return Err(BanError::Full);
        }
        bans.insert(ip, until);
        Ok(())
    }
}

/// A connected client as the admin API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientView {
    /// Client identifier.
    pub client_id: String,
    /// User name, if it sent one.
    pub username: Option<String>,
    /// Peer address.
    pub address: Option<IpAddr>,
    /// Protocol level: 3, 4 (3.1.1) or 5.
    pub protocol: u8,
    /// When its socket was accepted, Unix milliseconds.
    pub connected_since_ms: u64,
    /// Keep alive, seconds.
    pub keep_alive_secs: u16,
    /// Its session's subscriptions (topic filters).
    pub subscriptions: Vec<String>,
    /// Messages queued for it.
    pub queued: usize,
    /// Messages sent, not yet acknowledged.
    pub inflight: usize,
    /// Messages dropped for it.
    pub dropped: u64,
    /// Session expiry interval, seconds.
    pub session_expiry_secs: u32,
}

/// What a ban matches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum BanTarget {
    /// A client identifier.
    ClientId(String),
    /// A user name.
    User(String),
    /// A peer address (its sockets close at accept).
    Address(IpAddr),
}

/// A retained message as the admin API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetainedView {
    /// Its topic.
    pub topic: String,
    /// Payload bytes.
    pub bytes: usize,
    /// Its QoS.
    pub qos: u8,
}

impl From<RetainedInfo> for RetainedView {
    fn from(r: RetainedInfo) -> Self {
        Self { topic: r.topic, bytes: r.bytes, qos: r.qos }
    }
}

/// Most retained messages one list answers with.
pub const RETAINED_LIST_MAX: usize = 10_000;

/// Most clients one list answers with.
pub const CLIENT_LIST_MAX: usize = 10_000;

/// Counters kept by the shell (outside the core's lock).
pub(crate) struct ShellCounters {
    /// Bytes read from client sockets.
    pub(crate) bytes_received: AtomicU64,
    /// Bytes handed to client sockets.
    pub(crate) bytes_sent: AtomicU64,
    /// Seconds each journal write round took (append and, when due, fdatasync).
    pub(crate) journal_sync: prometheus::Histogram,
    /// True from the start of `Server::run` until shutdown begins.
    pub(crate) running: AtomicBool,
}

impl ShellCounters {
    pub(crate) fn new() -> Self {
        let opts = prometheus::HistogramOpts::new(
            "flotilla_journal_write_seconds",
            "Time of one journal write round: append plus fdatasync when one is due.",
        )
        .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).unwrap_or_default());
        // Fixed, valid options: this cannot fail.
        let journal_sync = prometheus::Histogram::with_opts(opts).unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            journal_sync,
            running: AtomicBool::new(false),
        }
    }

    pub(crate) fn add_received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A copy of the server's figures at one moment.
#[derive(Clone, Debug, Default)]
pub struct OpsSnapshot {
    /// The core's counters.
    pub stats: Stats,
    /// Refused CONNECTs by CONNACK reason code.
    pub refusals: Vec<(u8, u64)>,
    /// Subscriptions held.
    pub subscriptions: u64,
    /// Retained messages held.
    pub retained: u64,
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes sent to clients.
    pub bytes_sent: u64,
    /// Bytes of journal records not yet durable.
    pub journal_lag_bytes: u64,
    /// Messages queued for sessions, connected or not.
    pub queued: u64,
    /// Messages sent and not yet acknowledged.
    pub inflight: u64,
}

/// The admin endpoint's handle on a server; does not keep the server alive.
#[derive(Clone)]
pub struct OpsHandle {
    pub(super) shared: Weak<Shared>,
}

impl OpsHandle {
    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.upgrade()
    }

    /// The figures now; `None` once the server is gone.
    pub fn snapshot(&self) -> Option<OpsSnapshot> {
        let shared = self.shared()?;
        let c = &shared.counters;
        let core = shared.lock();
        let b = &core.broker;
        let (queued, inflight) = b.queue_totals();
        Some(OpsSnapshot {
            stats: b.stats(),
            refusals: b.refusals().collect(),
            subscriptions: b.subscription_count() as u64,
            retained: b.retained_count() as u64,
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            journal_lag_bytes: b.journal_lag_bytes(),
            queued,
            inflight,
        })
    }

    /// The journal write latency histogram (shared, not a copy).
    pub fn journal_histogram(&self) -> Option<prometheus::Histogram> {
        Some(self.shared()?.counters.journal_sync.clone())
    }

    /// True while the server serves: its journal was replayed, its listener is bound and
    /// shutdown has not begun.
    pub fn ready(&self) -> bool {
        self.shared().is_some_and(|s| s.counters.running.load(Ordering::Relaxed))
    }
}

impl OpsHandle {
    fn view(info: ClientInfo) -> ClientView {
        ClientView {
            client_id: info.client_id,
            username: info.username,
            address: info.address,
            protocol: info.protocol,
            connected_since_ms: info.connected_since_ms,
            keep_alive_secs: info.keep_alive_secs,
            subscriptions: info.subscriptions,
            queued: info.queued,
            inflight: info.inflight,
            dropped: info.dropped,
            session_expiry_secs: info.session_expiry_secs,
        }
    }

    /// Connected clients (at most [`CLIENT_LIST_MAX`]).
    pub fn clients(&self) -> Vec<ClientView> {
        let Some(shared) = self.shared() else { return Vec::new() };
        let core = shared.lock();
        let infos = core.broker.clients(CLIENT_LIST_MAX);
        infos.into_iter().map(Self::view).collect()
    }

    /// The connected client `client_id`.
    pub fn client(&self, client_id: &str) -> Option<ClientView> {
        let shared = self.shared()?;
        let core = shared.lock();
        let info = core.broker.client(client_id)?;
        Some(Self::view(info))
    }

    /// Disconnects `client_id` (DISCONNECT 0x98 to 5.0 clients); whether it was connected.
    pub fn kick(&self, client_id: &str) -> bool {
        let Some(shared) = self.shared() else { return false };
        let mut core = shared.lock();
        let kicked = core.broker.kick_client(clock::now(), client_id);
        core.notify_woken(None);
        kicked
    }

    /// Bans `target` for `duration`: CONNECTs from the client id or user are refused with
    /// 0x8A, sockets from the address are closed at accept.
    pub fn ban(&self, target: &BanTarget, duration: Duration) -> Result<(), BanError> {
        let Some(shared) = self.shared() else { return Ok(()) };
        let now = clock::now();
        let until = now + duration;
        match target {
            BanTarget::Address(ip) => {
                tracing::info!(address = %ip, secs = duration.as_secs(), "address banned");
                shared.addr_bans.ban(*ip, until)
            }
            BanTarget::ClientId(id) => shared.lock().broker.ban(now, BanKind::ClientId, id, until),
            BanTarget::User(user) => shared.lock().broker.ban(now, BanKind::User, user, until),
        }
    }
}

impl OpsHandle {
    /// Retained messages matching `filter` (at most [`RETAINED_LIST_MAX`]).
    pub fn retained(&self, filter: &str) -> Result<Vec<RetainedView>, OperatorError> {
        let Some(shared) = self.shared() else { return Ok(Vec::new()) };
        let list = shared.lock().broker.retained_list(filter, RETAINED_LIST_MAX)?;
        Ok(list.into_iter().map(RetainedView::from).collect())
    }

    /// Deletes the retained message of `topic`; whether there was one.
    pub fn delete_retained(&self, topic: &str) -> Result<bool, OperatorError> {
        let Some(shared) = self.shared() else { return Ok(false) };
        let mut core = shared.lock();
        let deleted = core.broker.delete_retained(clock::now(), topic);
        core.notify_woken(None);
        deleted
    }

    /// Publishes as the broker; how many local sessions got the message.
    pub fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<usize, OperatorError> {
        let Some(shared) = self.shared() else { return Ok(0) };
        let mut core = shared.lock();
        let delivered = core.broker.publish_operator(clock::now(), topic, payload, qos, retain);
        core.notify_woken(None);
        delivered
    }
}
