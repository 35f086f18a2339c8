//! The `queue` checker: for every acknowledged publish and every persistent subscriber
//! whose subscription completed before the publish was invoked, the subscriber must have
//! received it (`lost`, split NATS-style into prefix / middle / postfix of what that
//! subscriber saw of that publisher on that topic). QoS 2 must arrive once (`duplicated`:
//! a second delivery after the first was released, or under another packet id; a resend of
//! an unreleased delivery with the same packet id is the protocol's retry). Nothing may be
//! delivered that was never published (`unexpected`). Per publisher, topic and subscriber
//! the first deliveries must follow the publisher's order (`reordered`).

use std::collections::{BTreeMap, HashMap};

use super::ops::{pair, parse_id, secs};
use super::{CheckResult, Valid};
use crate::history::{Event, History, Kind};

struct Publish {
    qos: u64,
    topic: String,
    invoked: u64,
    kind: Kind,
}

#[derive(Default)]
struct Seen {
    deliveries: u64,
    conn: u64,
    pkid: u64,
    released: bool,
}

/// Checks a queue history.
pub fn check(h: &History) -> CheckResult {
    check_events(&h.events)
}

/// Checks queue events.
pub fn check_events(events: &[Event]) -> CheckResult {
    let mut r = CheckResult::new("queue");
    let mut pubs: HashMap<String, Publish> = HashMap::new();
    for op in pair(events, "publish") {
        let Some(id) = op.inv.str("id") else { continue };
        let publish = Publish {
            qos: op.inv.u64("qos").unwrap_or(1),
            topic: op.inv.str("topic").unwrap_or_default().to_string(),
            invoked: op.inv.t,
            kind: op.kind(),
        };
        match publish.kind {
            Kind::Ok => r.count("ok", 1),
            Kind::Info => r.count("info", 1),
            _ => r.count("fail", 1),
        }
        pubs.insert(id.to_string(), publish);
    }
    // Subscribers and when their subscription took effect.
    let mut subscribed: BTreeMap<String, u64> = BTreeMap::new();
    for op in pair(events, "subscribe") {
        if let (Some(t), Some(c)) = (op.ok_at(), op.inv.client.as_ref()) {
            subscribed.entry(c.clone()).or_insert(t);
        }
    }
    let mut seen: HashMap<(&str, &str), Seen> = HashMap::new();
    let mut unreleased: HashMap<(u64, u64), &str> = HashMap::new();
    // (subscriber, publisher, topic) -> (min, max, last) counter of first deliveries.
    let mut stream: HashMap<(&str, u64, &str), (u64, u64, u64)> = HashMap::new();
    let mut delivered_any: HashMap<&str, u64> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == Kind::Ok) {
        let (Some(sub), Some(conn)) = (e.client.as_deref(), e.conn) else { continue };
        if e.f == "release" {
            if let Some(id) = unreleased.remove(&(conn, e.u64("pkid").unwrap_or(0)))
                && let Some(s) = seen.get_mut(&(sub, id))
            {
                s.released = true;
            }
            continue;
        }
        if e.f != "deliver" {
            continue;
        }
        let Some(id) = e.str("payload") else { continue };
        r.count("deliveries", 1);
        let Some(publish) = pubs.get(id) else {
            r.violation("unexpected", || format!("{sub} got {id:?} (never published) at {}", secs(e.t)));
            continue;
        };
        *delivered_any.entry(id).or_default() += 1;
        let pkid = e.u64("pkid").unwrap_or(0);
        let s = seen.entry((sub, id)).or_default();
        if s.deliveries > 0 {
            if publish.qos == 2 && (s.released || s.pkid != pkid) {
                let why = if s.released { "after its release" } else { "under a new packet id" };
                r.violation("duplicated", || format!("{sub} got QoS 2 {id} again {why} at {}", secs(e.t)));
            } else {
                r.count("redelivered", 1);
            }
        } else if let Some((p, n)) = parse_id(id) {
            let key = (sub, p, publish.topic.as_str());
            let entry = stream.entry(key).or_insert((n, n, 0));
            if n < entry.2 {
                let last = entry.2;
                r.violation("reordered", || {
                    format!("{sub} got {id} after {p}:{last} on {} at {}", publish.topic, secs(e.t))
                });
            }
            entry.0 = entry.0.min(n);
            entry.1 = entry.1.max(n);
            entry.2 = entry.2.max(n);
        }
        s.deliveries += 1;
        s.conn = conn;
        s.pkid = pkid;
        s.released = false;
        if publish.qos == 2 {
            unreleased.insert((conn, pkid), id);
        }
    }
    for (id, publish) in &pubs {
        match publish.kind {
            Kind::Info if delivered_any.contains_key(id.as_str()) => r.count("recovered", 1),
            Kind::Fail if delivered_any.contains_key(id.as_str()) => {
                r.violation("unexpected", || format!("{id} failed but was delivered"))
            }
            _ => {}
        }
        if publish.kind != Kind::Ok {
            continue;
        }
        for (sub, &since) in &subscribed {
            if since > publish.invoked || seen.contains_key(&(sub.as_str(), id.as_str())) {
                continue;
            }
            let (p, n) = parse_id(id).unwrap_or((0, 0));
            let part = match stream.get(&(sub.as_str(), p, publish.topic.as_str())) {
                Some(&(lo, hi, _)) if n > lo && n < hi => "lost-middle",
                Some(&(_, hi, _)) if n > hi => "lost-postfix",
                _ => "lost-prefix",
            };
            r.count(part, 1);
            r.violation("lost", || {
                format!("{id} (QoS {}, {}) acknowledged, never reached {sub}", publish.qos, publish.topic)
            });
        }
    }
    if r.get("ok") == 0 {
        r.valid = if r.valid == Valid::False { Valid::False } else { Valid::Unknown };
        r.examples.push("no publish was acknowledged".into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, Proc};
    use serde_json::{Value, json};

    pub(crate) fn ev(t: u64, p: u64, kind: Kind, f: &str, client: &str, conn: u64, value: Value) -> Event {
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

    fn base() -> Vec<Event> {
        vec![
            ev(1, 1, Kind::Invoke, "subscribe", "s", 1, json!({"filter": "jq/#"})),
            ev(2, 1, Kind::Ok, "subscribe", "s", 1, json!({})),
            ev(10, 2, Kind::Invoke, "publish", "pub", 2, json!({"topic": "jq/2/0", "qos": 2, "id": "2:1"})),
            ev(11, 2, Kind::Ok, "publish", "pub", 2, json!({"id": "2:1"})),
            ev(12, 2, Kind::Invoke, "publish", "pub", 2, json!({"topic": "jq/2/0", "qos": 2, "id": "2:2"})),
            ev(13, 2, Kind::Ok, "publish", "pub", 2, json!({"id": "2:2"})),
        ]
    }

    fn deliver(t: u64, conn: u64, id: &str, pkid: u64) -> Event {
        ev(
            t,
            3,
            Kind::Ok,
            "deliver",
            "s",
            conn,
            json!({"payload": id, "qos": 2, "pkid": pkid, "topic": "jq/2/0"}),
        )
    }

    #[test]
    fn complete_history_is_valid() {
        let mut h = base();
        h.push(deliver(20, 5, "2:1", 1));
        h.push(ev(21, 3, Kind::Ok, "release", "s", 5, json!({"pkid": 1})));
        h.push(deliver(22, 5, "2:2", 2));
        // A resend of the unreleased delivery on a new connection is the protocol's retry.
        h.push(deliver(23, 6, "2:2", 2));
        let r = check_events(&h);
        assert_eq!(r.valid, Valid::True, "{r:?}");
        assert_eq!(r.get("redelivered"), 1);
    }

    #[test]
    fn lost_duplicated_reordered_and_unexpected_are_reported() {
        let mut h = base();
        h.push(deliver(20, 5, "2:2", 1));
        h.push(ev(21, 3, Kind::Ok, "release", "s", 5, json!({"pkid": 1})));
        h.push(deliver(22, 5, "2:2", 1));
        let r = check_events(&h);
        assert_eq!(r.valid, Valid::False);
        assert_eq!(r.get("lost"), 1, "{r:?}");
        assert_eq!(r.get("lost-prefix"), 1);
        assert_eq!(r.get("duplicated"), 1);

        let mut h = base();
        h.push(deliver(20, 5, "2:2", 1));
        h.push(deliver(21, 5, "2:1", 2));
        h.push(deliver(22, 5, "9:9", 3));
        let r = check_events(&h);
        assert_eq!(r.get("reordered"), 1, "{r:?}");
        assert_eq!(r.get("unexpected"), 1);
        assert_eq!(r.get("lost"), 0);
    }
}
