//! Deterministic tests of journaling: acknowledgements wait for durability, and a broker
//! rebuilt from the journal (a "restart") has everything that was acknowledged.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::Broker;
use super::auth::StaticUsers;
use super::config::BrokerConfig;
use super::journal::{Record, WallClock};
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
    let later = now + Duration::from_secs(1);
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

/// The journal as the shell writes it, encoded at `write` (wall clock of the crash).
fn encode_all(records: &[Record], write: &WallClock) -> Vec<Bytes> {
    records
        .iter()
        .map(|r| {
            let mut buf = BytesMut::new();
            r.encode(write, &mut buf);
            buf.freeze()
        })
        .collect()
}

fn decode_all(encoded: Vec<Bytes>, read: &WallClock) -> Vec<Record> {
    encoded.into_iter().map(|b| Record::decode(b, read).expect("decodes")).collect()
}

fn encoded_bytes(records: &[Record]) -> usize {
    encode_all(records, &WallClock::new(Instant::now(), 0)).iter().map(Bytes::len).sum()
}

static BIG: [u8; 4096] = [7; 4096];

/// Journal bytes and `Message` records written for one 4 KiB QoS 1 message published to
/// `subscribers` persistent sessions, every other one offline (offline sessions queue a
/// compacted copy of the message, online ones the message itself).
fn journal_for_one_message(subscribers: usize) -> (usize, usize, Vec<Record>, Broker) {
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    for i in 0..subscribers {
        let c = connect(&mut b, now, &mut disk, &format!("s{i}"), persistent);
        b.handle_packet(now, c, subscribe("t", QoS::AtLeastOnce));
        sync(&mut b, &mut disk);
        drain(&mut b, now, c);
        if i % 2 == 0 {
            b.close(now, c);
        }
    }
    let publisher = connect(&mut b, now, &mut disk, "pub", |_| {});
    sync(&mut b, &mut disk);
    let before = disk.len();
    b.handle_packet(now, publisher, publish("t", QoS::AtLeastOnce, 1, &BIG));
    sync(&mut b, &mut disk);
    let new = &disk[before..];
    let stored = new.iter().filter(|r| matches!(r, Record::Message { .. })).count();
    (encoded_bytes(new), stored, disk, b)
}

#[test]
fn a_message_for_many_persistent_sessions_is_stored_once() {
    let (one_bytes, one_stored, _, _) = journal_for_one_message(1);
    let (bytes, stored, disk, mut b) = journal_for_one_message(16);
    assert_eq!((one_stored, stored), (1, 1), "one Message record however many sessions queue it");
    // The fifteen extra sessions cost an `Enqueue` each (tens of bytes), not a payload.
    assert!(bytes < one_bytes + 15 * 64, "{bytes} bytes for 16 sessions, {one_bytes} for one");
    assert!(bytes < 2 * BIG.len());
    // A checkpoint stores it once too, and both restore to 16 queued copies of one payload.
    b.checkpoint();
    let mut snap = Vec::new();
    b.poll_journal(&mut snap);
    assert_eq!(snap.iter().filter(|r| matches!(r, Record::Message { .. })).count(), 1);
    assert!(encoded_bytes(&snap) < 2 * BIG.len());
    for records in [disk, snap] {
        let now = Instant::now();
        let mut r = broker(now);
        let report = r.restore(now, records);
        assert_eq!(report.queued, 16, "{report:?}");
    }
}

#[test]
fn session_expiry_counts_time_offline_before_the_crash_and_the_downtime() {
    let t0 = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(t0);
    let expiring = |c: &mut Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    };
    let car = connect(&mut b, t0, &mut disk, "car", expiring);
    let van = connect(&mut b, t0, &mut disk, "van", expiring);
    // The car goes offline at t0 + 60 s; the van is connected when the process dies.
    let offline_at = t0 + Duration::from_secs(60);
    b.close(offline_at, car);
    sync(&mut b, &mut disk);
    let _ = van;
    // Crash at t0 + 70 s; restart 20 s of wall-clock time later, on a new monotonic clock.
    let wall0 = 1_700_000_000_000;
    let crash = WallClock::new(t0 + Duration::from_secs(70), wall0 + 70_000);
    let t1 = t0 + Duration::from_secs(5000);
    let restart = WallClock::new(t1, wall0 + 90_000);
    let mut b = broker(t1);
    let report = b.restore(t1, decode_all(encode_all(&disk, &crash), &restart));
    assert_eq!(report.sessions, 2);
    sync(&mut b, &mut disk);
    // The car has been offline 30 s: 70 s left. The van counts from the restart: 100 s.
    b.handle_timeout(t1 + Duration::from_secs(69));
    assert_eq!(b.stats().sessions, 2);
    b.handle_timeout(t1 + Duration::from_secs(71));
    assert_eq!(b.stats().sessions, 1, "the car's session expired 100 s after it went offline");
    b.handle_timeout(t1 + Duration::from_secs(101));
    assert_eq!(b.stats().sessions, 0);
}

#[test]
fn session_offline_time_survives_a_checkpoint_and_a_second_restart() {
    let t0 = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(t0);
    let car = connect(&mut b, t0, &mut disk, "car", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    });
    b.close(t0, car);
    b.checkpoint();
    let mut snap = Vec::new();
    b.poll_journal(&mut snap);
    let reset = snap.iter().position(|r| matches!(r, Record::Reset)).expect("a checkpoint");
    let snap = snap.split_off(reset);
    let wall0 = 1_700_000_000_000;
    let t1 = t0 + Duration::from_secs(5000);
    let mut b = broker(t1);
    b.restore(
        t1,
        decode_all(encode_all(&snap, &WallClock::new(t0, wall0)), &WallClock::new(t1, wall0 + 50_000)),
    );
    b.handle_timeout(t1 + Duration::from_secs(49));
    assert_eq!(b.stats().sessions, 1);
    b.handle_timeout(t1 + Duration::from_secs(51));
    assert_eq!(b.stats().sessions, 0);
}

#[test]
fn message_expiry_counts_its_age_before_the_crash_and_the_downtime() {
    let t0 = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(t0);
    let car = connect(&mut b, t0, &mut disk, "car", persistent);
    b.handle_packet(t0, car, subscribe("t", QoS::AtLeastOnce));
    sync(&mut b, &mut disk);
    b.close(t0, car);
    let publisher = connect(&mut b, t0, &mut disk, "pub", |_| {});
    let mut p = publish_inner("t", b"soon stale");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 1;
    p.properties.message_expiry_interval = Some(60);
    b.handle_packet(t0, publisher, Packet::Publish(p));
    sync(&mut b, &mut disk);
    let wall0 = 1_700_000_000_000;
    // Written 10 s after it was published; restarted 40 s after that.
    let crash = WallClock::new(t0 + Duration::from_secs(10), wall0 + 10_000);
    for (downtime_s, left) in [(40u64, Some(10u32)), (55, None)] {
        let t1 = t0 + Duration::from_secs(5000);
        let restart = WallClock::new(t1, wall0 + 10_000 + downtime_s * 1000);
        let mut b = broker(t1);
        b.restore(t1, decode_all(encode_all(&disk, &crash), &restart));
        let mut scratch = Vec::new();
        let car = connect(&mut b, t1, &mut scratch, "car", persistent);
        let out = drain(&mut b, t1, car);
        let got = out.iter().find_map(|p| match p {
            Packet::Publish(p) => Some(p.properties.message_expiry_interval),
            _ => None,
        });
        match left {
            Some(secs) => assert_eq!(got, Some(Some(secs)), "{out:?}"),
            None => assert_eq!(got, None, "expired during the downtime: {out:?}"),
        }
    }
}

#[test]
fn a_failed_journal_refuses_qos1_and_qos2_instead_of_hanging_and_qos0_goes_on() {
    use super::Transmit;
    use crate::mqtt::reason;
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    let sub = connect(&mut b, now, &mut disk, "sub", persistent);
    b.handle_packet(now, sub, subscribe("t", QoS::AtLeastOnce));
    sync(&mut b, &mut disk);
    drain(&mut b, now, sub);
    let v5 = connect(&mut b, now, &mut disk, "v5", |_| {});
    let v3 = connect(&mut b, now, &mut disk, "v3", |c| c.protocol = Some(Protocol::V3_1_1));
    drain(&mut b, now, v5);
    drain(&mut b, now, v3);
    // Acknowledgements wait for records that will never be written: the disk filled up.
    b.handle_packet(now, v5, publish("t", QoS::AtLeastOnce, 1, b"a"));
    b.handle_packet(now, v5, publish("t", QoS::ExactlyOnce, 2, b"b"));
    b.handle_packet(now, v3, publish("t", QoS::AtLeastOnce, 3, b"c"));
    assert!(drain(&mut b, now, v5).is_empty() && drain(&mut b, now, v3).is_empty());
    b.journal_failed(now, true);
    assert_eq!(b.journal_failure(), Some(reason::QUOTA_EXCEEDED));
    let out = drain(&mut b, now, v5);
    assert!(
        matches!(out.as_slice(), [Packet::PubAck(a), Packet::PubRec(r)]
            if a.packet_id == 1 && a.reason_code == 0x97 && r.packet_id == 2 && r.reason_code == 0x97),
        "{out:?}"
    );
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, v3, 100, &mut out), Transmit::Close, "3.1.1 cannot hear a refusal");
    assert!(out.is_empty(), "no PUBACK for a message that is not durable: {out:?}");
    // Later QoS 1 publishes are refused at once; QoS 0 still flows.
    b.handle_packet(now, v5, publish("t", QoS::AtLeastOnce, 4, b"d"));
    let out = drain(&mut b, now, v5);
    assert!(matches!(out.as_slice(), [Packet::PubAck(a)] if a.reason_code == 0x97), "{out:?}");
    b.handle_packet(now, v5, publish("t", QoS::AtMostOnce, 0, b"e"));
    let got = drain(&mut b, now, sub);
    assert!(got.iter().any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"e")), "{got:?}");
    assert!(!got.iter().any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"d")), "{got:?}");
    // Nothing more is journaled.
    let mut records = Vec::new();
    b.poll_journal(&mut records);
    assert!(records.is_empty(), "{records:?}");
}

#[test]
fn a_retained_message_that_is_also_queued_is_stored_once() {
    let now = Instant::now();
    let mut disk = Vec::new();
    let mut b = broker(now);
    for i in 0..4 {
        let c = connect(&mut b, now, &mut disk, &format!("s{i}"), persistent);
        b.handle_packet(now, c, subscribe("state", QoS::AtLeastOnce));
        sync(&mut b, &mut disk);
        b.close(now, c);
    }
    let publisher = connect(&mut b, now, &mut disk, "pub", |_| {});
    sync(&mut b, &mut disk);
    let before = disk.len();
    let mut p = publish_inner("state", &BIG);
    (p.qos, p.packet_id, p.retain) = (QoS::AtLeastOnce, 1, true);
    b.handle_packet(now, publisher, Packet::Publish(p));
    sync(&mut b, &mut disk);
    assert!(encoded_bytes(&disk[before..]) < 2 * BIG.len(), "{:?}", &disk[before..].len());
    assert!(disk[before..].iter().any(|r| matches!(r, Record::RetainStored { .. })));
    b.checkpoint();
    let mut snap = Vec::new();
    b.poll_journal(&mut snap);
    assert!(encoded_bytes(&snap) < 2 * BIG.len());
    // Both rebuild the retained message and the four queued copies of it.
    for records in [disk, snap] {
        let now = Instant::now();
        let mut r = broker(now);
        let report = r.restore(now, records);
        assert_eq!((report.queued, report.retained), (4, 1), "{report:?}");
        let mut scratch = Vec::new();
        let fresh = connect(&mut r, now, &mut scratch, "fresh", |_| {});
        r.handle_packet(now, fresh, subscribe("state", QoS::AtMostOnce));
        sync(&mut r, &mut scratch);
        let out = drain(&mut r, now, fresh);
        assert!(out.iter().any(|p| matches!(p, Packet::Publish(p) if p.retain && p.payload[..] == BIG[..])));
    }
}

/// A persistent QoS 2 subscriber ("sub") of `t` and a persistent publisher ("pub") whose
/// QoS 2 message (packet id 7) has been routed and made durable, with both connections'
/// earlier packets drained. Returns the broker, the disk, and the two connections.
fn qos2_routed_and_durable(now: Instant) -> (Broker, Vec<Record>, u64, u64) {
    let mut disk = Vec::new();
    let mut b = broker(now);
    let sub = connect(&mut b, now, &mut disk, "sub", persistent);
    b.handle_packet(now, sub, subscribe("t", QoS::ExactlyOnce));
    let publisher = connect(&mut b, now, &mut disk, "pub", persistent);
    sync(&mut b, &mut disk);
    drain(&mut b, now, sub);
    drain(&mut b, now, publisher);
    b.handle_packet(now, publisher, publish("t", QoS::ExactlyOnce, 7, b"once"));
    sync(&mut b, &mut disk);
    (b, disk, sub, publisher)
}

/// Found by the jepsen disk-full nemesis: once the journal failed, a QoS 2 release that
/// cannot be recorded must not be answered with PUBREL (after a restart the message would be
/// sent again and delivered twice), nor an inbound release with PUBCOMP (a reused packet id
/// would look like a retransmission and its new message be dropped). The connection closes;
/// the flows stay where the disk has them.
#[test]
fn a_failed_journal_closes_qos2_flows_it_cannot_record_instead_of_completing_them() {
    use super::Transmit;
    let now = Instant::now();
    let (mut b, mut disk, sub, publisher) = qos2_routed_and_durable(now);
    let out = drain(&mut b, now, publisher);
    assert!(
        matches!(out.as_slice(), [Packet::PubRec(r)] if r.packet_id == 7 && r.reason_code == 0),
        "{out:?}"
    );
    // The packet id of a journaled QoS 2 delivery is recorded before the first send.
    assert!(drain(&mut b, now, sub).is_empty());
    sync(&mut b, &mut disk);
    let got = drain(&mut b, now, sub);
    let Some(Packet::Publish(p)) = got.iter().find(|p| matches!(p, Packet::Publish(_))) else {
        panic!("no delivery: {got:?}")
    };
    let pid = p.packet_id;
    b.journal_failed(now, true);
    // Outbound: the subscriber's PUBREC cannot be recorded as a release.
    b.handle_packet(now, sub, Packet::PubRec(PubResp::new(pid)));
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, sub, 100, &mut out), Transmit::Close);
    assert!(!out.iter().any(|p| matches!(p, Packet::PubRel(_))), "PUBREL without a durable release: {out:?}");
    // Inbound: the publisher's PUBREL cannot be recorded as the end of its flow.
    b.handle_packet(now, publisher, Packet::PubRel(PubResp::new(7)));
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, publisher, 100, &mut out), Transmit::Close);
    assert!(!out.iter().any(|p| matches!(p, Packet::PubComp(_))), "PUBCOMP without a durable end: {out:?}");
}

/// Also found by the disk-full nemesis: a QoS 2 delivery queued for a journaled session is
/// not sent once its packet id can no longer be recorded (a restart would resend it under a
/// new id, and the client would take it as a new message).
#[test]
fn a_failed_journal_holds_back_qos2_deliveries_whose_packet_id_cannot_be_recorded() {
    let now = Instant::now();
    let (mut b, _disk, sub, _publisher) = qos2_routed_and_durable(now);
    b.journal_failed(now, true);
    // Twice: a packet queued while pulling goes out with the next pull.
    let mut got = drain(&mut b, now, sub);
    got.extend(drain(&mut b, now, sub));
    assert!(
        !got.iter().any(|p| matches!(p, Packet::Publish(_))),
        "sent with an unrecorded packet id: {got:?}"
    );
}
