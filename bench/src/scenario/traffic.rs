//! SHELL. The sequence every traffic scenario shares: connect all groups, publish through a
//! warm-up and a measurement window (optionally with a reconnect storm inside it), drain,
//! collect the accounting, and compute the figures.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::driver::{self, Driver};
use super::layout::{self, GroupPlan};
use super::opts::RunOpts;
use super::{run_id, unix_ms};
use crate::clock;
use crate::engine::proto::{Command, Done, PhaseStats, Step, TrafficStats, TrafficWindow};
use crate::result::{self, Headline, PhaseSummary, RunResult, TrafficSummary, figure};
use crate::stats::Accounting;

/// Delay between sending the traffic command and the first publish.
const START_DELAY: Duration = Duration::from_millis(500);

/// Per group, counts by region.
pub(crate) type ByRegion = BTreeMap<String, Vec<u64>>;

/// Expected deliveries from messages sent (by publishing group and region) and subscribed
/// receivers (by group and region).
pub(crate) type Expect = fn(sent: &ByRegion, subscribed: &ByRegion) -> u64;

/// A reconnect storm inside the measurement window.
#[derive(Clone, Debug)]
pub(crate) struct Storm {
    pub(crate) group: String,
    pub(crate) fraction: f64,
    pub(crate) abrupt: bool,
    /// When, as a fraction of the measurement window.
    pub(crate) at: f64,
}

/// What a traffic scenario runs.
pub(crate) struct Plan<'a> {
    pub(crate) scenario: &'static str,
    pub(crate) opts: &'a RunOpts,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) groups: Vec<GroupPlan>,
    pub(crate) expect: Expect,
    pub(crate) storm: Option<Storm>,
    pub(crate) notes: Vec<String>,
}

/// Sum of a group's counts over regions.
pub(crate) fn total(by: &ByRegion, group: &str) -> u64 {
    by.get(group).map_or(0, |v| v.iter().sum())
}

pub(crate) fn phases(dones: Vec<Done>) -> Vec<PhaseStats> {
    dones
        .into_iter()
        .filter_map(|d| match d {
            Done::Phase(_, p) => Some(p),
            Done::Traffic(_) => None,
        })
        .collect()
}

fn traffics(dones: Vec<Done>) -> Vec<TrafficStats> {
    dones
        .into_iter()
        .filter_map(|d| match d {
            Done::Traffic(t) => Some(t),
            Done::Phase(..) => None,
        })
        .collect()
}

/// Notes about failed clients in a phase.
pub(crate) fn phase_notes(name: &str, p: &PhaseSummary, notes: &mut Vec<String>) {
    if p.failed > 0 {
        let kinds: Vec<String> = p.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
        notes.push(format!("{name}: {} of {} clients failed ({})", p.failed, p.attempted, kinds.join(", ")));
    }
    if p.subscriptions_failed > 0 {
        notes.push(format!("{name}: {} subscriptions refused or unanswered", p.subscriptions_failed));
    }
}

/// Starts the workers for `groups`.
pub(crate) async fn start(opts: &RunOpts, groups: &[GroupPlan]) -> anyhow::Result<(Driver, String)> {
    let run_id = run_id(opts);
    let conns: u64 = groups.iter().map(|g| g.total).sum();
    let tls = opts.tls_spec()?;
    let specs = layout::specs(opts, &run_id, groups, opts.worker_count(conns), tls.as_ref());
    let d = Driver::start(opts, specs, &driver::mode(opts)?).await?;
    Ok((d, run_id))
}

/// A result with the fields every scenario fills.
pub(crate) fn base_result(
    scenario: &str,
    opts: &RunOpts,
    run_id: String,
    params: BTreeMap<String, String>,
) -> RunResult {
    RunResult {
        scenario: scenario.into(),
        label: opts.label.clone(),
        broker: opts.broker.to_string(),
        broker_pid: opts.broker_pid.first().copied(),
        broker_pids: if opts.broker_pid.len() > 1 { opts.broker_pid.clone() } else { Vec::new() },
        run_id,
        started_unix_ms: unix_ms(),
        params,
        ..RunResult::default()
    }
}

/// Runs a traffic scenario.
pub(crate) async fn run(plan: Plan<'_>) -> anyhow::Result<RunResult> {
    let opts = plan.opts;
    let (mut d, run_id) = start(opts, &plan.groups).await?;
    let mut r = base_result(plan.scenario, opts, run_id, plan.params);
    r.workers = d.workers();
    r.notes = plan.notes;
    let b_start = d.broker();

    d.phase("connect");
    let (connect, subscribed) =
        result::merge_phases(&phases(d.step(&Command::Connect { groups: vec![] }, Step::Connect).await?));
    phase_notes("connect", &connect, &mut r.notes);

    let w = TrafficWindow {
        start_ns: clock::now_ns() + START_DELAY.as_nanos() as u64,
        warmup_ms: opts.warmup.ms(),
        measure_ms: opts.measure.ms(),
        drain_max_ms: opts.drain.ms(),
        quiet_ms: opts.quiet.ms(),
    };
    d.send(&Command::Traffic(w)).await?;
    d.phase("warm-up");
    d.pump_until(clock::instant_at(w.measure_start_ns())).await?;
    let b0 = d.broker();
    let c0 = d.client_cpu_secs();
    d.phase("measure");
    if let Some(storm) = &plan.storm {
        let at = w.measure_start_ns() + (w.measure_ms as f64 * storm.at * 1e6) as u64;
        d.pump_until(clock::instant_at(at)).await?;
        d.phase("storm");
        let s0 = d.broker();
        let cmd = Command::Disconnect {
            group: storm.group.clone(),
            fraction: storm.fraction,
            abrupt: storm.abrupt,
        };
        let (down, _) = result::merge_phases(&phases(d.step(&cmd, Step::Disconnect).await?));
        let cmd = Command::Reconnect { group: storm.group.clone() };
        let (back, _) = result::merge_phases(&phases(d.step(&cmd, Step::Reconnect).await?));
        let s1 = d.broker();
        phase_notes("reconnect", &back, &mut r.notes);
        r.figures.insert(figure::RECOVERY_SECS.into(), back.secs);
        r.figures.insert(figure::RECONNECTS_PER_SEC.into(), back.per_sec);
        r.figures.insert("storm_disconnected".into(), down.ok as f64);
        let u = result::usage(s0, s0, s1, back.secs);
        if let Some(v) = result::per_cpu_sec(back.ok, u.as_ref()) {
            r.figures.insert(figure::RECONNECTS_PER_CPU_SEC.into(), v);
        }
        r.reconnect = Some(back);
        d.phase("measure");
    }
    d.pump_until(clock::instant_at(w.measure_end_ns())).await?;
    let b1 = d.broker();
    let c1 = d.client_cpu_secs();
    d.phase("drain");
    let totals = result::merge_traffic(&traffics(d.wait(Step::Traffic).await?));
    let reports = result::merge_reports(&d.reports().await?).context("merging worker reports")?;
    let purge = plan.groups.iter().any(|g| !g.clean_start);
    r.timeline = d.finish(purge).await;

    let expected = (plan.expect)(&totals.sent_by_region, &subscribed);
    let accounting = Accounting::new(expected, reports.tracker.tally());
    let measure_secs = opts.measure.0.as_secs_f64();
    let s = &totals.sum;
    let traffic = TrafficSummary {
        sent: s.sent,
        acked: s.acked,
        unacked: s.unacked,
        no_target: s.no_target,
        accounting,
        measure_secs,
        sent_in_window: s.sent_in_window,
        delivered_in_window: s.received_in_window,
        latency: reports.latency.percentiles(),
        foreign: reports.foreign,
        misrouted: reports.misrouted,
        lag_max_ms: s.lag_max_us as f64 / 1000.0,
    };
    let usage = result::usage(b_start, b0, b1, measure_secs);
    let f = &mut r.figures;
    f.insert(figure::DELIVERIES_PER_SEC.into(), s.received_in_window as f64 / measure_secs);
    f.insert(figure::PUBLISHES_PER_SEC.into(), s.sent_in_window as f64 / measure_secs);
    f.insert(figure::LATENCY_P50_US.into(), traffic.latency.p50_us as f64);
    f.insert(figure::LATENCY_P99_US.into(), traffic.latency.p99_us as f64);
    f.insert(figure::LATENCY_P999_US.into(), traffic.latency.p999_us as f64);
    f.insert(figure::LOST.into(), accounting.lost as f64);
    f.insert(figure::DUPLICATES.into(), accounting.duplicates as f64);
    if let Some(v) = result::per_cpu_sec(s.received_in_window, usage.as_ref()) {
        f.insert(figure::DELIVERIES_PER_CPU_SEC.into(), v);
    }
    if let Some(u) = &usage {
        f.insert(figure::BROKER_CPU_CORES.into(), u.cpu_secs / u.wall_secs.max(1e-9));
    }
    f.insert(figure::CLIENT_CPU_CORES.into(), (c1 - c0).max(0.0) / measure_secs);
    traffic_notes(opts, &traffic, &reports.errors, &mut r.notes);
    r.headline = Some(if usage.is_some() {
        Headline { figure: figure::DELIVERIES_PER_CPU_SEC.into(), higher_is_better: true }
    } else {
        Headline { figure: figure::DELIVERIES_PER_SEC.into(), higher_is_better: true }
    });
    r.connect = Some(connect);
    r.traffic = Some(traffic);
    r.broker_usage = usage;
    Ok(r)
}

/// Warnings about a traffic phase.
pub(crate) fn traffic_notes(
    opts: &RunOpts,
    t: &TrafficSummary,
    errors: &BTreeMap<String, u64>,
    notes: &mut Vec<String>,
) {
    let a = &t.accounting;
    if a.lost > 0 {
        notes.push(format!("{} of {} expected deliveries lost", a.lost, a.expected));
    }
    if a.duplicates > 0 {
        notes.push(format!("{} duplicate deliveries", a.duplicates));
    }
    if a.unexpected > 0 {
        notes.push(format!("{} deliveries beyond the expected count", a.unexpected));
    }
    if t.misrouted > 0 {
        notes.push(format!("{} deliveries on another client's topic", t.misrouted));
    }
    if t.no_target > 0 {
        notes.push(format!("{} messages not sent: no subscribed target", t.no_target));
    }
    if t.unacked > 0 {
        notes.push(format!("{} QoS {} messages never acknowledged", t.unacked, opts.qos));
    }
    if !opts.max && t.lag_max_ms > 100.0 {
        notes.push(format!(
            "publishers fell up to {:.0} ms behind schedule: the load generator, not only the broker, limited the rate",
            t.lag_max_ms
        ));
    }
    if !errors.is_empty() {
        let kinds: Vec<String> = errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        notes.push(format!("client errors: {}", kinds.join(", ")));
    }
}
