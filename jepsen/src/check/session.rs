//! The `session` checkers:
//! - `exclusive`: at most one live connection per client id. Once connection B of a client
//!   id has its CONNACK (at tB), no earlier connection A of that id may complete an
//!   operation or receive a delivery after tB + ε.
//! - `session-present`: every persistent (clean = false) CONNACK after the id's first
//!   successful SUBSCRIBE must say Session Present.
//! - `subscriptions`: every acknowledged probe an id published to its own topic reached
//!   that id (its subscription survived takeovers and crashes).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::ops::{pair, secs};
use super::{CheckResult, Valid};
use crate::history::{Event, History, Kind};

/// The takeover window ε, nanoseconds.
pub const EPSILON_NS: u64 = 500_000_000;

/// Runs the three session checkers.
pub fn check(h: &History) -> Vec<CheckResult> {
    vec![exclusive(&h.events), session_present(&h.events), subscriptions(&h.events)]
}

/// At most one live connection per client id.
pub fn exclusive(events: &[Event]) -> CheckResult {
    let mut r = CheckResult::new("exclusive");
    // client -> [(connack time, conn)]
    let mut connacks: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for op in pair(events, "connect") {
        if let (Some(t), Some(c), Some(conn)) = (op.ok_at(), op.inv.client.as_deref(), op.inv.conn) {
            connacks.entry(c).or_default().push((t, conn));
        }
    }
    for v in connacks.values_mut() {
        v.sort_unstable();
    }
    // The first later CONNACK of the same id, per connection.
    let mut superseded: HashMap<u64, (u64, u64)> = HashMap::new();
    for v in connacks.values() {
        for w in v.windows(2) {
            superseded.insert(w[0].1, (w[1].0, w[1].1));
        }
    }
    let mut worst = 0u64;
    for e in events {
        let activity = (e.kind == Kind::Ok && e.f != "connect" && e.f != "disconnect") || (e.f == "deliver");
        let Some(conn) = e.conn.filter(|_| activity) else { continue };
        r.count("activities", 1);
        if let Some(&(tb, b)) = superseded.get(&conn)
            && e.t > tb
        {
            worst = worst.max(e.t - tb);
            if e.t > tb + EPSILON_NS {
                let client = e.client.clone().unwrap_or_default();
                r.violation("overlap", || {
                    format!(
                        "{client}: connection {conn} did {} at {}, {} after connection {b} of the same id got CONNACK",
                        e.f,
                        secs(e.t),
                        secs(e.t - tb)
                    )
                });
            }
        }
    }
    r.count("takeovers", superseded.len() as u64);
    r.count("max-overlap-ms", worst / 1_000_000);
    r
}

/// Persistent sessions are found again.
pub fn session_present(events: &[Event]) -> CheckResult {
    let mut r = CheckResult::new("session-present");
    let mut subscribed: HashMap<&str, u64> = HashMap::new();
    for op in pair(events, "subscribe") {
        if let (Some(t), Some(c)) = (op.ok_at(), op.inv.client.as_deref()) {
            subscribed.entry(c).or_insert(t);
        }
    }
    for op in pair(events, "connect") {
        let (Some(done), Some(c)) = (op.done.filter(|d| d.kind == Kind::Ok), op.inv.client.as_deref()) else {
            continue;
        };
        if op.inv.flag("clean") {
            continue;
        }
        let Some(&since) = subscribed.get(c) else { continue };
        if op.inv.t <= since {
            continue;
        }
        r.count("reconnects", 1);
        if !done.flag("session_present") {
            r.violation("not-present", || {
                format!("{c}: CONNACK at {} without Session Present", secs(done.t))
            });
        }
    }
    if r.get("reconnects") == 0 && r.valid == Valid::True {
        r.valid = Valid::Unknown;
        r.examples.push("no persistent reconnects".into());
    }
    r
}

/// Every acknowledged probe reached its own client id.
pub fn subscriptions(events: &[Event]) -> CheckResult {
    let mut r = CheckResult::new("subscriptions");
    let mut got: HashSet<(&str, &str)> = HashSet::new();
    for e in events.iter().filter(|e| e.f == "deliver" && e.kind == Kind::Ok) {
        if let (Some(c), Some(p)) = (e.client.as_deref(), e.str("payload")) {
            got.insert((c, p));
        }
    }
    for op in pair(events, "publish") {
        let (Some(c), Some(id)) = (op.inv.client.as_deref(), op.inv.str("id")) else { continue };
        match op.kind() {
            Kind::Ok => r.count("probes-ok", 1),
            _ => {
                r.count("probes-info", 1);
                continue;
            }
        }
        if !got.contains(&(c, id)) {
            r.violation("lost", || format!("{c}: acknowledged probe {id} never delivered to {c}"));
        }
    }
    if r.get("probes-ok") == 0 && r.valid == Valid::True {
        r.valid = Valid::Unknown;
        r.examples.push("no probe acknowledged".into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Proc;
    use serde_json::{Value, json};

    fn ev(t: u64, p: u64, kind: Kind, f: &str, conn: u64, value: Value) -> Event {
        Event {
            i: t,
            t,
            p: Proc::Client(p),
            kind,
            f: f.into(),
            client: Some("js-0".into()),
            conn: Some(conn),
            node: Some(0),
            value,
        }
    }

    fn two_conns(late_ack_at: u64) -> Vec<Event> {
        let s = 1_000_000_000;
        vec![
            ev(0, 1, Kind::Invoke, "subscribe", 1, json!({})),
            ev(1, 1, Kind::Ok, "subscribe", 1, json!({})),
            ev(2 * s, 2, Kind::Invoke, "connect", 2, json!({"clean": false})),
            ev(2 * s + 1, 2, Kind::Ok, "connect", 2, json!({"session_present": true})),
            ev(3 * s, 3, Kind::Invoke, "connect", 3, json!({"clean": false})),
            ev(3 * s + 1, 3, Kind::Ok, "connect", 3, json!({"session_present": true})),
            ev(3 * s + 2, 2, Kind::Invoke, "publish", 2, json!({"id": "2:1"})),
            ev(late_ack_at, 2, Kind::Ok, "publish", 2, json!({"id": "2:1"})),
            ev(late_ack_at + 1, 3, Kind::Ok, "deliver", 3, json!({"payload": "2:1"})),
        ]
    }

    #[test]
    fn activity_on_a_taken_over_connection_is_an_overlap() {
        let s = 1_000_000_000;
        let ok = two_conns(3 * s + 100_000);
        assert_eq!(exclusive(&ok).valid, Valid::True);
        assert_eq!(session_present(&ok).valid, Valid::True);
        assert_eq!(subscriptions(&ok).valid, Valid::True);
        let bad = two_conns(5 * s);
        let r = exclusive(&bad);
        assert_eq!(r.valid, Valid::False);
        assert_eq!(r.get("overlap"), 1);
    }

    #[test]
    fn missing_session_and_lost_probe_are_reported() {
        let mut h = two_conns(3 * 1_000_000_000 + 5);
        h[5].value = json!({"session_present": false});
        h.pop();
        assert_eq!(session_present(&h).get("not-present"), 1);
        assert_eq!(subscriptions(&h).get("lost"), 1);
    }
}
