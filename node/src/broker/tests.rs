//! Deterministic tests of the broker core: virtual time, no sockets. Each drives the core
//! through its public `handle_*`/`poll_*` API exactly as the shell does.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::StaticUsers;
use super::config::BrokerConfig;
use super::{Broker, Transmit};
use crate::mqtt::packet::*;
use crate::mqtt::properties::Properties;
use crate::mqtt::reason;

struct Harness {
    broker: Broker,
    now: Instant,
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let mut config = BrokerConfig { sys_interval_secs: 0, ..BrokerConfig::default() };
        tweak(&mut config);
        let now = Instant::now();
        let broker = Broker::new(config, Box::new(StaticUsers::new(true, Vec::new())), now, 7);
        Self { broker, now }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.broker.handle_timeout(self.now);
    }

    fn connect(&mut self, id: &str, protocol: Protocol, f: impl FnOnce(&mut Connect)) -> (u64, ConnAck) {
        let (conn, ack, _) = self.connect_all(id, protocol, f);
        (conn, ack)
    }

    /// Connects and returns the CONNACK plus every packet that followed it.
    fn connect_all(
        &mut self,
        id: &str,
        protocol: Protocol,
        f: impl FnOnce(&mut Connect),
    ) -> (u64, ConnAck, Vec<Packet>) {
        let conn = self.broker.open(self.now);
        let mut c = Connect {
            protocol: Some(protocol),
            clean_start: true,
            client_id: id.into(),
            ..Connect::default()
        };
        f(&mut c);
        self.broker.handle_packet(self.now, conn, Packet::Connect(Box::new(c)));
        let out = self.drain(conn);
        let Some(Packet::ConnAck(ack)) = out.first().cloned() else { panic!("no CONNACK: {out:?}") };
        (conn, ack, out[1..].to_vec())
    }

    fn drain(&mut self, conn: u64) -> Vec<Packet> {
        let mut out = Vec::new();
        self.broker.poll_transmit(self.now, conn, 1000, &mut out);
        out
    }

    fn subscribe(&mut self, conn: u64, filter: &str, qos: QoS) {
        let opts = SubOptions { qos, ..SubOptions::default() };
        let s = Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(filter.into(), opts)],
        };
        self.broker.handle_packet(self.now, conn, Packet::Subscribe(s));
        let out = self.drain(conn);
        assert!(matches!(out.first(), Some(Packet::SubAck(_))), "{out:?}");
    }

    fn publish(&mut self, conn: u64, topic: &str, qos: QoS, pid: u16) {
        let p = Publish {
            qos,
            topic: topic.into(),
            packet_id: pid,
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        };
        self.broker.handle_packet(self.now, conn, Packet::Publish(p));
    }
}

fn publishes(out: &[Packet]) -> Vec<&Publish> {
    out.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn will(topic: &str, delay: Option<u32>) -> Will {
    Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        properties: Properties { will_delay_interval: delay, ..Properties::default() },
        ..Will::default()
    }
}

#[test]
fn mqtt5_3_1_3_9_will_published_after_delay_when_client_does_not_return() {
    let mut h = Harness::new(|_| {});
    let (watcher, _) = h.connect("watcher", Protocol::V5, |_| {});
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let (car, _) = h.connect("car", Protocol::V5, |c| {
        c.will = Some(will("will/car", Some(5)));
        c.properties.session_expiry_interval = Some(60);
    });
    h.broker.close(h.now, car);
    h.advance(4);
    assert!(publishes(&h.drain(watcher)).is_empty(), "will sent before its delay");
    h.advance(1);
    let out = h.drain(watcher);
    assert_eq!(publishes(&out).len(), 1);
    assert_eq!(&*publishes(&out)[0].topic, "will/car");
}

#[test]
fn mqtt5_3_1_3_9_will_not_published_when_client_reconnects_within_delay() {
    let mut h = Harness::new(|_| {});
    let (watcher, _) = h.connect("watcher", Protocol::V5, |_| {});
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let setup = |c: &mut Connect| {
        c.clean_start = false;
        c.will = Some(will("will/car", Some(5)));
        c.properties.session_expiry_interval = Some(60);
    };
    let (car, _) = h.connect("car", Protocol::V5, setup);
    h.broker.close(h.now, car);
    h.advance(3);
    let (_car2, ack) = h.connect("car", Protocol::V5, setup);
    assert!(ack.session_present);
    h.advance(10);
    assert!(publishes(&h.drain(watcher)).is_empty(), "will sent although the client came back");
}

#[test]
fn mqtt5_3_1_2_11_session_ends_at_expiry_and_will_fires_then() {
    let mut h = Harness::new(|_| {});
    let (watcher, _) = h.connect("watcher", Protocol::V5, |_| {});
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let (car, _) = h.connect("car", Protocol::V5, |c| {
        c.will = Some(will("will/car", Some(100)));
        c.properties.session_expiry_interval = Some(10);
    });
    h.broker.close(h.now, car);
    assert_eq!(h.broker.stats().sessions, 2);
    h.advance(9);
    assert_eq!(h.broker.stats().sessions, 2);
    h.advance(1);
    assert_eq!(h.broker.stats().sessions, 1, "session not ended at its expiry");
    assert_eq!(publishes(&h.drain(watcher)).len(), 1, "will must fire when the session ends");
    let (_, ack) = h.connect("car", Protocol::V5, |c| c.clean_start = false);
    assert!(!ack.session_present);
}

#[test]
fn mqtt_3_1_2_24_keep_alive_expires_after_one_and_a_half_intervals() {
    let mut h = Harness::new(|_| {});
    let (car, _) = h.connect("car", Protocol::V5, |c| c.keep_alive_secs = 10);
    h.advance(14);
    assert_eq!(h.broker.poll_transmit(h.now, car, 10, &mut Vec::new()), Transmit::Open);
    h.broker.handle_packet(h.now, car, Packet::PingReq);
    h.advance(14);
    assert_eq!(
        h.broker.poll_transmit(h.now, car, 10, &mut Vec::new()),
        Transmit::Open,
        "ping reset the clock"
    );
    h.advance(1);
    let mut out = Vec::new();
    assert_eq!(h.broker.poll_transmit(h.now, car, 10, &mut out), Transmit::Close);
    assert!(matches!(out.last(), Some(Packet::Disconnect(d)) if d.reason_code == reason::KEEP_ALIVE_TIMEOUT));
}

#[test]
fn connection_without_connect_is_closed_at_the_connect_deadline() {
    let mut h = Harness::new(|c| c.connect_timeout_secs = 3);
    let conn = h.broker.open(h.now);
    h.advance(2);
    assert_eq!(h.broker.poll_transmit(h.now, conn, 10, &mut Vec::new()), Transmit::Open);
    h.advance(1);
    assert_eq!(h.broker.poll_transmit(h.now, conn, 10, &mut Vec::new()), Transmit::Close);
}

#[test]
fn slow_consumer_drops_qos0_first_then_is_disconnected_with_0x97() {
    let mut h = Harness::new(|c| {
        c.max_queued_messages = 3;
        c.max_inflight = 1;
    });
    let (slow, _) = h.connect("slow", Protocol::V5, |_| {});
    h.subscribe(slow, "t/#", QoS::AtLeastOnce);
    let (publisher, _) = h.connect("pub", Protocol::V5, |_| {});
    // The slow client never reads: everything stays queued in the core.
    h.publish(publisher, "t/0", QoS::AtMostOnce, 0);
    h.publish(publisher, "t/1", QoS::AtLeastOnce, 1);
    h.publish(publisher, "t/2", QoS::AtLeastOnce, 2);
    h.publish(publisher, "t/3", QoS::AtLeastOnce, 3); // full: the QoS 0 message goes
    h.publish(publisher, "t/4", QoS::AtMostOnce, 0); // full of QoS 1: a QoS 0 is dropped
    let mut out = Vec::new();
    assert_eq!(h.broker.poll_transmit(h.now, slow, 0, &mut out), Transmit::Open);
    h.publish(publisher, "t/5", QoS::AtLeastOnce, 4); // full of QoS 1: disconnect
    let mut out = Vec::new();
    assert_eq!(h.broker.poll_transmit(h.now, slow, 0, &mut out), Transmit::Close);
    assert!(matches!(out.last(), Some(Packet::Disconnect(d)) if d.reason_code == reason::QUOTA_EXCEEDED));
    assert_eq!(h.broker.stats().messages_dropped, 3);
}

#[test]
fn mqtt_4_4_0_1_unacked_messages_resent_with_dup_on_resume() {
    let mut h = Harness::new(|_| {});
    let (sub, _) = h.connect("sub", Protocol::V3_1_1, |c| c.clean_start = false);
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let (publisher, _) = h.connect("pub", Protocol::V3_1_1, |_| {});
    h.publish(publisher, "t", QoS::AtLeastOnce, 1);
    h.publish(publisher, "t", QoS::ExactlyOnce, 2);
    let first = h.drain(sub);
    let ids: Vec<u16> = publishes(&first).iter().map(|p| p.packet_id).collect();
    assert_eq!(ids.len(), 2);
    // PUBREC for the QoS 2 one: it moves to the PUBREL stage.
    h.broker.handle_packet(h.now, sub, Packet::PubRec(PubResp::new(ids[1])));
    let rel = h.drain(sub);
    assert!(matches!(rel.as_slice(), [Packet::PubRel(r)] if r.packet_id == ids[1]));
    h.broker.close(h.now, sub);
    let (_, ack, out) = h.connect_all("sub", Protocol::V3_1_1, |c| c.clean_start = false);
    assert!(ack.session_present);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        matches!(&out[0], Packet::Publish(p) if p.dup && p.packet_id == ids[0] && p.qos == QoS::AtLeastOnce)
    );
    assert!(matches!(&out[1], Packet::PubRel(r) if r.packet_id == ids[1]));
}

#[test]
fn mqtt5_3_3_2_6_message_expiry_decremented_and_expired_not_sent() {
    let mut h = Harness::new(|_| {});
    let (sub, _) = h.connect("sub", Protocol::V5, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    });
    h.subscribe(sub, "t", QoS::AtLeastOnce);
    h.broker.close(h.now, sub);
    let (publisher, _) = h.connect("pub", Protocol::V5, |_| {});
    for (pid, expiry) in [(1, 10), (2, 3)] {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            packet_id: pid,
            properties: Properties { message_expiry_interval: Some(expiry), ..Properties::default() },
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        };
        h.broker.handle_packet(h.now, publisher, Packet::Publish(p));
    }
    h.advance(4);
    let (_, _, out) = h.connect_all("sub", Protocol::V5, |c| c.clean_start = false);
    let got = publishes(&out);
    assert_eq!(got.len(), 1, "the 3 s message expired");
    assert_eq!(got[0].properties.message_expiry_interval, Some(6));
}

/// The shell pulls many connections' packets into one list per round: each call's budget
/// counts only what that call adds, so a connection pulled late still gets its messages.
#[test]
fn poll_transmit_budget_counts_only_this_calls_packets() {
    let mut h = Harness::new(|_| {});
    let (a, _) = h.connect("a", Protocol::V3_1_1, |_| {});
    let (b, _) = h.connect("b", Protocol::V3_1_1, |_| {});
    let (p, _) = h.connect("p", Protocol::V3_1_1, |_| {});
    h.subscribe(a, "t", QoS::AtMostOnce);
    h.subscribe(b, "t", QoS::AtMostOnce);
    for _ in 0..3 {
        h.publish(p, "t", QoS::AtMostOnce, 0);
    }
    let mut out = Vec::new();
    h.broker.poll_transmit(h.now, a, 3, &mut out);
    assert_eq!(publishes(&out).len(), 3);
    h.broker.poll_transmit(h.now, b, 3, &mut out);
    assert_eq!(publishes(&out).len(), 6, "the second connection's budget was eaten by the first's");
}

#[test]
fn reconnecting_a_session_with_finite_expiry_leaves_no_stale_timers() {
    let mut h = Harness::new(|c| c.default_session_expiry_secs = 3600);
    let base = h.broker.timers.len();
    for _ in 0..100 {
        let (conn, _) = h.connect("cycler", Protocol::V3_1_1, |c| c.clean_start = false);
        h.broker.close(h.now, conn);
    }
    // One expiry timer for the offline session (plus each connection's CONNECT deadline,
    // which fires within connect-timeout-secs), not one per cycle.
    let expiry_timers = h.broker.timers.values().filter(|t| matches!(t, super::Timer::Expire { .. })).count();
    assert_eq!(expiry_timers, 1, "{} timers after 100 cycles (from {base})", h.broker.timers.len());
}

#[test]
fn an_idle_journal_poll_keeps_no_lag_bookkeeping() {
    let mut h = Harness::new(|_| {});
    h.broker.enable_journal(0);
    let mut out = Vec::new();
    for _ in 0..100 {
        h.broker.poll_journal(&mut out);
    }
    assert!(out.is_empty());
    assert_eq!(
        h.broker.journal.as_ref().map(|j| j.taken.len()),
        Some(0),
        "idle polls grew the lag bookkeeping"
    );
    assert_eq!(h.broker.journal_lag_bytes(), 0);
}

/// Hardening: a PUBLISH with large user properties fanned out to many subscribers used to
/// have its properties cloned per delivery (a fresh list per PUBLISH pulled, retransmitted or
/// forwarded), and each v5 subscriber's outbound topic-alias map held its own copy of the
/// topic. Both now share the message's bytes: one allocation however many deliveries.
#[test]
fn deliveries_of_one_message_share_its_user_properties_and_alias_map_topics() {
    let mut h = Harness::new(|_| {});
    let subs: Vec<u64> = (0..8)
        .map(|i| {
            let (conn, _) = h.connect(&format!("sub{i}"), Protocol::V5, |c| {
                c.properties.topic_alias_maximum = Some(8);
            });
            h.subscribe(conn, "big/#", QoS::AtLeastOnce);
            conn
        })
        .collect();
    let (publisher, _) = h.connect("pub", Protocol::V5, |_| {});
    let user: Vec<_> = (0..64).map(|i| (format!("k{i}").into(), "v".repeat(200).into())).collect();
    let p = Publish {
        qos: QoS::AtLeastOnce,
        topic: "big/topic".into(),
        packet_id: 1,
        payload: Bytes::from_static(b"x"),
        properties: Properties { user_properties: user.into(), ..Properties::default() },
        ..Publish::default()
    };
    h.broker.handle_packet(h.now, publisher, Packet::Publish(p));
    let delivered: Vec<Publish> = subs.iter().map(|&c| publishes(&h.drain(c))[0].clone()).collect();
    let first = delivered[0].properties.user_properties.as_ptr();
    for d in &delivered {
        assert_eq!(d.properties.user_properties.len(), 64);
        assert_eq!(d.properties.topic_alias, Some(1));
        assert!(
            std::ptr::eq(d.properties.user_properties.as_ptr(), first),
            "user properties copied per delivery"
        );
    }
    let alias_topic = |h: &Harness, c: u64| {
        let x = h.broker.conns[&c].extras.as_ref().expect("alias map");
        x.alias_out.keys().next().expect("one alias").as_ptr()
    };
    let topic = alias_topic(&h, subs[0]);
    for &c in &subs {
        assert!(std::ptr::eq(alias_topic(&h, c), topic), "alias map copied the topic");
    }
}

/// Hardening: a client sending PINGREQ (or QoS 1 PUBLISH) faster than its replies leave
/// could queue replies without bound in one round. The outbox is now bounded in bytes:
/// past `max-outbox-bytes` the core says it accepts no input, and the shell (which hands
/// packets only while it does) holds the rest until a pull has emptied the outbox.
#[test]
fn a_pingreq_flood_fills_the_outbox_only_to_max_outbox_bytes() {
    let budget = 4096;
    let mut h = Harness::new(|c| c.max_outbox_bytes = budget);
    let (conn, _) = h.connect("flood", Protocol::V5, |_| {});
    let mut handed = 0;
    while handed < 100_000 && h.broker.accepts_input(conn) {
        h.broker.handle_packet(h.now, conn, Packet::PingReq);
        handed += 1;
    }
    let held = h.broker.outbox_bytes(conn);
    assert!(handed < 100_000, "the core took 100,000 PINGREQ with their replies unwritten ({held} bytes)");
    // At most one reply past the budget (a PINGRESP costs its 2 bytes plus its `Packet` slot).
    assert!(held >= budget && held < budget + 1024, "outbox {held} bytes for a budget of {budget}");
    let out = h.drain(conn);
    assert_eq!(out.len(), handed, "one PINGRESP per PINGREQ");
    assert!(h.broker.accepts_input(conn), "a pulled outbox accepts input again");
    assert_eq!(h.broker.outbox_bytes(conn), 0);
}

#[test]
fn a_write_stall_gets_a_v5_client_disconnect_0x97_and_a_311_client_a_plain_close() {
    let mut h = Harness::new(|_| {});
    let (v5, _) = h.connect("stalled-v5", Protocol::V5, |_| {});
    let (v311, _) = h.connect("stalled-311", Protocol::V3_1_1, |_| {});
    for (conn, want) in [(v5, Some(reason::QUOTA_EXCEEDED)), (v311, None)] {
        h.broker.handle_write_stall(h.now, conn);
        let mut out = Vec::new();
        let t = h.broker.poll_transmit(h.now, conn, 1000, &mut out);
        assert_eq!(t, Transmit::Close);
        let got = out.iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason_code),
            _ => None,
        });
        assert_eq!(got, want, "{out:?}");
    }
}

/// Hardening: a session queue was bounded in messages only, so `max-queued-messages` of
/// 1 MiB messages held 1,000 MiB for one slow subscriber. It is bounded in bytes too now,
/// with the same policy: QoS 0 dropped first, then a connected slow consumer gets 0x97.
#[test]
fn a_session_queue_holds_at_most_max_queue_bytes_per_session() {
    let cap = 8 << 10;
    let mut h = Harness::new(|c| c.max_queue_bytes_per_session = cap);
    // A session that outlives the connection, so its queue can be read after the 0x97.
    let (sub, _) = h.connect("slow", Protocol::V5, |c| c.properties.session_expiry_interval = Some(60));
    h.subscribe(sub, "q/#", QoS::AtLeastOnce);
    let (publisher, _) = h.connect("pub", Protocol::V5, |_| {});
    let send = |h: &mut Harness, qos: QoS, pid: u16| {
        let p = Publish {
            qos,
            topic: "q/t".into(),
            packet_id: pid,
            payload: Bytes::from(vec![0u8; 1024]),
            ..Publish::default()
        };
        h.broker.handle_packet(h.now, publisher, Packet::Publish(p));
    };
    let queue = |h: &Harness| {
        let s = &h.broker.sessions[&h.broker.by_client["slow"]];
        (s.pending.len(), s.pending_bytes, s.qos0_pending)
    };
    // The subscriber pulls nothing: its queue fills with QoS 0 up to the byte cap.
    for _ in 0..20 {
        send(&mut h, QoS::AtMostOnce, 0);
    }
    let (len, bytes, qos0) = queue(&h);
    assert!(len < 20 && bytes <= cap, "{len} messages, {bytes} bytes queued for a cap of {cap} bytes");
    assert_eq!(qos0, len);
    // QoS 1 takes the QoS 0 messages' places, then finds the queue full of QoS 1.
    for pid in 1..=20 {
        send(&mut h, QoS::AtLeastOnce, pid);
    }
    let (len, bytes, qos0) = queue(&h);
    assert!(bytes <= cap && qos0 == 0, "{len} messages, {bytes} bytes, {qos0} QoS 0");
    let out = h.drain(sub);
    let code = out.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    });
    assert_eq!(code, Some(reason::QUOTA_EXCEEDED), "the slow consumer is disconnected with 0x97");
}
