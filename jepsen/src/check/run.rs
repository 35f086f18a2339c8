//! Run-level checks: the drain caught up, every scheduled fault ran, enough operations
//! succeeded around faults, and no node panicked.

use super::ops::secs;
use super::{CheckResult, Valid};
use crate::history::{History, Kind, Proc};

/// Share of completed client operations in fault windows that must be `ok`.
pub const MIN_OK_FRACTION_IN_FAULTS: f64 = 0.10;
/// A fault window lasts from the fault's start to this long after it healed.
pub const RECOVERY_NS: u64 = 2_000_000_000;

/// The drain (final phase) caught up: recorded by the harness as `drain`.
pub fn drain(h: &History) -> CheckResult {
    let mut r = CheckResult::new("drain");
    match h.events.iter().rev().find(|e| e.f == "drain") {
        Some(e) if e.flag("caught_up") => r.count("caught-up", 1),
        Some(e) => {
            r.valid = Valid::Unknown;
            r.examples.push(format!("the drain did not catch up by {}", secs(e.t)));
        }
        None => {
            r.valid = Valid::Unknown;
            r.examples.push("no drain recorded (truncated history?)".into());
        }
    }
    r
}

/// Every scheduled fault started and stopped, confirmed by its executor.
pub fn faults(h: &History) -> CheckResult {
    let mut r = CheckResult::new("faults");
    r.count("scheduled", h.meta.schedule.len() as u64);
    for (idx, fault) in h.meta.schedule.iter().enumerate() {
        let name = fault.kind.name();
        let ran = |prefix: &str| {
            h.events.iter().any(|e| {
                e.p == Proc::Nemesis(crate::history::Nemesis::Nemesis)
                    && e.f == format!("{prefix}-{name}")
                    && e.u64("fault") == Some(idx as u64)
                    && e.flag("ran")
            })
        };
        if ran("start") && ran("stop") {
            r.count(&format!("ran-{name}"), 1);
        } else {
            r.valid = Valid::Unknown;
            r.count("did-not-run", 1);
            if r.examples.len() < 20 {
                r.examples.push(format!("fault {idx} ({name} at {} ms) did not run fully", fault.at_ms));
            }
        }
    }
    if h.meta.schedule.is_empty() && !h.meta.nemesis.is_empty() {
        r.valid = Valid::Unknown;
        r.examples.push("nemesis enabled but nothing scheduled (time limit too short?)".into());
    }
    r
}

/// Enough operations succeeded during faults (fault start to heal plus recovery).
pub fn availability(h: &History) -> CheckResult {
    let mut r = CheckResult::new("availability");
    let mut windows = Vec::new();
    let mut open: Option<u64> = None;
    for e in &h.events {
        if e.p != Proc::Nemesis(crate::history::Nemesis::Nemesis) {
            continue;
        }
        if e.f.starts_with("start-") {
            open = Some(e.t);
        } else if e.f.starts_with("stop-")
            && let Some(s) = open.take()
        {
            windows.push((s, e.t + RECOVERY_NS));
        }
    }
    let (mut ok, mut total, mut ok_all) = (0u64, 0u64, 0u64);
    let mut invoked = std::collections::HashSet::new();
    for e in &h.events {
        let Some(p) = e.client_proc() else { continue };
        if e.kind == Kind::Invoke {
            invoked.insert((p, e.f.as_str()));
            continue;
        }
        // Completions of invoked operations only (not observations).
        if !invoked.remove(&(p, e.f.as_str())) {
            continue;
        }
        if e.kind == Kind::Ok {
            ok_all += 1;
        }
        if windows.iter().any(|&(s, t)| e.t >= s && e.t <= t) {
            total += 1;
            if e.kind == Kind::Ok {
                ok += 1;
            }
        }
    }
    r.count("windows", windows.len() as u64);
    r.count("ok-in-faults", ok);
    r.count("completed-in-faults", total);
    r.count("ok", ok_all);
    if ok_all == 0 {
        r.valid = Valid::Unknown;
        r.examples.push("no operation succeeded".into());
    }
    if !windows.is_empty()
        && ((ok as f64) < MIN_OK_FRACTION_IN_FAULTS * total as f64 || ok < windows.len() as u64)
    {
        r.valid = Valid::Unknown;
        r.examples.push(format!(
            "only {ok} of {total} operations completing in fault windows were ok (need {:.0}% and one per window)",
            MIN_OK_FRACTION_IN_FAULTS * 100.0
        ));
    }
    r
}

/// No node log reported a panic (recorded by the harness as `node-logs`).
pub fn nodes(h: &History) -> CheckResult {
    let mut r = CheckResult::new("nodes");
    if let Some(e) = h.events.iter().rev().find(|e| e.f == "node-logs") {
        let panics = e.u64("panics").unwrap_or(0);
        r.count("panics", panics);
        if panics > 0 {
            r.violation("panicked", || format!("{panics} panic lines in node logs"));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, Meta, Nemesis};
    use crate::nemesis::{Fault, FaultKind};
    use serde_json::{Value, json};

    fn nem(t: u64, f: &str, value: Value) -> Event {
        Event {
            i: t,
            t,
            p: Proc::Nemesis(Nemesis::Nemesis),
            kind: Kind::Info,
            f: f.into(),
            client: None,
            conn: None,
            node: Some(0),
            value,
        }
    }

    fn op(t: u64, p: u64, kind: Kind) -> Event {
        Event {
            i: t,
            t,
            p: Proc::Client(p),
            kind,
            f: "publish".into(),
            client: None,
            conn: None,
            node: Some(0),
            value: Value::Null,
        }
    }

    fn history(events: Vec<Event>) -> History {
        let fault = Fault {
            at_ms: 1_000,
            kind: FaultKind::Kill,
            node: 0,
            duration_ms: 1_000,
            skew_s: 0,
            shape: None,
        };
        let meta = Meta {
            seed: 1,
            workload: "queue".into(),
            nemesis: vec!["kill".into()],
            time_limit_s: 10,
            concurrency: 1,
            rate: 1.0,
            nodes: 1,
            net: "loopback".into(),
            broker: "flotilla".into(),
            test_bug: None,
            schedule: vec![fault],
        };
        History { meta, events }
    }

    fn good() -> Vec<Event> {
        let s = 1_000_000_000;
        vec![
            nem(s, "start-kill", json!({"fault": 0, "ran": true})),
            op(s + 1, 1, Kind::Invoke),
            op(2 * s, 1, Kind::Info),
            nem(2 * s + 1, "stop-kill", json!({"fault": 0, "ran": true})),
            op(2 * s + 2, 2, Kind::Invoke),
            op(2 * s + 3, 2, Kind::Ok),
            nem(3 * s, "drain", json!({"caught_up": true})),
        ]
    }

    #[test]
    fn complete_run_is_valid() {
        let h = history(good());
        for r in [drain(&h), faults(&h), availability(&h), nodes(&h)] {
            assert_eq!(r.valid, Valid::True, "{r:?}");
        }
    }

    #[test]
    fn missing_fault_drain_or_success_is_unknown() {
        let mut e = good();
        e.retain(|e| e.f != "stop-kill" && e.f != "drain");
        let h = history(e);
        assert_eq!(faults(&h).valid, Valid::Unknown);
        assert_eq!(drain(&h).valid, Valid::Unknown);
        let mut e = good();
        e.retain(|e| e.kind != Kind::Ok);
        assert_eq!(availability(&history(e)).valid, Valid::Unknown);
        let mut e = good();
        e.push(nem(4, "node-logs", json!({"panics": 2})));
        assert_eq!(nodes(&history(e)).valid, Valid::False);
    }
}
