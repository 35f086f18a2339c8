//! The `will` checker. Per connection with a will (CONNACK received):
//! - ended by `crash` (the client dropped the socket) or `session-lost` (a close it did
//!   not ask for, e.g. a broker crash): the will must reach the watcher (`lost`);
//! - ended by an acknowledged-as-sent DISCONNECT: the will must not be published
//!   (`unexpected`), unless a kill began within [`KILL_WINDOW_NS`] after the DISCONNECT
//!   (the broker may have died before reading it: indeterminate);
//! - anything else is indeterminate.
//!
//! A will payload no connection had is `unexpected` too.

use std::collections::{HashMap, HashSet};

use super::ops::{pair, secs};
use super::{CheckResult, Valid};
use crate::history::{Event, History, Kind};

/// A DISCONNECT this close before a kill may not have been read by the broker.
pub const KILL_WINDOW_NS: u64 = 3_000_000_000;

/// Checks a will history.
pub fn check(h: &History) -> CheckResult {
    check_events(&h.events)
}

/// Checks will events.
pub fn check_events(events: &[Event]) -> CheckResult {
    let mut r = CheckResult::new("will");
    let kills: Vec<u64> = events.iter().filter(|e| e.f == "start-kill").map(|e| e.t).collect();
    let mut delivered: HashMap<&str, u64> = HashMap::new();
    for e in events.iter().filter(|e| e.f == "deliver" && e.kind == Kind::Ok) {
        if let Some(p) = e.str("payload") {
            *delivered.entry(p).or_default() += 1;
        }
    }
    // conn -> will payload, for connections that got CONNACK.
    let mut wills: HashMap<u64, &str> = HashMap::new();
    let mut all: HashSet<&str> = HashSet::new();
    for op in pair(events, "connect") {
        let (Some(conn), Some(will)) = (op.inv.conn, op.inv.str("will")) else { continue };
        all.insert(will);
        if op.kind() == Kind::Ok {
            wills.insert(conn, will);
        }
    }
    let mut ended: HashSet<u64> = HashSet::new();
    let must = |r: &mut CheckResult, conn: u64, how: &str, t: u64| {
        if let Some(will) = wills.get(&conn) {
            r.count(&format!("must-{how}"), 1);
            if !delivered.contains_key(will) {
                r.violation("lost", || {
                    format!("will {will} of connection {conn} ({how} at {}) never published", secs(t))
                });
            }
        }
    };
    for op in pair(events, "crash") {
        if let (Some(conn), Kind::Ok) = (op.inv.conn, op.kind()) {
            ended.insert(conn);
            must(&mut r, conn, "crash", op.inv.t);
        }
    }
    for e in events.iter().filter(|e| e.f == "session-lost") {
        if let Some(conn) = e.conn {
            ended.insert(conn);
            must(&mut r, conn, "lost", e.t);
        }
    }
    for op in pair(events, "disconnect") {
        let Some(conn) = op.inv.conn else { continue };
        let Some(will) = wills.get(&conn) else { continue };
        if op.kind() != Kind::Ok || ended.contains(&conn) {
            r.count("indeterminate", 1);
            continue;
        }
        let t = op.done.map_or(op.inv.t, |d| d.t);
        if kills.iter().any(|&k| k >= op.inv.t && k <= t + KILL_WINDOW_NS) {
            r.count("indeterminate", 1);
            continue;
        }
        r.count("must-not", 1);
        if delivered.contains_key(will) {
            r.violation("unexpected", || {
                format!("will {will} published after a clean DISCONNECT at {}", secs(t))
            });
        }
    }
    for p in delivered.keys() {
        if !all.contains(p) {
            r.violation("unexpected", || format!("{p:?} delivered but no connection had that will"));
        }
    }
    if r.get("must-crash") + r.get("must-lost") == 0 && r.valid == Valid::True {
        r.valid = Valid::Unknown;
        r.examples.push("no connection ended abruptly".into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Proc;
    use serde_json::{Value, json};

    fn ev(t: u64, p: u64, kind: Kind, f: &str, client: &str, conn: u64, value: Value) -> Event {
        Event {
            i: t,
            t,
            p: Proc::Client(p),
            kind,
            f: f.into(),
            client: Some(client.into()),
            conn: Some(conn),
            node: Some(0),
            value,
        }
    }

    fn history(deliver: &[&str]) -> Vec<Event> {
        let mut h = vec![
            ev(1, 1, Kind::Invoke, "connect", "jw-1", 1, json!({"clean": true, "will": "1:1"})),
            ev(2, 1, Kind::Ok, "connect", "jw-1", 1, json!({})),
            ev(3, 1, Kind::Invoke, "crash", "jw-1", 1, json!({})),
            ev(4, 1, Kind::Ok, "crash", "jw-1", 1, json!({})),
            ev(5, 2, Kind::Invoke, "connect", "jw-2", 2, json!({"clean": true, "will": "2:1"})),
            ev(6, 2, Kind::Ok, "connect", "jw-2", 2, json!({})),
            ev(7, 2, Kind::Invoke, "disconnect", "jw-2", 2, Value::Null),
            ev(8, 2, Kind::Ok, "disconnect", "jw-2", 2, Value::Null),
        ];
        for (k, d) in deliver.iter().enumerate() {
            h.push(ev(10 + k as u64, 9, Kind::Ok, "deliver", "jw-watch", 9, json!({"payload": d})));
        }
        h
    }

    #[test]
    fn crash_needs_will_clean_disconnect_forbids_it() {
        assert_eq!(check_events(&history(&["1:1"])).valid, Valid::True);
        let r = check_events(&history(&[]));
        assert_eq!(r.get("lost"), 1, "{r:?}");
        let r = check_events(&history(&["1:1", "2:1"]));
        assert_eq!(r.get("unexpected"), 1, "{r:?}");
    }
}
