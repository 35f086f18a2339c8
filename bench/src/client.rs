//! SHELL. A lean MQTT client connection on node's zero-copy codec.
//!
//! [`Conn`] owns a socket, a read buffer and a write buffer, nothing else: the MQTT state
//! (packet identifiers, windows, subscriptions) belongs to the caller. Reading and writing
//! are non-blocking (`try_fill` / `try_flush`) after awaiting `readable` / `writable`, so one
//! task can read acknowledgements while its writes wait for socket space without splitting
//! the stream. A *lean* connection (the many idle vehicles of a scenario) reads in small
//! chunks and frees its buffers whenever they are empty, so an idle connection holds only
//! its socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use node::mqtt::codec::{decode, encode};
use node::mqtt::error::DecodeError;
use node::mqtt::packet::{ConnAck, Connect, Disconnect, Packet, Protocol};
use node::mqtt::properties::Properties;
use tokio::net::{TcpSocket, TcpStream};

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Read chunk of a lean connection, bytes.
const LEAN_CHUNK: usize = 2 * 1024;

/// Read chunk of a busy connection, bytes.
const BUSY_CHUNK: usize = 64 * 1024;

/// How to reach the broker and what to ask for in CONNECT.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    /// Broker address.
    pub broker: SocketAddr,
    /// Local address to bind before connecting (spreads connections over source IPs).
    pub source: Option<IpAddr>,
    /// Protocol version.
    pub protocol: Protocol,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive_secs: u16,
    /// Bound on TCP connect plus CONNACK.
    pub timeout: Duration,
    /// Session expiry interval for MQTT 5 (ignored by 3.1.1, where a persistent session is
    /// `clean_start = false`).
    pub session_expiry_secs: u32,
    /// Whether this connection is one of many mostly idle ones (see the module docs).
    pub lean: bool,
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The operation did not finish in time.
    #[error("timed out")]
    Timeout,
    /// A socket error.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// The broker refused the connection in CONNACK.
    #[error("CONNACK refused with reason code {0:#04x}")]
    Refused(u8),
    /// The broker sent DISCONNECT (MQTT 5).
    #[error("DISCONNECT from the broker with reason code {0:#04x}")]
    Disconnected(u8),
    /// The broker sent bytes that are not MQTT.
    #[error("undecodable packet from the broker: {0}")]
    Decode(#[from] DecodeError),
    /// The broker sent a packet that makes no sense here.
    #[error("unexpected packet from the broker: {0}")]
    Unexpected(&'static str),
}

impl ClientError {
    /// A short, stable name for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
            Self::Io(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => "no_source_port",
            Self::Io(e) if e.raw_os_error() == Some(24) => "too_many_open_files",
            Self::Io(_) => "io",
            Self::Closed => "closed",
            Self::Refused(_) => "connack_refused",
            Self::Disconnected(_) => "disconnected_by_broker",
            Self::Decode(_) => "decode",
            Self::Unexpected(_) => "unexpected_packet",
        }
    }
}

/// One MQTT connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    protocol: Protocol,
    lean: bool,
}

impl Conn {
    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn open(
        opts: &ConnectOpts,
        client_id: &str,
        clean_start: bool,
    ) -> Result<(Self, ConnAck), ClientError> {
        tokio::time::timeout(opts.timeout, Self::open_inner(opts, client_id, clean_start))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn open_inner(
        opts: &ConnectOpts,
        client_id: &str,
        clean_start: bool,
    ) -> Result<(Self, ConnAck), ClientError> {
        let socket = if opts.broker.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = opts.source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(opts.broker).await?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            protocol: opts.protocol,
            lean: opts.lean,
        };
        let properties = if opts.protocol.is_v5() {
            Properties {
                session_expiry_interval: (opts.session_expiry_secs > 0).then_some(opts.session_expiry_secs),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let connect = Connect {
            protocol: Some(opts.protocol),
            clean_start,
            keep_alive_secs: opts.keep_alive_secs,
            properties,
            client_id: ByteString::from(client_id),
            ..Connect::default()
        };
        conn.queue(&Packet::Connect(Box::new(connect)));
        conn.flush().await?;
        match conn.recv().await? {
            Packet::ConnAck(ack) if ack.reason_code == 0 => Ok((conn, ack)),
            Packet::ConnAck(ack) => Err(ClientError::Refused(ack.reason_code)),
            _ => Err(ClientError::Unexpected("first packet is not CONNACK")),
        }
    }

    /// The protocol version in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Encodes `packet` into the write buffer.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.protocol, &mut self.wbuf);
    }

    /// Bytes waiting to be written.
    pub fn write_backlog(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes as much of the write buffer as the socket takes now.
    pub fn try_flush(&mut self) -> Result<(), ClientError> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the whole write buffer.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        while !self.wbuf.is_empty() {
            self.stream.writable().await?;
            self.try_flush()?;
        }
        Ok(())
    }

    /// Waits until the socket may have bytes to read.
    pub async fn readable(&self) -> Result<(), ClientError> {
        Ok(self.stream.readable().await?)
    }

    /// Waits until the socket may take bytes.
    pub async fn writable(&self) -> Result<(), ClientError> {
        Ok(self.stream.writable().await?)
    }

    /// Reads what the socket has now. `Ok(false)`: nothing yet; `Err(Closed)` at end of
    /// stream.
    pub fn try_fill(&mut self) -> Result<bool, ClientError> {
        let chunk = if self.lean { LEAN_CHUNK } else { BUSY_CHUNK };
        if self.rbuf.capacity() - self.rbuf.len() < chunk / 2 {
            self.rbuf.reserve(chunk);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(ClientError::Closed),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The next complete packet in the read buffer, if any.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(decode(&mut self.rbuf, Some(self.protocol), MAX_PACKET)?)
    }

    /// Waits for the next packet.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(p) = self.next_packet()? {
                return Ok(p);
            }
            self.readable().await?;
            self.try_fill()?;
        }
    }

    /// Frees empty buffers of a lean connection.
    pub fn trim(&mut self) {
        if self.lean {
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
            if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
                self.wbuf = BytesMut::new();
            }
        }
    }

    /// Sends DISCONNECT (bounded by `timeout`) and closes.
    pub async fn disconnect(mut self, timeout: Duration) {
        self.queue(&Packet::Disconnect(Disconnect::default()));
        let _ = tokio::time::timeout(timeout, self.flush()).await;
    }

    /// Closes with a TCP reset and no DISCONNECT, as a network failure would.
    pub fn abort(self) {
        let _ = self.stream.set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_stable() {
        let refused = ClientError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.kind(), "refused");
        assert_eq!(ClientError::Refused(0x87).kind(), "connack_refused");
        assert_eq!(ClientError::Timeout.kind(), "timeout");
    }
}
