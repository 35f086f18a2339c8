//! CORE. The result of one run: every figure a report shows, as one serde value (one JSON
//! object per run), plus how the per-worker pieces are merged into it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::proto::{PhaseStats, TrafficStats, WorkerReport};
use crate::proc::ProcSample;
use crate::stats::{Accounting, Latency, Percentiles, Tracker, WireError};

/// One run of one scenario against one broker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Scenario name (`conn`, `p2p`, ...).
    pub scenario: String,
    /// Broker label (`--label`), e.g. `flotilla` or `mosquitto`.
    pub label: String,
    /// Broker address (comma separated: a cluster's nodes).
    pub broker: String,
    /// Broker process id, when sampled (the first of `broker_pids`).
    pub broker_pid: Option<u32>,
    /// Every broker process sampled, when there are several (a cluster's nodes); CPU and
    /// memory figures are their sums.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_pids: Vec<u32>,
    /// Run identifier (prefix of every client id).
    pub run_id: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Scenario parameters, for display.
    pub params: BTreeMap<String, String>,
    /// Worker processes (or threads).
    pub workers: u32,
    /// Initial connect (and subscribe-on-connect) phase.
    pub connect: Option<PhaseSummary>,
    /// Separate subscribe phase (`subs`).
    pub subscribe: Option<PhaseSummary>,
    /// Reconnect phase (`persist`, `storm`).
    pub reconnect: Option<PhaseSummary>,
    /// Traffic phase.
    pub traffic: Option<TrafficSummary>,
    /// Broker resource use, when `--broker-pid` was given.
    pub broker_usage: Option<BrokerUsage>,
    /// Named figures (see [`figure`] for the names); the ones `compare` and `plan` use.
    pub figures: BTreeMap<String, f64>,
    /// The figure that sums the run up.
    pub headline: Option<Headline>,
    /// Warnings: failures, a load generator that fell behind, unmet expectations.
    pub notes: Vec<String>,
    /// One sample per second.
    pub timeline: Vec<Sample>,
}

/// Names of the figures in [`RunResult::figures`].
pub mod figure {
    /// Deliveries per second in the measurement window.
    pub const DELIVERIES_PER_SEC: &str = "deliveries_per_sec";
    /// Deliveries per broker CPU-second in the measurement window.
    pub const DELIVERIES_PER_CPU_SEC: &str = "deliveries_per_broker_cpu_sec";
    /// Publishes per second in the measurement window.
    pub const PUBLISHES_PER_SEC: &str = "publishes_per_sec";
    /// Connections per second.
    pub const CONNECTS_PER_SEC: &str = "connects_per_sec";
    /// Connections per broker CPU-second.
    pub const CONNECTS_PER_CPU_SEC: &str = "connects_per_broker_cpu_sec";
    /// Broker RSS growth per connection, bytes.
    pub const BYTES_PER_CONNECTION: &str = "broker_bytes_per_connection";
    /// Subscriptions per second.
    pub const SUBSCRIBES_PER_SEC: &str = "subscribes_per_sec";
    /// Subscriptions per broker CPU-second.
    pub const SUBSCRIBES_PER_CPU_SEC: &str = "subscribes_per_broker_cpu_sec";
    /// Broker RSS growth per subscription, bytes.
    pub const BYTES_PER_SUBSCRIPTION: &str = "broker_bytes_per_subscription";
    /// Broker RSS growth per queued message, bytes.
    pub const BYTES_PER_QUEUED_MESSAGE: &str = "broker_bytes_per_queued_message";
    /// Replayed messages per second after a reconnect.
    pub const REPLAY_PER_SEC: &str = "replay_msgs_per_sec";
    /// Seconds from the first reconnect attempt to the last client back.
    pub const RECOVERY_SECS: &str = "recovery_secs";
    /// Reconnections per second.
    pub const RECONNECTS_PER_SEC: &str = "reconnects_per_sec";
    /// Reconnections per broker CPU-second.
    pub const RECONNECTS_PER_CPU_SEC: &str = "reconnects_per_broker_cpu_sec";
    /// Latency percentiles, microseconds.
    pub const LATENCY_P50_US: &str = "latency_p50_us";
    /// See [`LATENCY_P50_US`].
    pub const LATENCY_P99_US: &str = "latency_p99_us";
    /// See [`LATENCY_P50_US`].
    pub const LATENCY_P999_US: &str = "latency_p999_us";
    /// Lost deliveries.
    pub const LOST: &str = "lost";
    /// Duplicate deliveries.
    pub const DUPLICATES: &str = "duplicates";
    /// Broker CPU utilisation in the measured phase (1.0 = one core).
    pub const BROKER_CPU_CORES: &str = "broker_cpu_cores";
    /// Load generator CPU utilisation in the measured phase (1.0 = one core; 10 ms ticks).
    pub const CLIENT_CPU_CORES: &str = "client_cpu_cores";
}

/// The figure that sums a run up, and which way is better.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Headline {
    /// Key in `figures`.
    pub figure: String,
    /// Whether larger values are better.
    pub higher_is_better: bool,
}

/// A connect, subscribe or reconnect phase over all workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseSummary {
    /// Clients the phase applied to.
    pub attempted: u64,
    /// Clients that completed it.
    pub ok: u64,
    /// Clients that failed.
    pub failed: u64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// From the first client starting to the last finishing, seconds.
    pub secs: f64,
    /// `ok / secs`.
    pub per_sec: f64,
    /// Per-client completion time.
    pub latency: Percentiles,
    /// Filters granted.
    pub subscriptions_ok: u64,
    /// Filters refused or unanswered.
    pub subscriptions_failed: u64,
    /// Connections that found their session present.
    pub session_present: u64,
}

/// The traffic phase over all workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrafficSummary {
    /// Messages published.
    pub sent: u64,
    /// Messages confirmed by the broker (QoS 1/2).
    pub acked: u64,
    /// QoS 1/2 messages never confirmed.
    pub unacked: u64,
    /// Messages not sent for lack of a subscribed target.
    pub no_target: u64,
    /// Loss and duplicates against the expected deliveries.
    pub accounting: Accounting,
    /// Measurement window, seconds.
    pub measure_secs: f64,
    /// Messages published in the window.
    pub sent_in_window: u64,
    /// Deliveries in the window.
    pub delivered_in_window: u64,
    /// End-to-end latency of messages sent in the window.
    pub latency: Percentiles,
    /// Deliveries without a bench stamp.
    pub foreign: u64,
    /// Deliveries on a topic other than the receiver's.
    pub misrouted: u64,
    /// Worst open-loop publisher lag behind schedule, milliseconds.
    pub lag_max_ms: f64,
}

/// Broker resource use.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BrokerUsage {
    /// CPU seconds in the measured phase.
    pub cpu_secs: f64,
    /// Wall seconds of the measured phase.
    pub wall_secs: f64,
    /// RSS at the start of the run, bytes.
    pub rss_start_bytes: u64,
    /// RSS at the end of the measured phase, bytes.
    pub rss_end_bytes: u64,
    /// Peak RSS of the process so far, bytes.
    pub rss_peak_bytes: u64,
}

/// One timeline point.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_secs: f64,
    /// Clients connected.
    pub connected: u64,
    /// Filters subscribed so far.
    pub subscriptions: u64,
    /// Messages published so far.
    pub sent: u64,
    /// Messages confirmed so far.
    pub acked: u64,
    /// Deliveries so far.
    pub received: u64,
    /// Errors so far.
    pub errors: u64,
    /// Broker CPU seconds so far.
    pub broker_cpu_secs: Option<f64>,
    /// Broker RSS, bytes.
    pub broker_rss_bytes: Option<u64>,
}

/// Merges per-worker phase stats.
pub fn merge_phases(parts: &[PhaseStats]) -> (PhaseSummary, BTreeMap<String, Vec<u64>>) {
    let mut s = PhaseSummary::default();
    let mut latency = Latency::default();
    let mut by_region: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (mut start, mut end) = (u64::MAX, 0u64);
    for p in parts {
        s.attempted += p.attempted;
        s.ok += p.ok;
        s.failed += p.failed;
        for (k, v) in &p.failures {
            *s.failures.entry(k.clone()).or_default() += v;
        }
        s.subscriptions_ok += p.subscriptions_ok;
        s.subscriptions_failed += p.subscriptions_failed;
        s.session_present += p.session_present;
        latency.merge(&Latency::from_wire(&p.latency));
        if p.started_ns > 0 {
            start = start.min(p.started_ns);
        }
        end = end.max(p.finished_ns);
        for (g, v) in &p.subscribed_by_region {
            add_vec(by_region.entry(g.clone()).or_default(), v);
        }
    }
    if start < end {
        s.secs = (end - start) as f64 / 1e9;
        s.per_sec = s.ok as f64 / s.secs.max(1e-9);
    }
    s.latency = latency.percentiles();
    (s, by_region)
}

/// Adds `b` into `a` element-wise, growing `a` as needed.
pub fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Traffic stats summed over workers.
#[derive(Clone, Debug, Default)]
pub struct TrafficTotals {
    /// Per publishing group, messages by region of the publisher.
    pub sent_by_region: BTreeMap<String, Vec<u64>>,
    /// Sum of the workers' stats (worker = 0, first/last delivery as min/max).
    pub sum: TrafficStats,
}

/// Merges per-worker traffic stats.
pub fn merge_traffic(parts: &[TrafficStats]) -> TrafficTotals {
    let mut t = TrafficTotals::default();
    let mut first = u64::MAX;
    for p in parts {
        for (g, v) in &p.sent_by_region {
            add_vec(t.sent_by_region.entry(g.clone()).or_default(), v);
        }
        let s = &mut t.sum;
        s.sent += p.sent;
        s.acked += p.acked;
        s.unacked += p.unacked;
        s.no_target += p.no_target;
        s.received_in_window += p.received_in_window;
        s.sent_in_window += p.sent_in_window;
        s.lag_max_us = s.lag_max_us.max(p.lag_max_us);
        if p.first_rx_ns > 0 {
            first = first.min(p.first_rx_ns);
        }
        s.last_rx_ns = s.last_rx_ns.max(p.last_rx_ns);
    }
    t.sum.first_rx_ns = if first == u64::MAX { 0 } else { first };
    t
}

/// Worker reports merged: the union of their trackers and histograms.
#[derive(Clone, Debug, Default)]
pub struct ReportTotals {
    /// Every stream.
    pub tracker: Tracker,
    /// Latency of messages sent in the window.
    pub latency: Latency,
    /// Deliveries.
    pub received: u64,
    /// Deliveries without a stamp.
    pub foreign: u64,
    /// Deliveries on the wrong topic.
    pub misrouted: u64,
    /// Deliveries with an impossible sequence number.
    pub corrupt: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// Merges worker reports.
pub fn merge_reports(parts: &[WorkerReport]) -> Result<ReportTotals, WireError> {
    let mut t = ReportTotals::default();
    for r in parts {
        t.tracker.merge(&Tracker::from_wire(&r.streams)?);
        t.latency.merge(&Latency::from_wire(&r.latency));
        t.received += r.received;
        t.foreign += r.foreign;
        t.misrouted += r.misrouted;
        t.corrupt += r.corrupt;
        for (k, v) in &r.errors {
            *t.errors.entry(k.clone()).or_default() += v;
        }
    }
    Ok(t)
}

/// Broker use between two samples.
pub fn usage(
    start_run: Option<ProcSample>,
    from: Option<ProcSample>,
    to: Option<ProcSample>,
    wall_secs: f64,
) -> Option<BrokerUsage> {
    let (s, a, b) = (start_run?, from?, to?);
    Some(BrokerUsage {
        cpu_secs: crate::proc::cpu_between(&a, &b),
        wall_secs,
        rss_start_bytes: s.rss_bytes,
        rss_end_bytes: b.rss_bytes,
        rss_peak_bytes: b.hwm_bytes,
    })
}

/// `count / cpu_secs`, if CPU time was measured (at least one 10 ms tick).
pub fn per_cpu_sec(count: u64, usage: Option<&BrokerUsage>) -> Option<f64> {
    let u = usage?;
    (u.cpu_secs >= 0.01).then(|| count as f64 / u.cpu_secs)
}
