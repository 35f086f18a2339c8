//! The load engine: what one worker runs. A worker owns a share of each client group of a
//! scenario and executes the coordinator's commands over them, step by step.
//!
//! - [`proto`] CORE: the serializable protocol (spec, commands, events, reports).
//! - [`pattern`] CORE: client id / topic / filter patterns.
//! - `ctx` SHELL: state shared by the worker's tasks.
//! - `actor`, `publisher`, `subscriber` SHELL: one task per client.
//!
//! [`run`] must be called inside a `tokio::task::LocalSet` on a current-thread runtime: the
//! tasks share state through `Rc`. Every step is bounded by the spec's `step_timeout_ms`, and
//! every per-client operation by `op_timeout_ms`.

mod actor;
mod ctx;
pub mod pattern;
pub mod proto;
mod publisher;
mod subscriber;

use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::clock;
use crate::tls::TlsConnector;
use ctx::{Ctx, Status, Todo};
use proto::{
    Command, Done, Event, GROUP_MEMBERS_MAX, PhaseStats, Step, TrafficStats, TrafficWindow, WorkerSpec,
};

/// Interval of `Event::Progress`.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Polling interval while draining or settling.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A spec the engine cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// A group is larger than the global index allows.
    #[error("group {0} has more than {GROUP_MEMBERS_MAX} members")]
    TooLarge(String),
    /// A command or topic names a group the spec does not have.
    #[error("unknown group {0}")]
    UnknownGroup(String),
    /// A group would be connected twice.
    #[error("group {0} is already connected")]
    AlreadyConnected(String),
    /// A subscribing group has no filter patterns.
    #[error("group {0} subscribes but has no filter patterns")]
    NoFilters(String),
}

/// Checks a spec before anything connects.
pub fn validate(spec: &WorkerSpec) -> Result<(), SpecError> {
    for g in &spec.groups {
        if g.offset + g.count > GROUP_MEMBERS_MAX {
            return Err(SpecError::TooLarge(g.name.clone()));
        }
        if g.subscribe.as_ref().is_some_and(|s| s.filters.is_empty()) {
            return Err(SpecError::NoFilters(g.name.clone()));
        }
        if let Some(proto::TopicSpec::Peer { group, .. }) = g.publish.as_ref().map(|p| &p.topic)
            && !spec.groups.iter().any(|t| &t.name == group)
        {
            return Err(SpecError::UnknownGroup(group.clone()));
        }
    }
    Ok(())
}

/// Runs a worker until `Shutdown` (or until `commands` closes), sending events to `events`.
pub async fn run(spec: WorkerSpec, mut commands: mpsc::Receiver<Command>, events: mpsc::Sender<Event>) {
    if let Err(e) = validate(&spec) {
        let _ = events.send(Event::Failed(e.to_string())).await;
        return;
    }
    let tls = match spec.tls.as_ref().map(TlsConnector::new).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            let _ = events.send(Event::Failed(e.to_string())).await;
            return;
        }
    };
    let ctx = Ctx::new(spec, tls, events.clone());
    let progress = tokio::task::spawn_local(progress_loop(ctx.clone()));
    let mut purge = false;
    while let Some(cmd) = commands.recv().await {
        let result = match cmd {
            Command::Connect { groups } => connect(&ctx, &groups).await,
            Command::Subscribe { groups } => subscribe(&ctx, &groups).await,
            Command::Traffic(w) => {
                traffic(&ctx, w);
                Ok(None)
            }
            Command::Disconnect { group, fraction, abrupt } => {
                disconnect(&ctx, &group, fraction, abrupt).await
            }
            Command::Reconnect { group } => reconnect(&ctx, &group).await,
            Command::Settle { quiet_ms, max_ms } => Ok(Some(settle(&ctx, quiet_ms, max_ms).await)),
            Command::Report => {
                let _ = events.send(Event::Report(Box::new(ctx.report()))).await;
                Ok(None)
            }
            Command::Shutdown { purge_sessions } => {
                purge = purge_sessions;
                break;
            }
        };
        match result {
            Ok(Some(done)) => {
                let _ = events.send(Event::Done(Box::new(done))).await;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = events.send(Event::Failed(e.to_string())).await;
            }
        }
    }
    shutdown(&ctx, purge).await;
    progress.abort();
    let _ = events.send(Event::Progress(ctx.progress())).await;
}

async fn progress_loop(ctx: Rc<Ctx>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        if ctx.events.send(Event::Progress(ctx.progress())).await.is_err() {
            return;
        }
    }
}

fn step_timeout(ctx: &Ctx) -> Duration {
    Duration::from_millis(ctx.spec.step_timeout_ms)
}

fn resolve(ctx: &Ctx, names: &[String]) -> Result<Vec<usize>, SpecError> {
    if names.is_empty() {
        return Ok((0..ctx.groups.len()).collect());
    }
    names.iter().map(|n| ctx.group_index(n).ok_or_else(|| SpecError::UnknownGroup(n.clone()))).collect()
}

async fn connect(ctx: &Rc<Ctx>, names: &[String]) -> Result<Option<Done>, SpecError> {
    let groups = resolve(ctx, names)?;
    if let Some(&g) = groups.iter().find(|&&g| ctx.groups[g].spawned.get()) {
        return Err(SpecError::AlreadyConnected(ctx.groups[g].spec.name.clone()));
    }
    let n = groups.iter().map(|&g| ctx.groups[g].members.len() as u64).sum();
    ctx.begin_step(n);
    for &g in &groups {
        ctx.groups[g].spawned.set(true);
        for (idx, m) in ctx.groups[g].members.iter().enumerate() {
            m.todo.set(Todo::Connect);
            tokio::task::spawn_local(actor::run(ctx.clone(), g, idx as u64));
        }
    }
    Ok(Some(Done::Phase(Step::Connect, ctx.end_step(step_timeout(ctx)).await)))
}

/// Assigns `todo` to the members of group `g` that `pick` selects and runs the step.
async fn member_step(
    ctx: &Ctx,
    groups: &[usize],
    todo: Todo,
    pick: impl Fn(u64, Status) -> bool,
) -> PhaseStats {
    let mut chosen = Vec::new();
    for &g in groups {
        let grp = &ctx.groups[g];
        for (idx, m) in grp.members.iter().enumerate() {
            let global = proto::global_index(grp.spec.id, grp.spec.offset + idx as u64);
            if grp.spawned.get() && pick(global, m.status.get()) {
                chosen.push((g, idx));
            }
        }
    }
    ctx.begin_step(chosen.len() as u64);
    for (g, idx) in chosen {
        ctx.groups[g].members[idx].todo.set(todo);
    }
    ctx.bump();
    ctx.end_step(step_timeout(ctx)).await
}

async fn subscribe(ctx: &Ctx, names: &[String]) -> Result<Option<Done>, SpecError> {
    let groups = resolve(ctx, names)?;
    let stats = member_step(ctx, &groups, Todo::Subscribe, |_, s| s == Status::Up).await;
    Ok(Some(Done::Phase(Step::Subscribe, stats)))
}

async fn disconnect(ctx: &Ctx, name: &str, fraction: f64, abrupt: bool) -> Result<Option<Done>, SpecError> {
    let groups = resolve(ctx, &[name.to_string()])?;
    let pick = |global: u64, s: Status| s == Status::Up && chosen(global, fraction);
    let stats = member_step(ctx, &groups, Todo::Disconnect { abrupt }, pick).await;
    Ok(Some(Done::Phase(Step::Disconnect, stats)))
}

async fn reconnect(ctx: &Ctx, name: &str) -> Result<Option<Done>, SpecError> {
    let groups = resolve(ctx, &[name.to_string()])?;
    let stats =
        member_step(ctx, &groups, Todo::Reconnect, |_, s| matches!(s, Status::Down | Status::Failed)).await;
    Ok(Some(Done::Phase(Step::Reconnect, stats)))
}

/// Whether the member with this global index is in the chosen `fraction` (a fixed hash, so
/// the same members are chosen in every run and every worker agrees).
pub fn chosen(global: u64, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    // splitmix64 finaliser.
    let mut z = global.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) < fraction
}

fn traffic(ctx: &Rc<Ctx>, w: TrafficWindow) {
    ctx.rx.borrow_mut().window = Some((w.measure_start_ns(), w.measure_end_ns()));
    ctx.control.send_modify(|c| {
        c.traffic = Some(w);
        c.epoch += 1;
    });
    tokio::task::spawn_local(drain(ctx.clone(), w));
}

/// Waits for the end of publishing, then for acks and deliveries to stop, and reports.
async fn drain(ctx: Rc<Ctx>, w: TrafficWindow) {
    let stop = w.measure_end_ns();
    tokio::time::sleep_until(clock::instant_at(stop).into()).await;
    let deadline = stop + clock::ms_to_ns(w.drain_max_ms);
    let quiet = clock::ms_to_ns(w.quiet_ms);
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let now = clock::now_ns();
        let last = ctx.rx.borrow().last_rx_ns.max(stop);
        if (ctx.counters.inflight.get() == 0 && now.saturating_sub(last) >= quiet) || now >= deadline {
            break;
        }
    }
    ctx.control.send_modify(|c| c.traffic = None);
    let stats = traffic_stats(&ctx);
    let _ = ctx.events.send(Event::Done(Box::new(Done::Traffic(stats)))).await;
}

fn traffic_stats(ctx: &Ctx) -> TrafficStats {
    let c = &ctx.counters;
    let rx = ctx.rx.borrow();
    TrafficStats {
        worker: ctx.spec.worker,
        sent_by_region: ctx
            .groups
            .iter()
            .filter(|g| g.spec.publish.is_some())
            .map(|g| (g.spec.name.clone(), g.sent_by_region.iter().map(|c| c.get()).collect()))
            .collect(),
        sent: c.sent.get(),
        acked: c.acked.get(),
        unacked: c.unacked.get() + c.inflight.get(),
        no_target: c.no_target.get(),
        received_in_window: rx.received_in_window,
        sent_in_window: c.sent_in_window.get(),
        lag_max_us: c.lag_max_us.get(),
        first_rx_ns: rx.first_rx_ns,
        last_rx_ns: rx.last_rx_ns,
    }
}

async fn settle(ctx: &Ctx, quiet_ms: u64, max_ms: u64) -> Done {
    let start = clock::now_ns();
    let deadline = start + clock::ms_to_ns(max_ms);
    let quiet = clock::ms_to_ns(quiet_ms);
    loop {
        let now = clock::now_ns();
        let last = ctx.rx.borrow().last_rx_ns.max(start);
        if now.saturating_sub(last) >= quiet || now >= deadline {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let rx = ctx.rx.borrow();
    let stats = PhaseStats {
        worker: ctx.spec.worker,
        started_ns: start,
        finished_ns: clock::now_ns(),
        received: rx.received,
        last_rx_ns: rx.last_rx_ns,
        ..PhaseStats::default()
    };
    Done::Phase(Step::Settle, stats)
}

async fn shutdown(ctx: &Ctx, purge: bool) {
    ctx.control.send_modify(|c| {
        c.shutdown = Some(purge);
        c.epoch += 1;
    });
    let deadline = tokio::time::Instant::now() + step_timeout(ctx);
    while ctx.live_tasks.get() > 0 {
        if tokio::time::timeout_at(deadline, ctx.tasks_done.notified()).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_fraction_is_close_and_stable() {
        let n = (0..100_000u64).filter(|&i| chosen(i, 0.25)).count();
        assert!((24_000..26_000).contains(&n), "{n}");
        assert!((0..1000u64).all(|i| chosen(i, 1.0)));
        assert!(!(0..1000u64).any(|i| chosen(i, 0.0)));
    }
}
