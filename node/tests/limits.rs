//! Configured limits on what one client can make the broker hold, over real sockets: user
//! properties per packet, topic aliases towards a client, filters per SUBSCRIBE, the
//! Response Information length, and the session expiry of 3.1.1 persistent sessions.

mod common;

use std::time::Duration;

use bytestring::ByteString;
use common::TestBroker;
use common::raw::{Raw, connect_packet};
use node::mqtt::packet::{Packet, Protocol, Publish, QoS, SubOptions, Will};
use node::mqtt::properties::Properties;
use node::mqtt::reason;

fn user_props(n: usize, value_len: usize) -> Vec<(ByteString, ByteString)> {
    (0..n).map(|i| (ByteString::from(format!("k{i}")), ByteString::from("v".repeat(value_len)))).collect()
}

fn publish(topic: &str, qos: QoS, packet_id: u16, properties: Properties) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        qos,
        packet_id,
        payload: bytes::Bytes::from_static(b"x"),
        properties,
        ..Publish::default()
    })
}

fn opts(qos: QoS) -> SubOptions {
    SubOptions { qos, ..SubOptions::default() }
}

#[tokio::test]
async fn publish_with_more_user_properties_than_max_user_properties_gets_disconnect_0x95() {
    let broker = TestBroker::start_with(|c| c.broker.max_user_properties = 8).await;
    let mut raw = Raw::connect(broker.addr(), Protocol::V5, "up-count").await;
    // At the limit: accepted.
    let at_limit = Properties { user_properties: user_props(8, 1).into(), ..Properties::default() };
    raw.send(publish("up/t", QoS::AtLeastOnce, 1, at_limit)).await;
    let ack = raw.expect("PUBACK").await;
    assert!(matches!(&ack, Packet::PubAck(r) if r.packet_id == 1 && r.reason_code < 0x80), "{ack:?}");
    let over = Properties { user_properties: user_props(9, 1).into(), ..Properties::default() };
    raw.send(publish("up/t", QoS::AtLeastOnce, 2, over)).await;
    raw.expect_disconnect(reason::PACKET_TOO_LARGE).await;
}

#[tokio::test]
async fn user_properties_over_max_user_property_bytes_get_disconnect_0x95() {
    let broker = TestBroker::start_with(|c| c.broker.max_user_property_bytes = 1000).await;
    let mut raw = Raw::connect(broker.addr(), Protocol::V5, "up-bytes").await;
    // Two properties of 2 + 600 bytes each: 1204 bytes, over 1000.
    let over = Properties { user_properties: user_props(2, 600).into(), ..Properties::default() };
    raw.send(publish("up/t", QoS::AtMostOnce, 0, over)).await;
    raw.expect_disconnect(reason::PACKET_TOO_LARGE).await;
}

#[tokio::test]
async fn connect_whose_will_carries_too_many_user_properties_is_refused_with_connack_0x95() {
    let broker = TestBroker::start_with(|c| c.broker.max_user_properties = 4).await;
    let mut connect = connect_packet(Protocol::V5, "up-will");
    connect.properties.user_properties = user_props(2, 1).into();
    connect.will = Some(Will {
        topic: "up/will".into(),
        payload: bytes::Bytes::from_static(b"w"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties { user_properties: user_props(3, 1).into(), ..Properties::default() },
    });
    let (mut raw, ack) = Raw::connect_with(broker.addr(), connect).await;
    assert_eq!(ack.reason_code, reason::PACKET_TOO_LARGE, "{ack:?}");
    raw.expect_closed().await;
}

#[tokio::test]
async fn topic_aliases_towards_a_client_are_capped_by_topic_alias_out_max() {
    let broker = TestBroker::start_with(|c| c.broker.topic_alias_out_max = 4).await;
    let mut connect = connect_packet(Protocol::V5, "alias-cap");
    connect.properties.topic_alias_maximum = Some(1000);
    let (mut sub, _) = Raw::connect_with(broker.addr(), connect).await;
    sub.subscribe(1, &[("ac/#", opts(QoS::AtMostOnce))]).await;
    let mut publ = Raw::connect(broker.addr(), Protocol::V5, "alias-cap-pub").await;
    for i in 0..20 {
        publ.send(publish(&format!("ac/{i}"), QoS::AtMostOnce, 0, Properties::default())).await;
    }
    let mut aliased = 0;
    for i in 0..20 {
        let p = sub.expect_publish().await;
        if let Some(alias) = p.properties.topic_alias {
            assert!(alias <= 4, "alias {alias} beyond topic-alias-out-max = 4");
            aliased += 1;
        }
        assert_eq!(&*p.topic, format!("ac/{i}"), "a topic without an alias is sent in full");
    }
    assert_eq!(aliased, 4, "the first 4 topics get aliases, the rest none");
}

#[tokio::test]
async fn subscribe_with_more_filters_than_max_filters_per_subscribe_gets_disconnect_0x97() {
    let broker = TestBroker::start_with(|c| c.broker.max_filters_per_subscribe = 10).await;
    let mut raw = Raw::connect(broker.addr(), Protocol::V5, "many-filters").await;
    let filters: Vec<String> = (0..10).map(|i| format!("mf/{i}")).collect();
    let ten: Vec<(&str, SubOptions)> = filters.iter().map(|f| (f.as_str(), opts(QoS::AtMostOnce))).collect();
    let ack = raw.subscribe(1, &ten).await;
    assert_eq!(ack.reason_codes, vec![0; 10]);
    let mut eleven = ten.clone();
    eleven.push(("mf/10", opts(QoS::AtMostOnce)));
    let filters = eleven.iter().map(|(f, o)| ((*f).into(), *o)).collect();
    raw.send(Packet::Subscribe(node::mqtt::packet::Subscribe {
        packet_id: 2,
        properties: Properties::default(),
        filters,
    }))
    .await;
    raw.expect_disconnect(reason::QUOTA_EXCEEDED).await;
}

#[tokio::test]
async fn response_information_is_left_out_when_prefix_and_client_id_exceed_65535_bytes() {
    let broker = TestBroker::start().await;
    // "response/" (9 bytes) + 65,530 bytes does not fit a UTF-8 string's u16 length.
    let client_id = "c".repeat(65_530);
    let mut connect = connect_packet(Protocol::V5, &client_id);
    connect.properties.request_response_information = Some(1);
    let (mut raw, ack) = Raw::connect_with(broker.addr(), connect).await;
    assert_eq!(ack.reason_code, reason::SUCCESS, "{ack:?}");
    assert_eq!(ack.properties.response_information, None);
    // The connection works: the CONNACK was well formed and the broker still answers.
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.expect("PINGRESP").await, Packet::PingResp);
    // A short client id still gets it.
    let mut connect = connect_packet(Protocol::V5, "short");
    connect.properties.request_response_information = Some(1);
    let (_raw, ack) = Raw::connect_with(broker.addr(), connect).await;
    assert_eq!(ack.properties.response_information.as_deref(), Some("response/short"));
}

#[tokio::test]
async fn a_311_persistent_session_expires_after_default_session_expiry_secs() {
    let broker = TestBroker::start_with(|c| c.broker.default_session_expiry_secs = 1).await;
    let mut connect = connect_packet(Protocol::V3_1_1, "exp-311");
    connect.clean_start = false;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), connect.clone()).await;
    assert!(!ack.session_present);
    raw.subscribe(1, &[("exp/t", opts(QoS::AtLeastOnce))]).await;
    raw.send(Packet::Disconnect(Default::default())).await;
    raw.expect_closed().await;
    // Within the expiry the session is there.
    let (mut raw, ack) = Raw::connect_with(broker.addr(), connect.clone()).await;
    assert!(ack.session_present, "session gone before its expiry");
    raw.send(Packet::Disconnect(Default::default())).await;
    raw.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_raw, ack) = Raw::connect_with(broker.addr(), connect).await;
    assert!(!ack.session_present, "a 3.1.1 persistent session outlived default-session-expiry-secs");
}

#[tokio::test]
async fn sockets_waiting_for_connect_count_toward_max_connections() {
    let broker = TestBroker::start_with(|c| c.broker.max_connections = 4).await;
    // Four sockets that never send CONNECT hold every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(broker.addr()).await.expect("connect"));
    }
    // A fifth socket is closed before it gets a CONNACK.
    let mut fifth = Raw::open(broker.addr(), Protocol::V5).await;
    fifth.send(Packet::Connect(Box::new(connect_packet(Protocol::V5, "fifth")))).await;
    fifth.expect_closed().await;
    // Once they are gone, clients connect again.
    drop(idle);
    let mut ok = None;
    for _ in 0..50 {
        // The broker may not have seen the idle sockets close yet: retry until it has.
        let mut raw = Raw::open(broker.addr(), Protocol::V5).await;
        raw.send(Packet::Connect(Box::new(connect_packet(Protocol::V5, "after")))).await;
        if let Some(Packet::ConnAck(ack)) = raw.recv().await
            && ack.reason_code == reason::SUCCESS
        {
            ok = Some(raw);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok.is_some(), "no client could connect after the idle sockets closed");
}

#[tokio::test]
async fn mqtt5_3_3_4_7_qos1_beyond_receive_maximum_while_unacknowledged_gets_disconnect_0x93() {
    let broker = TestBroker::start_with(|c| c.broker.max_inflight = 2).await;
    let mut raw = Raw::connect(broker.addr(), Protocol::V5, "rm-qos1").await;
    // Three retained QoS 1 messages in one write: each is journaled, so the broker reads all
    // three before any PUBACK can leave (PUBACK waits for the disk), and the third is one
    // more unacknowledged QoS 1 message than the Receive Maximum of 2 allows.
    let mut bytes = bytes::BytesMut::new();
    for id in 1..=3u16 {
        let mut p = Publish {
            topic: format!("rm/{id}").into(),
            qos: QoS::AtLeastOnce,
            packet_id: id,
            retain: true,
            ..Publish::default()
        };
        p.payload = bytes::Bytes::from_static(b"x");
        node::mqtt::codec::encode(&Packet::Publish(p), Protocol::V5, &mut bytes);
    }
    tokio::io::AsyncWriteExt::write_all(&mut raw.stream, &bytes).await.expect("write");
    loop {
        match raw.expect("DISCONNECT 0x93").await {
            Packet::PubAck(a) => assert!(a.packet_id < 3, "the third QoS 1 message was accepted: {a:?}"),
            Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, reason::RECEIVE_MAXIMUM_EXCEEDED, "{d:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    raw.expect_closed().await;
}

#[tokio::test]
async fn retained_messages_beyond_max_queued_messages_all_reach_a_new_qos1_subscription() {
    let broker = TestBroker::start_with(|c| c.broker.max_queued_messages = 50).await;
    let mut publ = Raw::connect(broker.addr(), Protocol::V5, "ret-many-pub").await;
    for id in 1..=200u16 {
        let mut p = Publish {
            topic: format!("rm/{id}").into(),
            qos: QoS::AtLeastOnce,
            packet_id: id,
            retain: true,
            ..Publish::default()
        };
        p.payload = bytes::Bytes::from_static(b"r");
        publ.send(Packet::Publish(p)).await;
        assert!(matches!(publ.expect("PUBACK").await, Packet::PubAck(_)));
    }
    // 200 retained QoS 1 matches, a queue of 50: the subscriber gets them all, in turn,
    // instead of being disconnected for a full queue.
    let mut sub = Raw::connect(broker.addr(), Protocol::V5, "ret-many-sub").await;
    sub.subscribe(1, &[("rm/#", opts(QoS::AtLeastOnce))]).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 200 {
        match sub.expect("retained PUBLISH").await {
            Packet::Publish(p) => {
                assert!(p.retain);
                seen.insert(p.topic.to_string());
                sub.send(Packet::PubAck(node::mqtt::packet::PubResp::new(p.packet_id))).await;
            }
            other => panic!("after {} retained messages: {other:?}", seen.len()),
        }
    }
}

/// The timer field (`tr`) of the TCP socket with local port `local` and remote port `remote`
/// in /proc/net/tcp: 2 is the keepalive timer, 0 none.
fn tcp_timer(local: u16, remote: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| a.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        (port(f[1])? == local && port(f[2])? == remote).then(|| u8::from_str_radix(&f[5][..2], 16).ok())?
    })
}

#[tokio::test]
async fn client_sockets_get_tcp_keepalive_so_a_silent_dead_peer_is_found() {
    let broker = TestBroker::start().await;
    // A 3.1.1 client asking for no keep alive at all.
    let mut connect = connect_packet(Protocol::V3_1_1, "no-keep-alive");
    connect.keep_alive_secs = 0;
    let (raw, _) = Raw::connect_with(broker.addr(), connect).await;
    let client_port = raw.stream.local_addr().expect("addr").port();
    let timer = tcp_timer(broker.port(), client_port);
    assert_eq!(timer, Some(2), "the broker's socket for the client has no keepalive timer");
}

#[tokio::test]
async fn mqtt5_3_2_2_21_a_client_asking_no_keep_alive_gets_default_keep_alive_secs() {
    let broker = TestBroker::start_with(|c| c.broker.default_keep_alive_secs = 1).await;
    let mut connect = connect_packet(Protocol::V5, "ka-zero");
    connect.keep_alive_secs = 0;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), connect).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1), "{ack:?}");
    // Silent past 1.5 x the keep alive: closed with 0x8D.
    raw.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
}

#[tokio::test]
async fn a_connect_that_would_create_more_than_max_sessions_gets_connack_0x97() {
    let broker = TestBroker::start_with(|c| c.broker.max_sessions = 2).await;
    for id in ["ms-1", "ms-2"] {
        let mut connect = connect_packet(Protocol::V5, id);
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(600);
        let (mut raw, ack) = Raw::connect_with(broker.addr(), connect).await;
        assert_eq!(ack.reason_code, reason::SUCCESS);
        raw.send(Packet::Disconnect(Default::default())).await;
        raw.expect_closed().await;
    }
    // Two offline sessions held: a third client id is refused, a known one resumes.
    let (_, ack) = Raw::connect_with(broker.addr(), connect_packet(Protocol::V5, "ms-3")).await;
    assert_eq!(ack.reason_code, reason::QUOTA_EXCEEDED, "{ack:?}");
    let mut again = connect_packet(Protocol::V5, "ms-1");
    again.clean_start = false;
    let (_, ack) = Raw::connect_with(broker.addr(), again).await;
    assert_eq!(ack.reason_code, reason::SUCCESS, "{ack:?}");
    assert!(ack.session_present);
}

#[tokio::test]
async fn filters_past_max_subscription_bytes_per_client_get_suback_0x97() {
    let broker = TestBroker::start_with(|c| c.broker.max_subscription_bytes_per_client = 100).await;
    let mut raw = Raw::connect(broker.addr(), Protocol::V5, "sub-bytes").await;
    let long = format!("sb/{}", "x".repeat(60));
    let ack = raw.subscribe(1, &[(long.as_str(), opts(QoS::AtMostOnce))]).await;
    assert_eq!(ack.reason_codes, vec![0]);
    let other = format!("sb/{}", "y".repeat(60));
    let ack =
        raw.subscribe(2, &[(other.as_str(), opts(QoS::AtMostOnce)), ("sb/z", opts(QoS::AtMostOnce))]).await;
    assert_eq!(ack.reason_codes, vec![reason::QUOTA_EXCEEDED, 0], "63 + 63 bytes is over 100; 63 + 4 is not");
}

#[tokio::test]
async fn one_address_holds_at_most_max_pending_connects_per_address_sockets_without_connect() {
    let broker = TestBroker::start_with(|c| c.broker.max_pending_connects_per_address = 3).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(Raw::open(broker.addr(), Protocol::V5).await);
    }
    // A fourth socket from 127.0.0.1 without CONNECT is closed at accept.
    let mut fourth = Raw::open(broker.addr(), Protocol::V5).await;
    fourth.send(Packet::Connect(Box::new(connect_packet(Protocol::V5, "fourth")))).await;
    fourth.expect_closed().await;
    // Once one of them has sent CONNECT, the address has room again.
    idle[0].send(Packet::Connect(Box::new(connect_packet(Protocol::V5, "first")))).await;
    assert!(matches!(idle[0].expect("CONNACK").await, Packet::ConnAck(_)));
    let (_fifth, ack) = Raw::connect_with(broker.addr(), connect_packet(Protocol::V5, "fifth")).await;
    assert_eq!(ack.reason_code, reason::SUCCESS);
}
