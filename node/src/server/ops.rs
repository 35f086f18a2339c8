//! SHELL. What the admin endpoint may see of and do to a running MQTT server: a snapshot of
//! the core's counters and the shell's own (bytes, journal sync latency), and readiness.
//! Plain values only: the admin module turns them into Prometheus text.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::Shared;
use crate::broker::Stats;

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
        Some(OpsSnapshot {
            stats: b.stats(),
            refusals: b.refusals().collect(),
            subscriptions: b.subscription_count() as u64,
            retained: b.retained_count() as u64,
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            journal_lag_bytes: b.journal_lag_bytes(),
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
