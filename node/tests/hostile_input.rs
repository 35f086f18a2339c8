//! Hostile input on raw TCP sockets: garbage, malformed and oversized packets, protocol
//! violations and stalled or idle connections. Each case checks that the offending
//! connection is closed (or kept, where the spec allows it) and that the broker still
//! serves a normal rumqttc client afterwards.
//!
//! Every wait is bounded by `common::WAIT`; "closed" means the broker closed the socket
//! within that bound, which is a hang guard and not a speed check.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{TestBroker, WAIT};
use node::mqtt::codec;
use node::mqtt::packet as np;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------
// Helpers

static TAG: AtomicUsize = AtomicUsize::new(0);

/// Connects a fresh rumqttc client, subscribes, publishes a QoS 1 message to itself and
/// checks it comes back intact: the broker is alive and serving.
async fn assert_broker_alive(broker: &TestBroker) {
    let n = TAG.fetch_add(1, Ordering::Relaxed);
    let id = format!("alive-{n}");
    let topic = format!("alive/{n}");
    let payload = format!("ping {n}");
    let mut o = MqttOptions::new(id.clone(), "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let run = async {
        match eventloop.poll().await.expect("alive client: CONNACK") {
            Event::Incoming(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::Success),
            other => panic!("alive client: expected CONNACK, got {other:?}"),
        }
        client.subscribe(&topic, QoS::AtLeastOnce).await.expect("subscribe request");
        loop {
            if let Event::Incoming(Packet::SubAck(a)) = eventloop.poll().await.expect("alive client: SUBACK")
            {
                assert_eq!(a.return_codes, [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
                break;
            }
        }
        client.publish(&topic, QoS::AtLeastOnce, false, payload.clone()).await.expect("publish request");
        loop {
            if let Event::Incoming(Packet::Publish(p)) =
                eventloop.poll().await.expect("alive client: PUBLISH")
            {
                assert_eq!(p.topic, topic);
                assert_eq!(p.payload, payload.as_bytes());
                assert_eq!(p.qos, QoS::AtLeastOnce);
                break;
            }
        }
    };
    timeout(WAIT, run).await.expect("the broker still serves a normal client within WAIT");
}

/// A client on a plain TCP socket.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Self {
        let stream =
            timeout(WAIT, TcpStream::connect(addr)).await.expect("TCP connect in time").expect("TCP connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, buf: BytesMut::new() }
    }

    /// Opens a socket and completes a 3.1.1 CONNECT (keep alive 0 unless `keep_alive`).
    async fn connected(addr: SocketAddr, id: &str, keep_alive: u16) -> Self {
        let mut raw = Self::open(addr).await;
        raw.send(&connect_packet(id, keep_alive)).await;
        match raw.recv().await {
            Some(np::Packet::ConnAck(a)) => assert_eq!(a.reason_code, 0, "CONNACK for {id}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn send(&mut self, packet: &np::Packet) {
        self.send_bytes(&encode(packet)).await;
    }

    /// Writes bytes; a write error (the broker already closed) is ignored, as the tests
    /// check the close on the read side.
    async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet, or `None` once the broker closed the connection.
    async fn recv(&mut self) -> Option<np::Packet> {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        timeout(WAIT, async {
            loop {
                let decoded = codec::decode(buf, Some(np::Protocol::V3_1_1), 1 << 28)
                    .expect("broker sent a malformed packet");
                if let Some(p) = decoded {
                    return Some(p);
                }
                match stream.read_buf(buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or a close within WAIT")
    }

    /// Reads until the broker closes the connection; returns every byte it sent first.
    async fn bytes_until_close(&mut self, what: &str) -> Vec<u8> {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        timeout(WAIT, async {
            loop {
                match stream.read_buf(buf).await {
                    Ok(0) | Err(_) => return buf.to_vec(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: broker did not close the connection within {WAIT:?}"))
    }

    /// Asserts the broker closes the connection without sending anything.
    async fn assert_closed_silently(&mut self, what: &str) {
        let bytes = self.bytes_until_close(what).await;
        assert!(bytes.is_empty(), "{what}: expected a plain close, got bytes {bytes:x?}");
    }

    /// Asserts the connection is open and working: PINGREQ is answered.
    async fn assert_open(&mut self, what: &str) {
        self.send_bytes(&[0xC0, 0x00]).await;
        assert_eq!(self.recv().await, Some(np::Packet::PingResp), "{what}: connection should be open");
    }
}

fn encode(packet: &np::Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    codec::encode(packet, np::Protocol::V3_1_1, &mut buf);
    buf
}

fn connect_packet(id: &str, keep_alive: u16) -> np::Packet {
    np::Packet::Connect(Box::new(np::Connect {
        protocol: Some(np::Protocol::V3_1_1),
        clean_start: true,
        keep_alive_secs: keep_alive,
        client_id: id.into(),
        ..np::Connect::default()
    }))
}

fn publish_packet(topic: &str, qos: np::QoS, packet_id: u16, payload: &'static [u8]) -> np::Packet {
    np::Packet::Publish(np::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Default::default(),
        payload: Bytes::from_static(payload),
    })
}

fn subscribe_packet(packet_id: u16, filter: &str, qos: np::QoS) -> np::Packet {
    np::Packet::Subscribe(np::Subscribe {
        packet_id,
        properties: Default::default(),
        filters: vec![(filter.into(), np::SubOptions { qos, ..np::SubOptions::default() })],
    })
}

/// A raw subscriber to `filter` at QoS 1.
async fn raw_subscriber(addr: SocketAddr, id: &str, filter: &str) -> Raw {
    let mut sub = Raw::connected(addr, id, 0).await;
    sub.send(&subscribe_packet(1, filter, np::QoS::AtLeastOnce)).await;
    match sub.recv().await {
        Some(np::Packet::SubAck(a)) => assert_eq!(a.reason_codes, [1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    sub
}

/// Builds a 3.1.1 PUBLISH by hand (fixed header flags and topic bytes as given).
fn hand_publish(first_byte: u8, topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    assert!(body.len() < 128, "hand_publish builds one-byte remaining lengths only");
    let mut out = vec![first_byte, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

/// Sends `bytes` on a connected client and asserts the broker closes it without reply.
async fn connected_then_closed(broker: &TestBroker, id: &str, bytes: &[u8], what: &str) {
    let mut raw = Raw::connected(broker.addr(), id, 0).await;
    raw.send_bytes(bytes).await;
    raw.assert_closed_silently(what).await;
}

// ---------------------------------------------------------------------------------------
// Garbage and framing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_connection() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;
    let cases: [&[u8]; 5] = [
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01, 0x02],
        &[0x00, 0x00],
        &[0xF0, 0x00],
        &[0x20, 0x02, 0x00, 0x00],
        b"GET / HTTP/1.1\r\nHost: flotilla.example\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n",
    ];
    for bytes in cases {
        let mut raw = Raw::open(broker.addr()).await;
        raw.send_bytes(bytes).await;
        raw.assert_closed_silently(&format!("garbage {bytes:x?} before CONNECT")).await;
        assert_broker_alive(&broker).await;
    }
    // Garbage after a good CONNECT.
    connected_then_closed(&broker, "garbage-after", b"\x00\x00\x00\x00hello", "garbage after CONNECT").await;
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_connect_first_byte_rejected_without_waiting_for_its_frame() {
    // Long CONNECT timeout: only the first byte can give these away. A first packet that
    // is not CONNECT is a protocol violation [MQTT-3.1.0-1] known from its first byte; the
    // broker should not buffer the declared frame from an unauthenticated peer first.
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;
    let cases: [(&str, &[u8]); 3] = [
        ("HTTP request line", b"GET / HTTP/1.1\r\n"),
        ("PUBLISH header declaring 64 KiB", &[0x30, 0x80, 0x80, 0x04, 0x00, 0x01, b't']),
        ("SUBSCRIBE header declaring 100 bytes", &[0x82, 0x64, 0x00, 0x01]),
    ];
    for (what, bytes) in cases {
        let mut raw = Raw::open(broker.addr()).await;
        raw.send_bytes(bytes).await;
        raw.assert_closed_silently(what).await;
    }
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_of_five_bytes_is_malformed() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;
    // Before CONNECT.
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x04]).await;
    raw.assert_closed_silently("5-byte remaining length on CONNECT").await;
    assert_broker_alive(&broker).await;
    // After CONNECT [MQTT-2.2.3]: at most four bytes.
    connected_then_closed(
        &broker,
        "varint5",
        &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00],
        "5-byte remaining length on PUBLISH",
    )
    .await;
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_declared_remaining_length_rejected_without_buffering() {
    // Long CONNECT timeout and keep alive 0: only the size check can close these sockets.
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;
    // 268,435,455 bytes declared, a few sent: the broker must not wait for (or allocate) the
    // rest.
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x04, b'M', b'Q']).await;
    raw.assert_closed_silently("huge CONNECT").await;
    assert_broker_alive(&broker).await;

    let mut raw = Raw::connected(broker.addr(), "huge", 0).await;
    raw.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b't']).await;
    raw.assert_closed_silently("huge PUBLISH").await;
    assert_broker_alive(&broker).await;

    // Several at once do not add up to anything either.
    let mut many = Vec::new();
    for i in 0..20 {
        let mut raw = Raw::connected(broker.addr(), &format!("huge-{i}"), 0).await;
        raw.send_bytes(&[0x30, 0xFE, 0xFF, 0xFF, 0x7F]).await;
        many.push(raw);
    }
    for raw in &mut many {
        raw.assert_closed_silently("huge PUBLISH (many)").await;
    }
    assert_broker_alive(&broker).await;
}

// ---------------------------------------------------------------------------------------
// CONNECT

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_bad_protocol_name_closes_connection() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;
    for name in [&b"MQTX"[..], b"mqtt", b"", b"MQTTMQTT"] {
        // CONNECT: name, level 4, flags clean, keep alive 30, client id "bad".
        let mut body = Vec::new();
        body.extend_from_slice(&(name.len() as u16).to_be_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&[0x04, 0x02, 0x00, 0x1E, 0x00, 0x03, b'b', b'a', b'd']);
        let mut bytes = vec![0x10, body.len() as u8];
        bytes.extend_from_slice(&body);
        let mut raw = Raw::open(broker.addr()).await;
        raw.send_bytes(&bytes).await;
        // [MQTT-3.1.2-1]: the broker may disconnect; it must not accept the client.
        let got = raw.bytes_until_close(&format!("protocol name {name:?}")).await;
        assert!(
            got.get(..4) != Some(&[0x20, 0x02, 0x00, 0x00][..]),
            "protocol name {name:?} accepted: {got:x?}"
        );
        assert!(got.is_empty(), "protocol name {name:?}: expected a plain close, got {got:x?}");
    }
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_2_protocol_level_6_gets_return_code_1_then_close() {
    let broker = TestBroker::start().await;
    // "MQTT", level 6, clean session, keep alive 30, client id "lvl6".
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x1E, 0x00, 0x04, b'l', b'v', b'l',
        b'6',
    ])
    .await;
    let got = raw.bytes_until_close("protocol level 6").await;
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01], "3.1.1 CONNACK, return code 1 (unacceptable protocol level)");
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_2_protocol_level_3_with_name_mqtt_gets_return_code_1_then_close() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x1E, 0x00, 0x04, b'l', b'v', b'l',
        b'3',
    ])
    .await;
    let got = raw.bytes_until_close("protocol level 3 named MQTT").await;
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01]);
    assert_broker_alive(&broker).await;
}

// ---------------------------------------------------------------------------------------
// Reserved bits and invalid fields

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_flag_bits_set_close_connection() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;

    // CONNECT reserved flag (bit 0 of the connect flags) [MQTT-3.1.2-3].
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x1E, 0x00, 0x04, b'r', b's', b'v',
        b'd',
    ])
    .await;
    raw.assert_closed_silently("CONNECT reserved flag").await;
    assert_broker_alive(&broker).await;

    // CONNECT fixed header flags must be 0 [MQTT-2.2.2-1].
    let mut connect = encode(&connect_packet("hdrflags", 0));
    connect[0] |= 0x01;
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&connect).await;
    raw.assert_closed_silently("CONNECT fixed header flags").await;
    assert_broker_alive(&broker).await;

    // After CONNECT: wrong fixed header flags [MQTT-2.2.2-2] and reserved option bits.
    let subscribe = encode(&subscribe_packet(1, "r/t", np::QoS::AtMostOnce));
    let mut sub_flags0 = subscribe.to_vec();
    sub_flags0[0] = 0x80;
    let mut sub_opts = subscribe.to_vec();
    *sub_opts.last_mut().expect("options byte") = 0x04; // [MQTT-3.8.3-4] reserved bits
    let unsubscribe = encode(&np::Packet::Unsubscribe(np::Unsubscribe {
        packet_id: 2,
        properties: Default::default(),
        filters: vec!["r/t".into()],
    }));
    let mut unsub_flags0 = unsubscribe.to_vec();
    unsub_flags0[0] = 0xA0;
    let cases: [(&str, Vec<u8>); 7] = [
        ("SUBSCRIBE with flags 0000", sub_flags0),
        ("SUBSCRIBE with reserved option bits", sub_opts),
        ("UNSUBSCRIBE with flags 0000", unsub_flags0),
        ("PUBREL with flags 0000", vec![0x60, 0x02, 0x00, 0x01]),
        ("PUBACK with flags 0010", vec![0x42, 0x02, 0x00, 0x01]),
        ("PINGREQ with flags 0001", vec![0xC1, 0x00]),
        ("DISCONNECT with flags 0010", vec![0xE2, 0x00]),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        connected_then_closed(&broker, &format!("rsvd-{i}"), bytes, what).await;
        assert_broker_alive(&broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_1_5_3_1_invalid_utf8_in_topic_closes_connection() {
    let broker = TestBroker::start().await;
    let mut watcher = raw_subscriber(broker.addr(), "utf8-watch", "#").await;
    for (i, topic) in [&[0xFF, 0xFE][..], &[b'a', 0xC3], &[0xED, 0xA0, 0x80]].into_iter().enumerate() {
        let bytes = hand_publish(0x30, topic, None, b"x");
        connected_then_closed(&broker, &format!("utf8-{i}"), &bytes, &format!("topic {topic:x?}")).await;
        assert_broker_alive(&broker).await;
    }
    // A bad SUBSCRIBE filter too.
    let mut sub = vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 0xC3, 0x28, 0x00];
    sub[1] = (sub.len() - 2) as u8;
    connected_then_closed(&broker, "utf8-sub", &sub, "SUBSCRIBE filter with invalid UTF-8").await;
    assert_broker_alive(&broker).await;
    // Nothing reached the `#` subscriber (the alive checks publish to alive/..., which it
    // sees; anything else is a leak).
    watcher.send_bytes(&[0xC0, 0x00]).await;
    loop {
        match watcher.recv().await {
            Some(np::Packet::PingResp) => break,
            Some(np::Packet::Publish(p)) => {
                assert!(p.topic.starts_with("alive/"), "invalid topic leaked: {p:?}");
                watcher.send(&np::Packet::PubAck(np::PubResp::new(p.packet_id))).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_1_5_3_2_topic_with_null_character_closes_connection() {
    let broker = TestBroker::start().await;
    let bytes = hand_publish(0x30, b"a\0b", None, b"x");
    connected_then_closed(&broker, "nul-pub", &bytes, "PUBLISH topic with U+0000").await;
    assert_broker_alive(&broker).await;
    let sub = vec![0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', 0x00, b'#', 0x00];
    connected_then_closed(&broker, "nul-sub", &sub, "SUBSCRIBE filter with U+0000").await;
    assert_broker_alive(&broker).await;
    // In the CONNECT client id.
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1E, 0x00, 0x04, b'n', 0x00, b'u',
        b'l',
    ])
    .await;
    let got = raw.bytes_until_close("client id with U+0000").await;
    assert!(got.get(..4) != Some(&[0x20, 0x02, 0x00, 0x00][..]), "client id with U+0000 accepted");
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_4_publish_with_qos_3_closes_connection() {
    let broker = TestBroker::start().await;
    let mut watcher = raw_subscriber(broker.addr(), "qos3-watch", "q3/#").await;
    let bytes = hand_publish(0x36, b"q3/t", Some(1), b"x");
    connected_then_closed(&broker, "qos3", &bytes, "PUBLISH QoS 3").await;
    assert_broker_alive(&broker).await;
    watcher.assert_open("watcher").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_2_2_publish_topic_with_wildcards_closes_connection() {
    let broker = TestBroker::start().await;
    for (i, topic) in [&b"w/+"[..], b"w/#", b"#"].into_iter().enumerate() {
        let bytes = hand_publish(0x32, topic, Some(1), b"x");
        connected_then_closed(&broker, &format!("wild-{i}"), &bytes, &format!("topic {topic:?}")).await;
        assert_broker_alive(&broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_2_3_1_1_packet_identifier_zero_closes_connection() {
    let broker = TestBroker::start().await;
    let cases: [(&str, Vec<u8>); 3] = [
        ("PUBLISH QoS 1 with id 0", hand_publish(0x32, b"z/t", Some(0), b"x")),
        ("SUBSCRIBE with id 0", vec![0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'z', 0x00]),
        ("UNSUBSCRIBE with id 0", vec![0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'z']),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        connected_then_closed(&broker, &format!("pid0-{i}"), bytes, what).await;
        assert_broker_alive(&broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_2_dup_on_qos0_publish_closes_connection() {
    let broker = TestBroker::start().await;
    let bytes = hand_publish(0x38, b"d/t", None, b"x");
    connected_then_closed(&broker, "dup0", &bytes, "PUBLISH QoS 0 with DUP").await;
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_3_3_subscribe_with_no_filters_closes_connection() {
    let broker = TestBroker::start().await;
    connected_then_closed(&broker, "nofilter", &[0x82, 0x02, 0x00, 0x01], "SUBSCRIBE without filters").await;
    assert_broker_alive(&broker).await;
    connected_then_closed(&broker, "nofilter-u", &[0xA2, 0x02, 0x00, 0x01], "UNSUBSCRIBE without filters")
        .await;
    assert_broker_alive(&broker).await;
    // A filter whose length runs past the packet.
    connected_then_closed(
        &broker,
        "truncated",
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x09, b'a', 0x00],
        "SUBSCRIBE filter length past the end",
    )
    .await;
    assert_broker_alive(&broker).await;
}

// ---------------------------------------------------------------------------------------
// Stalled and idle connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_packet_then_stall_does_not_affect_other_clients() {
    let broker = TestBroker::start().await;
    let mut sub = raw_subscriber(broker.addr(), "half-sub", "half/t").await;
    let full = encode(&publish_packet("half/t", np::QoS::AtLeastOnce, 7, b"completed later"));
    let (head, tail) = full.split_at(full.len() / 2);
    // Keep alive 0: no timeout applies once connected.
    let mut staller = Raw::connected(broker.addr(), "half-staller", 0).await;
    staller.send_bytes(head).await;
    // Other clients are served while the half packet sits in the broker.
    assert_broker_alive(&broker).await;
    sub.assert_open("subscriber").await;
    assert_broker_alive(&broker).await;
    // The connection was kept: the rest of the packet completes it.
    staller.send_bytes(tail).await;
    match staller.recv().await {
        Some(np::Packet::PubAck(a)) => assert_eq!(a.packet_id, 7),
        other => panic!("expected PUBACK 7 for the completed packet, got {other:?}"),
    }
    let p = match sub.recv().await {
        Some(np::Packet::Publish(p)) => p,
        other => panic!("expected the completed PUBLISH, got {other:?}"),
    };
    assert_eq!((&p.topic[..], &p.payload[..]), ("half/t", &b"completed later"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_packet_stalled_past_keep_alive_is_disconnected() {
    let broker = TestBroker::start().await;
    let mut staller = Raw::connected(broker.addr(), "half-ka", 1).await;
    let full = encode(&publish_packet("half/ka", np::QoS::AtMostOnce, 0, b"never completed"));
    staller.send_bytes(&full[..full.len() / 2]).await;
    // [MQTT-3.1.2-24]: no complete control packet within 1.5 x keep alive.
    staller.assert_closed_silently("half packet past keep alive").await;
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_packet_does_not_extend_keep_alive() {
    let broker = TestBroker::start().await;
    let mut staller = Raw::connected(broker.addr(), "trickle", 1).await;
    // A PUBLISH declaring 1000 bytes, sent one byte every 300 ms: bytes keep arriving but no
    // control packet completes within 1.5 x keep alive [MQTT-3.1.2-24].
    let header = [0x30u8, 0xE8, 0x07, 0x00, 0x01, b't'];
    let (mut rd, mut wr) = staller.stream.split();
    let trickle = async {
        let mut i = 0usize;
        loop {
            let byte = header.get(i).copied().unwrap_or(b'x');
            if wr.write_all(&[byte]).await.is_err() {
                // Broker closed; wait for the read side to notice.
                std::future::pending::<()>().await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 64];
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("unexpected bytes from broker: {:x?}", &buf[..n]),
        }
    };
    let done = timeout(WAIT, async {
        tokio::select! {
            () = trickle => {}
            () = closed => {}
        }
    })
    .await;
    assert!(done.is_ok(), "a connection trickling one byte at a time outlived its keep alive by {WAIT:?}");
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_connect_stalled_is_closed_by_connect_timeout() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 1).await;
    let full = encode(&connect_packet("half-connect", 0));
    let mut raw = Raw::open(broker.addr()).await;
    raw.send_bytes(&full[..full.len() / 2]).await;
    assert_broker_alive(&broker).await;
    raw.assert_closed_silently("half CONNECT past the connect timeout").await;
    assert_broker_alive(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_without_connect_do_not_block_service() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 2).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(Raw::open(broker.addr()).await);
    }
    // Served while 200 sockets sit there without CONNECT.
    assert_broker_alive(&broker).await;
    // Each is closed once the connect timeout passes (bounded wait, not a speed check).
    for raw in &mut idle {
        raw.assert_closed_silently("idle connection without CONNECT").await;
    }
    assert_broker_alive(&broker).await;
}
