//! The `retained` checker: per topic, the retained message is a register (empty initial
//! value, an empty payload deletes) and every read must be linearizable with the writes.
//!
//! Wing & Gong's search with Lowe's memoization: depth-first over the operations that may
//! come next (invoked before the earliest pending completion), caching (linearized set,
//! value) states. `info` writes may take effect at any time after their invocation, or
//! never; those no read observed are dropped first (never taking effect is always
//! consistent for them). The search is bounded per topic; past the bound the topic is
//! `unknown`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::ops::{pair, secs};
use super::{CheckResult, Valid};
use crate::history::{Event, History, Kind};

/// Search states per topic before giving up with `unknown`.
pub const DEFAULT_BUDGET: u64 = 5_000_000;

/// One operation on a register. Values are small integers; 0 is "no value".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// Invocation time.
    pub inv: u64,
    /// Completion time; `None` for an indeterminate write.
    pub ret: Option<u64>,
    /// Write (true) or read.
    pub write: bool,
    /// Value written or read.
    pub val: u32,
}

/// Outcome of a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Not,
    /// The budget ran out.
    Unknown,
}

/// Checks a retained history.
pub fn check(h: &History, budget: u64) -> CheckResult {
    check_events(&h.events, budget)
}

/// Checks retained events.
pub fn check_events(events: &[Event], budget: u64) -> CheckResult {
    let mut r = CheckResult::new("linearizable");
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut per_topic: BTreeMap<String, Vec<RegOp>> = BTreeMap::new();
    let mut written: HashSet<(String, u32)> = HashSet::new();
    let mut intern = |v: Option<&str>| match v {
        None | Some("") => 0,
        Some(s) => {
            let n = ids.len() as u32 + 1;
            *ids.entry(s.to_string()).or_insert(n)
        }
    };
    for op in pair(events, "write") {
        let Some(topic) = op.inv.str("topic") else { continue };
        let val = intern(op.inv.str("value"));
        let ret = match op.kind() {
            Kind::Ok => op.done.map(|d| d.t),
            Kind::Info => None,
            _ => continue,
        };
        r.count(if ret.is_some() { "write-ok" } else { "write-info" }, 1);
        written.insert((topic.to_string(), val));
        per_topic.entry(topic.into()).or_default().push(RegOp { inv: op.inv.t, ret, write: true, val });
    }
    for op in pair(events, "read") {
        let (Some(topic), Some(done)) = (op.inv.str("topic"), op.done.filter(|d| d.kind == Kind::Ok)) else {
            continue;
        };
        let val = intern(done.str("value"));
        r.count("read-ok", 1);
        if val != 0 && !written.contains(&(topic.to_string(), val)) {
            r.violation("unexpected", || {
                format!(
                    "read of {topic} at {} returned {:?}, never written there",
                    secs(done.t),
                    done.str("value")
                )
            });
            continue;
        }
        per_topic.entry(topic.into()).or_default().push(RegOp {
            inv: op.inv.t,
            ret: Some(done.t),
            write: false,
            val,
        });
    }
    for (topic, ops) in &per_topic {
        match linearizable(ops, budget) {
            Search::Linearizable => r.count("topics-linearizable", 1),
            Search::Not => {
                let why = explain(ops, &ids);
                r.violation("not-linearizable", || format!("topic {topic}: {why}"));
            }
            Search::Unknown => {
                r.count("topics-unknown", 1);
                if r.valid == Valid::True {
                    r.valid = Valid::Unknown;
                }
                r.examples.push(format!("topic {topic}: search budget of {budget} states exceeded"));
            }
        }
    }
    if r.get("read-ok") == 0 && r.valid == Valid::True {
        r.valid = Valid::Unknown;
        r.examples.push("no read completed".into());
    }
    r
}

/// A stale read, when there is a simple one to show: a read that returned a value older
/// than a write that completed before the read began, with nothing newer in between.
fn explain(ops: &[RegOp], ids: &HashMap<String, u32>) -> String {
    let name = |v: u32| {
        if v == 0 {
            "none".to_string()
        } else {
            ids.iter().find(|(_, n)| **n == v).map_or("?".into(), |(s, _)| s.clone())
        }
    };
    for read in ops.iter().filter(|o| !o.write) {
        let before: Vec<&RegOp> =
            ops.iter().filter(|w| w.write && w.ret.is_some_and(|t| t < read.inv)).collect();
        if let Some(last) = before.iter().max_by_key(|w| w.ret)
            && last.val != read.val
            && !ops.iter().any(|w| w.write && w.val == read.val && w.ret.is_none_or(|t| t > last.inv))
        {
            return format!(
                "read at {} returned {} although {} was written by {} (and nothing concurrent wrote {})",
                secs(read.inv),
                name(read.val),
                name(last.val),
                secs(last.ret.unwrap_or(0)),
                name(read.val)
            );
        }
    }
    "no linearization exists".into()
}

/// A search frame: candidates, the next one to try, and the step that led here (operation,
/// previous value, previous `first`), to undo on backtrack.
type Frame = (Vec<usize>, usize, Option<(usize, u32, usize)>);

/// Wing–Gong–Lowe search over the operations of one register.
pub fn linearizable(ops: &[RegOp], budget: u64) -> Search {
    let observed: HashSet<u32> = ops.iter().filter(|o| !o.write).map(|o| o.val).collect();
    let mut ops: Vec<RegOp> =
        ops.iter().copied().filter(|o| o.ret.is_some() || observed.contains(&o.val)).collect();
    ops.sort_by_key(|o| o.inv);
    let n = ops.len();
    let total_ok = ops.iter().filter(|o| o.ret.is_some()).count();
    let info: Vec<usize> = (0..n).filter(|&i| ops[i].ret.is_none()).collect();
    let mut lin = vec![false; n];
    let mut lin_ok: BTreeSet<usize> = BTreeSet::new();
    let mut first = 0;
    let mut value = 0u32;
    let mut done_ok = 0;
    let mut visited: HashSet<(usize, Vec<u32>, u32)> = HashSet::new();
    let mut explored = 0u64;
    // Frames: candidates, next candidate to try, and the step that led here (to undo).
    let mut stack: Vec<Frame> = vec![(candidates(&ops, &lin, first, &info), 0, None)];
    loop {
        if done_ok == total_ok {
            return Search::Linearizable;
        }
        let Some(top) = stack.last_mut() else {
            return Search::Not;
        };
        if top.1 < top.0.len() {
            let i = top.0[top.1];
            top.1 += 1;
            let o = ops[i];
            if !o.write && o.val != value {
                continue;
            }
            let undo = (i, value, first);
            lin[i] = true;
            if o.write {
                value = o.val;
            }
            if o.ret.is_some() {
                done_ok += 1;
                lin_ok.insert(i);
            }
            while first < n && (lin[first] || ops[first].ret.is_none()) {
                first += 1;
            }
            lin_ok = lin_ok.split_off(&first);
            let mut key: Vec<u32> = lin_ok.iter().map(|&j| j as u32).collect();
            key.extend(info.iter().filter(|&&j| lin[j]).map(|&j| u32::MAX - j as u32));
            explored += 1;
            if explored > budget {
                return Search::Unknown;
            }
            if visited.insert((first, key, value)) {
                let c = candidates(&ops, &lin, first, &info);
                stack.push((c, 0, Some(undo)));
            } else {
                undo_step(&ops, &mut lin, &mut lin_ok, &mut value, &mut first, &mut done_ok, undo);
            }
        } else {
            let (_, _, step) = stack.pop().expect("non-empty");
            if let Some(undo) = step {
                undo_step(&ops, &mut lin, &mut lin_ok, &mut value, &mut first, &mut done_ok, undo);
            }
        }
    }
}

fn undo_step(
    ops: &[RegOp],
    lin: &mut [bool],
    lin_ok: &mut BTreeSet<usize>,
    value: &mut u32,
    first: &mut usize,
    done_ok: &mut usize,
    (i, v, f): (usize, u32, usize),
) {
    lin[i] = false;
    *value = v;
    if ops[i].ret.is_some() {
        *done_ok -= 1;
    }
    // Indices between the old and new `first` that were linearized come back into the set.
    for j in f..*first {
        if lin[j] && ops[j].ret.is_some() {
            lin_ok.insert(j);
        }
    }
    lin_ok.remove(&i);
    *first = f;
}

/// Unlinearized operations that may be linearized next: invoked no later than the earliest
/// completion among unlinearized completed operations.
fn candidates(ops: &[RegOp], lin: &[bool], first: usize, info: &[usize]) -> Vec<usize> {
    let mut min_ret = u64::MAX;
    let mut out = Vec::new();
    let mut j = first;
    while j < ops.len() && ops[j].inv <= min_ret {
        if !lin[j] {
            if let Some(t) = ops[j].ret {
                min_ret = min_ret.min(t);
            }
            out.push(j);
        }
        j += 1;
    }
    out.retain(|&k| ops[k].inv <= min_ret);
    for &k in info {
        if k < first && !lin[k] && ops[k].inv <= min_ret {
            out.push(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(inv: u64, ret: Option<u64>, val: u32) -> RegOp {
        RegOp { inv, ret, write: true, val }
    }
    fn r(inv: u64, ret: u64, val: u32) -> RegOp {
        RegOp { inv, ret: Some(ret), write: false, val }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        assert_eq!(linearizable(&[r(0, 1, 0), w(2, Some(3), 1), r(4, 5, 1)], 1000), Search::Linearizable);
        // Stale read after the write completed.
        assert_eq!(linearizable(&[w(0, Some(1), 1), w(2, Some(3), 2), r(4, 5, 1)], 1000), Search::Not);
        // Concurrent read may see either.
        assert_eq!(
            linearizable(&[w(0, Some(1), 1), w(2, Some(6), 2), r(3, 5, 1)], 1000),
            Search::Linearizable
        );
        // Reading a value back after a newer one was read.
        assert_eq!(
            linearizable(&[w(0, Some(10), 1), w(0, Some(10), 2), r(11, 12, 2), r(13, 14, 1)], 1000),
            Search::Not
        );
        // Delete then none.
        assert_eq!(
            linearizable(&[w(0, Some(1), 1), w(2, Some(3), 0), r(4, 5, 0)], 1000),
            Search::Linearizable
        );
    }

    #[test]
    fn info_writes_may_apply_late_or_never() {
        // An info write observed long after it was invoked.
        assert_eq!(linearizable(&[w(0, None, 1), r(5, 6, 0), r(7, 8, 1)], 1000), Search::Linearizable);
        // ... but not once a later completed write overwrote it and it was read before.
        assert_eq!(
            linearizable(&[w(0, None, 1), r(1, 2, 1), w(3, Some(4), 2), r(5, 6, 2), r(7, 8, 1)], 1000),
            Search::Not
        );
        // Unobserved info writes are irrelevant.
        assert_eq!(linearizable(&[w(0, None, 9), w(1, Some(2), 1), r(3, 4, 1)], 1000), Search::Linearizable);
    }

    #[test]
    fn budget_gives_unknown() {
        let mut ops = Vec::new();
        for k in 0..40u32 {
            ops.push(w(0, Some(1_000), k + 1));
        }
        ops.push(r(2_000, 2_001, 77));
        assert_eq!(linearizable(&ops, 50), Search::Unknown);
    }

    #[test]
    fn long_sequential_history_is_fast() {
        let mut ops = Vec::new();
        for k in 0..5_000u64 {
            ops.push(w(4 * k, Some(4 * k + 1), k as u32 + 1));
            ops.push(r(4 * k + 2, 4 * k + 3, k as u32 + 1));
        }
        assert_eq!(linearizable(&ops, 100_000), Search::Linearizable);
    }
}
