//! SHELL. The coordinator's side of a run: starts the workers, sends each step to all of
//! them, collects their answers while sampling the broker once a second, and shows progress.
//!
//! Every wait is bounded: a step by the spec's step timeout plus a margin, the whole run by
//! the sum of its steps.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::proto::{Command, Done, Event, Progress, Step, WorkerReport, WorkerSpec};
use crate::proc::{self, ProcSample};
use crate::result::Sample;
use crate::worker::{Mode, WorkerSet};

use super::opts::RunOpts;

/// Timeline resolution.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Slack on top of the workers' own step timeout before the coordinator gives up.
const STEP_MARGIN: Duration = Duration::from_secs(30);

/// A run in progress.
pub struct Driver {
    workers: WorkerSet,
    broker_pids: Vec<u32>,
    step_timeout: Duration,
    started: Instant,
    next_sample: Instant,
    done: Vec<Done>,
    reports: Vec<WorkerReport>,
    latest: BTreeMap<u32, Progress>,
    timeline: Vec<Sample>,
    bar: ProgressBar,
    phase: String,
    last_received: (Instant, u64),
}

/// Where the workers run for these options.
pub fn mode(opts: &RunOpts) -> anyhow::Result<Mode> {
    if opts.in_process {
        return Ok(Mode::InProcess);
    }
    let exe = match &opts.worker_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("cannot locate the bench binary for worker processes")?,
    };
    Ok(Mode::Subprocess { exe })
}

/// Whether to draw a live progress display: on a terminal, not in CI, not disabled.
pub fn show_progress(opts: &RunOpts) -> bool {
    !opts.no_progress && std::env::var_os("CI").is_none() && std::io::stderr().is_terminal()
}

impl Driver {
    /// Starts one worker per spec.
    pub async fn start(opts: &RunOpts, specs: Vec<WorkerSpec>, mode: &Mode) -> anyhow::Result<Self> {
        if let Some(pid) = opts.broker_pid.iter().find(|&&p| !proc::alive(p)) {
            bail!("no process with id {pid} (--broker-pid)");
        }
        let workers = WorkerSet::start(specs, mode).await?;
        let bar = if show_progress(opts) {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        };
        let now = Instant::now();
        let mut d = Self {
            workers,
            broker_pids: opts.broker_pid.clone(),
            step_timeout: opts.step_timeout.0 + STEP_MARGIN,
            started: now,
            next_sample: now,
            done: Vec::new(),
            reports: Vec::new(),
            latest: BTreeMap::new(),
            timeline: Vec::new(),
            bar,
            phase: "start".into(),
            last_received: (now, 0),
        };
        d.sample();
        Ok(d)
    }

    /// Number of workers.
    pub fn workers(&self) -> u32 {
        self.workers.len() as u32
    }

    /// Names the current phase in the progress display.
    pub fn phase(&mut self, name: &str) {
        self.phase = name.to_string();
        self.redraw();
    }

    /// The broker's resource use now, summed over its processes (a cluster's nodes).
    pub fn broker(&self) -> Option<ProcSample> {
        proc::sample_sum(&self.broker_pids)
    }

    /// CPU seconds used so far by the load generator's worker processes.
    pub fn client_cpu_secs(&self) -> f64 {
        self.workers.pids().into_iter().filter_map(|p| proc::sample(p).ok()).map(|s| s.cpu_secs).sum()
    }

    /// Sends `cmd` to every worker without waiting.
    pub async fn send(&mut self, cmd: &Command) -> anyhow::Result<()> {
        self.workers.send_all(cmd).await
    }

    /// Sends `cmd` to every worker and waits for all their answers.
    pub async fn step(&mut self, cmd: &Command, step: Step) -> anyhow::Result<Vec<Done>> {
        self.send(cmd).await?;
        self.wait(step).await
    }

    /// Waits for every worker's answer to `step`.
    pub async fn wait(&mut self, step: Step) -> anyhow::Result<Vec<Done>> {
        let deadline = Instant::now() + self.step_timeout;
        let n = self.workers.len();
        while self.done.iter().filter(|d| d.step() == step).count() < n {
            if Instant::now() >= deadline {
                bail!("workers did not finish step {step:?} in time");
            }
            self.pump_once(deadline).await?;
        }
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.done).into_iter().partition(|d| d.step() == step);
        self.done = rest;
        Ok(mine)
    }

    /// Handles events until `at`.
    pub async fn pump_until(&mut self, at: Instant) -> anyhow::Result<()> {
        while Instant::now() < at {
            self.pump_once(at).await?;
        }
        Ok(())
    }

    /// Handles events for `d`.
    pub async fn sleep(&mut self, d: Duration) -> anyhow::Result<()> {
        self.pump_until(Instant::now() + d).await
    }

    /// Asks every worker for its accounting report.
    pub async fn reports(&mut self) -> anyhow::Result<Vec<WorkerReport>> {
        self.send(&Command::Report).await?;
        let deadline = Instant::now() + self.step_timeout;
        while self.reports.len() < self.workers.len() {
            if Instant::now() >= deadline {
                bail!("workers did not send their reports in time");
            }
            self.pump_once(deadline).await?;
        }
        Ok(std::mem::take(&mut self.reports))
    }

    /// Shuts the workers down and returns the timeline.
    pub async fn finish(mut self, purge_sessions: bool) -> Vec<Sample> {
        self.phase("shutdown");
        self.sample();
        let _ = self.workers.send_all(&Command::Shutdown { purge_sessions }).await;
        self.bar.finish_and_clear();
        self.workers.finish(self.step_timeout).await;
        self.timeline
    }

    async fn pump_once(&mut self, until: Instant) -> anyhow::Result<()> {
        let wake = until.min(self.next_sample);
        tokio::select! {
            ev = self.workers.next_event() => {
                let (w, ev) = ev.ok_or_else(|| anyhow!("all workers exited"))?;
                self.on_event(w, ev)?;
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        if Instant::now() >= self.next_sample {
            self.sample();
        }
        Ok(())
    }

    fn on_event(&mut self, w: u32, ev: Event) -> anyhow::Result<()> {
        match ev {
            Event::Progress(p) => {
                self.latest.insert(w, p);
            }
            Event::Done(d) => self.done.push(*d),
            Event::Report(r) => self.reports.push(*r),
            Event::Failed(msg) => bail!("worker {w} failed: {msg}"),
        }
        Ok(())
    }

    fn totals(&self) -> Progress {
        let mut t = Progress::default();
        for p in self.latest.values() {
            t.connected += p.connected;
            t.subscriptions += p.subscriptions;
            t.sent += p.sent;
            t.acked += p.acked;
            t.received += p.received;
            t.errors += p.errors;
        }
        t
    }

    fn sample(&mut self) {
        let now = Instant::now();
        self.next_sample = now + SAMPLE_EVERY;
        let t = self.totals();
        let b = self.broker();
        self.timeline.push(Sample {
            t_secs: now.duration_since(self.started).as_secs_f64(),
            connected: t.connected,
            subscriptions: t.subscriptions,
            sent: t.sent,
            acked: t.acked,
            received: t.received,
            errors: t.errors,
            broker_cpu_secs: b.map(|b| b.cpu_secs),
            broker_rss_bytes: b.map(|b| b.rss_bytes),
        });
        self.redraw();
    }

    fn redraw(&mut self) {
        if self.bar.is_hidden() {
            return;
        }
        let t = self.totals();
        let now = Instant::now();
        let (then, before) = self.last_received;
        let secs = now.duration_since(then).as_secs_f64();
        let rate = if secs > 0.2 { (t.received.saturating_sub(before)) as f64 / secs } else { 0.0 };
        if secs > 0.2 {
            self.last_received = (now, t.received);
        }
        let mut msg = format!(
            "{:<9} conns {:>7}  subs {:>8}  sent {:>10}  recv {:>10} ({:>8.0}/s)  errors {}",
            self.phase, t.connected, t.subscriptions, t.sent, t.received, rate, t.errors
        );
        if let Some(b) = self.timeline.last().and_then(|s| s.broker_rss_bytes) {
            msg.push_str(&format!("  broker RSS {:.1} MiB", b as f64 / 1_048_576.0));
        }
        self.bar.set_message(msg);
    }
}
