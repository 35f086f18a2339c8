//! MQTT 5.0 conformance tests over loopback TCP.
//!
//! Most tests drive the broker with the third-party rumqttc v5 client. Where rumqttc cannot
//! express a case (AUTH exchanges, DISCONNECT with a reason code or a session expiry, topic
//! alias and receive maximum violations, malformed bytes, watching topic aliases the broker
//! sends) a raw client speaks the wire protocol with the broker crate's own codec.
//!
//! Test names carry the normative statement id of the MQTT 5.0 OASIS standard they check
//! (`mqtt5_3_3_2_6_...` for [MQTT-3.3.2-6]); where the rule has no statement id, the section
//! number is used instead. Every wait is bounded by `common::WAIT`. Checks that something
//! does *not* happen use a sentinel: a later message or a PINGRESP that must arrive first.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck as RConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties,
    Packet as RPacket, PubAck as RPubAck, PubAckReason, Publish as RPublish, PublishProperties,
    RetainForwardRule, SubAck as RSubAck, SubscribeProperties, SubscribeReasonCode, UnsubAck as RUnsubAck,
    UnsubAckReason,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use common::{TestBroker, WAIT};
use node::broker::auth::{AuthExchange, AuthStep, Authenticator, Credentials};
use node::mqtt::codec::{decode, encode};
use node::mqtt::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, Protocol, PubResp, Publish, QoS as WireQoS, SubAck,
    SubOptions, Subscribe, Will,
};
use node::mqtt::properties::Properties;
use node::mqtt::reason;

// ---------------------------------------------------------------------------------------
// rumqttc client driven by a background task

/// A rumqttc v5 client whose event loop runs in its own task. Incoming packets (and the
/// error that ends the loop) arrive on a channel; packets read past while looking for a
/// particular one are kept, in order, for later lookups.
struct Mq {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<RPacket, ConnectionError>>,
    stash: VecDeque<RPacket>,
    task: JoinHandle<()>,
}

impl Drop for Mq {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn opts(broker: &TestBroker, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Options for a session that outlives its connection: clean start 0 and an expiry.
fn persistent_opts(broker: &TestBroker, client_id: &str, expiry_secs: u32) -> MqttOptions {
    let mut o = opts(broker, client_id);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(expiry_secs));
    o
}

async fn drive(mut el: EventLoop, tx: mpsc::UnboundedSender<Result<RPacket, ConnectionError>>) {
    loop {
        match el.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

impl Mq {
    async fn try_connect(o: MqttOptions) -> Result<(Self, RConnAck), ConnectionError> {
        let (client, mut el) = AsyncClient::new(o, 64);
        let first = timeout(WAIT, el.poll()).await.expect("CONNACK in time")?;
        let Event::Incoming(RPacket::ConnAck(ack)) = first else {
            panic!("expected CONNACK first, got {first:?}");
        };
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(el, tx));
        Ok((Self { client, events, stash: VecDeque::new(), task }, ack))
    }

    async fn connect(o: MqttOptions) -> (Self, RConnAck) {
        let (c, ack) = Self::try_connect(o).await.expect("connect");
        assert_eq!(ack.code, ConnectReturnCode::Success);
        (c, ack)
    }

    async fn recv(&mut self, what: &str) -> Result<RPacket, ConnectionError> {
        timeout(WAIT, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("event loop ended while waiting for {what}"))
    }

    /// The first packet (stashed or new) matching `pred`; PINGRESPs are dropped.
    async fn next_matching(&mut self, what: &str, pred: impl Fn(&RPacket) -> bool) -> RPacket {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i).expect("index from position");
        }
        loop {
            match self.recv(what).await {
                Ok(p) if pred(&p) => return p,
                Ok(RPacket::PingResp(_)) => {}
                Ok(p) => self.stash.push_back(p),
                Err(e) => panic!("connection error while waiting for {what}: {e:?}"),
            }
        }
    }

    async fn next_publish(&mut self) -> RPublish {
        match self.next_matching("PUBLISH", |p| matches!(p, RPacket::Publish(_))).await {
            RPacket::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    async fn suback(&mut self) -> RSubAck {
        match self.next_matching("SUBACK", |p| matches!(p, RPacket::SubAck(_))).await {
            RPacket::SubAck(p) => p,
            _ => unreachable!(),
        }
    }

    async fn puback(&mut self) -> RPubAck {
        match self.next_matching("PUBACK", |p| matches!(p, RPacket::PubAck(_))).await {
            RPacket::PubAck(p) => p,
            _ => unreachable!(),
        }
    }

    async fn unsuback(&mut self) -> RUnsubAck {
        match self.next_matching("UNSUBACK", |p| matches!(p, RPacket::UnsubAck(_))).await {
            RPacket::UnsubAck(p) => p,
            _ => unreachable!(),
        }
    }

    /// The error that ends the connection; packets before it are stashed.
    async fn error(&mut self) -> ConnectionError {
        loop {
            match self.recv("the connection to end").await {
                Ok(RPacket::PingResp(_)) => {}
                Ok(p) => self.stash.push_back(p),
                Err(e) => return e,
            }
        }
    }

    /// The DISCONNECT the broker ended the connection with.
    async fn server_disconnect(&mut self) -> (DisconnectReasonCode, Option<String>) {
        match self.error().await {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, reason_string }) => {
                (reason_code, reason_string)
            }
            e => panic!("expected a DISCONNECT from the broker, got {e:?}"),
        }
    }

    /// Subscribes to one filter and expects it granted.
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe request");
        let ack = self.suback().await;
        assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(qos)], "SUBACK for {filter}");
    }

    async fn subscribe_filter(&mut self, filter: Filter, props: Option<SubscribeProperties>) -> RSubAck {
        match props {
            Some(p) => self.client.subscribe_many_with_properties(vec![filter], p).await,
            None => self.client.subscribe_many(vec![filter]).await,
        }
        .expect("subscribe request");
        self.suback().await
    }

    /// Publishes at QoS 1 and returns the PUBACK reason.
    async fn publish_acked(
        &mut self,
        topic: &str,
        retain: bool,
        payload: &'static [u8],
        props: Option<PublishProperties>,
    ) -> PubAckReason {
        match props {
            Some(p) => self.client.publish_with_properties(topic, QoS::AtLeastOnce, retain, payload, p).await,
            None => self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await,
        }
        .expect("publish request");
        self.puback().await.reason
    }

    async fn publish_qos0(&self, topic: &str, payload: &'static [u8]) {
        self.client.publish(topic, QoS::AtMostOnce, false, payload).await.expect("publish request");
    }

    /// Normal DISCONNECT (0x00); returns once the broker has closed the connection, so the
    /// broker has handled the DISCONNECT.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect request");
        loop {
            match timeout(WAIT, self.events.recv()).await.expect("connection closed after DISCONNECT") {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Drops the connection without DISCONNECT (an abrupt network close).
    async fn kill(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

fn topic_of(p: &RPublish) -> &str {
    std::str::from_utf8(&p.topic).expect("UTF-8 topic")
}

fn sub_ids(p: &RPublish) -> Vec<usize> {
    let mut ids = p.properties.as_ref().map(|pr| pr.subscription_identifiers.clone()).unwrap_or_default();
    ids.sort_unstable();
    ids
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

fn sub_props(id: usize) -> SubscribeProperties {
    SubscribeProperties { id: Some(id), user_properties: Vec::new() }
}

fn will_props(delay: Option<u32>) -> LastWillProperties {
    LastWillProperties {
        delay_interval: delay,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Raw client on the broker crate's codec

/// A client speaking MQTT 5.0 bytes directly, for what rumqttc cannot send or shows no
/// detail of.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    /// Size on the wire of the last packet received, fixed header included.
    last_len: usize,
}

fn v5_connect(client_id: &str) -> Connect {
    Connect {
        protocol: Some(Protocol::V5),
        clean_start: true,
        keep_alive_secs: 60,
        client_id: client_id.into(),
        ..Connect::default()
    }
}

fn wire_publish(topic: &str, qos: WireQoS, packet_id: u16, payload: &[u8]) -> Publish {
    Publish {
        topic: topic.into(),
        qos,
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        ..Publish::default()
    }
}

fn sub_opts(qos: WireQoS) -> SubOptions {
    SubOptions { qos, ..SubOptions::default() }
}

impl Raw {
    async fn open(addr: SocketAddr) -> Self {
        let stream =
            timeout(WAIT, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, buf: BytesMut::new(), last_len: 0 }
    }

    async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut raw = Self::open(addr).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        match raw.expect("CONNACK").await {
            Packet::ConnAck(ack) => (raw, ack),
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    async fn connect(addr: SocketAddr, client_id: &str) -> Self {
        let (raw, ack) = Self::connect_with(addr, v5_connect(client_id)).await;
        assert_eq!(ack.reason_code, reason::SUCCESS, "CONNACK {ack:?}");
        raw
    }

    async fn send(&mut self, packet: Packet) {
        let mut b = BytesMut::new();
        encode(&packet, Protocol::V5, &mut b);
        self.send_bytes(&b).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// The next packet, or `None` once the broker closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        timeout(WAIT, async {
            loop {
                let before = self.buf.len();
                if let Some(p) = decode(&mut self.buf, Some(Protocol::V5), 1 << 24)
                    .expect("broker sent a malformed packet")
                {
                    self.last_len = before - self.buf.len();
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for the broker")
    }

    async fn expect(&mut self, what: &str) -> Packet {
        self.recv().await.unwrap_or_else(|| panic!("connection closed while waiting for {what}"))
    }

    async fn expect_publish(&mut self) -> Publish {
        match self.expect("PUBLISH").await {
            Packet::Publish(p) => p,
            p => panic!("expected PUBLISH, got {p:?}"),
        }
    }

    async fn subscribe(
        &mut self,
        packet_id: u16,
        filters: &[(&str, SubOptions)],
        sub_id: Option<u32>,
    ) -> SubAck {
        let properties =
            Properties { subscription_identifiers: sub_id.into_iter().collect(), ..Properties::default() };
        let filters = filters.iter().map(|(f, o)| ((*f).into(), *o)).collect();
        self.send(Packet::Subscribe(Subscribe { packet_id, properties, filters })).await;
        match self.expect("SUBACK").await {
            Packet::SubAck(a) => {
                assert_eq!(a.packet_id, packet_id, "[MQTT-3.8.4-2]");
                a
            }
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    /// PINGREQ, and the next packet must be its PINGRESP.
    async fn ping(&mut self, why: &str) {
        self.send(Packet::PingReq).await;
        let p = self.expect("PINGRESP").await;
        assert_eq!(p, Packet::PingResp, "{why}");
    }

    /// The next packet must be DISCONNECT with `code`, and then the connection must close.
    async fn expect_disconnect(&mut self, code: u8) -> Disconnect {
        let p = self.expect("DISCONNECT").await;
        let Packet::Disconnect(d) = p else {
            panic!("expected DISCONNECT 0x{code:02X}, got {p:?}");
        };
        assert_eq!(
            d.reason_code, code,
            "DISCONNECT reason code 0x{:02X} (reason string {:?}), expected 0x{code:02X}",
            d.reason_code, d.properties.reason_string
        );
        assert_eq!(d.properties.session_expiry_interval, None, "[MQTT-3.14.2-2]");
        self.expect_closed().await;
        d
    }

    async fn expect_closed(&mut self) {
        let p = self.recv().await;
        assert!(p.is_none(), "expected the broker to close the connection, got {p:?}");
    }
}

fn fixed_header(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "test helper handles one-byte lengths only");
    let mut v = vec![first, body.len() as u8];
    v.extend_from_slice(body);
    v
}

// ---------------------------------------------------------------------------------------
// A challenge-response authenticator for enhanced authentication (section 4.12)

const METHOD: &str = "TEST-CR";
const SECRET: &[u8] = b"open-sesame";

/// The answer a client must give to `challenge`.
fn cr_answer(challenge: &[u8]) -> Bytes {
    challenge.iter().rev().chain(SECRET).map(|b| b ^ 0x5A).collect::<Vec<u8>>().into()
}

/// Lets plain clients in; offers method `TEST-CR`: the server answers the client's first
/// data with the challenge `challenge:<data>` (AUTH 0x18), and the client must send back
/// `cr_answer(challenge)`.
struct ChallengeAuth;

impl Authenticator for ChallengeAuth {
    fn authenticate(&mut self, _creds: &Credentials<'_>) -> Result<(), u8> {
        Ok(())
    }

    fn start_exchange(&mut self, method: &str, _creds: &Credentials<'_>) -> Option<Box<dyn AuthExchange>> {
        (method == METHOD).then(|| Box::new(ChallengeExchange { challenge: None }) as Box<dyn AuthExchange>)
    }
}

struct ChallengeExchange {
    challenge: Option<Vec<u8>>,
}

impl AuthExchange for ChallengeExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        match self.challenge.take() {
            None => {
                let mut challenge = b"challenge:".to_vec();
                challenge.extend_from_slice(data.unwrap_or_default());
                self.challenge = Some(challenge.clone());
                AuthStep::Continue(challenge.into())
            }
            Some(ch) if data == Some(&cr_answer(&ch)[..]) => {
                AuthStep::Success(Some(Bytes::from_static(b"welcome")))
            }
            Some(_) => AuthStep::Fail(reason::NOT_AUTHORIZED),
        }
    }
}

fn auth_packet(code: u8, data: Option<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason_code: code,
        properties: Properties {
            authentication_method: Some(METHOD.into()),
            authentication_data: data,
            ..Properties::default()
        },
    })
}

/// Sends CONNECT with method TEST-CR and data `hello`, and checks the server's challenge.
async fn cr_start(addr: SocketAddr, client_id: &str) -> (Raw, Bytes) {
    let mut c = v5_connect(client_id);
    c.properties.authentication_method = Some(METHOD.into());
    c.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    let mut raw = Raw::open(addr).await;
    raw.send(Packet::Connect(Box::new(c))).await;
    let p = raw.expect("AUTH 0x18").await;
    let Packet::Auth(a) = p else {
        panic!("expected AUTH (continue authentication), got {p:?}");
    };
    assert_eq!(a.reason_code, reason::CONTINUE_AUTHENTICATION, "[MQTT-4.12.0-2]");
    assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD), "[MQTT-4.12.0-5]");
    let challenge = a.properties.authentication_data.expect("challenge data");
    assert_eq!(&challenge[..], b"challenge:hello");
    (raw, challenge)
}

/// A connection authenticated with TEST-CR.
async fn cr_connect(addr: SocketAddr, client_id: &str) -> Raw {
    let (mut raw, challenge) = cr_start(addr, client_id).await;
    raw.send(auth_packet(reason::CONTINUE_AUTHENTICATION, Some(cr_answer(&challenge)))).await;
    let p = raw.expect("CONNACK").await;
    let Packet::ConnAck(ack) = p else {
        panic!("expected CONNACK, got {p:?}");
    };
    assert_eq!(ack.reason_code, reason::SUCCESS, "CONNACK {ack:?}");
    assert_eq!(ack.properties.authentication_method.as_deref(), Some(METHOD), "[MQTT-4.12.0-5]");
    assert_eq!(ack.properties.authentication_data.as_deref(), Some(&b"welcome"[..]));
    raw
}

// =======================================================================================
// CONNECT / CONNACK

#[tokio::test]
async fn mqtt5_3_2_2_3_connack_announces_receive_maximum_packet_size_and_topic_alias_maximum() {
    let broker = TestBroker::start_with(|c| {
        c.broker.max_inflight = 7;
        c.broker.max_packet_size = 4096;
        c.broker.topic_alias_max = 9;
    })
    .await;
    let (_c, ack) = Mq::connect(opts(&broker, "connack-props")).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-2]");
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(7), "Receive Maximum");
    assert_eq!(p.max_packet_size, Some(4096), "Maximum Packet Size");
    assert_eq!(p.topic_alias_max, Some(9), "Topic Alias Maximum");
    assert_eq!(p.assigned_client_identifier, None, "client id was given");
    assert_eq!(p.max_qos, None, "QoS 2 is supported, so no Maximum QoS");
    assert_ne!(p.retain_available, Some(0), "retain is available");
    assert_eq!(p.authentication_method, None, "[MQTT-4.12.0-6]");
    assert_eq!(p.response_information, None, "[MQTT-3.1.2-28]");
}

#[tokio::test]
async fn mqtt5_3_2_2_16_assigned_client_identifier_for_empty_client_id() {
    let broker = TestBroker::start().await;
    let (mut a, ack_a) = Mq::connect(opts(&broker, "")).await;
    let (_b, ack_b) = Mq::connect(opts(&broker, "")).await;
    let id_a = ack_a.properties.and_then(|p| p.assigned_client_identifier).expect("assigned id for a");
    let id_b = ack_b.properties.and_then(|p| p.assigned_client_identifier).expect("assigned id for b");
    assert!(!id_a.is_empty() && !id_b.is_empty());
    assert_ne!(id_a, id_b, "assigned identifiers must be unique");
    // [MQTT-3.1.3-7]: the connection is processed as if the client had sent that id, so
    // connecting with it takes the session over.
    let (_c, _) = Mq::connect(opts(&broker, &id_a)).await;
    let (code, _) = a.server_disconnect().await;
    assert_eq!(code, DisconnectReasonCode::SessionTakenOver);
}

#[tokio::test]
async fn mqtt5_3_2_2_3_15_response_information_returned_when_requested() {
    let broker = TestBroker::start().await;
    let mut o = opts(&broker, "resp-info");
    o.set_request_response_info(Some(1));
    let (_c, ack) = Mq::connect(o).await;
    let info = ack.properties.and_then(|p| p.response_information).expect("Response Information");
    assert!(!info.is_empty());
}

#[tokio::test]
async fn mqtt5_3_1_2_28_no_response_information_when_request_is_0() {
    let broker = TestBroker::start().await;
    let mut o = opts(&broker, "resp-info-0");
    o.set_request_response_info(Some(0));
    let (_c, ack) = Mq::connect(o).await;
    assert_eq!(ack.properties.and_then(|p| p.response_information), None);
}

#[tokio::test]
async fn mqtt5_3_2_2_3_2_session_expiry_capped_by_server_is_announced() {
    let broker = TestBroker::start_with(|c| c.broker.max_session_expiry_secs = 10).await;
    let (_c, ack) = Mq::connect(persistent_opts(&broker, "expiry-cap", 100)).await;
    assert_eq!(ack.properties.and_then(|p| p.session_expiry_interval), Some(10));
}

#[tokio::test]
async fn mqtt5_3_2_2_21_server_keep_alive_announced() {
    let broker = TestBroker::start_with(|c| c.broker.max_keep_alive_secs = 20).await;
    let mut o = opts(&broker, "server-ka");
    o.set_keep_alive(Duration::from_secs(60));
    let (_c, ack) = Mq::connect(o).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(20));
}

#[tokio::test]
async fn mqtt5_3_2_2_9_maximum_qos_announced_and_granted_qos_capped() {
    let broker = TestBroker::start_with(|c| c.broker.max_qos = 1).await;
    let (mut c, ack) = Mq::connect(opts(&broker, "max-qos")).await;
    assert_eq!(ack.properties.and_then(|p| p.max_qos), Some(1), "[MQTT-3.2.2-9]");
    // [MQTT-3.2.2-10], [MQTT-3.8.4-7]: a QoS 2 subscription is accepted, granted at QoS 1.
    let ack = c.subscribe_filter(filter("mq/t", QoS::ExactlyOnce), None).await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
}

#[tokio::test]
async fn mqtt5_3_2_2_11_publish_above_maximum_qos_gets_disconnect_0x9b() {
    let broker = TestBroker::start_with(|c| c.broker.max_qos = 1).await;
    let mut raw = Raw::connect(broker.addr(), "qos2-too-high").await;
    raw.send(Packet::Publish(wire_publish("mq/t", WireQoS::ExactlyOnce, 1, b"x"))).await;
    raw.expect_disconnect(reason::QOS_NOT_SUPPORTED).await;
}

#[tokio::test]
async fn mqtt5_3_2_2_12_will_qos_above_maximum_qos_refused_with_0x9b() {
    let broker = TestBroker::start_with(|c| c.broker.max_qos = 1).await;
    let mut c = v5_connect("will-qos-too-high");
    c.will = Some(Will {
        topic: "will/qos".into(),
        payload: Bytes::from_static(b"w"),
        qos: WireQoS::ExactlyOnce,
        ..Will::default()
    });
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert_eq!(ack.reason_code, reason::QOS_NOT_SUPPORTED, "CONNACK {ack:?}");
    assert!(!ack.session_present, "[MQTT-3.2.2-6]");
    raw.expect_closed().await;
}

#[tokio::test]
async fn mqtt5_3_2_2_14_retain_unavailable_announced_and_retained_publish_gets_0x9a() {
    let broker = TestBroker::start_with(|c| c.broker.retain_available = false).await;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), v5_connect("no-retain")).await;
    assert_eq!(ack.reason_code, reason::SUCCESS);
    assert_eq!(ack.properties.retain_available, Some(0), "Retain Available");
    let mut p = wire_publish("nr/t", WireQoS::AtMostOnce, 0, b"x");
    p.retain = true;
    raw.send(Packet::Publish(p)).await;
    raw.expect_disconnect(reason::RETAIN_NOT_SUPPORTED).await;
}

#[tokio::test]
async fn mqtt5_3_2_2_13_will_retain_without_retain_support_refused_with_0x9a() {
    let broker = TestBroker::start_with(|c| c.broker.retain_available = false).await;
    let mut c = v5_connect("will-retain-unsupported");
    c.will = Some(Will {
        topic: "will/retain".into(),
        payload: Bytes::from_static(b"w"),
        retain: true,
        ..Will::default()
    });
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert_eq!(ack.reason_code, reason::RETAIN_NOT_SUPPORTED, "CONNACK {ack:?}");
    raw.expect_closed().await;
}

// =======================================================================================
// Sessions: clean start and session expiry

#[tokio::test]
async fn mqtt5_3_1_2_23_session_with_expiry_survives_disconnect_and_queues_qos1() {
    let broker = TestBroker::start().await;
    let mut o = persistent_opts(&broker, "sess-keep", 300);
    o.set_clean_start(true);
    let (mut sub, _) = Mq::connect(o).await;
    sub.subscribe("sess/keep", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "sess-keep-pub")).await;
    let code = publisher.publish_acked("sess/keep", false, b"queued", None).await;
    assert_eq!(code, PubAckReason::Success, "the offline session's subscription matches");

    let (mut sub, ack) = Mq::connect(persistent_opts(&broker, "sess-keep", 300)).await;
    assert!(ack.session_present, "[MQTT-3.2.2-3]");
    let p = sub.next_publish().await;
    assert_eq!(topic_of(&p), "sess/keep");
    assert_eq!(&p.payload[..], b"queued");
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt5_3_1_2_11_session_without_expiry_ends_at_disconnect() {
    let broker = TestBroker::start().await;
    let mut o = opts(&broker, "sess-zero");
    o.set_clean_start(false);
    let (mut sub, _) = Mq::connect(o.clone()).await;
    sub.subscribe("sess/zero", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "sess-zero-pub")).await;
    let code = publisher.publish_acked("sess/zero", false, b"lost", None).await;
    assert_eq!(code, PubAckReason::NoMatchingSubscribers, "the subscription ended with the session");
    let (_sub, ack) = Mq::connect(o).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-3]: no session state was kept");
}

#[tokio::test]
async fn mqtt5_4_1_0_2_session_discarded_after_expiry_interval() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(persistent_opts(&broker, "sess-short", 1)).await;
    sub.subscribe("sess/short", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "sess-short-pub")).await;
    let code = publisher.publish_acked("sess/short", false, b"late", None).await;
    assert_eq!(code, PubAckReason::NoMatchingSubscribers, "the expired session's subscription is gone");
    let (_sub, ack) = Mq::connect(persistent_opts(&broker, "sess-short", 1)).await;
    assert!(!ack.session_present, "the session expired after 1 s");
}

#[tokio::test]
async fn mqtt5_3_1_2_4_clean_start_discards_existing_session() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(persistent_opts(&broker, "sess-clean", 300)).await;
    sub.subscribe("sess/clean", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut o = persistent_opts(&broker, "sess-clean", 300);
    o.set_clean_start(true);
    let (_sub, ack) = Mq::connect(o).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-2]");
    let (mut publisher, _) = Mq::connect(opts(&broker, "sess-clean-pub")).await;
    let code = publisher.publish_acked("sess/clean", false, b"x", None).await;
    assert_eq!(code, PubAckReason::NoMatchingSubscribers, "the old subscription was discarded");
}

#[tokio::test]
async fn mqtt5_3_14_2_2_2_disconnect_session_expiry_0_ends_session() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("disc-expiry-0");
    c.properties.session_expiry_interval = Some(300);
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c.clone()).await;
    assert_eq!(ack.reason_code, reason::SUCCESS);
    raw.subscribe(1, &[("de0/t", sub_opts(WireQoS::AtLeastOnce))], None).await;
    let properties = Properties { session_expiry_interval: Some(0), ..Properties::default() };
    raw.send(Packet::Disconnect(Disconnect { reason_code: reason::SUCCESS, properties })).await;
    raw.expect_closed().await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "disc-expiry-0-pub")).await;
    let code = publisher.publish_acked("de0/t", false, b"x", None).await;
    assert_eq!(code, PubAckReason::NoMatchingSubscribers, "session ended at DISCONNECT");
    c.clean_start = false;
    let (_raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn mqtt5_3_14_2_2_2_disconnect_can_extend_session_expiry() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("disc-expiry-up");
    c.properties.session_expiry_interval = Some(1);
    let (mut raw, _) = Raw::connect_with(broker.addr(), c.clone()).await;
    raw.subscribe(1, &[("deu/t", sub_opts(WireQoS::AtLeastOnce))], None).await;
    let properties = Properties { session_expiry_interval: Some(300), ..Properties::default() };
    raw.send(Packet::Disconnect(Disconnect { reason_code: reason::SUCCESS, properties })).await;
    raw.expect_closed().await;
    // Past the original 1 s interval.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "disc-expiry-up-pub")).await;
    let code = publisher.publish_acked("deu/t", false, b"kept", None).await;
    assert_eq!(code, PubAckReason::Success, "the session lives on with the new interval");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert!(ack.session_present, "session extended by DISCONNECT");
    let p = raw.expect_publish().await;
    assert_eq!(&*p.topic, "deu/t");
    assert_eq!(&p.payload[..], b"kept");
}

#[tokio::test]
async fn mqtt5_3_14_2_2_2_raising_session_expiry_from_0_is_protocol_error() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("disc-expiry-raise");
    let (mut raw, _) = Raw::connect_with(broker.addr(), c.clone()).await;
    let properties = Properties { session_expiry_interval: Some(60), ..Properties::default() };
    raw.send(Packet::Disconnect(Disconnect { reason_code: reason::SUCCESS, properties })).await;
    let d = raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
    assert!(d.properties.reason_string.is_some(), "reason string on the error");
    c.clean_start = false;
    let (_raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert!(!ack.session_present, "the session was not kept");
}

// =======================================================================================
// Will messages and will delay

#[tokio::test]
async fn mqtt5_3_1_2_8_will_published_after_delay_when_client_does_not_return() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-delay-watch")).await;
    watcher.subscribe("will/delayed", QoS::AtLeastOnce).await;

    let mut o = persistent_opts(&broker, "will-delay", 60);
    o.set_last_will(LastWill::new(
        "will/delayed",
        "gone",
        QoS::AtLeastOnce,
        false,
        Some(will_props(Some(2))),
    ));
    let (mut client, _) = Mq::connect(o).await;
    let dropped_at = Instant::now();
    client.kill().await;

    let p = watcher.next_publish().await;
    assert_eq!(topic_of(&p), "will/delayed");
    assert_eq!(&p.payload[..], b"gone");
    assert!(!p.retain, "[MQTT-3.1.2-16]");
    // Causality, not speed: the broker cannot have started the delay before the close.
    assert!(
        dropped_at.elapsed() >= Duration::from_millis(1900),
        "will published {:?} after the close, before its 2 s delay",
        dropped_at.elapsed()
    );
}

#[tokio::test]
async fn mqtt5_3_1_3_2_will_not_published_when_client_reconnects_within_delay() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-back-watch")).await;
    watcher.subscribe("will/back", QoS::AtLeastOnce).await;

    let mut o = persistent_opts(&broker, "will-back", 60);
    o.set_last_will(LastWill::new("will/back", "gone", QoS::AtLeastOnce, false, Some(will_props(Some(2)))));
    let (mut client, _) = Mq::connect(o).await;
    client.kill().await;
    let (_client, ack) = Mq::connect(persistent_opts(&broker, "will-back", 60)).await;
    assert!(ack.session_present);
    // Past the will delay: a will would have been published by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    watcher.publish_qos0("will/back", b"sentinel").await;
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"sentinel", "the will must not be published, got {p:?}");
}

#[tokio::test]
async fn mqtt5_3_1_2_8_will_published_on_abrupt_close_with_delay_0() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-now-watch")).await;
    watcher.subscribe("will/now", QoS::AtLeastOnce).await;

    let mut o = opts(&broker, "will-now");
    o.set_last_will(LastWill::new("will/now", "gone", QoS::AtLeastOnce, false, None));
    let (mut client, _) = Mq::connect(o).await;
    client.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!(topic_of(&p), "will/now");
    assert_eq!(&p.payload[..], b"gone");
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt5_3_1_2_17_will_with_retain_published_as_retained() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-retained-watch")).await;
    watcher.subscribe("will/retained", QoS::AtLeastOnce).await;
    let mut o = opts(&broker, "will-retained");
    o.set_last_will(LastWill::new("will/retained", "gone", QoS::AtLeastOnce, true, None));
    let (mut client, _) = Mq::connect(o).await;
    client.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"gone", "will published");
    // A later subscriber gets it as a retained message.
    let (mut late, _) = Mq::connect(opts(&broker, "will-retained-late")).await;
    late.subscribe("will/retained", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert_eq!(&p.payload[..], b"gone");
    assert!(p.retain, "a retained will is stored as a retained message");
}

#[tokio::test]
async fn mqtt5_3_14_4_3_normal_disconnect_discards_will() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-normal-watch")).await;
    watcher.subscribe("will/normal", QoS::AtLeastOnce).await;

    let mut o = opts(&broker, "will-normal");
    o.set_last_will(LastWill::new("will/normal", "gone", QoS::AtLeastOnce, false, None));
    let (client, _) = Mq::connect(o).await;
    client.disconnect().await;
    watcher.publish_qos0("will/normal", b"sentinel").await;
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"sentinel", "DISCONNECT 0x00 must discard the will, got {p:?}");
}

#[tokio::test]
async fn mqtt5_3_14_2_1_disconnect_with_will_message_0x04_publishes_will() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-04-watch")).await;
    watcher.subscribe("will/04", QoS::AtLeastOnce).await;

    let mut c = v5_connect("will-04");
    c.will = Some(Will {
        topic: "will/04".into(),
        payload: Bytes::from_static(b"asked-for"),
        qos: WireQoS::AtLeastOnce,
        ..Will::default()
    });
    let (mut raw, _) = Raw::connect_with(broker.addr(), c).await;
    raw.send(Packet::Disconnect(Disconnect {
        reason_code: reason::DISCONNECT_WITH_WILL,
        properties: Properties::default(),
    }))
    .await;
    raw.expect_closed().await;
    let p = watcher.next_publish().await;
    assert_eq!(topic_of(&p), "will/04");
    assert_eq!(&p.payload[..], b"asked-for");
}

// =======================================================================================
// Session takeover

#[tokio::test]
async fn mqtt5_3_1_4_3_takeover_disconnects_old_with_0x8e() {
    let broker = TestBroker::start().await;
    let (mut old, _) = Mq::connect(opts(&broker, "takeover")).await;
    let (mut new, ack) = Mq::connect(opts(&broker, "takeover")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (code, _) = old.server_disconnect().await;
    assert_eq!(code, DisconnectReasonCode::SessionTakenOver);
    // The new connection works.
    new.subscribe("takeover/t", QoS::AtLeastOnce).await;
}

// =======================================================================================
// Topic aliases

#[tokio::test]
async fn mqtt5_3_3_2_12_client_topic_alias_set_then_used_with_empty_topic() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "alias-in-sub")).await;
    sub.subscribe("alias/in", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "alias-in-pub")).await;
    let props = PublishProperties { topic_alias: Some(1), ..PublishProperties::default() };
    let code = publisher.publish_acked("alias/in", false, b"one", Some(props.clone())).await;
    assert_eq!(code, PubAckReason::Success);
    let code = publisher.publish_acked("", false, b"two", Some(props.clone())).await;
    assert_eq!(code, PubAckReason::Success, "the alias resolves to alias/in");
    // A PUBLISH with a topic and a known alias replaces the mapping.
    sub.subscribe("alias/other", QoS::AtLeastOnce).await;
    publisher.publish_acked("alias/other", false, b"three", Some(props.clone())).await;
    publisher.publish_acked("", false, b"four", Some(props)).await;
    for (topic, want) in
        [("alias/in", &b"one"[..]), ("alias/in", b"two"), ("alias/other", b"three"), ("alias/other", b"four")]
    {
        let p = sub.next_publish().await;
        assert_eq!(topic_of(&p), topic);
        assert_eq!(&p.payload[..], want);
    }
}

#[tokio::test]
async fn mqtt5_3_3_2_8_topic_alias_0_gets_disconnect_0x94() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "alias-zero").await;
    let mut p = wire_publish("alias/zero", WireQoS::AtMostOnce, 0, b"x");
    p.properties.topic_alias = Some(0);
    raw.send(Packet::Publish(p)).await;
    let d = raw.expect_disconnect(reason::TOPIC_ALIAS_INVALID).await;
    assert!(d.properties.reason_string.is_some(), "reason string on the error");
}

#[tokio::test]
async fn mqtt5_3_3_2_9_topic_alias_above_maximum_gets_disconnect_0x94() {
    let broker = TestBroker::start_with(|c| c.broker.topic_alias_max = 4).await;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), v5_connect("alias-high")).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(4));
    // Alias 4 is fine [MQTT-3.3.2-12]; 5 is above the maximum.
    let mut p = wire_publish("alias/high", WireQoS::AtLeastOnce, 1, b"x");
    p.properties.topic_alias = Some(4);
    raw.send(Packet::Publish(p)).await;
    let ack = raw.expect("PUBACK").await;
    assert!(matches!(ack, Packet::PubAck(PubResp { packet_id: 1, .. })), "got {ack:?}");
    let mut p = wire_publish("alias/high", WireQoS::AtMostOnce, 0, b"x");
    p.properties.topic_alias = Some(5);
    raw.send(Packet::Publish(p)).await;
    let d = raw.expect_disconnect(reason::TOPIC_ALIAS_INVALID).await;
    assert!(d.properties.reason_string.is_some(), "reason string on the error");
}

#[tokio::test]
async fn mqtt5_3_3_2_3_4_unknown_topic_alias_with_empty_topic_gets_disconnect_0x82() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "alias-unknown").await;
    let mut p = wire_publish("", WireQoS::AtMostOnce, 0, b"x");
    p.properties.topic_alias = Some(3);
    raw.send(Packet::Publish(p)).await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn mqtt5_3_3_2_7_topic_alias_not_carried_across_connections() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("alias-carry");
    c.properties.session_expiry_interval = Some(60);
    let (mut raw, _) = Raw::connect_with(broker.addr(), c.clone()).await;
    let mut p = wire_publish("alias/carry", WireQoS::AtLeastOnce, 1, b"x");
    p.properties.topic_alias = Some(1);
    raw.send(Packet::Publish(p)).await;
    assert!(matches!(raw.expect("PUBACK").await, Packet::PubAck(_)));
    raw.send(Packet::Disconnect(Disconnect::default())).await;
    raw.expect_closed().await;

    c.clean_start = false;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert!(ack.session_present);
    let mut p = wire_publish("", WireQoS::AtMostOnce, 0, b"x");
    p.properties.topic_alias = Some(1);
    raw.send(Packet::Publish(p)).await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

/// Resolves topic aliases the broker sends, checking them against the client's maximum.
struct AliasMap {
    max: u16,
    map: HashMap<u16, String>,
}

impl AliasMap {
    fn resolve(&mut self, p: &Publish) -> String {
        match p.properties.topic_alias {
            None => {
                assert!(!p.topic.is_empty(), "PUBLISH without topic or alias: {p:?}");
                p.topic.to_string()
            }
            Some(a) => {
                assert!(
                    (1..=self.max).contains(&a),
                    "[MQTT-3.1.2-26]/[MQTT-3.3.2-8]: alias {a} (max {})",
                    self.max
                );
                if p.topic.is_empty() {
                    self.map.get(&a).cloned().unwrap_or_else(|| {
                        panic!("broker used topic alias {a}, which it never mapped to a topic: {p:?}")
                    })
                } else {
                    self.map.insert(a, p.topic.to_string());
                    p.topic.to_string()
                }
            }
        }
    }
}

#[tokio::test]
async fn mqtt5_3_3_2_11_broker_sends_topic_aliases_within_client_maximum() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("alias-out");
    c.properties.topic_alias_maximum = Some(2);
    let (mut sub, _) = Raw::connect_with(broker.addr(), c).await;
    sub.subscribe(1, &[("alias/out/#", sub_opts(WireQoS::AtMostOnce))], None).await;

    let (publisher, _) = Mq::connect(opts(&broker, "alias-out-pub")).await;
    let topics = ["alias/out/a", "alias/out/a", "alias/out/b", "alias/out/c", "alias/out/c", "alias/out/a"];
    for (i, t) in topics.iter().enumerate() {
        publisher.client.publish(*t, QoS::AtMostOnce, false, vec![b'0' + i as u8]).await.expect("publish");
    }
    let mut aliases = AliasMap { max: 2, map: HashMap::new() };
    let mut first_alias = None;
    for (i, want) in topics.iter().enumerate() {
        let p = sub.expect_publish().await;
        assert_eq!(&p.payload[..], &[b'0' + i as u8], "order");
        assert_eq!(aliases.resolve(&p), *want);
        match i {
            0 => {
                assert_eq!(&*p.topic, "alias/out/a");
                first_alias = Some(p.properties.topic_alias.expect("broker assigns an alias"));
            }
            // The second message to the same topic uses the alias alone.
            1 => {
                assert_eq!(&*p.topic, "", "second message to alias/out/a should use the alias");
                assert_eq!(p.properties.topic_alias, first_alias);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn mqtt5_3_1_2_27_no_topic_alias_sent_without_client_maximum() {
    let broker = TestBroker::start().await;
    let mut sub = Raw::connect(broker.addr(), "alias-none").await;
    sub.subscribe(1, &[("alias/none", sub_opts(WireQoS::AtMostOnce))], None).await;
    let (publisher, _) = Mq::connect(opts(&broker, "alias-none-pub")).await;
    publisher.publish_qos0("alias/none", b"1").await;
    publisher.publish_qos0("alias/none", b"2").await;
    for _ in 0..2 {
        let p = sub.expect_publish().await;
        assert_eq!(&*p.topic, "alias/none");
        assert_eq!(p.properties.topic_alias, None);
    }
}

#[tokio::test]
async fn mqtt5_3_1_2_25_discarded_oversized_publish_does_not_establish_topic_alias() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("alias-oversize");
    c.properties.topic_alias_maximum = Some(5);
    c.properties.maximum_packet_size = Some(200);
    let (mut sub, _) = Raw::connect_with(broker.addr(), c).await;
    sub.subscribe(1, &[("alias/big", sub_opts(WireQoS::AtMostOnce))], None).await;
    let (publisher, _) = Mq::connect(opts(&broker, "alias-oversize-pub")).await;
    publisher.publish_qos0("alias/big", &[b'x'; 500]).await;
    publisher.publish_qos0("alias/big", b"small").await;
    let p = sub.expect_publish().await;
    assert_eq!(&p.payload[..], b"small", "the oversized message must be discarded");
    let mut aliases = AliasMap { max: 5, map: HashMap::new() };
    assert_eq!(aliases.resolve(&p), "alias/big");
}

// =======================================================================================
// Flow control: Receive Maximum

#[tokio::test]
async fn mqtt5_3_3_4_7_exceeding_receive_maximum_gets_disconnect_0x93() {
    let broker = TestBroker::start_with(|c| c.broker.max_inflight = 2).await;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), v5_connect("recv-max-in")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=2 {
        raw.send(Packet::Publish(wire_publish("rm/in", WireQoS::ExactlyOnce, id, b"x"))).await;
        let p = raw.expect("PUBREC").await;
        assert!(matches!(p, Packet::PubRec(PubResp { packet_id, .. }) if packet_id == id), "got {p:?}");
    }
    // Completing flow 1 frees its slot: flow 3 is within the maximum.
    raw.send(Packet::PubRel(PubResp::new(1))).await;
    assert_eq!(raw.expect("PUBCOMP").await, Packet::PubComp(PubResp::new(1)));
    raw.send(Packet::Publish(wire_publish("rm/in", WireQoS::ExactlyOnce, 3, b"x"))).await;
    let p = raw.expect("PUBREC").await;
    assert!(matches!(p, Packet::PubRec(PubResp { packet_id: 3, .. })), "got {p:?}");
    // Flows 2 and 3 are open (no PUBREL sent); a third exceeds Receive Maximum.
    raw.send(Packet::Publish(wire_publish("rm/in", WireQoS::ExactlyOnce, 4, b"x"))).await;
    let d = raw.expect_disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED).await;
    assert!(d.properties.reason_string.is_some(), "reason string on the error");
}

#[tokio::test]
async fn mqtt5_3_3_4_9_broker_respects_client_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("recv-max-out");
    c.properties.receive_maximum = Some(2);
    let (mut sub, _) = Raw::connect_with(broker.addr(), c).await;
    sub.subscribe(1, &[("rm/out", sub_opts(WireQoS::AtLeastOnce))], None).await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "recv-max-out-pub")).await;
    for payload in [&b"m0"[..], b"m1", b"m2", b"m3", b"m4"] {
        publisher.client.publish("rm/out", QoS::AtLeastOnce, false, payload).await.expect("publish");
    }
    for _ in 0..5 {
        assert_eq!(publisher.puback().await.reason, PubAckReason::Success);
    }
    let mut ids = Vec::new();
    for want in [&b"m0"[..], b"m1"] {
        let p = sub.expect_publish().await;
        assert_eq!(&p.payload[..], want);
        ids.push(p.packet_id);
    }
    // Two unacknowledged: nothing more until an ack; a PINGRESP comes first.
    sub.ping("[MQTT-3.3.4-9]: a third QoS 1 PUBLISH was sent beyond Receive Maximum 2").await;
    sub.ping("[MQTT-3.3.4-9]: a third QoS 1 PUBLISH was sent beyond Receive Maximum 2").await;
    sub.send(Packet::PubAck(PubResp::new(ids[0]))).await;
    let p = sub.expect_publish().await;
    assert_eq!(&p.payload[..], b"m2");
    ids.push(p.packet_id);
    sub.ping("[MQTT-3.3.4-9]: more than 2 QoS 1 PUBLISH in flight").await;
    sub.send(Packet::PubAck(PubResp::new(ids[1]))).await;
    sub.send(Packet::PubAck(PubResp::new(ids[2]))).await;
    for want in [&b"m3"[..], b"m4"] {
        let p = sub.expect_publish().await;
        assert_eq!(&p.payload[..], want);
    }
}

// =======================================================================================
// Maximum Packet Size

#[tokio::test]
async fn mqtt5_3_1_2_24_message_over_client_maximum_packet_size_not_sent() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("max-size-out");
    c.properties.maximum_packet_size = Some(256);
    let (mut sub, _) = Raw::connect_with(broker.addr(), c).await;
    sub.subscribe(1, &[("size/out", sub_opts(WireQoS::AtLeastOnce))], None).await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "max-size-out-pub")).await;
    publisher.publish_acked("size/out", false, &[b'x'; 600], None).await;
    publisher.publish_acked("size/out", false, b"small", None).await;
    let p = sub.expect_publish().await;
    assert_eq!(&p.payload[..], b"small", "the 600-byte message must be discarded");
    sub.send(Packet::PubAck(PubResp::new(p.packet_id))).await;
    // [MQTT-3.1.2-25]: discarded as if sent, so it is not retried later either.
    sub.ping("the oversized message showed up later").await;
}

#[tokio::test]
async fn mqtt5_3_2_2_15_publish_over_broker_maximum_packet_size_gets_disconnect_0x95() {
    let broker = TestBroker::start_with(|c| c.broker.max_packet_size = 1024).await;
    let (mut raw, ack) = Raw::connect_with(broker.addr(), v5_connect("max-size-in")).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    raw.send(Packet::Publish(wire_publish("size/in", WireQoS::AtMostOnce, 0, &[b'x'; 2000]))).await;
    raw.expect_disconnect(reason::PACKET_TOO_LARGE).await;
}

// =======================================================================================
// Message expiry

#[tokio::test]
async fn mqtt5_3_3_2_6_message_expiry_decremented_on_forward() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(persistent_opts(&broker, "expiry-dec", 300)).await;
    sub.subscribe("exp/dec", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "expiry-dec-pub")).await;
    let props = PublishProperties { message_expiry_interval: Some(10), ..PublishProperties::default() };
    publisher.publish_acked("exp/dec", false, b"x", Some(props)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (mut sub, _) = Mq::connect(persistent_opts(&broker, "expiry-dec", 300)).await;
    let p = sub.next_publish().await;
    let left = p.properties.and_then(|pr| pr.message_expiry_interval).expect("Message Expiry Interval");
    assert!((1..=8).contains(&left), "waited 2 s of 10 s, but the forwarded interval is {left}");
}

#[tokio::test]
async fn mqtt5_3_3_2_6_message_expiry_forwarded_to_online_subscriber() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "expiry-live")).await;
    sub.subscribe("exp/live", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "expiry-live-pub")).await;
    let props = PublishProperties { message_expiry_interval: Some(60), ..PublishProperties::default() };
    publisher.publish_acked("exp/live", false, b"with", Some(props)).await;
    publisher.publish_acked("exp/live", false, b"without", None).await;
    let p = sub.next_publish().await;
    let left = p.properties.and_then(|pr| pr.message_expiry_interval).expect("Message Expiry Interval");
    assert!((1..=60).contains(&left), "forwarded interval {left}");
    let p = sub.next_publish().await;
    assert_eq!(p.properties.and_then(|pr| pr.message_expiry_interval), None);
}

#[tokio::test]
async fn mqtt5_3_3_2_5_expired_message_not_delivered_to_offline_session() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(persistent_opts(&broker, "expiry-gone", 300)).await;
    sub.subscribe("exp/gone", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "expiry-gone-pub")).await;
    let props = PublishProperties { message_expiry_interval: Some(1), ..PublishProperties::default() };
    publisher.publish_acked("exp/gone", false, b"expires", Some(props)).await;
    publisher.publish_acked("exp/gone", false, b"stays", None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (mut sub, ack) = Mq::connect(persistent_opts(&broker, "expiry-gone", 300)).await;
    assert!(ack.session_present);
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"stays", "the expired message must not be delivered");
}

#[tokio::test]
async fn mqtt5_3_3_2_5_expired_retained_message_not_sent_on_subscribe() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "expiry-retained-pub")).await;
    let props = PublishProperties { message_expiry_interval: Some(1), ..PublishProperties::default() };
    publisher.publish_acked("exp/retained", true, b"old", Some(props)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (mut sub, _) = Mq::connect(opts(&broker, "expiry-retained-sub")).await;
    sub.subscribe("exp/retained", QoS::AtLeastOnce).await;
    publisher.publish_acked("exp/retained", false, b"live", None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"live", "the expired retained message must not be sent");
}

// =======================================================================================
// Subscription identifiers

#[tokio::test]
async fn mqtt5_3_3_4_3_subscription_identifier_delivered_with_message() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "subid")).await;
    let ack = sub.subscribe_filter(filter("sid/one", QoS::AtLeastOnce), Some(sub_props(7))).await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    sub.subscribe("sid/none", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "subid-pub")).await;
    publisher.publish_acked("sid/one", false, b"1", None).await;
    publisher.publish_acked("sid/none", false, b"2", None).await;
    let p = sub.next_publish().await;
    assert_eq!(topic_of(&p), "sid/one");
    assert_eq!(sub_ids(&p), vec![7]);
    let p = sub.next_publish().await;
    assert_eq!(topic_of(&p), "sid/none");
    assert_eq!(sub_ids(&p), Vec::<usize>::new(), "no identifier for a subscription without one");
}

#[tokio::test]
async fn mqtt5_3_3_4_4_overlapping_subscriptions_deliver_all_identifiers() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "subid-overlap")).await;
    sub.subscribe_filter(filter("ovl/+", QoS::AtLeastOnce), Some(sub_props(1))).await;
    sub.subscribe_filter(filter("ovl/#", QoS::AtLeastOnce), Some(sub_props(2))).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "subid-overlap-pub")).await;
    publisher.publish_acked("ovl/x", false, b"x", None).await;
    let first = sub.next_publish().await;
    let mut ids = sub_ids(&first);
    if ids.len() == 1 {
        // [MQTT-3.3.4-5]: one copy per subscription, each with its own identifier.
        let second = sub.next_publish().await;
        assert_eq!(topic_of(&second), "ovl/x");
        assert_eq!(sub_ids(&second).len(), 1, "{second:?}");
        ids.extend(sub_ids(&second));
        ids.sort_unstable();
    }
    assert_eq!(ids, vec![1, 2], "[MQTT-3.3.4-3]/[MQTT-3.3.4-4]");
}

#[tokio::test]
async fn mqtt5_3_8_2_1_2_subscription_identifier_0_gets_disconnect_0x82() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "subid-zero").await;
    let properties = Properties { subscription_identifiers: vec![0], ..Properties::default() };
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties,
        filters: vec![("sid/zero".into(), sub_opts(WireQoS::AtMostOnce))],
    }))
    .await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

// =======================================================================================
// Subscription options: No Local, Retain As Published, Retain Handling

#[tokio::test]
async fn mqtt5_3_8_3_3_no_local_own_messages_not_received() {
    let broker = TestBroker::start().await;
    let (mut me, _) = Mq::connect(opts(&broker, "nolocal")).await;
    let f = Filter { nolocal: true, ..filter("nl/t", QoS::AtLeastOnce) };
    me.subscribe_filter(f, None).await;
    me.publish_acked("nl/t", false, b"mine", None).await;
    let (mut other, _) = Mq::connect(opts(&broker, "nolocal-other")).await;
    other.publish_acked("nl/t", false, b"theirs", None).await;
    let p = me.next_publish().await;
    assert_eq!(&p.payload[..], b"theirs", "own message delivered despite No Local");
}

#[tokio::test]
async fn mqtt5_3_8_3_4_no_local_on_shared_subscription_gets_disconnect_0x82() {
    let broker = TestBroker::start().await;
    let (mut c, _) = Mq::connect(opts(&broker, "nolocal-shared")).await;
    let f = Filter { nolocal: true, ..filter("$share/g/nl/shared", QoS::AtLeastOnce) };
    c.client.subscribe_many(vec![f]).await.expect("subscribe request");
    let (code, _) = c.server_disconnect().await;
    assert_eq!(code, DisconnectReasonCode::ProtocolError);
}

#[tokio::test]
async fn mqtt5_3_3_1_13_retain_as_published_1_keeps_retain_flag() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "rap1")).await;
    let f = Filter { preserve_retain: true, ..filter("rap/t", QoS::AtLeastOnce) };
    sub.subscribe_filter(f, None).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "rap1-pub")).await;
    publisher.publish_acked("rap/t", true, b"retained", None).await;
    publisher.publish_acked("rap/t", false, b"plain", None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"retained");
    assert!(p.retain, "RETAIN kept with Retain As Published 1");
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"plain");
    assert!(!p.retain);
}

#[tokio::test]
async fn mqtt5_3_3_1_12_retain_as_published_0_clears_retain_flag() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "rap0")).await;
    sub.subscribe("rap0/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "rap0-pub")).await;
    publisher.publish_acked("rap0/t", true, b"retained", None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"retained");
    assert!(!p.retain, "RETAIN must be cleared on a live forward with Retain As Published 0");
}

async fn retained_setup(broker: &TestBroker, topic: &str) -> Mq {
    let (mut publisher, _) = Mq::connect(opts(broker, &format!("{topic}-pub"))).await;
    publisher.publish_acked(topic, true, b"kept", None).await;
    publisher
}

#[tokio::test]
async fn mqtt5_3_3_1_9_retain_handling_0_sends_retained_on_every_subscribe() {
    let broker = TestBroker::start().await;
    let _publisher = retained_setup(&broker, "rh0/t").await;
    let (mut sub, _) = Mq::connect(opts(&broker, "rh0")).await;
    for round in 0..2 {
        let f = Filter {
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            ..filter("rh0/t", QoS::AtLeastOnce)
        };
        sub.subscribe_filter(f, None).await;
        let p = sub.next_publish().await;
        assert_eq!(&p.payload[..], b"kept", "subscribe #{round}");
        assert!(p.retain, "retained messages are sent with RETAIN 1");
    }
}

#[tokio::test]
async fn mqtt5_3_3_1_10_retain_handling_1_sends_retained_only_for_new_subscription() {
    let broker = TestBroker::start().await;
    let mut publisher = retained_setup(&broker, "rh1/t").await;
    let (mut sub, _) = Mq::connect(opts(&broker, "rh1")).await;
    let f = Filter {
        retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        ..filter("rh1/t", QoS::AtLeastOnce)
    };
    sub.subscribe_filter(f.clone(), None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"kept");
    assert!(p.retain);
    sub.subscribe_filter(f, None).await;
    publisher.publish_acked("rh1/t", false, b"live", None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"live", "retained message re-sent for an existing subscription");
}

#[tokio::test]
async fn mqtt5_3_3_1_11_retain_handling_2_never_sends_retained() {
    let broker = TestBroker::start().await;
    let mut publisher = retained_setup(&broker, "rh2/t").await;
    let (mut sub, _) = Mq::connect(opts(&broker, "rh2")).await;
    let f = Filter { retain_forward_rule: RetainForwardRule::Never, ..filter("rh2/t", QoS::AtLeastOnce) };
    sub.subscribe_filter(f, None).await;
    publisher.publish_acked("rh2/t", false, b"live", None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"live", "retained message sent despite Retain Handling 2");
}

// =======================================================================================
// Shared subscriptions

#[tokio::test]
async fn mqtt5_4_8_2_shared_subscription_delivers_each_message_to_one_member() {
    let broker = TestBroker::start().await;
    let mut members = Vec::new();
    for i in 0..2 {
        let (mut m, _) = Mq::connect(opts(&broker, &format!("shared-{i}"))).await;
        m.subscribe("$share/grp/sh/t", QoS::AtLeastOnce).await;
        m.subscribe("sh/sentinel", QoS::AtLeastOnce).await;
        members.push(m);
    }
    let (mut plain, _) = Mq::connect(opts(&broker, "shared-plain")).await;
    plain.subscribe("sh/t", QoS::AtLeastOnce).await;

    let (mut publisher, _) = Mq::connect(opts(&broker, "shared-pub")).await;
    const N: u8 = 10;
    for i in 0..N {
        publisher.client.publish("sh/t", QoS::AtLeastOnce, false, vec![b'0' + i]).await.expect("publish");
        assert_eq!(publisher.puback().await.reason, PubAckReason::Success);
    }
    publisher.publish_acked("sh/sentinel", false, b"end", None).await;

    let mut seen = Vec::new();
    for m in &mut members {
        loop {
            let p = m.next_publish().await;
            if topic_of(&p) == "sh/sentinel" {
                break;
            }
            assert_eq!(topic_of(&p), "sh/t");
            assert_eq!(p.qos, QoS::AtLeastOnce, "[MQTT-4.8.2-3]");
            seen.push(p.payload[0]);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..N).map(|i| b'0' + i).collect::<Vec<_>>(), "each message exactly once in the group");
    for i in 0..N {
        let p = plain.next_publish().await;
        assert_eq!(p.payload[0], b'0' + i, "a non-shared subscriber gets every message");
    }
}

// =======================================================================================
// Application message properties

#[tokio::test]
async fn mqtt5_3_3_2_15_response_topic_and_correlation_data_passed_through() {
    let broker = TestBroker::start().await;
    let (mut responder, _) = Mq::connect(opts(&broker, "rr-responder")).await;
    responder.subscribe("rr/request", QoS::AtLeastOnce).await;
    let (mut requester, _) = Mq::connect(opts(&broker, "rr-requester")).await;
    requester.subscribe("rr/reply/42", QoS::AtLeastOnce).await;

    let props = PublishProperties {
        response_topic: Some("rr/reply/42".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr\xff")),
        ..PublishProperties::default()
    };
    requester.publish_acked("rr/request", false, b"ping", Some(props)).await;
    let req = responder.next_publish().await;
    let rp = req.properties.expect("request properties");
    assert_eq!(rp.response_topic.as_deref(), Some("rr/reply/42"), "[MQTT-3.3.2-15]");
    assert_eq!(rp.correlation_data.as_deref(), Some(&b"\x00corr\xff"[..]), "[MQTT-3.3.2-16]");

    let reply = PublishProperties { correlation_data: rp.correlation_data, ..PublishProperties::default() };
    let topic = rp.response_topic.expect("response topic");
    responder.publish_acked(&topic, false, b"pong", Some(reply)).await;
    let resp = requester.next_publish().await;
    assert_eq!(&resp.payload[..], b"pong");
    assert_eq!(resp.properties.and_then(|p| p.correlation_data).as_deref(), Some(&b"\x00corr\xff"[..]));
}

#[tokio::test]
async fn mqtt5_3_3_2_18_user_properties_passed_through_in_order() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "userprops")).await;
    sub.subscribe("up/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "userprops-pub")).await;
    let user = vec![
        ("b".to_string(), "1".to_string()),
        ("a".to_string(), "2".to_string()),
        ("b".to_string(), "3".to_string()),
        ("unicode-é".to_string(), "✓".to_string()),
    ];
    let props = PublishProperties { user_properties: user.clone(), ..PublishProperties::default() };
    publisher.publish_acked("up/t", false, b"x", Some(props)).await;
    let p = sub.next_publish().await;
    assert_eq!(p.properties.expect("properties").user_properties, user, "[MQTT-3.3.2-17]");
}

#[tokio::test]
async fn mqtt5_3_3_2_20_content_type_and_payload_format_indicator_passed_through() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "ctype")).await;
    sub.subscribe("ct/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "ctype-pub")).await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json; charset=utf-8".into()),
        ..PublishProperties::default()
    };
    publisher.publish_acked("ct/t", false, br#"{"k":"v"}"#, Some(props)).await;
    let p = sub.next_publish().await;
    let pr = p.properties.expect("properties");
    assert_eq!(pr.content_type.as_deref(), Some("application/json; charset=utf-8"));
    assert_eq!(pr.payload_format_indicator, Some(1), "[MQTT-3.3.2-4]");
}

#[tokio::test]
async fn mqtt5_3_3_2_3_2_invalid_utf8_with_payload_format_indicator_gets_puback_0x99() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Mq::connect(opts(&broker, "pfi-bad-sub")).await;
    sub.subscribe("pfi/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "pfi-bad")).await;
    let props = PublishProperties { payload_format_indicator: Some(1), ..PublishProperties::default() };
    let code = publisher.publish_acked("pfi/t", false, b"\xff\xfe not utf-8", Some(props)).await;
    assert_eq!(code, PubAckReason::PayloadFormatInvalid);
    publisher.publish_acked("pfi/t", false, b"sentinel", None).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"sentinel", "the refused message must not be forwarded");
}

#[tokio::test]
async fn mqtt5_3_1_2_29_reason_string_on_puback_error_only_when_problem_information_requested() {
    let broker = TestBroker::start().await;
    for (id, problem_info) in [("problem-info-default", None), ("problem-info-0", Some(0))] {
        let mut c = v5_connect(id);
        c.properties.request_problem_information = problem_info;
        let (mut raw, _) = Raw::connect_with(broker.addr(), c).await;
        let mut p = wire_publish("pi/t", WireQoS::AtLeastOnce, 1, b"\xff");
        p.properties.payload_format_indicator = Some(1);
        raw.send(Packet::Publish(p)).await;
        let Packet::PubAck(ack) = raw.expect("PUBACK").await else {
            panic!("expected PUBACK");
        };
        assert_eq!(ack.reason_code, reason::PAYLOAD_FORMAT_INVALID);
        if problem_info == Some(0) {
            assert_eq!(ack.properties.reason_string, None, "[MQTT-3.1.2-29]");
            assert!(ack.properties.user_properties.is_empty(), "[MQTT-3.1.2-29]");
        } else {
            assert!(ack.properties.reason_string.is_some(), "reason string on the error PUBACK");
        }
    }
}

#[tokio::test]
async fn mqtt5_3_4_2_1_puback_0x10_when_no_matching_subscribers() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = Mq::connect(opts(&broker, "nomatch")).await;
    let code = publisher.publish_acked("nobody/listens", false, b"x", None).await;
    assert_eq!(code, PubAckReason::NoMatchingSubscribers);
    publisher.subscribe("somebody/listens", QoS::AtMostOnce).await;
    let code = publisher.publish_acked("somebody/listens", false, b"x", None).await;
    assert_eq!(code, PubAckReason::Success);
}

// =======================================================================================
// SUBACK and UNSUBACK reason codes

#[tokio::test]
async fn mqtt5_3_9_3_1_suback_0x8f_for_invalid_filters_in_order() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "suback-invalid").await;
    let ack = raw
        .subscribe(
            7,
            &[
                ("ok/one", sub_opts(WireQoS::AtLeastOnce)),
                ("bad/filter#", sub_opts(WireQoS::AtLeastOnce)),
                ("$share/grp", sub_opts(WireQoS::AtLeastOnce)),
                ("a/+b/c", sub_opts(WireQoS::AtMostOnce)),
                ("ok/two", sub_opts(WireQoS::ExactlyOnce)),
            ],
            None,
        )
        .await;
    assert_eq!(
        ack.reason_codes,
        vec![
            reason::GRANTED_QOS_1,
            reason::TOPIC_FILTER_INVALID,
            reason::TOPIC_FILTER_INVALID,
            reason::TOPIC_FILTER_INVALID,
            reason::GRANTED_QOS_2
        ]
    );
    assert!(ack.properties.reason_string.is_some(), "reason string on the failed SUBACK");
}

#[tokio::test]
async fn mqtt5_3_9_3_2_suback_0x97_when_subscription_quota_exceeded() {
    let broker = TestBroker::start_with(|c| c.broker.max_subscriptions_per_client = 2).await;
    let (mut c, _) = Mq::connect(opts(&broker, "sub-quota")).await;
    c.client
        .subscribe_many(vec![
            filter("q/1", QoS::AtMostOnce),
            filter("q/2", QoS::AtMostOnce),
            filter("q/3", QoS::AtMostOnce),
        ])
        .await
        .expect("subscribe request");
    let ack = c.suback().await;
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::QuotaExceeded
        ]
    );
    // Replacing an existing subscription does not count against the quota [MQTT-3.8.4-3].
    let ack = c.subscribe_filter(filter("q/1", QoS::AtLeastOnce), None).await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
}

#[tokio::test]
async fn mqtt5_3_11_3_2_unsuback_0x11_when_no_subscription_existed() {
    let broker = TestBroker::start().await;
    let (mut c, _) = Mq::connect(opts(&broker, "unsuback")).await;
    c.subscribe("u/a", QoS::AtMostOnce).await;
    c.client.unsubscribe("u/a").await.expect("unsubscribe request");
    assert_eq!(c.unsuback().await.reasons, vec![UnsubAckReason::Success]);
    c.client.unsubscribe("u/a").await.expect("unsubscribe request");
    assert_eq!(c.unsuback().await.reasons, vec![UnsubAckReason::NoSubscriptionExisted]);
    c.client.unsubscribe("u/never").await.expect("unsubscribe request");
    assert_eq!(c.unsuback().await.reasons, vec![UnsubAckReason::NoSubscriptionExisted]);
}

// =======================================================================================
// Enhanced authentication (section 4.12)

#[tokio::test]
async fn mqtt5_4_12_0_2_enhanced_auth_challenge_response_succeeds() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let mut raw = cr_connect(broker.addr(), "cr-ok").await;
    // The connection is usable.
    let ack = raw.subscribe(1, &[("cr/t", sub_opts(WireQoS::AtMostOnce))], None).await;
    assert_eq!(ack.reason_codes, vec![reason::SUCCESS]);
    raw.ping("connection alive after enhanced authentication").await;
}

#[tokio::test]
async fn mqtt5_4_12_0_4_enhanced_auth_wrong_response_refused() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let (mut raw, _challenge) = cr_start(broker.addr(), "cr-wrong").await;
    raw.send(auth_packet(reason::CONTINUE_AUTHENTICATION, Some(Bytes::from_static(b"guess")))).await;
    let p = raw.expect("CONNACK").await;
    let Packet::ConnAck(ack) = p else {
        panic!("expected CONNACK, got {p:?}");
    };
    assert!(
        [reason::NOT_AUTHORIZED, reason::BAD_USERNAME_OR_PASSWORD].contains(&ack.reason_code),
        "CONNACK 0x{:02X}",
        ack.reason_code
    );
    assert!(!ack.session_present, "[MQTT-3.2.2-6]");
    assert!(ack.properties.reason_string.is_some(), "reason string on the refusal");
    raw.expect_closed().await;
}

#[tokio::test]
async fn mqtt5_4_12_0_1_unknown_authentication_method_gets_connack_0x8c() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let mut o = opts(&broker, "cr-unknown");
    o.set_authentication_method(Some("NO-SUCH-METHOD".into()));
    o.set_authentication_data(Some(Bytes::from_static(b"x")));
    match Mq::try_connect(o).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::BadAuthenticationMethod);
        }
        Err(e) => panic!("expected CONNACK 0x8C, got {e:?}"),
        Ok((_, ack)) => panic!("expected CONNACK 0x8C, got {ack:?}"),
    }
    // Same over the raw client, to see the exact code and the close.
    let mut c = v5_connect("cr-unknown-raw");
    c.properties.authentication_method = Some("NO-SUCH-METHOD".into());
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert_eq!(ack.reason_code, reason::BAD_AUTHENTICATION_METHOD);
    raw.expect_closed().await;
}

#[tokio::test]
async fn mqtt5_4_12_1_1_reauthentication_succeeds_with_auth_0x00() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let mut raw = cr_connect(broker.addr(), "cr-reauth").await;
    raw.send(auth_packet(reason::RE_AUTHENTICATE, Some(Bytes::from_static(b"again")))).await;
    let p = raw.expect("AUTH 0x18").await;
    let Packet::Auth(a) = p else {
        panic!("expected AUTH, got {p:?}");
    };
    assert_eq!(a.reason_code, reason::CONTINUE_AUTHENTICATION);
    assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD), "[MQTT-4.12.0-5]");
    let challenge = a.properties.authentication_data.expect("challenge");
    assert_eq!(&challenge[..], b"challenge:again");
    raw.send(auth_packet(reason::CONTINUE_AUTHENTICATION, Some(cr_answer(&challenge)))).await;
    let p = raw.expect("AUTH 0x00").await;
    let Packet::Auth(a) = p else {
        panic!("expected AUTH (success), got {p:?}");
    };
    assert_eq!(a.reason_code, reason::SUCCESS);
    assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD), "[MQTT-4.12.0-5]");
    raw.ping("connection alive after re-authentication").await;
}

#[tokio::test]
async fn mqtt5_4_12_1_2_failed_reauthentication_disconnects() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let mut raw = cr_connect(broker.addr(), "cr-reauth-bad").await;
    raw.send(auth_packet(reason::RE_AUTHENTICATE, Some(Bytes::from_static(b"again")))).await;
    assert!(matches!(raw.expect("AUTH 0x18").await, Packet::Auth(_)));
    raw.send(auth_packet(reason::CONTINUE_AUTHENTICATION, Some(Bytes::from_static(b"wrong")))).await;
    let p = raw.expect("DISCONNECT").await;
    let Packet::Disconnect(d) = p else {
        panic!("expected DISCONNECT, got {p:?}");
    };
    assert!(d.reason_code >= 0x80, "error reason code, got 0x{:02X}", d.reason_code);
    raw.expect_closed().await;
}

#[tokio::test]
async fn mqtt5_4_12_1_1_reauthentication_with_another_method_is_protocol_error() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let mut raw = cr_connect(broker.addr(), "cr-reauth-method").await;
    raw.send(Packet::Auth(Auth {
        reason_code: reason::RE_AUTHENTICATE,
        properties: Properties { authentication_method: Some("OTHER".into()), ..Properties::default() },
    }))
    .await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn mqtt5_4_12_0_7_auth_without_authentication_method_in_connect_is_protocol_error() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let mut raw = Raw::connect(broker.addr(), "cr-no-method").await;
    raw.send(auth_packet(reason::RE_AUTHENTICATE, None)).await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn mqtt5_3_1_2_33_non_auth_packet_during_authentication_is_protocol_error() {
    let broker = TestBroker::start_with_auth(Box::new(ChallengeAuth), |_| {}).await;
    let (mut raw, _challenge) = cr_start(broker.addr(), "cr-early").await;
    raw.send(Packet::PingReq).await;
    let p = raw.expect("CONNACK").await;
    let Packet::ConnAck(ack) = p else {
        panic!("expected CONNACK (no DISCONNECT before CONNACK, [MQTT-3.14.0-1]), got {p:?}");
    };
    assert_eq!(ack.reason_code, reason::PROTOCOL_ERROR);
    raw.expect_closed().await;
}

// =======================================================================================
// Server-initiated DISCONNECT, $SYS

#[tokio::test]
async fn mqtt5_3_14_1_graceful_shutdown_sends_disconnect_0x8b() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "shutdown-raw").await;
    let (mut mq, _) = Mq::connect(opts(&broker, "shutdown-mq")).await;
    let stop = tokio::spawn(broker.stop());
    raw.expect_disconnect(reason::SERVER_SHUTTING_DOWN).await;
    let (code, _) = mq.server_disconnect().await;
    assert_eq!(code, DisconnectReasonCode::ServerShuttingDown);
    timeout(WAIT, stop).await.expect("broker stopped in time").expect("stop task");
}

#[tokio::test]
async fn mqtt5_4_7_2_1_sys_topics_published_and_not_matched_by_leading_wildcard() {
    let broker = TestBroker::start_with(|c| c.broker.sys_interval_secs = 1).await;
    let (mut all, _) = Mq::connect(opts(&broker, "sys-hash")).await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let (mut sys, _) = Mq::connect(opts(&broker, "sys")).await;
    sys.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;

    // Collect until a periodic update shows this broker's own clients (the retained values
    // sent on SUBSCRIBE may date from before anyone connected).
    let mut values = HashMap::new();
    let wanted = ["$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected"];
    // $SYS is per node: in a cluster the two clients are on different nodes.
    let connected_here = if common::cluster_size() == 1 { 2 } else { 1 };
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no $SYS update showing the clients: {values:?}");
        let p = sys.next_publish().await;
        let topic = topic_of(&p).to_string();
        assert!(topic.starts_with("$SYS/broker/"), "{topic}");
        values.insert(topic, String::from_utf8_lossy(&p.payload).into_owned());
        let live = values
            .get("$SYS/broker/clients/connected")
            .is_some_and(|v| v.parse::<u64>().expect("a number") >= connected_here);
        if live && wanted.iter().all(|w| values.contains_key(*w)) {
            break;
        }
    }
    assert!(values["$SYS/broker/version"].starts_with("flotilla"), "{values:?}");

    // "#" must not match $SYS topics, neither the retained ones nor later updates.
    sys.publish_qos0("probe/one", b"1").await;
    let p = all.next_publish().await;
    assert_eq!(topic_of(&p), "probe/one", "[MQTT-4.7.2-1]: '#' matched {p:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sys.publish_qos0("probe/two", b"2").await;
    let p = all.next_publish().await;
    assert_eq!(topic_of(&p), "probe/two", "[MQTT-4.7.2-1]: '#' matched {p:?}");
}

// =======================================================================================
// Malformed packets and protocol errors after CONNECT

#[tokio::test]
async fn mqtt5_3_3_1_4_publish_with_qos_3_gets_disconnect_0x81() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "malformed-qos3").await;
    // PUBLISH, flags QoS bits 11; topic "a", packet id 1, no properties.
    raw.send_bytes(&fixed_header(0x36, &[0, 1, b'a', 0, 1, 0])).await;
    let d = raw.expect_disconnect(reason::MALFORMED_PACKET).await;
    assert!(d.properties.reason_string.is_some(), "reason string on the error");
}

#[tokio::test]
async fn mqtt5_3_8_1_1_subscribe_with_wrong_reserved_flags_gets_disconnect_0x81() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "malformed-sub-flags").await;
    // SUBSCRIBE with fixed header flags 0000 instead of 0010.
    raw.send_bytes(&fixed_header(0x80, &[0, 1, 0, 0, 1, b'a', 0])).await;
    raw.expect_disconnect(reason::MALFORMED_PACKET).await;
}

#[tokio::test]
async fn mqtt5_2_2_2_2_property_not_valid_for_packet_gets_disconnect_0x81() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "malformed-prop-id").await;
    // PUBLISH QoS 0 to "a" carrying Session Expiry Interval (0x11), not a PUBLISH property.
    raw.send_bytes(&fixed_header(0x30, &[0, 1, b'a', 5, 0x11, 0, 0, 0, 5])).await;
    raw.expect_disconnect(reason::MALFORMED_PACKET).await;
}

#[tokio::test]
async fn mqtt5_3_3_2_3_2_duplicated_property_gets_disconnect_0x82() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "dup-prop").await;
    // PUBLISH QoS 0 to "a" with Payload Format Indicator twice: "It is a Protocol Error to
    // include the Payload Format Indicator more than once" (3.3.2.3.2).
    raw.send_bytes(&fixed_header(0x30, &[0, 1, b'a', 4, 0x01, 0, 0x01, 0, b'x'])).await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn mqtt5_3_1_0_2_second_connect_gets_disconnect_0x82() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "second-connect").await;
    raw.send(Packet::Connect(Box::new(v5_connect("second-connect")))).await;
    raw.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

// =======================================================================================
// Additional cases

#[tokio::test]
async fn mqtt5_3_1_2_8_will_published_when_session_ends_before_will_delay() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-ends-watch")).await;
    watcher.subscribe("will/ends/#", QoS::AtLeastOnce).await;
    // Will Delay 30 s, but the session ends first: at once (expiry 0) or after 1 s.
    for (id, expiry) in [("will-ends-0", 0), ("will-ends-1", 1)] {
        let mut o = persistent_opts(&broker, id, expiry);
        let topic = format!("will/ends/{id}");
        o.set_last_will(LastWill::new(
            topic.clone(),
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(will_props(Some(30))),
        ));
        let (mut client, _) = Mq::connect(o).await;
        client.kill().await;
        let p = watcher.next_publish().await;
        assert_eq!(topic_of(&p), topic, "the will is published when the session ends");
    }
}

#[tokio::test]
async fn mqtt5_3_1_3_2_will_properties_forwarded_with_will_message() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "will-props-watch")).await;
    watcher.subscribe("will/props", QoS::AtLeastOnce).await;
    let mut props = will_props(None);
    props.payload_format_indicator = Some(1);
    props.content_type = Some("text/plain".into());
    props.response_topic = Some("will/reply".into());
    props.correlation_data = Some(Bytes::from_static(b"corr"));
    props.user_properties = vec![("k".into(), "v1".into()), ("k".into(), "v2".into())];
    props.message_expiry_interval = Some(100);
    let mut o = opts(&broker, "will-props");
    o.set_last_will(LastWill::new("will/props", "gone", QoS::AtLeastOnce, false, Some(props.clone())));
    let (mut client, _) = Mq::connect(o).await;
    client.kill().await;
    let p = watcher.next_publish().await;
    let got = p.properties.expect("will properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.content_type, props.content_type);
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(got.user_properties, props.user_properties);
    let left = got.message_expiry_interval.expect("Message Expiry Interval");
    assert!((1..=100).contains(&left), "{left}");
}

#[tokio::test]
async fn mqtt5_3_1_2_22_keep_alive_timeout_disconnects_with_0x8d_and_publishes_will() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Mq::connect(opts(&broker, "ka-watch")).await;
    watcher.subscribe("will/ka", QoS::AtLeastOnce).await;
    let mut c = v5_connect("ka-silent");
    c.keep_alive_secs = 1;
    c.will =
        Some(Will { topic: "will/ka".into(), payload: Bytes::from_static(b"timed out"), ..Will::default() });
    let (mut raw, ack) = Raw::connect_with(broker.addr(), c).await;
    assert_eq!(ack.reason_code, reason::SUCCESS);
    // Silence for 1.5 x the keep alive.
    raw.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"timed out");
}

#[tokio::test]
async fn mqtt5_3_7_2_1_unknown_packet_identifier_gets_0x92() {
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(broker.addr(), "pid-unknown").await;
    raw.send(Packet::PubRel(PubResp::new(9))).await;
    let p = raw.expect("PUBCOMP").await;
    assert_eq!(p, Packet::PubComp(PubResp::with_reason(9, reason::PACKET_IDENTIFIER_NOT_FOUND)));
    raw.send(Packet::PubRec(PubResp::new(11))).await;
    let p = raw.expect("PUBREL").await;
    assert_eq!(p, Packet::PubRel(PubResp::with_reason(11, reason::PACKET_IDENTIFIER_NOT_FOUND)));
}

#[tokio::test]
async fn mqtt5_3_14_2_3_disconnect_reason_string_within_client_maximum_packet_size() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("disc-size");
    c.properties.maximum_packet_size = Some(16);
    let (mut raw, _) = Raw::connect_with(broker.addr(), c).await;
    let mut p = wire_publish("disc/size", WireQoS::AtMostOnce, 0, b"x");
    p.properties.topic_alias = Some(0);
    raw.send(Packet::Publish(p)).await;
    let d = raw.expect("DISCONNECT").await;
    assert!(
        raw.last_len <= 16,
        "DISCONNECT of {} bytes exceeds the client's Maximum Packet Size 16: {d:?}",
        raw.last_len
    );
    let Packet::Disconnect(d) = d else {
        panic!("expected DISCONNECT, got {d:?}");
    };
    assert_eq!(d.reason_code, reason::TOPIC_ALIAS_INVALID);
}

/// Subscribes a raw persistent session to `rs/<name>` (subscription identifier 5), has a
/// QoS 1 message with Message Expiry 10 delivered but not acknowledged, drops the
/// connection, waits 2 s and reconnects: returns the first and the redelivered PUBLISH.
async fn redelivery(broker: &TestBroker, name: &str) -> (Publish, Publish) {
    let topic = format!("rs/{name}");
    let mut c = v5_connect(name);
    c.properties.session_expiry_interval = Some(300);
    let (mut sub, _) = Raw::connect_with(broker.addr(), c.clone()).await;
    sub.subscribe(1, &[(topic.as_str(), sub_opts(WireQoS::AtLeastOnce))], Some(5)).await;
    let (mut publisher, _) = Mq::connect(opts(broker, &format!("{name}-pub"))).await;
    let props = PublishProperties { message_expiry_interval: Some(10), ..PublishProperties::default() };
    publisher.publish_acked(&topic, false, b"again", Some(props)).await;
    let first = sub.expect_publish().await;
    assert_eq!(first.properties.subscription_identifiers, vec![5]);
    drop(sub);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.clean_start = false;
    let (mut sub, ack) = Raw::connect_with(broker.addr(), c).await;
    assert!(ack.session_present);
    let again = sub.expect_publish().await;
    assert!(again.dup, "[MQTT-3.3.1-1]: redelivery has DUP set");
    assert_eq!(again.packet_id, first.packet_id, "[MQTT-4.4.0-1]: original packet identifier");
    assert_eq!(&again.payload[..], b"again");
    (first, again)
}

#[tokio::test]
async fn mqtt5_3_3_2_6_message_expiry_decremented_on_redelivery_after_reconnect() {
    let broker = TestBroker::start().await;
    let (_first, again) = redelivery(&broker, "redeliver-expiry").await;
    let left = again.properties.message_expiry_interval.expect("Message Expiry Interval");
    assert!(
        (1..=8).contains(&left),
        "message waited 2 s of its 10 s in the broker, but the redelivered interval is {left}"
    );
}

#[tokio::test]
async fn mqtt5_3_3_4_3_subscription_identifier_kept_on_redelivery_after_reconnect() {
    let broker = TestBroker::start().await;
    let (_first, again) = redelivery(&broker, "redeliver-subid").await;
    assert_eq!(again.properties.subscription_identifiers, vec![5]);
}

#[tokio::test]
async fn mqtt5_3_3_4_3_subscription_identifier_on_retained_message_sent_at_subscribe() {
    let broker = TestBroker::start().await;
    let _publisher = retained_setup(&broker, "sid-retained/t").await;
    let (mut sub, _) = Mq::connect(opts(&broker, "sid-retained")).await;
    sub.subscribe_filter(filter("sid-retained/#", QoS::AtLeastOnce), Some(sub_props(42))).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"kept");
    assert!(p.retain);
    assert_eq!(sub_ids(&p), vec![42]);
}

#[tokio::test]
async fn mqtt5_3_3_2_7_broker_topic_aliases_not_carried_to_new_connection() {
    let broker = TestBroker::start().await;
    let mut c = v5_connect("alias-reset");
    c.properties.topic_alias_maximum = Some(3);
    c.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = Raw::connect_with(broker.addr(), c.clone()).await;
    sub.subscribe(1, &[("alias/reset", sub_opts(WireQoS::AtMostOnce))], None).await;
    let (publisher, _) = Mq::connect(opts(&broker, "alias-reset-pub")).await;
    publisher.publish_qos0("alias/reset", b"1").await;
    publisher.publish_qos0("alias/reset", b"2").await;
    let mut aliases = AliasMap { max: 3, map: HashMap::new() };
    for _ in 0..2 {
        let p = sub.expect_publish().await;
        assert_eq!(aliases.resolve(&p), "alias/reset");
    }
    sub.send(Packet::Disconnect(Disconnect::default())).await;
    sub.expect_closed().await;

    c.clean_start = false;
    let (mut sub, ack) = Raw::connect_with(broker.addr(), c).await;
    assert!(ack.session_present);
    publisher.publish_qos0("alias/reset", b"3").await;
    let p = sub.expect_publish().await;
    // A fresh map: the broker must send the topic name again.
    let mut aliases = AliasMap { max: 3, map: HashMap::new() };
    assert_eq!(aliases.resolve(&p), "alias/reset");
}
