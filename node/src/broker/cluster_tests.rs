//! Deterministic tests of the broker's cluster seam: the core emits route and forward
//! operations, holds SUBACK and PUBACK/PUBREC until the shell completes them, and refuses
//! with 0x80 when they fail.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::auth::StaticUsers;
use super::config::BrokerConfig;
use super::{Broker, ClusterOp, OpId, OpOutcome};
use crate::mqtt::packet::*;
use crate::mqtt::properties::Properties;
use crate::mqtt::reason;

fn broker() -> (Broker, Instant) {
    let config = BrokerConfig { sys_interval_secs: 0, ..BrokerConfig::default() };
    let now = Instant::now();
    let mut b = Broker::new(config, Box::new(StaticUsers::new(true, Vec::new())), now, 7);
    b.enable_cluster();
    (b, now)
}

fn connect(b: &mut Broker, now: Instant, id: &str, protocol: Protocol) -> u64 {
    let conn = b.open(now);
    let c =
        Connect { protocol: Some(protocol), clean_start: true, client_id: id.into(), ..Connect::default() };
    b.handle_packet(now, conn, Packet::Connect(Box::new(c)));
    assert!(drain(b, now, conn).is_empty(), "no CONNACK before the session record is fenced");
    let acquire = ops(b);
    let [(op, ClusterOp::Acquire { client_id, clean_start: true, .. })] = acquire.as_slice() else {
        panic!("{acquire:?}")
    };
    assert_eq!(&**client_id, id);
    b.complete_op(now, *op, acquired(1, false, false, Vec::new()));
    let out = drain(b, now, conn);
    assert!(matches!(out.first(), Some(Packet::ConnAck(_))), "{out:?}");
    conn
}

fn acquired(
    epoch: u64,
    present: bool,
    remote: bool,
    subs: Vec<(bytestring::ByteString, super::session::SubEntry)>,
) -> OpOutcome {
    OpOutcome::Acquired(Box::new(super::Acquired { epoch, generation: 1, present, remote, subs }))
}

fn drain(b: &mut Broker, now: Instant, conn: u64) -> Vec<Packet> {
    let mut out = Vec::new();
    b.poll_transmit(now, conn, 1000, &mut out);
    out
}

fn ops(b: &mut Broker) -> Vec<(OpId, ClusterOp)> {
    std::iter::from_fn(|| b.poll_op()).collect()
}

/// Subscribes with Retain Handling 2 (no retained read); see the retained test for reads.
fn subscribe(b: &mut Broker, now: Instant, conn: u64, pid: u16, filters: &[&str]) {
    let opts = SubOptions { qos: QoS::AtLeastOnce, retain_handling: 2, ..SubOptions::default() };
    let filters = filters.iter().map(|f| ((*f).into(), opts)).collect();
    b.handle_packet(
        now,
        conn,
        Packet::Subscribe(Subscribe { packet_id: pid, properties: Properties::default(), filters }),
    );
}

fn publish(b: &mut Broker, now: Instant, conn: u64, topic: &str, qos: QoS, pid: u16) {
    let p = Publish {
        qos,
        packet_id: pid,
        topic: topic.into(),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    b.handle_packet(now, conn, Packet::Publish(p));
}

#[test]
fn suback_waits_for_the_route_row_and_a_second_subscriber_waits_for_the_same_row() {
    let (mut b, now) = broker();
    let c1 = connect(&mut b, now, "a", Protocol::V5);
    let c2 = connect(&mut b, now, "b", Protocol::V5);
    subscribe(&mut b, now, c1, 1, &["t/+"]);
    subscribe(&mut b, now, c2, 2, &["t/+"]);
    let emitted = ops(&mut b);
    assert_eq!(emitted.len(), 1, "one row per filter per node: {emitted:?}");
    let (id, ClusterOp::RouteAdd { filter }) = &emitted[0] else { panic!("{emitted:?}") };
    assert_eq!(&**filter, "t/+");
    assert!(drain(&mut b, now, c1).is_empty(), "SUBACK before the row is committed");
    assert!(drain(&mut b, now, c2).is_empty(), "the second subscriber waits for the same row");
    b.complete_op(now, *id, OpOutcome::Done { nodes: 0 });
    for c in [c1, c2] {
        let out = drain(&mut b, now, c);
        let Some(Packet::SubAck(ack)) = out.first() else { panic!("{out:?}") };
        assert_eq!(ack.reason_codes, vec![1]);
    }
    // The last unsubscribe removes the row; the first does not.
    b.handle_packet(
        now,
        c1,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            properties: Properties::default(),
            filters: vec!["t/+".into()],
        }),
    );
    assert!(ops(&mut b).is_empty());
    b.handle_packet(
        now,
        c2,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            properties: Properties::default(),
            filters: vec!["t/+".into()],
        }),
    );
    assert!(matches!(ops(&mut b).as_slice(), [(_, ClusterOp::RouteRemove { .. })]));
}

#[test]
fn a_failed_route_refuses_the_filter_with_0x80_and_removes_the_subscription() {
    let (mut b, now) = broker();
    let c1 = connect(&mut b, now, "a", Protocol::V5);
    subscribe(&mut b, now, c1, 1, &["ok", "bad"]);
    let emitted = ops(&mut b);
    assert_eq!(emitted.len(), 2);
    b.complete_op(now, emitted[1].0, OpOutcome::Failed);
    assert!(drain(&mut b, now, c1).is_empty(), "still waiting for the first filter");
    b.complete_op(now, emitted[0].0, OpOutcome::Done { nodes: 0 });
    let out = drain(&mut b, now, c1);
    let Some(Packet::SubAck(ack)) = out.first() else { panic!("{out:?}") };
    assert_eq!(ack.reason_codes, vec![1, reason::UNSPECIFIED_ERROR]);
    assert_eq!(b.subscription_count(), 1);
    assert!(matches!(ops(&mut b).as_slice(), [(_, ClusterOp::RouteRemove { filter })] if &**filter == "bad"));
}

#[test]
fn puback_waits_for_the_forward_and_keeps_the_order_of_packets() {
    let (mut b, now) = broker();
    let c1 = connect(&mut b, now, "p", Protocol::V5);
    publish(&mut b, now, c1, "x/y", QoS::AtLeastOnce, 1);
    publish(&mut b, now, c1, "x/z", QoS::AtMostOnce, 0);
    b.handle_packet(now, c1, Packet::PingReq);
    let emitted = ops(&mut b);
    assert_eq!(emitted.len(), 2, "QoS 0 is forwarded too");
    assert!(drain(&mut b, now, c1).is_empty(), "PUBACK and the PINGRESP behind it wait");
    b.complete_op(now, emitted[1].0, OpOutcome::Failed);
    assert_eq!(b.forwards_failed(), 1, "a failed QoS 0 forward is counted");
    b.complete_op(now, emitted[0].0, OpOutcome::Done { nodes: 2 });
    let out = drain(&mut b, now, c1);
    assert!(
        matches!(out.as_slice(), [Packet::PubAck(r), Packet::PingResp] if r.reason_code == reason::SUCCESS),
        "a remote subscriber makes it a match: {out:?}"
    );
}

#[test]
fn a_failed_forward_refuses_v5_with_0x80_and_closes_3_1_1() {
    let (mut b, now) = broker();
    let v5 = connect(&mut b, now, "p5", Protocol::V5);
    let v3 = connect(&mut b, now, "p3", Protocol::V3_1_1);
    publish(&mut b, now, v5, "x", QoS::ExactlyOnce, 9);
    publish(&mut b, now, v3, "x", QoS::AtLeastOnce, 9);
    let emitted = ops(&mut b);
    for (id, _) in &emitted {
        b.complete_op(now, *id, OpOutcome::Failed);
    }
    let out = drain(&mut b, now, v5);
    assert!(
        matches!(out.as_slice(), [Packet::PubRec(r)] if r.reason_code == reason::UNSPECIFIED_ERROR),
        "{out:?}"
    );
    // The refused QoS 2 flow ended: the same packet id is a new message, routed again.
    publish(&mut b, now, v5, "x", QoS::ExactlyOnce, 9);
    let after = ops(&mut b);
    assert_eq!(after.iter().filter(|(_, o)| matches!(o, ClusterOp::Forward { .. })).count(), 1);
    assert!(
        after.iter().any(|(_, o)| matches!(o, ClusterOp::Release { delete: true, epoch: 1, .. })),
        "the closed 3.1.1 session's record is deleted: {after:?}"
    );
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, v3, 100, &mut out), super::Transmit::Close);
    assert!(out.is_empty(), "3.1.1 cannot hear a refusal: closed without PUBACK");
}

#[test]
fn forwarded_messages_reach_local_subscribers_only() {
    let (mut b, now) = broker();
    let c1 = connect(&mut b, now, "s", Protocol::V5);
    subscribe(&mut b, now, c1, 1, &["a/#"]);
    for (id, _) in ops(&mut b) {
        b.complete_op(now, id, OpOutcome::Done { nodes: 0 });
    }
    drain(&mut b, now, c1);
    let msg = super::message::Message::new(
        now,
        "a/b".into(),
        Bytes::from_static(b"hi"),
        QoS::AtMostOnce,
        false,
        Properties::default(),
        None,
    );
    assert_eq!(b.deliver_forwarded(now, Arc::new(msg), true, &[]), 1);
    assert!(ops(&mut b).is_empty(), "a forwarded message is not forwarded again");
    let out = drain(&mut b, now, c1);
    assert!(matches!(out.as_slice(), [Packet::Publish(p)] if &*p.topic == "a/b"), "{out:?}");
}

/// Sends CONNECT and returns the connection and its `Acquire` op (not completed).
fn connect_pending(b: &mut Broker, now: Instant, id: &str, clean: bool, expiry: u32) -> (u64, OpId) {
    let conn = b.open(now);
    let mut c = Connect {
        protocol: Some(Protocol::V5),
        clean_start: clean,
        client_id: id.into(),
        ..Connect::default()
    };
    c.properties.session_expiry_interval = Some(expiry);
    b.handle_packet(now, conn, Packet::Connect(Box::new(c)));
    let acquire = ops(b);
    let [(op, ClusterOp::Acquire { .. })] = acquire.as_slice() else { panic!("{acquire:?}") };
    (conn, *op)
}

#[test]
fn a_connect_whose_record_cannot_be_fenced_is_refused_with_0x88() {
    let (mut b, now) = broker();
    let (conn, op) = connect_pending(&mut b, now, "c", true, 0);
    b.complete_op(now, op, OpOutcome::Failed);
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, conn, 10, &mut out), super::Transmit::Close);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(a)] if a.reason_code == reason::SERVER_UNAVAILABLE),
        "{out:?}"
    );
}

#[test]
fn packets_sent_before_connack_are_handled_after_it() {
    let (mut b, now) = broker();
    let (conn, op) = connect_pending(&mut b, now, "c", true, 0);
    subscribe(&mut b, now, conn, 5, &["early/#"]);
    assert!(ops(&mut b).is_empty(), "nothing happens for the SUBSCRIBE before CONNACK");
    b.complete_op(now, op, acquired(1, false, false, Vec::new()));
    let route = ops(&mut b);
    assert!(matches!(route.as_slice(), [(_, ClusterOp::RouteAdd { .. })]), "{route:?}");
    b.complete_op(now, route[0].0, OpOutcome::Done { nodes: 0 });
    let out = drain(&mut b, now, conn);
    assert!(matches!(out.as_slice(), [Packet::ConnAck(_), Packet::SubAck(s)] if s.packet_id == 5), "{out:?}");
}

#[test]
fn a_persistent_subscription_waits_for_its_session_row_too() {
    let (mut b, now) = broker();
    let (conn, op) = connect_pending(&mut b, now, "car", false, 3600);
    b.complete_op(now, op, acquired(4, false, false, Vec::new()));
    drain(&mut b, now, conn);
    subscribe(&mut b, now, conn, 1, &["cmd/car"]);
    let emitted = ops(&mut b);
    assert!(
        matches!(
            emitted.as_slice(),
            [(_, ClusterOp::RouteAdd { .. }), (_, ClusterOp::SubRow { epoch: 4, entry: Some(_), .. })]
        ),
        "{emitted:?}"
    );
    b.complete_op(now, emitted[0].0, OpOutcome::Done { nodes: 0 });
    assert!(drain(&mut b, now, conn).is_empty(), "the session row is not committed yet");
    b.complete_op(now, emitted[1].0, OpOutcome::Done { nodes: 0 });
    assert!(matches!(drain(&mut b, now, conn).as_slice(), [Packet::SubAck(_)]));
    // A disconnect marks the record offline, guarded by the epoch.
    b.close(now, conn);
    let emitted = ops(&mut b);
    assert!(
        matches!(emitted.as_slice(), [(_, ClusterOp::Release { epoch: 4, delete: false, .. })]),
        "{emitted:?}"
    );
}

#[test]
fn a_kick_with_a_newer_epoch_closes_with_0x8e_and_forgets_the_session() {
    let (mut b, now) = broker();
    let (conn, op) = connect_pending(&mut b, now, "car", false, 3600);
    b.complete_op(now, op, acquired(4, false, false, Vec::new()));
    drain(&mut b, now, conn);
    subscribe(&mut b, now, conn, 1, &["cmd/car"]);
    for (id, _) in ops(&mut b) {
        b.complete_op(now, id, OpOutcome::Done { nodes: 0 });
    }
    drain(&mut b, now, conn);
    assert!(!b.kick(now, "car", 4), "the same epoch is this connection's own");
    assert!(b.kick(now, "car", 5));
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, conn, 10, &mut out), super::Transmit::Close);
    assert!(
        matches!(out.as_slice(), [Packet::Disconnect(d)] if d.reason_code == reason::SESSION_TAKEN_OVER),
        "{out:?}"
    );
    assert_eq!(b.subscription_count(), 0);
    let emitted = ops(&mut b);
    assert!(
        emitted.iter().any(|(_, o)| matches!(o, ClusterOp::RouteRemove { .. }))
            && !emitted
                .iter()
                .any(|(_, o)| matches!(o, ClusterOp::Release { .. } | ClusterOp::SubRow { .. })),
        "the record belongs to the new owner: only this node's route row goes: {emitted:?}"
    );
    assert!(!b.kick(now, "car", 6), "nothing left here");
}

#[test]
fn a_session_held_on_another_node_continues_here_with_its_subscriptions() {
    let (mut b, now) = broker();
    let (conn, op) = connect_pending(&mut b, now, "car", false, 3600);
    let entry = super::session::SubEntry {
        opts: SubOptions { qos: QoS::AtLeastOnce, ..SubOptions::default() },
        sub_id: None,
    };
    b.complete_op(now, op, acquired(9, true, true, vec![("cmd/car".into(), entry)]));
    let out = drain(&mut b, now, conn);
    assert!(matches!(out.first(), Some(Packet::ConnAck(a)) if a.session_present), "{out:?}");
    assert_eq!(b.subscription_count(), 1);
    assert!(
        matches!(ops(&mut b).as_slice(), [(_, ClusterOp::RouteAdd { filter })] if &**filter == "cmd/car")
    );
    let msg = super::message::Message::new(
        now,
        "cmd/car".into(),
        Bytes::from_static(b"go"),
        QoS::AtLeastOnce,
        false,
        Properties::default(),
        None,
    );
    assert_eq!(b.deliver_forwarded(now, Arc::new(msg), true, &[]), 1);
}

#[test]
fn an_isolated_node_closes_its_clients_with_0x9c_and_refuses_connect_with_0x88() {
    let (mut b, now) = broker();
    let c1 = connect(&mut b, now, "a", Protocol::V5);
    b.set_isolated(now, true);
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, c1, 10, &mut out), super::Transmit::Close);
    assert!(
        matches!(out.as_slice(), [Packet::Disconnect(d)] if d.reason_code == reason::USE_ANOTHER_SERVER),
        "{out:?}"
    );
    let conn = b.open(now);
    let c = Connect {
        protocol: Some(Protocol::V5),
        clean_start: true,
        client_id: "b".into(),
        ..Connect::default()
    };
    b.handle_packet(now, conn, Packet::Connect(Box::new(c)));
    let mut out = Vec::new();
    assert_eq!(b.poll_transmit(now, conn, 10, &mut out), super::Transmit::Close);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(a)] if a.reason_code == reason::SERVER_UNAVAILABLE),
        "{out:?}"
    );
    b.set_isolated(now, false);
    let released = ops(&mut b);
    assert!(matches!(released.as_slice(), [(_, ClusterOp::Release { delete: true, .. })]), "{released:?}");
    connect(&mut b, now, "b", Protocol::V5);
}

#[test]
fn retained_messages_are_written_before_puback_and_read_for_a_new_subscription() {
    let (mut b, now) = broker();
    let p = connect(&mut b, now, "p", Protocol::V5);
    let pubp = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 3,
        retain: true,
        topic: "car/1/state".into(),
        payload: Bytes::from_static(b"parked"),
        ..Publish::default()
    };
    b.handle_packet(now, p, Packet::Publish(pubp));
    let emitted = ops(&mut b);
    let retain =
        emitted.iter().find(|(_, o)| matches!(o, ClusterOp::Retain { .. })).expect("a retained write");
    assert_eq!(b.retained_count(), 0, "a cluster node keeps no retained copy of its own");
    for (id, o) in &emitted {
        if !matches!(o, ClusterOp::Retain { .. }) {
            b.complete_op(now, *id, OpOutcome::Done { nodes: 0 });
        }
    }
    assert!(drain(&mut b, now, p).is_empty(), "PUBACK waits for the retained write");
    b.complete_op(now, retain.0, OpOutcome::Done { nodes: 0 });
    assert!(matches!(drain(&mut b, now, p).as_slice(), [Packet::PubAck(_)]));

    let s = connect(&mut b, now, "s", Protocol::V5);
    let opts = SubOptions { qos: QoS::AtLeastOnce, ..SubOptions::default() };
    let sub = Subscribe {
        packet_id: 8,
        properties: Properties::default(),
        filters: vec![("car/+/state".into(), opts)],
    };
    b.handle_packet(now, s, Packet::Subscribe(sub));
    let emitted = ops(&mut b);
    let read = emitted.iter().find(|(_, o)| matches!(o, ClusterOp::RetainedRead { .. })).expect("a read").0;
    let route = emitted.iter().find(|(_, o)| matches!(o, ClusterOp::RouteAdd { .. })).expect("a route").0;
    b.complete_op(now, route, OpOutcome::Done { nodes: 0 });
    let stored = super::message::Message::new(
        now,
        "car/1/state".into(),
        Bytes::from_static(b"parked"),
        QoS::AtLeastOnce,
        true,
        Properties::default(),
        None,
    );
    b.complete_op(now, read, OpOutcome::Retained(vec![Arc::new(stored)]));
    let out = drain(&mut b, now, s);
    assert!(
        matches!(out.as_slice(), [Packet::SubAck(_), Packet::Publish(m)] if m.retain && &*m.topic == "car/1/state"),
        "SUBACK, then the retained message: {out:?}"
    );
    // A failed read refuses the filter: never a stale or missing retained answer.
    let sub = Subscribe {
        packet_id: 9,
        properties: Properties::default(),
        filters: vec![("other/#".into(), opts)],
    };
    b.handle_packet(now, s, Packet::Subscribe(sub));
    for (id, o) in ops(&mut b) {
        let outcome = if matches!(o, ClusterOp::RetainedRead { .. }) {
            OpOutcome::Failed
        } else {
            OpOutcome::Done { nodes: 0 }
        };
        b.complete_op(now, id, outcome);
    }
    let out = drain(&mut b, now, s);
    assert!(
        matches!(out.as_slice(), [Packet::SubAck(a)] if a.reason_codes == vec![reason::UNSPECIFIED_ERROR]),
        "{out:?}"
    );
}

#[test]
fn a_session_last_held_here_continues_with_its_queue() {
    let (mut b, now) = broker();
    let (conn, op) = connect_pending(&mut b, now, "car", false, 3600);
    b.complete_op(now, op, acquired(1, false, false, Vec::new()));
    drain(&mut b, now, conn);
    subscribe(&mut b, now, conn, 1, &["cmd/car"]);
    for (id, _) in ops(&mut b) {
        b.complete_op(now, id, OpOutcome::Done { nodes: 0 });
    }
    b.close(now, conn);
    ops(&mut b);
    let msg = super::message::Message::new(
        now,
        "cmd/car".into(),
        Bytes::from_static(b"queued"),
        QoS::AtLeastOnce,
        false,
        Properties::default(),
        None,
    );
    assert_eq!(b.deliver_forwarded(now, Arc::new(msg), true, &[]), 1, "queued for the offline session");
    // Last held by this node (an earlier incarnation, or this one): the copy here continues.
    let (conn, op) = connect_pending(&mut b, now, "car", false, 3600);
    b.complete_op(now, op, acquired(2, true, false, Vec::new()));
    let out = drain(&mut b, now, conn);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(a), Packet::Publish(p)] if a.session_present && &p.payload[..] == b"queued"),
        "{out:?}"
    );
}

fn message(now: Instant, topic: &str, qos: QoS) -> super::message::Message {
    super::message::Message::new(
        now,
        topic.into(),
        Bytes::from_static(b"m"),
        qos,
        false,
        Properties::default(),
        None,
    )
}

fn publishes(out: &[Packet]) -> usize {
    out.iter().filter(|p| matches!(p, Packet::Publish(_))).count()
}

#[test]
fn shared_members_get_messages_only_where_the_cluster_picks() {
    let (mut b, now) = broker();
    let (m1, m2) = (connect(&mut b, now, "m1", Protocol::V5), connect(&mut b, now, "m2", Protocol::V5));
    subscribe(&mut b, now, m1, 1, &["$share/g/s/+"]);
    subscribe(&mut b, now, m2, 1, &["$share/g/s/+"]);
    let emitted = ops(&mut b);
    let [(id, ClusterOp::RouteAdd { filter })] = emitted.as_slice() else { panic!("{emitted:?}") };
    assert_eq!(&**filter, "$share/g/s/+", "the group's row, not a node row for s/+");
    b.complete_op(now, *id, OpOutcome::Done { nodes: 0 });
    drain(&mut b, now, m1);
    drain(&mut b, now, m2);
    // A local publish is not served to the group here: the forward picks the node.
    let p = connect(&mut b, now, "p", Protocol::V5);
    publish(&mut b, now, p, "s/x", QoS::AtMostOnce, 0);
    let emitted = ops(&mut b);
    let [(_, ClusterOp::Forward { share: None, .. })] = emitted.as_slice() else { panic!("{emitted:?}") };
    assert_eq!(publishes(&drain(&mut b, now, m1)) + publishes(&drain(&mut b, now, m2)), 0);
    // Picked here (or forwarded here for the group): one member gets it, round robin.
    let shares = [("g".into(), "s/+".into())];
    for _ in 0..2 {
        let msg = Arc::new(message(now, "s/x", QoS::AtMostOnce));
        assert_eq!(b.deliver_forwarded(now, msg, false, &shares), 1);
    }
    assert_eq!((publishes(&drain(&mut b, now, m1)), publishes(&drain(&mut b, now, m2))), (1, 1));
    // A plain forward (a node row matched) does not reach the group.
    let msg = Arc::new(message(now, "s/x", QoS::AtMostOnce));
    assert_eq!(b.deliver_forwarded(now, msg, true, &[]), 0);
    // Another group's name or filter is not this group.
    let msg = Arc::new(message(now, "s/x", QoS::AtMostOnce));
    assert_eq!(
        b.deliver_forwarded(now, msg, false, &[("h".into(), "s/+".into()), ("g".into(), "s/#".into())]),
        0
    );
}

#[test]
fn a_shared_message_left_unacknowledged_goes_to_another_node_when_no_member_here_is_connected() {
    let (mut b, now) = broker();
    let m = connect(&mut b, now, "m", Protocol::V5);
    subscribe(&mut b, now, m, 1, &["$share/g/s/+"]);
    for (id, _) in ops(&mut b) {
        b.complete_op(now, id, OpOutcome::Done { nodes: 0 });
    }
    drain(&mut b, now, m);
    let msg = Arc::new(message(now, "s/x", QoS::AtLeastOnce));
    assert_eq!(b.deliver_forwarded(now, msg, false, &[("g".into(), "s/+".into())]), 1);
    assert_eq!(publishes(&drain(&mut b, now, m)), 1, "in flight, never acknowledged");
    b.handle_packet(now, m, Packet::Disconnect(Disconnect::default()));
    let emitted = ops(&mut b);
    let forward = emitted.iter().find_map(|(_, op)| match op {
        ClusterOp::Forward { msg, share: Some(share), .. } => Some((msg.topic.to_string(), share.clone())),
        _ => None,
    });
    assert_eq!(forward, Some(("s/x".into(), ("g".into(), "s/+".into()))), "{emitted:?}");
}
