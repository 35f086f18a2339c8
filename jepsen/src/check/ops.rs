//! Pairs each invocation with its completion.

use std::collections::HashMap;

use crate::history::{Event, Kind};

/// An operation: its invocation and, if the history has it, its completion.
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    /// The `invoke` event.
    pub inv: &'a Event,
    /// The `ok`, `fail` or `info` event (None: the history ended first, same as `info`).
    pub done: Option<&'a Event>,
}

impl Op<'_> {
    /// How it ended (`info` if it never did).
    pub fn kind(&self) -> Kind {
        self.done.map_or(Kind::Info, |d| d.kind)
    }

    /// Completion time if it completed `ok`.
    pub fn ok_at(&self) -> Option<u64> {
        self.done.filter(|d| d.kind == Kind::Ok).map(|d| d.t)
    }
}

/// Operations `f`, in invocation order. A completion is the next event of the same process
/// with the same `f` and a non-invoke type; observations with no open invocation are not
/// operations.
pub fn pair<'a>(events: &'a [Event], f: &str) -> Vec<Op<'a>> {
    let mut out: Vec<Op<'a>> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.f == f) {
        let Some(p) = e.client_proc() else {
            continue;
        };
        if e.kind == Kind::Invoke {
            open.insert(p, out.len());
            out.push(Op { inv: e, done: None });
        } else if let Some(idx) = open.remove(&p) {
            out[idx].done = Some(e);
        }
    }
    out
}

/// Parses a `process:counter` value.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (p, n) = id.split_once(':')?;
    Some((p.parse().ok()?, n.parse().ok()?))
}

/// Seconds, for examples.
pub fn secs(t: u64) -> String {
    format!("{:.3}s", t as f64 / 1e9)
}
