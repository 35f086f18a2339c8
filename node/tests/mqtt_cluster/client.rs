//! rumqttc clients (v4 = MQTT 3.1.1 and v5) behind one small interface for the cluster
//! tests: every event a client's loop sees arrives on a channel as an [`Ev`].

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Protocol of a test client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    V4,
    V5,
}

/// A message a client received.
#[derive(Clone, Debug)]
pub struct Got {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
}

/// What a client's event loop saw.
#[derive(Debug)]
pub enum Ev {
    ConnAck {
        code: u8,
        session_present: bool,
    },
    Publish(Got),
    /// SUBACK codes (0..=2 granted QoS, >= 0x80 refused).
    SubAck(Vec<u8>),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) with its reason code.
    Acked {
        qos: u8,
        code: u8,
    },
    /// DISCONNECT from the server (v5) with its reason code.
    Disconnect(u8),
    /// The connection ended.
    Closed(String),
}

enum Handle {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A connected test client.
pub struct Client {
    pub name: String,
    handle: Handle,
    events: mpsc::UnboundedReceiver<(Instant, Ev)>,
    pump: JoinHandle<()>,
    /// When the event `next` returned last arrived from the socket.
    pub last_at: Instant,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn v4_event(ev: rumqttc::Event) -> Option<Ev> {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    let Event::Incoming(p) = ev else { return None };
    Some(match p {
        Packet::ConnAck(a) => Ev::ConnAck { code: a.code as u8, session_present: a.session_present },
        Packet::Publish(p) => Ev::Publish(Got {
            topic: p.topic,
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            dup: p.dup,
            retain: p.retain,
        }),
        Packet::SubAck(s) => Ev::SubAck(
            s.return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => *q as u8,
                    SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
        ),
        Packet::PubAck(_) => Ev::Acked { qos: 1, code: 0 },
        Packet::PubComp(_) => Ev::Acked { qos: 2, code: 0 },
        _ => return None,
    })
}

/// The reason code of a v5 CONNACK (rumqttc's enum is not numbered by it).
fn v5_connack_code(code: rumqttc::v5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    match code {
        C::Success => 0,
        C::ServerUnavailable | C::ServiceUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::QuotaExceeded => 0x97,
        C::UseAnotherServer => 0x9C,
        _ => 0x80,
    }
}

fn v5_event(ev: rumqttc::v5::Event) -> Option<Ev> {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    let Event::Incoming(p) = ev else { return None };
    Some(match p {
        Packet::ConnAck(a) => {
            Ev::ConnAck { code: v5_connack_code(a.code), session_present: a.session_present }
        }
        Packet::Publish(p) => Ev::Publish(Got {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            dup: p.dup,
            retain: p.retain,
        }),
        Packet::SubAck(s) => Ev::SubAck(
            s.return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => *q as u8,
                    _ => 0x80,
                })
                .collect(),
        ),
        Packet::PubAck(a) => {
            use rumqttc::v5::mqttbytes::v5::PubAckReason as R;
            let code = match a.reason {
                R::Success => 0,
                R::NoMatchingSubscribers => 0x10,
                R::UnspecifiedError => 0x80,
                R::ImplementationSpecificError => 0x83,
                R::NotAuthorized => 0x87,
                R::TopicNameInvalid => 0x90,
                R::PacketIdentifierInUse => 0x91,
                R::QuotaExceeded => 0x97,
                R::PayloadFormatInvalid => 0x99,
            };
            Ev::Acked { qos: 1, code }
        }
        Packet::PubComp(a) => {
            let ok = matches!(a.reason, rumqttc::v5::mqttbytes::v5::PubCompReason::Success);
            Ev::Acked { qos: 2, code: if ok { 0 } else { 0x92 } }
        }
        Packet::Disconnect(d) => Ev::Disconnect(d.reason_code as u8),
        _ => return None,
    })
}

/// How a test client connects.
#[derive(Clone, Debug)]
pub struct Opts {
    pub clean: bool,
    /// Session Expiry Interval (v5; a 3.1.1 persistent session is `clean: false`).
    pub expiry: Option<u32>,
    /// Will topic and payload (QoS 1).
    pub will: Option<(String, Vec<u8>)>,
}

/// Connects `name` to `addr`; panics unless the CONNACK accepts.
pub async fn connect(addr: SocketAddr, name: &str, proto: Proto, clean: bool) -> Client {
    let expiry = (!clean).then_some(3600);
    connect_opts(addr, name, proto, Opts { clean, expiry, will: None }).await.0
}

/// Connects with `opts`; returns the client and Session Present. Panics unless accepted.
pub async fn connect_opts(addr: SocketAddr, name: &str, proto: Proto, opts: Opts) -> (Client, bool) {
    match try_connect(addr, name, proto, opts).await {
        Ok(c) => c,
        Err(code) => panic!("{name}: CONNACK refused with {code:#x}"),
    }
}

/// Connects with `opts`; `Err(code)` if the CONNACK refuses.
pub async fn try_connect(
    addr: SocketAddr,
    name: &str,
    proto: Proto,
    opts: Opts,
) -> Result<(Client, bool), u8> {
    let clean = opts.clean;
    let (tx, events) = mpsc::unbounded_channel();
    let (handle, pump) = match proto {
        Proto::V4 => {
            let mut o = rumqttc::MqttOptions::new(name, addr.ip().to_string(), addr.port());
            o.set_keep_alive(Duration::from_secs(60)).set_clean_session(clean).set_inflight(100);
            if let Some((t, p)) = &opts.will {
                o.set_last_will(rumqttc::LastWill::new(t, p.clone(), rumqttc::QoS::AtLeastOnce, false));
            }
            let (client, mut el) = rumqttc::AsyncClient::new(o, 4096);
            let pump = tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(ev) => {
                            if let Some(e) = v4_event(ev)
                                && tx.send((Instant::now(), e)).is_err()
                            {
                                return;
                            }
                        }
                        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                            let ev = Ev::ConnAck { code: code as u8, session_present: false };
                            let _ = tx.send((Instant::now(), ev));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send((Instant::now(), Ev::Closed(e.to_string())));
                            return;
                        }
                    }
                }
            });
            (Handle::V4(client), pump)
        }
        Proto::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(name, addr.ip().to_string(), addr.port());
            o.set_keep_alive(Duration::from_secs(60)).set_clean_start(clean);
            o.set_session_expiry_interval(opts.expiry);
            if let Some((t, p)) = &opts.will {
                let will = rumqttc::v5::mqttbytes::v5::LastWill::new(
                    t,
                    p.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    None,
                );
                o.set_last_will(will);
            }
            let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 4096);
            let pump = tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(ev) => {
                            if let Some(e) = v5_event(ev)
                                && tx.send((Instant::now(), e)).is_err()
                            {
                                return;
                            }
                        }
                        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
                            let ev = Ev::ConnAck { code: v5_connack_code(code), session_present: false };
                            let _ = tx.send((Instant::now(), ev));
                            return;
                        }
                        Err(rumqttc::v5::ConnectionError::MqttState(
                            rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                        )) => {
                            let _ = tx.send((Instant::now(), Ev::Disconnect(reason_code as u8)));
                            let _ =
                                tx.send((Instant::now(), Ev::Closed("disconnected by the server".into())));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send((Instant::now(), Ev::Closed(e.to_string())));
                            return;
                        }
                    }
                }
            });
            (Handle::V5(client), pump)
        }
    };
    let mut c = Client { name: name.to_string(), handle, events, pump, last_at: Instant::now() };
    match c.next(Duration::from_secs(30)).await {
        Some(Ev::ConnAck { code: 0, session_present }) => Ok((c, session_present)),
        Some(Ev::ConnAck { code, .. }) => Err(code),
        other => panic!("{name}: expected a CONNACK, got {other:?}"),
    }
}

impl Client {
    /// The next event within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Ev> {
        let (at, ev) = timeout(wait, self.events.recv()).await.ok().flatten()?;
        self.last_at = at;
        Some(ev)
    }

    /// Subscribes and returns the SUBACK codes (publishes seen meanwhile go to `stash`).
    pub async fn subscribe(&mut self, filter: &str, qos: u8, stash: &mut Vec<Got>) -> Vec<u8> {
        match &self.handle {
            Handle::V4(c) => c.subscribe(filter, qos4(qos)).await.expect("subscribe queued"),
            Handle::V5(c) => c.subscribe(filter, qos5(qos)).await.expect("subscribe queued"),
        }
        loop {
            match self.next(Duration::from_secs(30)).await {
                Some(Ev::SubAck(codes)) => return codes,
                Some(Ev::Publish(g)) => stash.push(g),
                Some(Ev::Closed(e)) => panic!("{}: closed while subscribing: {e}", self.name),
                Some(_) => {}
                None => panic!("{}: no SUBACK for {filter}", self.name),
            }
        }
    }

    /// Queues a publish.
    pub async fn publish(&self, topic: &str, qos: u8, payload: Vec<u8>) {
        self.publish_retain(topic, qos, false, payload).await;
    }

    /// Queues a publish with the retain flag as given.
    pub async fn publish_retain(&self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) {
        match &self.handle {
            Handle::V4(c) => c.publish(topic, qos4(qos), retain, payload).await.expect("publish queued"),
            Handle::V5(c) => c.publish(topic, qos5(qos), retain, payload).await.expect("publish queued"),
        }
    }

    /// Sends DISCONNECT.
    pub async fn disconnect(&self) {
        let _ = match &self.handle {
            Handle::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Handle::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}
