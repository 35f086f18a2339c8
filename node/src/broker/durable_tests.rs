//! Deterministic tests of journaling: acknowledgements wait for durability, and a broker
//! rebuilt from the journal (a "restart") has everything that was acknowledged.

use std::time::Instant;

use bytes::Bytes;

use super::Broker;
use super::auth::StaticUsers;
use super::config::BrokerConfig;
use super::journal::Record;
use crate::mqtt::packet::*;
use crate::mqtt::properties::Properties;

fn broker(now: Instant) -> Broker {
    let config = BrokerConfig { sys_interval_secs: 0, ..BrokerConfig::default() };
    let mut b = Broker::new(config, Box::new(StaticUsers::new(true, Vec::new())), now, 1);
    b.enable_journal(0);
    b
}

/// Takes the journal, "writes" it (appends to `disk`) and reports it durable.
fn sync(b: &mut Broker, disk: &mut Vec<Record>) {
    let seq = b.poll_journal(disk);
    b.handle_durable(seq);
}

fn drain(b: &mut Broker, now: Instant, conn: u64) -> Vec<Packet> {
    let mut out = Vec::new();
    b.poll_transmit(now, conn, 1000, &mut out);
    out
}

fn connect(
    b: &mut Broker,
    now: Instant,
    disk: &mut Vec<Record>,
    id: &str,
    f: impl FnOnce(&mut Connect),
) -> u64 {
    let conn = b.open(now);
    let mut c = Connect { protocol: Some(Protocol::V5), client_id: id.into(), ..Connect::default() };
    f(&mut c);
    b.handle_packet(now, conn, Packet::Connect(Box::new(c)));
    sync(b, disk);
    conn
}

fn publish(topic: &str, qos: QoS, pid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: pid,
        payload: Bytes::from_static(payload),
        ..Publish::default()
    })
}

fn subscribe(filter: &str, qos: QoS) -> Packet {
    let opts = SubOptions { qos, ..SubOptions::default() };
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(filter.into(), opts)],
    })
}

fn persistent(c: &mut Connect) {
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
}

#[test]
fn puback_waits_until_the_journal_is_durable() {
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    let sub = connect(&mut b, now, &mut disk, "sub", persistent);
    b.handle_packet(now, sub, subscribe("t", QoS::AtLeastOnce));
    sync(&mut b, &mut disk);
    let publisher = connect(&mut b, now, &mut disk, "pub", |_| {});
    drain(&mut b, now, publisher);
    b.handle_packet(now, publisher, publish("t", QoS::AtLeastOnce, 9, b"m"));
    assert!(drain(&mut b, now, publisher).is_empty(), "PUBACK before the message is durable");
    let mut records = Vec::new();
    let seq = b.poll_journal(&mut records);
    assert!(records.iter().any(|r| matches!(r, Record::Message { .. })));
    assert!(records.iter().any(|r| matches!(r, Record::Enqueue { .. })));
    b.handle_durable(seq);
    assert!(matches!(drain(&mut b, now, publisher).as_slice(), [Packet::PubAck(a)] if a.packet_id == 9));
}

#[test]
fn restart_restores_sessions_queues_retained_and_publishes_open_wills() {
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    // A persistent subscriber that goes offline, and a watcher of wills.
    let car = connect(&mut b, now, &mut disk, "car", persistent);
    b.handle_packet(now, car, subscribe("cmd/#", QoS::ExactlyOnce));
    sync(&mut b, &mut disk);
    b.close(now, car);
    let watcher = connect(&mut b, now, &mut disk, "watcher", persistent);
    b.handle_packet(now, watcher, subscribe("will/#", QoS::AtLeastOnce));
    sync(&mut b, &mut disk);
    // A client with a will whose connection is open when the broker dies.
    let _doomed = connect(&mut b, now, &mut disk, "doomed", |c| {
        c.will =
            Some(Will { topic: "will/doomed".into(), payload: Bytes::from_static(b"x"), ..Will::default() })
    });
    let publisher = connect(&mut b, now, &mut disk, "pub", |_| {});
    b.handle_packet(now, publisher, publish("cmd/1", QoS::AtLeastOnce, 1, b"one"));
    b.handle_packet(now, publisher, publish("cmd/2", QoS::ExactlyOnce, 2, b"two"));
    b.handle_packet(
        now,
        publisher,
        Packet::Publish(Publish { retain: true, ..publish_inner("state", b"kept") }),
    );
    sync(&mut b, &mut disk);
    let acks = drain(&mut b, now, publisher);
    assert_eq!(acks.iter().filter(|p| matches!(p, Packet::PubAck(_) | Packet::PubRec(_))).count(), 2);
    // Crash: everything in `disk` survives, the broker does not.
    drop(b);
    let later = now + std::time::Duration::from_secs(1);
    let mut b = broker(later);
    let report = b.restore(later, disk.clone());
    assert_eq!(report.sessions, 2, "{report:?}");
    assert_eq!(report.wills, 1);
    // The publisher's QoS 2 packet id is still known: a retransmission is not routed again.
    let publisher = connect(&mut b, later, &mut disk, "pub", persistent);
    drain(&mut b, later, publisher);
    let car = connect(&mut b, later, &mut disk, "car", persistent);
    let mut out = drain(&mut b, later, car);
    sync(&mut b, &mut disk); // the QoS 2 delivery waits for its packet id to be durable
    out.extend(drain(&mut b, later, car));
    let got: Vec<(String, QoS)> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((String::from_utf8_lossy(&p.payload).into_owned(), p.qos)),
            _ => None,
        })
        .collect();
    assert_eq!(got, [("one".to_string(), QoS::AtLeastOnce), ("two".to_string(), QoS::ExactlyOnce)]);
    assert!(matches!(&out[0], Packet::ConnAck(a) if a.session_present));
    // The will of the client connected at the crash went to the watcher's session.
    let watcher = connect(&mut b, later, &mut disk, "watcher", persistent);
    let out = drain(&mut b, later, watcher);
    assert!(out.iter().any(|p| matches!(p, Packet::Publish(p) if &*p.topic == "will/doomed")), "{out:?}");
    // Retained survived.
    let fresh = connect(&mut b, later, &mut disk, "fresh", |_| {});
    b.handle_packet(later, fresh, subscribe("state", QoS::AtMostOnce));
    sync(&mut b, &mut disk);
    let out = drain(&mut b, later, fresh);
    assert!(out.iter().any(|p| matches!(p, Packet::Publish(p) if p.retain && &p.payload[..] == b"kept")));
}

fn publish_inner(topic: &str, payload: &'static [u8]) -> Publish {
    Publish { topic: topic.into(), payload: Bytes::from_static(payload), ..Publish::default() }
}

#[test]
fn outbound_qos2_keeps_its_packet_id_across_restart() {
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    let car = connect(&mut b, now, &mut disk, "car", persistent);
    b.handle_packet(now, car, subscribe("t", QoS::ExactlyOnce));
    sync(&mut b, &mut disk);
    drain(&mut b, now, car);
    let publisher = connect(&mut b, now, &mut disk, "pub", |_| {});
    b.handle_packet(now, publisher, publish("t", QoS::ExactlyOnce, 5, b"x"));
    sync(&mut b, &mut disk);
    // The QoS 2 PUBLISH waits for its packet id to be durable.
    assert!(drain(&mut b, now, car).is_empty());
    sync(&mut b, &mut disk);
    let first = drain(&mut b, now, car);
    let Some(Packet::Publish(p)) = first.first() else { panic!("{first:?}") };
    let pid = p.packet_id;
    drop(b);
    let mut b = broker(now);
    b.restore(now, disk.clone());
    let car = b.open(now);
    let c = Connect { protocol: Some(Protocol::V5), client_id: "car".into(), ..Connect::default() };
    let mut c = c;
    persistent(&mut c);
    b.handle_packet(now, car, Packet::Connect(Box::new(c)));
    sync(&mut b, &mut disk);
    let out = drain(&mut b, now, car);
    assert!(
        matches!(&out[1], Packet::Publish(p) if p.dup && p.packet_id == pid && p.qos == QoS::ExactlyOnce),
        "{out:?}"
    );
}

#[test]
fn snapshot_rebuilds_the_same_state() {
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    let car = connect(&mut b, now, &mut disk, "car", persistent);
    b.handle_packet(now, car, subscribe("a/+", QoS::AtLeastOnce));
    b.close(now, car);
    let publisher = connect(&mut b, now, &mut disk, "pub", |_| {});
    for i in 0..5u16 {
        b.handle_packet(now, publisher, publish("a/b", QoS::AtLeastOnce, i + 1, b"m"));
    }
    sync(&mut b, &mut disk);
    let mut snap = Vec::new();
    b.snapshot(&mut snap);
    let mut from_log = broker(now);
    let r1 = from_log.restore(now, disk);
    let mut from_snap = broker(now);
    let r2 = from_snap.restore(now, snap.clone());
    assert_eq!((r1.sessions, r1.queued), (r2.sessions, r2.queued));
    assert_eq!(r2.queued, 5);
    assert!(snap.len() < 20, "snapshot is minimal: {}", snap.len());
}
