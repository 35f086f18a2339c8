//! A raw MQTT client on the broker crate's own codec, for what rumqttc cannot send or shows
//! no detail of (user properties by the hundred, topic aliases, reason codes).

use std::net::SocketAddr;

use bytes::BytesMut;
use node::mqtt::codec::{decode, encode};
use node::mqtt::packet::{
    ConnAck, Connect, Disconnect, Packet, Protocol, Publish, SubAck, SubOptions, Subscribe,
};
use node::mqtt::properties::Properties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::WAIT;

/// One raw connection speaking `protocol`.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    protocol: Protocol,
}

/// A CONNECT for `client_id` with clean start and a 60 s keep alive.
pub fn connect_packet(protocol: Protocol, client_id: &str) -> Connect {
    Connect {
        protocol: Some(protocol),
        clean_start: true,
        keep_alive_secs: 60,
        client_id: client_id.into(),
        ..Connect::default()
    }
}

impl Raw {
    /// A TCP connection, nothing sent yet.
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Self {
        let stream =
            timeout(WAIT, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, buf: BytesMut::new(), protocol }
    }

    /// Sends `connect` and returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut raw = Self::open(addr, connect.protocol.unwrap_or(Protocol::V3_1_1)).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        match raw.expect("CONNACK").await {
            Packet::ConnAck(ack) => (raw, ack),
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    /// Connects with clean start; panics unless the CONNACK is a success.
    pub async fn connect(addr: SocketAddr, protocol: Protocol, client_id: &str) -> Self {
        let (raw, ack) = Self::connect_with(addr, connect_packet(protocol, client_id)).await;
        assert_eq!(ack.reason_code, 0, "CONNACK {ack:?}");
        raw
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut b = BytesMut::new();
        encode(&packet, self.protocol, &mut b);
        self.stream.write_all(&b).await.expect("write to broker");
    }

    /// The next packet, or `None` once the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        timeout(WAIT, async {
            loop {
                if let Some(p) = decode(&mut self.buf, Some(self.protocol), 1 << 28)
                    .expect("broker sent a malformed packet")
                {
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

    pub async fn expect(&mut self, what: &str) -> Packet {
        self.recv().await.unwrap_or_else(|| panic!("connection closed while waiting for {what}"))
    }

    pub async fn expect_publish(&mut self) -> Publish {
        match self.expect("PUBLISH").await {
            Packet::Publish(p) => p,
            p => panic!("expected PUBLISH, got {p:?}"),
        }
    }

    pub async fn subscribe(&mut self, packet_id: u16, filters: &[(&str, SubOptions)]) -> SubAck {
        let filters = filters.iter().map(|(f, o)| ((*f).into(), *o)).collect();
        self.send(Packet::Subscribe(Subscribe { packet_id, properties: Properties::default(), filters }))
            .await;
        match self.expect("SUBACK").await {
            Packet::SubAck(a) => a,
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    /// The next packet must be DISCONNECT with `code`, and then the connection must close.
    pub async fn expect_disconnect(&mut self, code: u8) -> Disconnect {
        let p = self.expect("DISCONNECT").await;
        let Packet::Disconnect(d) = p else {
            panic!("expected DISCONNECT 0x{code:02X}, got {p:?}");
        };
        assert_eq!(d.reason_code, code, "DISCONNECT {:?}", d.properties.reason_string);
        self.expect_closed().await;
        d
    }

    pub async fn expect_closed(&mut self) {
        let p = self.recv().await;
        assert!(p.is_none(), "expected the broker to close the connection, got {p:?}");
    }
}
