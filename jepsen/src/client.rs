//! A thin MQTT 3.1.1 client over `mqttbytes` and a tokio socket, so the harness sees (and
//! decides) every packet.
//!
//! rumqttc was the first choice, but it forgets its incoming QoS 2 state on every new
//! connection and then treats the broker's legitimate PUBREL resend (MQTT-4.4.0-1) as a
//! fatal protocol error, so a persistent QoS 2 subscriber can never reconnect. This client
//! answers PUBLISH with PUBACK/PUBREC and every PUBREL with PUBCOMP, pings on keep alive,
//! never reconnects, and turns one request into one outcome.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4::{self, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const KEEP_ALIVE: Duration = Duration::from_secs(10);
const MAX_PACKET: usize = 1 << 20;

/// Why a connection attempt did not give a session.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No CONNACK in time (indeterminate).
    #[error("connect timed out")]
    Timeout,
    /// The connection closed or could not be opened.
    #[error("connection closed: {0}")]
    Closed(String),
    /// CONNACK with a failure code.
    #[error("connect refused: {0}")]
    Refused(String),
}

/// One thing the connection saw.
#[derive(Debug)]
pub enum Ev {
    /// A packet from the broker (already acknowledged if it needed it).
    In(Packet),
    /// DISCONNECT was written and the socket shut down.
    Disconnected,
    /// The connection ended.
    Closed(String),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Indeterminate, with the reason.
    Info(String),
}

/// Connection options the workloads vary.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    /// MQTT client id.
    pub client_id: String,
    /// Clean session flag.
    pub clean: bool,
    /// Will: topic, payload, QoS.
    pub will: Option<(String, Vec<u8>, QoS)>,
}

enum Cmd {
    Send(Packet),
    Disconnect,
}

/// A live connection.
pub struct Conn {
    tx: mpsc::UnboundedSender<Cmd>,
    rx: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
    /// Session Present from CONNACK.
    pub session_present: bool,
    closed: Option<String>,
    next_pkid: u16,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closes the socket without DISCONNECT.
        self.task.abort();
    }
}

fn encode(p: &Packet, buf: &mut BytesMut) -> Result<(), String> {
    let r = match p {
        Packet::Connect(x) => x.write(buf),
        Packet::Publish(x) => x.write(buf),
        Packet::PubAck(x) => x.write(buf),
        Packet::PubRec(x) => x.write(buf),
        Packet::PubRel(x) => x.write(buf),
        Packet::PubComp(x) => x.write(buf),
        Packet::Subscribe(x) => x.write(buf),
        Packet::Unsubscribe(x) => x.write(buf),
        Packet::PingReq => v4::PingReq.write(buf),
        Packet::Disconnect => v4::Disconnect.write(buf),
        other => return Err(format!("cannot send {other:?}")),
    };
    r.map(drop).map_err(|e| format!("{e:?}"))
}

/// Connects and waits for CONNACK until `timeout`.
pub async fn connect(addr: SocketAddr, opts: &ConnectOpts, timeout: Duration) -> Result<Conn, ConnectError> {
    let deadline = Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Closed(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let mut c = v4::Connect::new(opts.client_id.clone());
    c.keep_alive = KEEP_ALIVE.as_secs() as u16;
    c.clean_session = opts.clean;
    if let Some((topic, payload, qos)) = &opts.will {
        c.last_will = Some(v4::LastWill::new(topic.clone(), payload.clone(), *qos, false));
    }
    let (tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, mut rx) = mpsc::unbounded_channel();
    let _ = tx.send(Cmd::Send(Packet::Connect(c)));
    let task = tokio::spawn(drive(stream, cmd_rx, ev_tx));
    let fail = |task: &JoinHandle<()>, e| {
        task.abort();
        Err(e)
    };
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return fail(&task, ConnectError::Timeout),
            Ok(None) => return fail(&task, ConnectError::Closed("ended".into())),
            Ok(Some(Ev::Closed(e))) => return fail(&task, ConnectError::Closed(e)),
            Ok(Some(Ev::In(Packet::ConnAck(a)))) => {
                if a.code != v4::ConnectReturnCode::Success {
                    return fail(&task, ConnectError::Refused(format!("{:?}", a.code)));
                }
                let session_present = a.session_present;
                return Ok(Conn { tx, rx, task, session_present, closed: None, next_pkid: 0 });
            }
            Ok(Some(_)) => {}
        }
    }
}

/// Owns the socket: writes commands, reads and acknowledges packets, pings.
async fn drive(
    mut stream: TcpStream,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Ev>,
) {
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut wbuf = BytesMut::with_capacity(4096);
    let mut last_in = Instant::now();
    let mut ping = tokio::time::interval(KEEP_ALIVE / 2);
    ping.tick().await;
    let end = loop {
        // Decode whatever is buffered.
        loop {
            match v4::read(&mut rbuf, MAX_PACKET) {
                Ok(p) => {
                    last_in = Instant::now();
                    let ack = match &p {
                        Packet::Publish(x) if x.qos == QoS::AtLeastOnce => {
                            Some(Packet::PubAck(v4::PubAck::new(x.pkid)))
                        }
                        Packet::Publish(x) if x.qos == QoS::ExactlyOnce => {
                            Some(Packet::PubRec(v4::PubRec::new(x.pkid)))
                        }
                        Packet::PubRel(x) => Some(Packet::PubComp(v4::PubComp::new(x.pkid))),
                        _ => None,
                    };
                    if let Some(a) = ack {
                        let _ = encode(&a, &mut wbuf);
                    }
                    let _ = events.send(Ev::In(p));
                }
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => {
                    let _ = events.send(Ev::Closed(format!("decode: {e:?}")));
                    return;
                }
            }
        }
        if !wbuf.is_empty() {
            if let Err(e) = stream.write_all(&wbuf).await {
                break format!("write: {e}");
            }
            wbuf.clear();
        }
        tokio::select! {
            r = stream.read_buf(&mut rbuf) => match r {
                Ok(0) => break "closed by broker".to_string(),
                Ok(_) => {}
                Err(e) => break format!("read: {e}"),
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Send(p)) => {
                    if let Err(e) = encode(&p, &mut wbuf) {
                        break e;
                    }
                }
                Some(Cmd::Disconnect) => {
                    let _ = encode(&Packet::Disconnect, &mut wbuf);
                    let ok = stream.write_all(&wbuf).await.is_ok() && stream.shutdown().await.is_ok();
                    let _ = events.send(if ok { Ev::Disconnected } else { Ev::Closed("disconnect write failed".into()) });
                    return;
                }
                None => return,
            },
            _ = ping.tick() => {
                if last_in.elapsed() > KEEP_ALIVE * 2 {
                    break "keep alive timeout".to_string();
                }
                let _ = encode(&Packet::PingReq, &mut wbuf);
            }
        }
    };
    let _ = events.send(Ev::Closed(end));
}

impl Conn {
    /// Why the connection closed, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// The next event before `deadline`; `None` on timeout or after close.
    pub async fn next(&mut self, deadline: Instant) -> Option<Ev> {
        if self.closed.is_some() {
            return None;
        }
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(Ev::Closed(e))) => {
                self.closed = Some(e.clone());
                Some(Ev::Closed(e))
            }
            Ok(Some(ev)) => Some(ev),
            Ok(None) => {
                self.closed = Some("connection task ended".into());
                Some(Ev::Closed("connection task ended".into()))
            }
            Err(_) => None,
        }
    }

    fn send(&mut self, p: Packet) -> Result<(), String> {
        self.tx.send(Cmd::Send(p)).map_err(|_| "connection task ended".to_string())
    }

    /// Publishes and waits for PUBACK (QoS 1) or PUBCOMP (QoS 2, sending PUBREL on PUBREC).
    /// Other events go to `other`.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        deadline: Instant,
        other: &mut impl FnMut(Ev),
    ) -> Outcome {
        if let Some(c) = &self.closed {
            return Outcome::Info(format!("closed: {c}"));
        }
        let pkid = self.pkid();
        let mut p = v4::Publish::new(topic, qos, payload);
        p.retain = retain;
        p.pkid = pkid;
        if let Err(e) = self.send(Packet::Publish(p)) {
            return Outcome::Info(e);
        }
        loop {
            let Some(ev) = self.next(deadline).await else {
                return Outcome::Info("timeout".into());
            };
            match ev {
                Ev::In(Packet::PubAck(a)) if qos == QoS::AtLeastOnce && a.pkid == pkid => return Outcome::Ok,
                Ev::In(Packet::PubRec(a)) if qos == QoS::ExactlyOnce && a.pkid == pkid => {
                    if let Err(e) = self.send(Packet::PubRel(v4::PubRel::new(pkid))) {
                        return Outcome::Info(e);
                    }
                }
                Ev::In(Packet::PubComp(a)) if qos == QoS::ExactlyOnce && a.pkid == pkid => {
                    return Outcome::Ok;
                }
                Ev::Closed(e) => return Outcome::Info(format!("closed: {e}")),
                ev => other(ev),
            }
        }
    }

    /// Subscribes and waits for SUBACK.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        deadline: Instant,
        other: &mut impl FnMut(Ev),
    ) -> Result<(), String> {
        let pkid = self.pkid();
        let mut s = v4::Subscribe::new(filter, qos);
        s.pkid = pkid;
        self.send(Packet::Subscribe(s))?;
        loop {
            match self.next(deadline).await {
                None => return Err("timeout".into()),
                Some(Ev::In(Packet::SubAck(a))) if a.pkid == pkid => {
                    let refused =
                        a.return_codes.iter().any(|c| matches!(c, v4::SubscribeReasonCode::Failure));
                    return if refused { Err("refused".into()) } else { Ok(()) };
                }
                Some(Ev::Closed(e)) => return Err(format!("closed: {e}")),
                Some(ev) => other(ev),
            }
        }
    }

    /// Unsubscribes and waits for UNSUBACK.
    pub async fn unsubscribe(
        &mut self,
        filter: &str,
        deadline: Instant,
        other: &mut impl FnMut(Ev),
    ) -> Result<(), String> {
        let pkid = self.pkid();
        let mut u = v4::Unsubscribe::new(filter);
        u.pkid = pkid;
        self.send(Packet::Unsubscribe(u))?;
        loop {
            match self.next(deadline).await {
                None => return Err("timeout".into()),
                Some(Ev::In(Packet::UnsubAck(a))) if a.pkid == pkid => return Ok(()),
                Some(Ev::Closed(e)) => return Err(format!("closed: {e}")),
                Some(ev) => other(ev),
            }
        }
    }

    /// Sends DISCONNECT; true once it was written and the socket shut down.
    pub async fn disconnect(mut self, deadline: Instant, other: &mut impl FnMut(Ev)) -> bool {
        if self.closed.is_some() || self.tx.send(Cmd::Disconnect).is_err() {
            return false;
        }
        loop {
            match self.next(deadline).await {
                None | Some(Ev::Closed(_)) => return false,
                Some(Ev::Disconnected) => return true,
                Some(ev) => other(ev),
            }
        }
    }
}

/// A MQTT QoS from its number.
pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}
