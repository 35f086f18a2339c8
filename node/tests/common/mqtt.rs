//! rumqttc (MQTT 3.1.1) clients driven from tests: an event loop pumped into a channel.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet};
use tokio::sync::mpsc;

/// A connected client and what it receives (`Err` once: the error that ended the loop).
pub struct Client {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Result<Packet, ConnectionError>>,
}

/// Options for client `id` of the broker on 127.0.0.1:`port`, clean session.
pub fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn pump(mut el: EventLoop) -> mpsc::UnboundedReceiver<Result<Packet, ConnectionError>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

impl Client {
    /// Starts the event loop; does not wait for CONNACK.
    pub fn start(o: MqttOptions) -> Self {
        let (client, el) = AsyncClient::new(o, 256);
        Self { client, rx: pump(el) }
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect(o: MqttOptions) -> Self {
        let mut c = Self::start(o);
        let ack = c.next().await;
        assert!(matches!(ack, Ok(Packet::ConnAck(_))), "{ack:?}");
        c
    }

    /// The next packet or error (panics after `WAIT`).
    pub async fn next(&mut self) -> Result<Packet, ConnectionError> {
        tokio::time::timeout(super::WAIT, self.rx.recv()).await.expect("in time").expect("loop alive")
    }

    /// Skips packets until one matches `want`.
    pub async fn until(&mut self, what: &str, want: impl Fn(&Packet) -> bool) -> Packet {
        loop {
            match self.next().await {
                Ok(p) if want(&p) => return p,
                Ok(_) => {}
                Err(e) => panic!("connection ended waiting for {what}: {e}"),
            }
        }
    }
}
