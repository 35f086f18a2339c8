//! MQTT 3.1.1 conformance tests: a real broker on loopback TCP, driven by the third-party
//! rumqttc client (protocol level 4) and, where rumqttc cannot express the case, by a raw
//! socket client writing packets encoded with the broker's own codec.
//!
//! Test names follow the normative statement ids of the MQTT 3.1.1 specification
//! (`mqtt_3_3_1_5_...` is [MQTT-3.3.1-5]). Every wait is bounded by `common::WAIT`; no test
//! asserts on speed. "Nothing was delivered" is checked with a sync marker: the client
//! publishes a QoS 1 message to a topic only it subscribes to, and everything it receives
//! before that marker is what the broker routed to it earlier.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{TestBroker, WAIT};
use node::broker::config::User;
use node::mqtt::codec;
use node::mqtt::packet as np;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------
// rumqttc client harness

static TAG: AtomicUsize = AtomicUsize::new(0);

fn next_tag() -> usize {
    TAG.fetch_add(1, Ordering::Relaxed)
}

/// rumqttc options for `id` against `broker`: clean session, keep alive 60 s.
fn options(broker: &TestBroker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    o
}

/// A connected rumqttc client whose event loop runs in its own task; events arrive on a
/// channel. Dropping it (or `kill`) drops the event loop, closing the socket without
/// DISCONNECT.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    pump: JoinHandle<()>,
    /// Publishes received while waiting for something else.
    stash: VecDeque<Publish>,
    connack: ConnAck,
    name: String,
    tag: usize,
    sync_subscribed: bool,
    syncs: u32,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

async fn try_connect(o: MqttOptions) -> Result<Client, ConnectionError> {
    let name = o.client_id();
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    let first = timeout(WAIT, eventloop.poll()).await.expect("CONNACK within WAIT")?;
    let Event::Incoming(Packet::ConnAck(connack)) = first else {
        panic!("{name}: expected CONNACK first, got {first:?}");
    };
    let (tx, events) = mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(ev) => {
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(Client {
        client,
        events,
        pump,
        stash: VecDeque::new(),
        connack,
        name,
        tag: next_tag(),
        sync_subscribed: false,
        syncs: 0,
    })
}

async fn connect(o: MqttOptions) -> Client {
    let name = o.client_id();
    let c = try_connect(o).await.unwrap_or_else(|e| panic!("{name}: connect failed: {e}"));
    assert_eq!(c.connack.code, ConnectReturnCode::Success);
    c
}

/// Clean session client.
async fn connect_id(broker: &TestBroker, id: &str) -> Client {
    connect(options(broker, id)).await
}

/// Persistent session client (clean session 0).
async fn connect_persistent(broker: &TestBroker, id: &str) -> Client {
    let mut o = options(broker, id);
    o.set_clean_session(false);
    connect(o).await
}

impl Client {
    /// The next event from the event loop; `Err` when the connection ended.
    async fn next_event(&mut self) -> Result<Event, String> {
        match timeout(WAIT, self.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => Err("event loop ended".into()),
            Err(_) => panic!("{}: no event within {WAIT:?}", self.name),
        }
    }

    /// Waits for an event `pick` accepts; publishes seen on the way are stashed.
    async fn wait_event<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            match self.next_event().await {
                Ok(ev) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = ev {
                        self.stash.push_back(p);
                    }
                }
                Err(e) => panic!("{}: connection ended while waiting for {what}: {e}", self.name),
            }
        }
    }

    /// Subscribes to one filter and returns the SUBACK return code.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.expect("subscribe request");
        let codes = self
            .wait_event("SUBACK", |e| match e {
                Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(codes.len(), 1, "{}: one return code per filter", self.name);
        codes[0]
    }

    /// Subscribes and asserts the requested QoS was granted.
    async fn subscribe_ok(&mut self, filter: &str, qos: QoS) {
        let code = self.subscribe(filter, qos).await;
        assert_eq!(code, SubscribeReasonCode::Success(qos), "{}: SUBACK for {filter}", self.name);
    }

    /// Publishes and waits until the broker has processed it: PUBACK for QoS 1, PUBCOMP for
    /// QoS 2, and for QoS 0 the PUBACK of a QoS 1 message sent after it on this connection.
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, qos, retain, payload).await.expect("publish request");
        match qos {
            QoS::AtMostOnce => {
                let flush = format!("flush/{}", self.tag);
                self.client.publish(flush, QoS::AtLeastOnce, false, "").await.expect("flush request");
                self.wait_puback().await;
            }
            QoS::AtLeastOnce => self.wait_puback().await,
            QoS::ExactlyOnce => {
                self.wait_event("PUBREC", |e| matches!(e, Event::Incoming(Packet::PubRec(_))).then_some(()))
                    .await;
                self.wait_event("PUBCOMP", |e| {
                    matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(())
                })
                .await;
            }
        }
    }

    async fn wait_puback(&mut self) {
        self.wait_event("PUBACK", |e| matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())).await;
    }

    /// The next PUBLISH received.
    async fn recv_publish(&mut self) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        self.wait_event("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Everything delivered to this client so far: publishes a QoS 1 marker to a topic only
    /// this client subscribes to and returns what arrived before it.
    async fn sync(&mut self) -> Vec<Publish> {
        let topic = format!("sync/{}", self.tag);
        if !self.sync_subscribed {
            self.subscribe_ok(&topic, QoS::AtLeastOnce).await;
            self.sync_subscribed = true;
        }
        self.syncs += 1;
        let marker = format!("marker-{}", self.syncs);
        self.client.publish(&topic, QoS::AtLeastOnce, false, marker.clone()).await.expect("marker request");
        let mut got = Vec::new();
        loop {
            let p = self.recv_publish().await;
            if p.topic == topic && p.payload == marker.as_bytes() {
                return got;
            }
            if p.topic != topic {
                got.push(p);
            }
        }
    }

    /// Asserts that nothing was delivered to this client (up to a sync marker).
    async fn assert_nothing_delivered(&mut self, context: &str) {
        let got = self.sync().await;
        assert!(got.is_empty(), "{}: {context}: unexpected deliveries {got:?}", self.name);
    }

    /// Waits until the broker closes the connection; returns the error rumqttc reported.
    async fn expect_closed(&mut self) -> String {
        let name = self.name.clone();
        let stash = &mut self.stash;
        let events = &mut self.events;
        timeout(WAIT, async {
            loop {
                match events.recv().await {
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => stash.push_back(p),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e,
                    None => return "event loop ended".to_string(),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: connection not closed within {WAIT:?}"))
    }

    /// Clean DISCONNECT; waits until the broker has closed the connection.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect request");
        self.expect_closed().await;
    }

    /// Closes the socket without DISCONNECT (the event loop is dropped).
    async fn kill(mut self) {
        self.pump.abort();
        let _ = (&mut self.pump).await;
    }
}

fn payload_str(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

// ---------------------------------------------------------------------------------------
// Raw socket client

/// A client on a plain TCP socket writing packets encoded with the broker's codec.
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

    /// Opens a socket, sends `connect` and returns the CONNACK.
    async fn connect(addr: SocketAddr, connect: np::Connect) -> (Self, np::ConnAck) {
        let mut raw = Self::open(addr).await;
        raw.send(&np::Packet::Connect(Box::new(connect))).await;
        match raw.recv().await {
            Some(np::Packet::ConnAck(a)) => (raw, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: &np::Packet) {
        let mut buf = BytesMut::new();
        codec::encode(packet, np::Protocol::V3_1_1, &mut buf);
        self.send_bytes(&buf).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// The next packet from the broker, or `None` once it closed the connection.
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

    async fn recv_publish(&mut self) -> np::Publish {
        match self.recv().await {
            Some(np::Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection; returns every byte it sent first.
    async fn bytes_until_close(&mut self) -> Vec<u8> {
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
        .expect("broker closes the connection within WAIT")
    }
}

fn raw_connect(id: &str, clean: bool, keep_alive: u16) -> np::Connect {
    np::Connect {
        protocol: Some(np::Protocol::V3_1_1),
        clean_start: clean,
        keep_alive_secs: keep_alive,
        client_id: id.into(),
        ..np::Connect::default()
    }
}

fn raw_subscribe(packet_id: u16, filters: &[(&str, np::QoS)]) -> np::Packet {
    np::Packet::Subscribe(np::Subscribe {
        packet_id,
        properties: Default::default(),
        filters: filters
            .iter()
            .map(|(f, qos)| ((*f).into(), np::SubOptions { qos: *qos, ..np::SubOptions::default() }))
            .collect(),
    })
}

fn raw_publish(topic: &str, qos: np::QoS, packet_id: u16, payload: &'static [u8]) -> np::Publish {
    np::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Default::default(),
        payload: Bytes::from_static(payload),
    }
}

// ---------------------------------------------------------------------------------------
// 3.1 CONNECT / 3.2 CONNACK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_2_2_1_clean_session_1_gets_session_present_0() {
    let broker = TestBroker::start().await;
    let c = connect_id(&broker, "sp-clean").await;
    assert!(!c.connack.session_present, "clean session 1 must give session present 0");
    c.disconnect().await;
    // Even after a persistent session existed for the id [MQTT-3.2.2-1].
    connect_persistent(&broker, "sp-clean2").await.disconnect().await;
    let c = connect_id(&broker, "sp-clean2").await;
    assert!(!c.connack.session_present, "clean session 1 must give session present 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_2_2_2_resumed_session_gets_session_present_1() {
    let broker = TestBroker::start().await;
    let c = connect_persistent(&broker, "sp-persist").await;
    // [MQTT-3.2.2-3]: no stored session yet, so session present 0.
    assert!(!c.connack.session_present, "first persistent connect has no session to resume");
    c.disconnect().await;
    let c = connect_persistent(&broker, "sp-persist").await;
    assert!(c.connack.session_present, "resumed session must give session present 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_8_empty_client_id_with_clean_session_0_rejected_with_code_2() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::open(broker.addr()).await;
    raw.send(&np::Packet::Connect(Box::new(raw_connect("", false, 30)))).await;
    let bytes = raw.bytes_until_close().await;
    // CONNACK, session present 0 [MQTT-3.2.2-4], return code 2 (identifier rejected), close.
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x02], "expected CONNACK rc=2 then close");
    let mut c = connect_id(&broker, "after-reject").await;
    c.subscribe_ok("ok/t", QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_6_empty_client_id_with_clean_session_1_gets_unique_id() {
    let broker = TestBroker::start().await;
    // Two clients with empty ids must get distinct assigned ids [MQTT-3.1.3-6/-7]: neither
    // takes the other over.
    let mut a = connect_id(&broker, "").await;
    assert!(!a.connack.session_present);
    let mut b = connect_id(&broker, "").await;
    assert!(!b.connack.session_present);
    a.subscribe_ok("empty/t", QoS::AtLeastOnce).await;
    b.subscribe_ok("empty/t", QoS::AtLeastOnce).await;
    let mut p = connect_id(&broker, "empty-pub").await;
    p.publish("empty/t", QoS::AtLeastOnce, false, "hello").await;
    for c in [&mut a, &mut b] {
        let m = c.recv_publish().await;
        assert_eq!((m.topic.as_str(), &m.payload[..], m.qos), ("empty/t", &b"hello"[..], QoS::AtLeastOnce));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_2_2_5_bad_password_refused_with_code_4_and_closed() {
    let broker = TestBroker::start_with(|c| {
        c.broker.allow_anonymous = false;
        c.broker.users = vec![User { username: "alice".into(), password: "secret".into() }];
    })
    .await;

    let mut o = options(&broker, "auth-bad");
    o.set_credentials("alice", "wrong");
    match try_connect(o).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword)
        }
        Err(e) => panic!("expected CONNACK rc=4, got error {e}"),
        Ok(c) => panic!("bad password accepted: {:?}", c.connack),
    }

    // Exact bytes: CONNACK session present 0, return code 4, then the broker closes.
    let mut bad = raw_connect("auth-raw", true, 30);
    bad.username = Some("alice".into());
    bad.password = Some(Bytes::from_static(b"wrong"));
    let mut raw = Raw::open(broker.addr()).await;
    raw.send(&np::Packet::Connect(Box::new(bad))).await;
    assert_eq!(raw.bytes_until_close().await, [0x20, 0x02, 0x00, 0x04]);

    // No credentials with anonymous access off: return code 5 (not authorized).
    match try_connect(options(&broker, "auth-anon")).await {
        Err(ConnectionError::ConnectionRefused(code)) => assert_eq!(code, ConnectReturnCode::NotAuthorized),
        Err(e) => panic!("expected CONNACK rc=5, got error {e}"),
        Ok(c) => panic!("anonymous client accepted: {:?}", c.connack),
    }

    let mut o = options(&broker, "auth-good");
    o.set_credentials("alice", "secret");
    let mut good = connect(o).await;
    good.subscribe_ok("auth/t", QoS::AtLeastOnce).await;
    good.publish("auth/t", QoS::AtLeastOnce, false, "in").await;
    assert_eq!(good.recv_publish().await.payload, "in".as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_0_2_second_connect_closes_connection() {
    let broker = TestBroker::start().await;
    let (mut raw, ack) = Raw::connect(broker.addr(), raw_connect("twice", true, 30)).await;
    assert_eq!(ack.reason_code, 0);
    raw.send(&np::Packet::Connect(Box::new(raw_connect("twice", true, 30)))).await;
    let bytes = raw.bytes_until_close().await;
    assert!(bytes.is_empty(), "a second CONNECT is a protocol violation; got {bytes:?}");
    let mut c = connect_id(&broker, "after-twice").await;
    c.subscribe_ok("t", QoS::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_0_1_first_packet_not_connect_closes_connection() {
    let broker = TestBroker::start_with(|c| c.broker.connect_timeout_secs = 120).await;
    // PINGREQ first: no PINGRESP, just a close.
    let mut raw = Raw::open(broker.addr()).await;
    raw.send(&np::Packet::PingReq).await;
    assert!(raw.bytes_until_close().await.is_empty());
    // SUBSCRIBE first.
    let mut raw = Raw::open(broker.addr()).await;
    raw.send(&raw_subscribe(1, &[("x", np::QoS::AtMostOnce)])).await;
    assert!(raw.bytes_until_close().await.is_empty());
    // PUBLISH first: must not be routed.
    let mut sub = connect_id(&broker, "first-sub").await;
    sub.subscribe_ok("first/t", QoS::AtMostOnce).await;
    let mut raw = Raw::open(broker.addr()).await;
    raw.send(&np::Packet::Publish(raw_publish("first/t", np::QoS::AtMostOnce, 0, b"sneaky"))).await;
    assert!(raw.bytes_until_close().await.is_empty());
    sub.assert_nothing_delivered("PUBLISH before CONNECT").await;
}

// ---------------------------------------------------------------------------------------
// 4.3 QoS, 3.8.4 granted QoS, 3.3.5 overlapping subscriptions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_1_qos0_at_most_once_delivery() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "q0-sub").await;
    sub.subscribe_ok("q0/t", QoS::AtMostOnce).await;
    let mut publ = connect_id(&broker, "q0-pub").await;
    publ.publish("q0/t", QoS::AtMostOnce, false, "zero").await;
    let m = sub.recv_publish().await;
    assert_eq!(m.topic, "q0/t");
    assert_eq!(m.payload, "zero".as_bytes());
    assert_eq!(m.qos, QoS::AtMostOnce);
    assert!(!m.retain && !m.dup);
    assert_eq!(m.pkid, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_2_qos1_at_least_once_both_directions() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "q1-sub").await;
    sub.subscribe_ok("q1/t", QoS::AtLeastOnce).await;
    // Inbound: the raw publisher gets PUBACK with its packet id [MQTT-4.3.2-4 server side].
    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("q1-raw", true, 30)).await;
    raw.send(&np::Packet::Publish(raw_publish("q1/t", np::QoS::AtLeastOnce, 77, b"one"))).await;
    match raw.recv().await {
        Some(np::Packet::PubAck(r)) => assert_eq!(r.packet_id, 77),
        other => panic!("expected PUBACK 77, got {other:?}"),
    }
    // Outbound: QoS 1 with a non-zero packet id and DUP 0 [MQTT-4.3.2-1].
    let m = sub.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("q1/t", &b"one"[..]));
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert_ne!(m.pkid, 0);
    assert!(!m.dup && !m.retain);
    // Outbound at packet level: a raw subscriber that acks; nothing is resent afterwards.
    let (mut rsub, _) = Raw::connect(broker.addr(), raw_connect("q1-rsub", true, 30)).await;
    rsub.send(&raw_subscribe(3, &[("q1/t", np::QoS::AtLeastOnce)])).await;
    assert!(matches!(rsub.recv().await, Some(np::Packet::SubAck(_))));
    let mut publ = connect_id(&broker, "q1-pub").await;
    publ.publish("q1/t", QoS::AtLeastOnce, false, "two").await;
    let p = rsub.recv_publish().await;
    assert_eq!((p.qos, &p.payload[..], p.dup), (np::QoS::AtLeastOnce, &b"two"[..], false));
    rsub.send(&np::Packet::PubAck(np::PubResp::new(p.packet_id))).await;
    assert_eq!(payload_str(&sub.recv_publish().await), "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_qos2_exactly_once() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "q2-sub").await;
    sub.subscribe_ok("q2/t", QoS::ExactlyOnce).await;

    // Inbound from a raw publisher that retransmits the PUBLISH (DUP=1) before PUBREL: the
    // message must be delivered once [MQTT-4.3.3-2].
    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("q2-raw", true, 30)).await;
    let mut publish = raw_publish("q2/t", np::QoS::ExactlyOnce, 10, b"once");
    raw.send(&np::Packet::Publish(publish.clone())).await;
    match raw.recv().await {
        Some(np::Packet::PubRec(r)) => assert_eq!(r.packet_id, 10),
        other => panic!("expected PUBREC 10, got {other:?}"),
    }
    publish.dup = true;
    raw.send(&np::Packet::Publish(publish)).await;
    match raw.recv().await {
        Some(np::Packet::PubRec(r)) => assert_eq!(r.packet_id, 10),
        other => panic!("expected PUBREC 10 again, got {other:?}"),
    }
    raw.send(&np::Packet::PubRel(np::PubResp::new(10))).await;
    match raw.recv().await {
        Some(np::Packet::PubComp(r)) => assert_eq!(r.packet_id, 10),
        other => panic!("expected PUBCOMP 10, got {other:?}"),
    }
    let m = sub.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..], m.qos), ("q2/t", &b"once"[..], QoS::ExactlyOnce));
    assert!(!m.dup);
    let rest = sub.sync().await;
    assert!(rest.is_empty(), "QoS 2 message delivered more than once: {rest:?}");

    // Outbound to a raw subscriber: PUBLISH, PUBREC -> PUBREL, PUBCOMP, then nothing more.
    let (mut rsub, _) = Raw::connect(broker.addr(), raw_connect("q2-rsub", true, 30)).await;
    rsub.send(&raw_subscribe(4, &[("q2/t", np::QoS::ExactlyOnce)])).await;
    assert!(matches!(rsub.recv().await, Some(np::Packet::SubAck(_))));
    let mut publ = connect_id(&broker, "q2-pub").await;
    publ.publish("q2/t", QoS::ExactlyOnce, false, "twice?").await;
    let p = rsub.recv_publish().await;
    assert_eq!((p.qos, &p.payload[..], p.dup), (np::QoS::ExactlyOnce, &b"twice?"[..], false));
    assert_ne!(p.packet_id, 0);
    rsub.send(&np::Packet::PubRec(np::PubResp::new(p.packet_id))).await;
    match rsub.recv().await {
        Some(np::Packet::PubRel(r)) => assert_eq!(r.packet_id, p.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    rsub.send(&np::Packet::PubComp(np::PubResp::new(p.packet_id))).await;
    rsub.send(&np::Packet::PingReq).await;
    assert_eq!(rsub.recv().await, Some(np::Packet::PingResp), "nothing but PINGRESP after PUBCOMP");
    // rumqttc subscriber got it exactly once too.
    assert_eq!(payload_str(&sub.recv_publish().await), "twice?");
    assert!(sub.sync().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_4_6_delivery_downgraded_to_granted_qos() {
    let broker = TestBroker::start().await;
    let mut s0 = connect_id(&broker, "dg-0").await;
    s0.subscribe_ok("dg/t", QoS::AtMostOnce).await;
    let mut s1 = connect_id(&broker, "dg-1").await;
    s1.subscribe_ok("dg/t", QoS::AtLeastOnce).await;
    let mut s2 = connect_id(&broker, "dg-2").await;
    s2.subscribe_ok("dg/t", QoS::ExactlyOnce).await;
    let mut publ = connect_id(&broker, "dg-pub").await;

    publ.publish("dg/t", QoS::ExactlyOnce, false, "p2").await;
    for (c, want) in [(&mut s0, QoS::AtMostOnce), (&mut s1, QoS::AtLeastOnce), (&mut s2, QoS::ExactlyOnce)] {
        let m = c.recv_publish().await;
        assert_eq!(payload_str(&m), "p2");
        assert_eq!(m.qos, want, "{}: published QoS 2", c.name);
    }
    publ.publish("dg/t", QoS::AtLeastOnce, false, "p1").await;
    for (c, want) in [(&mut s0, QoS::AtMostOnce), (&mut s1, QoS::AtLeastOnce), (&mut s2, QoS::AtLeastOnce)] {
        let m = c.recv_publish().await;
        assert_eq!(payload_str(&m), "p1");
        assert_eq!(m.qos, want, "{}: published QoS 1", c.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_5_1_overlapping_subscriptions_delivered_once_at_highest_qos() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "ov-sub").await;
    sub.subscribe_ok("ov/+", QoS::AtMostOnce).await;
    sub.subscribe_ok("ov/#", QoS::ExactlyOnce).await;
    sub.subscribe_ok("ov/a", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "ov-pub").await;
    publ.publish("ov/a", QoS::ExactlyOnce, false, "overlap").await;
    let got = sub.sync().await;
    assert_eq!(got.len(), 1, "expected exactly one delivery, got {got:?}");
    assert_eq!(payload_str(&got[0]), "overlap");
    assert_eq!(got[0].qos, QoS::ExactlyOnce, "highest QoS of the matching subscriptions");
}

// ---------------------------------------------------------------------------------------
// 4.7 topic wildcards

async fn delivered_topics(sub: &mut Client) -> Vec<String> {
    sub.sync().await.into_iter().map(|p| p.topic).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_7_1_3_single_level_wildcard_plus() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "plus-sub").await;
    sub.subscribe_ok("s/+/t", QoS::AtLeastOnce).await;
    sub.subscribe_ok("p/+", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "plus-pub").await;
    for topic in ["s/x/t", "s/x/y/t", "s/t", "s//t", "s/x/t/u", "p/a", "p", "p/a/b", "p/"] {
        publ.publish(topic, QoS::AtLeastOnce, false, topic).await;
    }
    assert_eq!(delivered_topics(&mut sub).await, ["s/x/t", "s//t", "p/a", "p/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_7_1_2_multi_level_wildcard_hash_matches_parent_and_children() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "hash-sub").await;
    sub.subscribe_ok("h/#", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "hash-pub").await;
    for topic in ["h", "h/a", "h/a/b/c", "h/", "hh", "x/h", "/h"] {
        publ.publish(topic, QoS::AtLeastOnce, false, topic).await;
    }
    assert_eq!(delivered_topics(&mut sub).await, ["h", "h/a", "h/a/b/c", "h/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
    let broker = TestBroker::start_with(|c| c.broker.sys_interval_secs = 1).await;
    let mut all = connect_id(&broker, "dollar-all").await;
    all.subscribe_ok("#", QoS::AtMostOnce).await;
    all.subscribe_ok("+/broker/#", QoS::AtMostOnce).await;
    all.subscribe_ok("+/broker/uptime", QoS::AtMostOnce).await;
    let mut sys = connect_id(&broker, "dollar-sys").await;
    sys.subscribe_ok("$SYS/broker/uptime", QoS::AtMostOnce).await;
    // The retained value first, then wait for a live update: $SYS was routed after `all`
    // subscribed.
    let first = sys.recv_publish().await;
    assert_eq!(first.topic, "$SYS/broker/uptime");
    assert!(first.retain, "retained $SYS value sent on subscribe has retain 1");
    loop {
        let m = sys.recv_publish().await;
        if !m.retain {
            assert_eq!(m.topic, "$SYS/broker/uptime");
            break;
        }
    }
    let got = delivered_topics(&mut all).await;
    let dollar: Vec<&String> = got.iter().filter(|t| t.starts_with('$')).collect();
    assert!(dollar.is_empty(), "`#`/`+` matched $ topics: {dollar:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_broker_version_is_available() {
    let broker = TestBroker::start_with(|c| c.broker.sys_interval_secs = 1).await;
    let mut c = connect_id(&broker, "sys-version").await;
    c.subscribe_ok("$SYS/broker/version", QoS::AtMostOnce).await;
    let m = c.recv_publish().await;
    assert_eq!(m.topic, "$SYS/broker/version");
    assert_eq!(payload_str(&m), format!("flotilla {}", env!("CARGO_PKG_VERSION")));
    assert!(m.retain, "sent because of a new subscription: retain 1 [MQTT-3.3.1-8]");
}

// ---------------------------------------------------------------------------------------
// 3.3.1 retained messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_5_retained_message_stored_and_delivered_to_new_subscriber() {
    let broker = TestBroker::start().await;
    let mut publ = connect_id(&broker, "ret-pub").await;
    publ.publish("ret/a", QoS::AtLeastOnce, true, "kept").await;
    publ.disconnect().await;

    let mut sub = connect_id(&broker, "ret-sub").await;
    sub.subscribe_ok("ret/+", QoS::ExactlyOnce).await;
    let m = sub.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("ret/a", &b"kept"[..]));
    assert!(m.retain, "retained delivery on subscribe has retain 1 [MQTT-3.3.1-8]");
    assert_eq!(m.qos, QoS::AtLeastOnce, "stored QoS 1, granted 2: delivered at 1");
    assert!(sub.sync().await.is_empty());

    // Subscribing again re-sends the retained message [MQTT-3.3.1-6].
    let mut sub2 = connect_id(&broker, "ret-sub2").await;
    sub2.subscribe_ok("ret/a", QoS::AtMostOnce).await;
    let m = sub2.recv_publish().await;
    assert_eq!((&m.payload[..], m.retain, m.qos), (&b"kept"[..], true, QoS::AtMostOnce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_9_live_retained_message_delivered_with_retain_0() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "live-sub").await;
    sub.subscribe_ok("live/t", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "live-pub").await;
    publ.publish("live/t", QoS::AtLeastOnce, true, "r1").await;
    publ.publish("live/t", QoS::AtMostOnce, false, "n1").await;
    let got = sub.sync().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((payload_str(&got[0]), got[0].retain), ("r1".to_string(), false));
    assert_eq!((payload_str(&got[1]), got[1].retain), ("n1".to_string(), false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_10_empty_retained_payload_forwarded_and_clears_retained() {
    let broker = TestBroker::start().await;
    let mut live = connect_id(&broker, "clr-live").await;
    live.subscribe_ok("clr/t", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "clr-pub").await;
    publ.publish("clr/t", QoS::AtLeastOnce, true, "old").await;
    publ.publish("clr/t", QoS::AtLeastOnce, true, "").await;
    // Processed as normal and sent to current subscribers [MQTT-3.3.1-10].
    let got = live.sync().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(payload_str(&got[0]), "old");
    assert!(got[1].payload.is_empty(), "zero-byte retained message forwarded: {:?}", got[1]);
    assert!(!got[1].retain);
    // Neither the old message nor the empty one is retained [MQTT-3.3.1-10/-11].
    let mut late = connect_id(&broker, "clr-late").await;
    late.subscribe_ok("clr/#", QoS::AtLeastOnce).await;
    late.assert_nothing_delivered("retained message after clearing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_11_zero_byte_retained_message_not_stored() {
    let broker = TestBroker::start().await;
    let mut publ = connect_id(&broker, "zb-pub").await;
    publ.publish("zb/t", QoS::AtLeastOnce, true, "").await;
    let mut late = connect_id(&broker, "zb-late").await;
    late.subscribe_ok("zb/t", QoS::AtLeastOnce).await;
    late.assert_nothing_delivered("zero-byte retained message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_7_newer_retained_message_replaces_older() {
    let broker = TestBroker::start().await;
    let mut publ = connect_id(&broker, "rep-pub").await;
    publ.publish("rep/t", QoS::AtLeastOnce, true, "v1").await;
    publ.publish("rep/t", QoS::AtLeastOnce, true, "v2").await;
    // A QoS 0 retained message also replaces it [MQTT-3.3.1-7].
    publ.publish("rep/q0", QoS::AtLeastOnce, true, "q1").await;
    publ.publish("rep/q0", QoS::AtMostOnce, true, "q0").await;
    let mut sub = connect_id(&broker, "rep-sub").await;
    sub.subscribe_ok("rep/t", QoS::AtLeastOnce).await;
    sub.subscribe_ok("rep/q0", QoS::AtLeastOnce).await;
    let got = sub.sync().await;
    let seen: Vec<(String, String, QoS, bool)> =
        got.iter().map(|p| (p.topic.clone(), payload_str(p), p.qos, p.retain)).collect();
    assert_eq!(
        seen,
        [
            ("rep/t".to_string(), "v2".to_string(), QoS::AtLeastOnce, true),
            ("rep/q0".to_string(), "q0".to_string(), QoS::AtMostOnce, true),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_12_retain_0_does_not_replace_retained() {
    let broker = TestBroker::start().await;
    let mut publ = connect_id(&broker, "nr-pub").await;
    publ.publish("nr/t", QoS::AtLeastOnce, true, "kept").await;
    publ.publish("nr/t", QoS::AtLeastOnce, false, "not kept").await;
    publ.publish("nr/t", QoS::AtLeastOnce, false, "").await;
    let mut sub = connect_id(&broker, "nr-sub").await;
    sub.subscribe_ok("nr/t", QoS::AtLeastOnce).await;
    let got = sub.sync().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((payload_str(&got[0]), got[0].retain), ("kept".to_string(), true));
}

// ---------------------------------------------------------------------------------------
// Will messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_8_will_published_on_abrupt_disconnect() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "will-sub").await;
    sub.subscribe_ok("will/+", QoS::ExactlyOnce).await;
    let mut o = options(&broker, "will-client");
    o.set_last_will(LastWill::new("will/w", "gone", QoS::AtLeastOnce, false));
    let w = connect(o).await;
    sub.assert_nothing_delivered("will before the client went away").await;
    w.kill().await;
    let m = sub.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("will/w", &b"gone"[..]));
    assert_eq!(m.qos, QoS::AtLeastOnce, "will QoS 1 [MQTT-3.1.2-14]");
    assert!(!m.retain, "will retain 0");
    assert!(sub.sync().await.is_empty(), "will published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_14_4_3_will_not_published_on_clean_disconnect() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "nowill-sub").await;
    sub.subscribe_ok("nowill/#", QoS::AtLeastOnce).await;
    let mut o = options(&broker, "nowill-client");
    o.set_last_will(LastWill::new("nowill/w", "should not appear", QoS::AtLeastOnce, true));
    let w = connect(o).await;
    w.disconnect().await;
    sub.assert_nothing_delivered("will after DISCONNECT").await;
    let mut late = connect_id(&broker, "nowill-late").await;
    late.subscribe_ok("nowill/#", QoS::AtLeastOnce).await;
    late.assert_nothing_delivered("retained will after DISCONNECT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_17_will_retain_1_publishes_will_as_retained() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "wr-sub").await;
    sub.subscribe_ok("wr/t", QoS::AtLeastOnce).await;
    let mut o = options(&broker, "wr-client");
    o.set_last_will(LastWill::new("wr/t", "last words", QoS::AtLeastOnce, true));
    connect(o).await.kill().await;
    let live = sub.recv_publish().await;
    assert_eq!(payload_str(&live), "last words");
    assert!(!live.retain, "to an existing subscription retain is 0 [MQTT-3.3.1-9]");
    let mut late = connect_id(&broker, "wr-late").await;
    late.subscribe_ok("wr/t", QoS::AtLeastOnce).await;
    let m = late.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("wr/t", &b"last words"[..]));
    assert!(m.retain, "the will was stored as a retained message");
    assert_eq!(m.qos, QoS::AtLeastOnce);
}

// ---------------------------------------------------------------------------------------
// Keep alive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_24_keep_alive_timeout_disconnects_and_publishes_will() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "ka-sub").await;
    sub.subscribe_ok("ka/will", QoS::AtLeastOnce).await;
    let mut silent = raw_connect("ka-silent", true, 1);
    silent.will = Some(np::Will {
        topic: "ka/will".into(),
        payload: Bytes::from_static(b"timed out"),
        qos: np::QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (mut raw, ack) = Raw::connect(broker.addr(), silent).await;
    assert_eq!(ack.reason_code, 0);
    // Silent from now on; the broker must close the connection (1.5 x 1 s; the bound here
    // is only a hang guard).
    let bytes = raw.bytes_until_close().await;
    assert!(bytes.is_empty(), "nothing expected before the close, got {bytes:?}");
    let m = sub.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("ka/will", &b"timed out"[..]));
}

// ---------------------------------------------------------------------------------------
// Persistent sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_4_subscriptions_survive_reconnect() {
    let broker = TestBroker::start().await;
    let mut c = connect_persistent(&broker, "ps-keep").await;
    c.subscribe_ok("ps/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut c = connect_persistent(&broker, "ps-keep").await;
    assert!(c.connack.session_present);
    let mut publ = connect_id(&broker, "ps-pub").await;
    publ.publish("ps/t", QoS::AtLeastOnce, false, "still here").await;
    let m = c.recv_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..], m.qos), ("ps/t", &b"still here"[..], QoS::AtLeastOnce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_5_offline_qos1_and_qos2_messages_delivered_after_reconnect() {
    let broker = TestBroker::start().await;
    let mut c = connect_persistent(&broker, "ps-off").await;
    c.subscribe_ok("off/#", QoS::ExactlyOnce).await;
    c.disconnect().await;
    let mut publ = connect_id(&broker, "off-pub").await;
    publ.publish("off/1", QoS::AtLeastOnce, false, "a").await;
    publ.publish("off/2", QoS::ExactlyOnce, false, "b").await;
    publ.publish("off/0", QoS::AtMostOnce, false, "c").await;
    publ.publish("off/3", QoS::ExactlyOnce, false, "d").await;

    let mut c = connect_persistent(&broker, "ps-off").await;
    assert!(c.connack.session_present);
    let got = c.sync().await;
    // QoS 0 messages may or may not be kept for an offline client; QoS 1 and 2 must be.
    let kept: Vec<(String, String, QoS)> =
        got.iter().filter(|p| p.topic != "off/0").map(|p| (p.topic.clone(), payload_str(p), p.qos)).collect();
    assert_eq!(
        kept,
        [
            ("off/1".to_string(), "a".to_string(), QoS::AtLeastOnce),
            ("off/2".to_string(), "b".to_string(), QoS::ExactlyOnce),
            ("off/3".to_string(), "d".to_string(), QoS::ExactlyOnce),
        ]
    );
    assert!(got.iter().filter(|p| p.topic == "off/0").count() <= 1, "QoS 0 at most once: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_4_0_1_unacked_qos1_resent_with_dup_on_reconnect() {
    let broker = TestBroker::start().await;
    let (mut raw, ack) = Raw::connect(broker.addr(), raw_connect("dup-q1", false, 30)).await;
    assert!(!ack.session_present);
    raw.send(&raw_subscribe(1, &[("dup/t", np::QoS::AtLeastOnce)])).await;
    match raw.recv().await {
        Some(np::Packet::SubAck(a)) => assert_eq!((a.packet_id, a.reason_codes), (1, vec![1])),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut publ = connect_id(&broker, "dup-pub").await;
    publ.publish("dup/t", QoS::AtLeastOnce, false, "unacked").await;
    let first = raw.recv_publish().await;
    assert_eq!((first.qos, first.dup, &first.payload[..]), (np::QoS::AtLeastOnce, false, &b"unacked"[..]));
    // No PUBACK; the connection drops.
    drop(raw);

    let (mut raw, ack) = Raw::connect(broker.addr(), raw_connect("dup-q1", false, 30)).await;
    assert!(ack.session_present);
    let again = raw.recv_publish().await;
    assert_eq!(again.packet_id, first.packet_id, "original packet id [MQTT-4.4.0-1]");
    assert!(again.dup, "re-delivery has DUP 1 [MQTT-3.3.1-1]");
    assert_eq!(
        (again.qos, &again.topic[..], &again.payload[..]),
        (np::QoS::AtLeastOnce, "dup/t", &b"unacked"[..])
    );
    raw.send(&np::Packet::PubAck(np::PubResp::new(again.packet_id))).await;
    raw.send(&np::Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(np::Packet::PingResp), "nothing resent after PUBACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_4_0_1_unacked_pubrel_resent_on_reconnect() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("dup-q2", false, 30)).await;
    raw.send(&raw_subscribe(1, &[("rel/t", np::QoS::ExactlyOnce)])).await;
    assert!(matches!(raw.recv().await, Some(np::Packet::SubAck(_))));
    let mut publ = connect_id(&broker, "rel-pub").await;
    publ.publish("rel/t", QoS::ExactlyOnce, false, "q2").await;
    let p = raw.recv_publish().await;
    assert_eq!(p.qos, np::QoS::ExactlyOnce);
    raw.send(&np::Packet::PubRec(np::PubResp::new(p.packet_id))).await;
    match raw.recv().await {
        Some(np::Packet::PubRel(r)) => assert_eq!(r.packet_id, p.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    // No PUBCOMP; reconnect.
    drop(raw);
    let (mut raw, ack) = Raw::connect(broker.addr(), raw_connect("dup-q2", false, 30)).await;
    assert!(ack.session_present);
    match raw.recv().await {
        Some(np::Packet::PubRel(r)) => assert_eq!(r.packet_id, p.packet_id),
        other => panic!("expected the PUBREL to be resent, got {other:?}"),
    }
    raw.send(&np::Packet::PubComp(np::PubResp::new(p.packet_id))).await;
    raw.send(&np::Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(np::Packet::PingResp), "nothing resent after PUBCOMP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_6_clean_session_1_discards_previous_session() {
    let broker = TestBroker::start().await;
    let mut c = connect_persistent(&broker, "cs-old").await;
    c.subscribe_ok("cs/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = connect_id(&broker, "cs-pub").await;
    publ.publish("cs/t", QoS::AtLeastOnce, false, "queued while offline").await;

    let mut c = connect_id(&broker, "cs-old").await;
    assert!(!c.connack.session_present);
    // Neither the queued message nor the old subscription survives.
    publ.publish("cs/t", QoS::AtLeastOnce, false, "after clean").await;
    c.assert_nothing_delivered("old session state").await;
    c.disconnect().await;
    // A clean session ends at disconnect: a later persistent connect finds nothing.
    let c = connect_persistent(&broker, "cs-old").await;
    assert!(!c.connack.session_present, "the clean session must not outlive its connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_2_same_client_id_closes_existing_connection() {
    let broker = TestBroker::start().await;
    let mut first = connect_id(&broker, "takeover").await;
    first.subscribe_ok("to/t", QoS::AtLeastOnce).await;
    let mut second = connect_id(&broker, "takeover").await;
    first.expect_closed().await;
    second.subscribe_ok("to/t", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "to-pub").await;
    publ.publish("to/t", QoS::AtLeastOnce, false, "for the new one").await;
    let got = second.sync().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(payload_str(&got[0]), "for the new one");
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE / PINGREQ

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_10_4_4_unsubscribe_stops_delivery_and_unsuback_sent() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "uns-sub").await;
    sub.subscribe_ok("uns/t", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "uns-pub").await;
    publ.publish("uns/t", QoS::AtLeastOnce, false, "before").await;
    assert_eq!(payload_str(&sub.recv_publish().await), "before");

    sub.client.unsubscribe("uns/t").await.expect("unsubscribe request");
    let pkid = sub
        .wait_event("UNSUBSCRIBE sent", |e| match e {
            Event::Outgoing(Outgoing::Unsubscribe(id)) => Some(*id),
            _ => None,
        })
        .await;
    let ack = sub
        .wait_event("UNSUBACK", |e| match e {
            Event::Incoming(Packet::UnsubAck(a)) => Some(a.pkid),
            _ => None,
        })
        .await;
    assert_eq!(ack, pkid, "UNSUBACK carries the UNSUBSCRIBE packet id [MQTT-3.10.4-5]");
    publ.publish("uns/t", QoS::AtLeastOnce, false, "after").await;
    sub.assert_nothing_delivered("after UNSUBSCRIBE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_10_4_5_unsuback_sent_even_if_nothing_was_subscribed() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("uns-raw", true, 30)).await;
    raw.send(&np::Packet::Unsubscribe(np::Unsubscribe {
        packet_id: 42,
        properties: Default::default(),
        filters: vec!["never/subscribed".into()],
    }))
    .await;
    match raw.recv().await {
        Some(np::Packet::UnsubAck(a)) => assert_eq!(a.packet_id, 42),
        other => panic!("expected UNSUBACK 42, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_9_3_2_invalid_filter_gets_return_code_0x80() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("badfilter", true, 30)).await;
    raw.send(&raw_subscribe(
        9,
        &[("a/#/b", np::QoS::AtLeastOnce), ("ok/+", np::QoS::AtLeastOnce), ("a/b#", np::QoS::AtMostOnce)],
    ))
    .await;
    match raw.recv().await {
        Some(np::Packet::SubAck(a)) => {
            assert_eq!(a.packet_id, 9, "SUBACK packet id [MQTT-3.8.4-2]");
            assert_eq!(a.reason_codes, [0x80, 0x01, 0x80], "one return code per filter, in order");
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // The valid filter in the same packet is in force.
    let mut publ = connect_id(&broker, "badfilter-pub").await;
    publ.publish("ok/x", QoS::AtLeastOnce, false, "valid").await;
    let p = raw.recv_publish().await;
    assert_eq!((&p.topic[..], &p.payload[..]), ("ok/x", &b"valid"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_12_4_1_pingreq_gets_pingresp() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("pinger", true, 30)).await;
    for _ in 0..3 {
        raw.send_bytes(&[0xC0, 0x00]).await;
        assert_eq!(raw.recv().await, Some(np::Packet::PingResp));
    }
    assert!(raw.buf.is_empty());
}

// ---------------------------------------------------------------------------------------
// Shared subscriptions (`$share/{group}/{filter}`, offered to 3.1.1 clients too)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_each_message_to_exactly_one_member_round_robin() {
    let broker = TestBroker::start().await;
    let mut a = connect_id(&broker, "sh-a").await;
    a.subscribe_ok("$share/g/sh/t", QoS::AtLeastOnce).await;
    let mut b = connect_id(&broker, "sh-b").await;
    b.subscribe_ok("$share/g/sh/t", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "sh-pub").await;
    for i in 0..10 {
        publ.publish("sh/t", QoS::AtLeastOnce, false, i.to_string()).await;
    }
    let nums = |v: Vec<Publish>| -> Vec<u32> {
        v.iter().map(|p| payload_str(p).parse().expect("numbered payload")).collect()
    };
    let got_a = nums(a.sync().await);
    let got_b = nums(b.sync().await);
    let mut all: Vec<u32> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>(), "each message exactly once: a={got_a:?} b={got_b:?}");
    assert_eq!((got_a.len(), got_b.len()), (5, 5), "round robin: a={got_a:?} b={got_b:?}");
    let parity = got_a[0] % 2;
    assert!(got_a.iter().all(|n| n % 2 == parity), "alternating members: a={got_a:?} b={got_b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_unacked_messages_go_to_remaining_member() {
    let broker = TestBroker::start().await;
    // A raw member that never acknowledges.
    let (mut lazy, _) = Raw::connect(broker.addr(), raw_connect("sh-lazy", true, 30)).await;
    lazy.send(&raw_subscribe(1, &[("$share/g2/shr/t", np::QoS::AtLeastOnce)])).await;
    match lazy.recv().await {
        Some(np::Packet::SubAck(a)) => assert_eq!(a.reason_codes, [1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut good = connect_id(&broker, "sh-good").await;
    good.subscribe_ok("$share/g2/shr/t", QoS::AtLeastOnce).await;
    let mut publ = connect_id(&broker, "shr-pub").await;
    for i in 0..4 {
        publ.publish("shr/t", QoS::AtLeastOnce, false, format!("m{i}")).await;
    }
    let mut good_got: Vec<String> = good.sync().await.iter().map(payload_str).collect();
    assert_eq!(good_got.len(), 2, "round robin between two members: {good_got:?}");
    let mut lazy_got = Vec::new();
    for _ in 0..2 {
        let p = lazy.recv_publish().await;
        assert_eq!(p.qos, np::QoS::AtLeastOnce);
        lazy_got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    // The lazy member goes away holding two unacknowledged messages.
    drop(lazy);
    for _ in 0..2 {
        let p = good.recv_publish().await;
        assert_eq!(p.topic, "shr/t");
        good_got.push(payload_str(&p));
    }
    good_got.sort();
    assert_eq!(good_got, ["m0", "m1", "m2", "m3"], "lazy member held {lazy_got:?}");
    assert!(good.sync().await.is_empty(), "no further copies");
}

// ---------------------------------------------------------------------------------------
// 4.6 ordering

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_6_0_6_qos1_messages_delivered_in_order() {
    let broker = TestBroker::start().await;
    let mut sub = connect_id(&broker, "ord-sub").await;
    sub.subscribe_ok("ord/t", QoS::AtLeastOnce).await;
    let publ = connect_id(&broker, "ord-pub").await;
    for i in 0..100 {
        publ.client.publish("ord/t", QoS::AtLeastOnce, false, i.to_string()).await.expect("publish request");
    }
    for i in 0..100 {
        let m = sub.recv_publish().await;
        assert_eq!(payload_str(&m), i.to_string(), "message {i} out of order");
        assert_eq!(m.qos, QoS::AtLeastOnce);
    }
}

// ---------------------------------------------------------------------------------------
// Limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_queued_messages_bounds_offline_session() {
    let broker = TestBroker::start_with(|c| c.broker.max_queued_messages = 5).await;
    let mut c = connect_persistent(&broker, "queue-cap").await;
    c.subscribe_ok("queue/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = connect_id(&broker, "queue-pub").await;
    for i in 0..10 {
        publ.publish("queue/t", QoS::AtLeastOnce, false, i.to_string()).await;
    }
    let mut c = connect_persistent(&broker, "queue-cap").await;
    assert!(c.connack.session_present);
    let got: Vec<u32> = c.sync().await.iter().map(|p| payload_str(p).parse().expect("number")).collect();
    assert!(!got.is_empty() && got.len() <= 5, "expected 1..=5 queued messages, got {got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates: {got:?}");
    assert!(got.iter().all(|n| *n < 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_packet_size_oversized_publish_closes_only_that_connection() {
    let broker = TestBroker::start_with(|c| c.broker.max_packet_size = 1024).await;
    let mut other = connect_id(&broker, "mps-other").await;
    other.subscribe_ok("big/#", QoS::AtLeastOnce).await;

    let (mut raw, _) = Raw::connect(broker.addr(), raw_connect("mps-big", true, 30)).await;
    let big = np::Publish {
        payload: Bytes::from(vec![b'x'; 2000]),
        ..raw_publish("big/t", np::QoS::AtLeastOnce, 5, b"")
    };
    raw.send(&np::Packet::Publish(big)).await;
    let bytes = raw.bytes_until_close().await;
    assert!(bytes.is_empty(), "no PUBACK for an oversized PUBLISH, got {bytes:?}");

    // The other client is unaffected, did not get the big message, and a message under the
    // limit still flows.
    other.assert_nothing_delivered("oversized PUBLISH").await;
    other.publish("big/small", QoS::AtLeastOnce, false, vec![b'y'; 900]).await;
    let m = other.recv_publish().await;
    assert_eq!((m.topic.as_str(), m.payload.len()), ("big/small", 900));
}
