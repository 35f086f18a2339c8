//! CORE. [`Coordinator`]: the scheduler core's front door. It owns the
//! [`Controller`], the schedulers, the split-merge protection, and the queue of ranges to check
//! (suspects from heartbeats plus a patrol that walks every range over time).
//!
//! Call order, all from one thread, with `now_ms` from the shell's clock (never read here):
//! 1. Register nodes in the [`ClusterView`]; apply store heartbeats to it.
//! 2. For each range heartbeat: [`Coordinator::handle_range_heartbeat`] (applies it to the
//!    view and advances the range's operator), or apply it yourself and call
//!    [`Coordinator::on_range_heartbeat`] / [`Coordinator::on_range_removed`].
//! 3. Periodically: [`Coordinator::schedule`] with a seeded rng. It times out stuck steps,
//!    runs the schedulers, and returns the operators it admitted.
//! 4. After any of the above, drain [`Coordinator::poll_command`] (send each step to
//!    `Command::leader`) and [`Coordinator::poll_event`] (ended operators).
//!
//! Determinism: the same view, calls, `now_ms` values and rng seed give the same operators.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rustc_hash::FxHashSet;

use crate::config::Config;
use crate::controller::{Command, Controller, OperatorEvent, Outcome};
use crate::error::{ConfigError, ViewError};
use crate::filter::NodeTable;
use crate::operator::{OpKind, Operator, OperatorId};
use crate::protection::SplitProtection;
use crate::scheduler::{ScheduleContext, Scheduler, default_schedulers};
use crate::view::{ClusterView, RangeId, RangeInfo};

/// Counters for reports and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `schedule` calls.
    pub rounds: u64,
    /// Completed patrol passes over all ranges.
    pub patrol_passes: u64,
    /// Operators admitted.
    pub admitted: u64,
    /// Operators finished.
    pub finished: u64,
    /// Operators cancelled.
    pub cancelled: u64,
    /// Operators timed out.
    pub timed_out: u64,
}

/// The placement driver's scheduling core.
pub struct Coordinator {
    controller: Controller,
    schedulers: Vec<Box<dyn Scheduler>>,
    protection: SplitProtection,
    suspects: VecDeque<RangeId>,
    suspect_set: FxHashSet<RangeId>,
    patrol_cursor: Vec<u8>,
    events: VecDeque<OperatorEvent>,
    stats: Stats,
}

impl Coordinator {
    /// A coordinator with the default schedulers.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_schedulers(config, default_schedulers())
    }

    /// A coordinator running `schedulers`, in order, each round.
    pub fn with_schedulers(config: Config, schedulers: Vec<Box<dyn Scheduler>>) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            controller: Controller::new(config),
            schedulers,
            protection: SplitProtection::default(),
            suspects: VecDeque::new(),
            suspect_set: FxHashSet::default(),
            patrol_cursor: Vec::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.controller.config()
    }

    /// In-flight operators, slots and influence.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Names of the schedulers, in running order.
    pub fn scheduler_names(&self) -> Vec<&'static str> {
        self.schedulers.iter().map(|s| s.name()).collect()
    }

    /// Applies a range heartbeat to `view` and advances operators on it and on any range it
    /// replaced.
    pub fn handle_range_heartbeat(
        &mut self,
        view: &mut ClusterView,
        info: RangeInfo,
        now_ms: u64,
    ) -> Result<(), ViewError> {
        let id = info.id;
        let removed = view.put_range(info)?;
        for gone in removed {
            self.on_range_removed(view, gone, now_ms);
        }
        self.on_range_heartbeat(view, id, now_ms);
        Ok(())
    }

    /// `view` holds a fresh heartbeat of `range`: advance its operator, or queue it for a check.
    pub fn on_range_heartbeat(&mut self, view: &ClusterView, range: RangeId, now_ms: u64) {
        self.controller.on_range_heartbeat(view, range, now_ms);
        self.drain_controller_events(view);
        if !self.controller.is_range_busy(range) {
            self.suspect(range);
        }
    }

    /// `range` left `view`.
    pub fn on_range_removed(&mut self, view: &ClusterView, range: RangeId, now_ms: u64) {
        self.controller.on_range_removed(view, range, now_ms);
        self.drain_controller_events(view);
    }

    /// Cancels an in-flight operator (an admin request); its event follows on `poll_event`.
    pub fn cancel(&mut self, view: &ClusterView, id: OperatorId, now_ms: u64) {
        self.controller.cancel(id, now_ms);
        self.drain_controller_events(view);
    }

    /// Records a split the nodes made on their own: `ranges` and the cut at `boundary` are
    /// not merged for `split_merge_interval_ms` from `now_ms`.
    pub fn record_split(&mut self, ranges: &[RangeId], boundary: Vec<u8>, now_ms: u64) {
        let until_ms = now_ms.saturating_add(self.config().split_merge_interval_ms);
        for &range in ranges {
            self.protection.protect_range(range, until_ms);
        }
        self.protection.protect_boundary(boundary, until_ms);
    }

    /// One scheduling round: time out stuck steps, pick ranges to check, run every scheduler.
    /// Returns the operators admitted (their first steps are queued as commands).
    pub fn schedule(&mut self, view: &ClusterView, now_ms: u64, rng: &mut SmallRng) -> Vec<Operator> {
        self.stats.rounds += 1;
        self.controller.tick(view, now_ms);
        self.drain_controller_events(view);
        self.protection.expire(now_ms);
        let nodes = NodeTable::build(view, self.controller.config(), now_ms);
        let candidates = self.candidates(view);
        let (mut admitted, mut deferred) = (Vec::new(), Vec::new());
        for scheduler in &mut self.schedulers {
            let mut cx = ScheduleContext {
                view,
                nodes: &nodes,
                now_ms,
                candidates: &candidates,
                protection: &self.protection,
                controller: &mut self.controller,
                admitted: &mut admitted,
                deferred: &mut deferred,
            };
            scheduler.schedule(&mut cx, rng);
        }
        for range in deferred {
            self.suspect(range);
        }
        self.stats.admitted += admitted.len() as u64;
        self.drain_controller_events(view);
        admitted
    }

    /// Next step to send to a range leader.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.controller.poll_command()
    }

    /// Next operator that ended.
    pub fn poll_event(&mut self) -> Option<OperatorEvent> {
        self.events.pop_front()
    }

    fn suspect(&mut self, range: RangeId) {
        if self.suspect_set.insert(range) {
            self.suspects.push_back(range);
        }
    }

    /// Up to `suspects_per_round_max` suspects, then `patrol_ranges_per_round` ranges from
    /// the patrol cursor, in key order (wrapping, and counting a pass, at the end of the key
    /// space).
    fn candidates(&mut self, view: &ClusterView) -> Vec<RangeId> {
        let config = self.controller.config();
        let suspects = (config.suspects_per_round_max as usize).min(self.suspects.len());
        let patrol = config.patrol_ranges_per_round as usize;
        let mut out: Vec<RangeId> = self.suspects.drain(..suspects).collect();
        for id in &out {
            self.suspect_set.remove(id);
        }
        let before = out.len();
        out.extend(view.ranges_from_key(&self.patrol_cursor).take(patrol + 1).map(|r| r.id));
        if out.len() - before <= patrol {
            self.patrol_cursor.clear();
            self.stats.patrol_passes += 1;
        } else if let Some(next) = out.pop() {
            // The extra range fetched marks where the next round starts.
            self.patrol_cursor = view.range(next).map(|r| r.start_key.clone()).unwrap_or_default();
        }
        out
    }

    /// Moves controller events to the coordinator's queue, recording split protection and
    /// queueing the ranges of ended operators for a fresh check.
    fn drain_controller_events(&mut self, view: &ClusterView) {
        while let Some(event) = self.controller.poll_event() {
            let op = &event.operator;
            match event.outcome {
                Outcome::Finished => self.stats.finished += 1,
                Outcome::Cancelled(_) => self.stats.cancelled += 1,
                Outcome::TimedOut => self.stats.timed_out += 1,
            }
            let is_split = matches!(op.kind, OpKind::SplitSize | OpKind::SplitLoad);
            if is_split && event.outcome == Outcome::Finished {
                self.protect_split(view, op, event.ended_ms);
            }
            let ranges: Vec<RangeId> = std::iter::once(op.range).chain(op.related).collect();
            for range in ranges {
                if view.range(range).is_some() {
                    self.suspect(range);
                }
            }
            self.events.push_back(event);
        }
    }

    /// Protects both halves of a finished split and the boundary between them.
    fn protect_split(&mut self, view: &ClusterView, op: &Operator, now_ms: u64) {
        let Some(range) = view.range(op.range) else { return };
        let boundary = if range.end_key != op.end_key {
            range.end_key.clone()
        } else if range.start_key != op.start_key {
            range.start_key.clone()
        } else {
            return;
        };
        let mut halves = vec![range.id];
        if let Some(sibling) = view.range_at_key(&boundary).filter(|r| r.id != range.id) {
            halves.push(sibling.id);
        } else if let Some(sibling) = view.prev_range(range).filter(|_| boundary == range.start_key) {
            halves.push(sibling.id);
        }
        self.record_split(&halves, boundary, now_ms);
        for half in halves {
            self.suspect(half);
        }
    }
}
