//! `persist`: vehicles with persistent sessions subscribe to their command topic at QoS 1
//! and go offline; backends send each vehicle a number of commands, which the broker must
//! queue; then every vehicle reconnects at once (a reconnect storm) and receives its backlog.
//! Reports broker bytes per queued message, reconnect rate, replay rate, and loss and
//! duplicates across the whole cycle.

use std::time::Duration;

use anyhow::Context;

use super::base_params;
use super::opts::{Dur, RunOpts};
use super::p2p::{backends, vehicles};
use super::traffic::{base_result, phase_notes, phases, start, traffic_notes};
use crate::clock;
use crate::engine::proto::{Command, Done, Step, TrafficStats, TrafficWindow};
use crate::result::{self, Headline, RunResult, TrafficSummary, figure};
use crate::stats::Accounting;

/// Options of `persist`.
#[derive(Clone, Debug, clap::Args)]
pub struct PersistArgs {
    /// Shared options (`--rate` is the publish rate while vehicles are offline).
    #[command(flatten)]
    pub opts: RunOpts,
    /// Vehicles with persistent sessions.
    #[arg(long, default_value_t = 1000)]
    pub vehicles: u64,
    /// Backend publishers.
    #[arg(long, default_value_t = 2)]
    pub backends: u64,
    /// Commands queued per vehicle while it is offline (stay below the broker's per-session
    /// queue limit: 1000 for both Flotilla and Mosquitto by default).
    #[arg(long, default_value_t = 20)]
    pub messages_per_vehicle: u64,
    /// Longest wait for the replay to finish.
    #[arg(long, default_value = "60s")]
    pub replay_max: Dur,
}

/// Runs `persist`.
pub async fn run(a: &PersistArgs) -> anyhow::Result<RunResult> {
    let mut opts = a.opts.clone();
    let mut notes = Vec::new();
    if opts.qos == 0 {
        notes.push("QoS raised to 1: brokers queue only QoS 1/2 messages for offline sessions".into());
        opts.qos = 1;
    }
    if opts.max {
        notes.push("--max ignored: the offline phase publishes a fixed number of messages".into());
        opts.max = false;
    }
    let rate = opts.rate.unwrap_or(5000.0);
    let total = a.vehicles * a.messages_per_vehicle;
    let publish_secs = (total as f64 / rate).max(0.1);
    let workers = u64::from(opts.worker_count(a.vehicles + a.backends));
    let backend_n = a.backends.max(workers);
    let groups = [vehicles(&opts, a.vehicles, true), backends(&opts, backend_n, rate)];
    let (mut d, run_id) = start(&opts, &groups).await?;
    let mut params = base_params(&opts);
    params.insert("vehicles".into(), a.vehicles.to_string());
    params.insert("backends".into(), backend_n.to_string());
    params.insert("messages_per_vehicle".into(), a.messages_per_vehicle.to_string());
    params.insert("rate".into(), rate.to_string());
    params.insert("connect_rate".into(), opts.connect_rate.to_string());
    let mut r = base_result("persist", &opts, run_id, params);
    r.workers = d.workers();
    r.notes = notes;
    let b_start = d.broker();

    d.phase("connect");
    let (connect, subscribed) =
        result::merge_phases(&phases(d.step(&Command::Connect { groups: vec![] }, Step::Connect).await?));
    phase_notes("connect", &connect, &mut r.notes);
    d.phase("offline");
    let off = Command::Disconnect { group: "vehicles".into(), fraction: 1.0, abrupt: false };
    d.step(&off, Step::Disconnect).await?;
    d.sleep(Duration::from_millis(500)).await?;
    let b0 = d.broker();

    d.phase("publish");
    let w = TrafficWindow {
        start_ns: clock::now_ns() + 300_000_000,
        warmup_ms: 0,
        measure_ms: (publish_secs * 1000.0).ceil() as u64,
        drain_max_ms: opts.drain.ms(),
        quiet_ms: opts.quiet.ms(),
    };
    d.send(&Command::Traffic(w)).await?;
    let totals = result::merge_traffic(
        &d.wait(Step::Traffic)
            .await?
            .into_iter()
            .filter_map(|x| match x {
                Done::Traffic(t) => Some(t),
                Done::Phase(..) => None,
            })
            .collect::<Vec<TrafficStats>>(),
    );
    d.sleep(Duration::from_millis(500)).await?;
    let b1 = d.broker();

    d.phase("reconnect");
    let reconnect_ns = clock::now_ns();
    let (back, _) = result::merge_phases(&phases(
        d.step(&Command::Reconnect { group: "vehicles".into() }, Step::Reconnect).await?,
    ));
    let b2 = d.broker();
    phase_notes("reconnect", &back, &mut r.notes);
    d.phase("replay");
    let settle = Command::Settle { quiet_ms: opts.quiet.ms().max(2000), max_ms: a.replay_max.ms() };
    let settled = phases(d.step(&settle, Step::Settle).await?);
    let b3 = d.broker();
    let reports = result::merge_reports(&d.reports().await?).context("merging worker reports")?;
    r.timeline = d.finish(true).await;

    let s = &totals.sum;
    let expected = totals.sent_by_region.get("backends").map_or(0, |v| v.iter().sum());
    let accounting = Accounting::new(expected, reports.tracker.tally());
    let last_rx = settled.iter().map(|p| p.last_rx_ns).max().unwrap_or(0);
    let replay_secs = last_rx.saturating_sub(reconnect_ns) as f64 / 1e9;
    let traffic = TrafficSummary {
        sent: s.sent,
        acked: s.acked,
        unacked: s.unacked,
        no_target: s.no_target,
        accounting,
        measure_secs: publish_secs,
        sent_in_window: s.sent_in_window,
        delivered_in_window: s.received_in_window,
        latency: reports.latency.percentiles(),
        foreign: reports.foreign,
        misrouted: reports.misrouted,
        lag_max_ms: s.lag_max_us as f64 / 1000.0,
    };
    traffic_notes(&opts, &traffic, &reports.errors, &mut r.notes);
    if back.session_present < back.ok {
        r.notes.push(format!(
            "{} of {} reconnects found no session",
            back.ok - back.session_present,
            back.ok
        ));
    }
    r.notes.push("latency here is the age of a queued message at delivery".into());
    let f = &mut r.figures;
    f.insert(figure::PUBLISHES_PER_SEC.into(), s.sent as f64 / publish_secs);
    f.insert(figure::RECONNECTS_PER_SEC.into(), back.per_sec);
    f.insert(figure::RECOVERY_SECS.into(), back.secs);
    f.insert(figure::LOST.into(), accounting.lost as f64);
    f.insert(figure::DUPLICATES.into(), accounting.duplicates as f64);
    f.insert(
        "subscribed_vehicles".into(),
        subscribed.get("vehicles").map_or(0, |v| v.iter().sum::<u64>()) as f64,
    );
    if replay_secs > 0.0 {
        f.insert(figure::REPLAY_PER_SEC.into(), accounting.unique as f64 / replay_secs);
    }
    if let (Some(b0), Some(b1)) = (b0, b1)
        && s.acked > 0
    {
        f.insert(
            figure::BYTES_PER_QUEUED_MESSAGE.into(),
            (b1.rss_bytes as f64 - b0.rss_bytes as f64) / s.acked as f64,
        );
    }
    let storm_cpu = result::usage(b1, b1, b2, back.secs);
    if let Some(v) = result::per_cpu_sec(back.ok, storm_cpu.as_ref()) {
        f.insert(figure::RECONNECTS_PER_CPU_SEC.into(), v);
    }
    let replay_cpu = result::usage(b1, b1, b3, replay_secs);
    if let Some(v) = result::per_cpu_sec(accounting.unique, replay_cpu.as_ref()) {
        f.insert("replay_msgs_per_broker_cpu_sec".into(), v);
    }
    r.broker_usage = result::usage(b_start, b1, b3, replay_secs);
    r.headline = Some(Headline { figure: figure::REPLAY_PER_SEC.into(), higher_is_better: true });
    r.connect = Some(connect);
    r.reconnect = Some(back);
    r.traffic = Some(traffic);
    Ok(r)
}
