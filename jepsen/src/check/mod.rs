//! Checkers: pure functions from a history to a [`CheckResult`], and the pass criterion.
//!
//! A run passes only if every check is valid: the workload's safety checks, the drain
//! caught up, every scheduled fault ran, enough operations succeeded around faults, and no
//! node panicked. `unknown` is not a pass.

pub mod ops;
pub mod queue;
pub mod register;
pub mod run;
pub mod session;
pub mod will;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::History;

/// Whether a property holds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Valid {
    /// It holds.
    True,
    /// It was violated.
    False,
    /// It could not be decided (bound exceeded, missing data).
    Unknown,
}

/// One checker's verdict.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CheckResult {
    /// Checker name (`queue`, `linearizable`, `exclusive`, ..., `drain`, `faults`).
    pub name: String,
    /// The verdict.
    pub valid: Valid,
    /// Counters.
    pub counts: BTreeMap<String, u64>,
    /// Up to 20 offending operations, as text.
    pub examples: Vec<String>,
}

impl CheckResult {
    /// A result named `name` that starts valid.
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), valid: Valid::True, counts: BTreeMap::new(), examples: Vec::new() }
    }

    /// Adds `n` to counter `key`.
    pub fn count(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.into()).or_default() += n;
    }

    /// Marks a violation, keeping the example if there is room.
    pub fn violation(&mut self, key: &str, example: impl FnOnce() -> String) {
        self.count(key, 1);
        self.valid = Valid::False;
        if self.examples.len() < 20 {
            self.examples.push(format!("{key}: {}", example()));
        }
    }

    /// The counter `key` (0 if absent).
    pub fn get(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

/// The verdict on a run.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// True only if every result is valid.
    pub pass: bool,
    /// Every checker's result.
    pub results: Vec<CheckResult>,
}

impl Verdict {
    /// The result named `name`.
    pub fn result(&self, name: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// 0 pass, 1 a violation, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        if self.pass {
            0
        } else if self.results.iter().any(|r| r.valid == Valid::False) {
            1
        } else {
            2
        }
    }
}

/// Runs every checker that applies to the history's workload.
pub fn check(h: &History) -> Verdict {
    let mut results = match h.meta.workload.as_str() {
        "queue" => vec![queue::check(h)],
        "retained" => vec![register::check(h, register::DEFAULT_BUDGET)],
        "session" => session::check(h),
        "will" => vec![will::check(h)],
        other => {
            let mut r = CheckResult::new("workload");
            r.valid = Valid::Unknown;
            r.examples.push(format!("unknown workload {other}"));
            vec![r]
        }
    };
    results.push(run::drain(h));
    results.push(run::faults(h));
    results.push(run::availability(h));
    results.push(run::nodes(h));
    let pass = results.iter().all(|r| r.valid == Valid::True);
    Verdict { pass, results }
}
