//! SHELL. A lean MQTT client connection on node's zero-copy codec.
//!
//! [`Conn`] owns a socket, a read buffer and a write buffer, nothing else: the MQTT state
//! (packet identifiers, windows, subscriptions) belongs to the caller. Reading and writing
//! are non-blocking (`try_fill` / `try_flush`) after awaiting `readable` / `writable`, so one
//! task can read acknowledgements while its writes wait for socket space without splitting
//! the stream. A *lean* connection (the many idle vehicles of a scenario) reads in small
//! chunks and frees its buffers whenever they are empty, so an idle connection holds only
//! its socket.
//!
//! With TLS ([`ConnectOpts::tls`]) a boxed rustls `ClientConnection` sits between the buffers
//! and the socket (sans-IO: this module moves the bytes): `try_fill` reads TLS records,
//! decrypts them into the read buffer and sends whatever the TLS session must answer;
//! `try_flush` encrypts the write buffer and writes the records. A connection without TLS
//! pays one pointer and one branch per call for this.

use std::io::{IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use node::mqtt::codec::{decode, encode};
use node::mqtt::error::DecodeError;
use node::mqtt::packet::{ConnAck, Connect, Disconnect, Packet, Protocol};
use node::mqtt::properties::Properties;
use rustls::{CertificateError, ClientConnection};
use tokio::net::{TcpSocket, TcpStream};

use crate::tls::TlsConnector;

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
    /// TLS to the broker, if any.
    pub tls: Option<TlsConnector>,
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
    /// The TLS session failed (handshake, certificate, record).
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
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
            Self::Tls(rustls::Error::InvalidCertificate(e)) => match e {
                CertificateError::UnknownIssuer => "tls_unknown_ca",
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "tls_name_mismatch"
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => "tls_cert_expired",
                _ => "tls_bad_certificate",
            },
            Self::Tls(rustls::Error::AlertReceived(_)) => "tls_alert_from_broker",
            Self::Tls(_) => "tls",
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
    /// Boxed: a TLS session is several KB, and most connections have none.
    tls: Option<Box<TlsState>>,
}

/// A connection's TLS session and the records encrypted but not taken by the socket yet.
#[derive(Debug)]
struct TlsState {
    session: ClientConnection,
    out: BytesMut,
}

/// The socket as blocking-style IO for rustls: `WouldBlock` when it is not ready.
struct SocketRead<'a>(&'a TcpStream);

impl Read for SocketRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// Where rustls writes records: straight to the socket (vectored, no copy) while it takes
/// them, else appended to `out`, so the bytes not yet written are always counted.
struct SocketOrSpill<'a> {
    stream: &'a TcpStream,
    out: &'a mut BytesMut,
}

impl Write for SocketOrSpill<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        if self.out.is_empty() {
            match self.stream.try_write_vectored(bufs) {
                Ok(0) if bufs.iter().any(|b| !b.is_empty()) => {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut n = 0;
        for b in bufs {
            self.out.extend_from_slice(b);
            n += b.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
            tls: None,
        };
        if let Some(tls) = &opts.tls {
            conn.tls = Some(Box::new(TlsState { session: tls.start()?, out: BytesMut::new() }));
        }
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

    /// Bytes waiting to be written: the write buffer, and with TLS the records the socket has
    /// not taken yet (plus one while the TLS session holds output, e.g. a handshake reply).
    pub fn write_backlog(&self) -> usize {
        match &self.tls {
            None => self.wbuf.len(),
            Some(t) => self.wbuf.len() + t.out.len() + usize::from(t.session.wants_write()),
        }
    }

    /// Writes as much of the write buffer as the socket takes now.
    pub fn try_flush(&mut self) -> Result<(), ClientError> {
        if let Some(tls) = self.tls.as_deref_mut() {
            return tls.flush(&self.stream, &mut self.wbuf);
        }
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

    /// Writes the whole write buffer (with TLS: completing the handshake first).
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        loop {
            self.try_flush()?;
            if self.write_backlog() == 0 {
                return Ok(());
            }
            match &self.tls {
                // Handshaking and everything sent: the server's turn.
                Some(t) if t.session.is_handshaking() && t.out.is_empty() && !t.session.wants_write() => {
                    self.stream.readable().await?;
                    self.try_fill()?;
                }
                _ => self.stream.writable().await?,
            }
        }
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
        if let Some(tls) = self.tls.as_deref_mut() {
            return tls.fill(&self.stream, &mut self.rbuf, &mut self.wbuf, chunk);
        }
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
            if let Some(t) = self.tls.as_deref_mut()
                && t.out.is_empty()
                && t.out.capacity() > 0
            {
                t.out = BytesMut::new();
            }
        }
    }

    /// Sends DISCONNECT (and with TLS a close_notify alert; bounded by `timeout`) and closes.
    pub async fn disconnect(mut self, timeout: Duration) {
        self.queue(&Packet::Disconnect(Disconnect::default()));
        let _ = tokio::time::timeout(timeout, async {
            self.flush().await?;
            if let Some(t) = self.tls.as_deref_mut() {
                t.session.send_close_notify();
                self.flush().await?;
            }
            Ok::<(), ClientError>(())
        })
        .await;
    }

    /// Closes with a TCP reset and no DISCONNECT, as a network failure would.
    pub fn abort(self) {
        let _ = self.stream.set_zero_linger();
    }
}

impl TlsState {
    /// Reads TLS records the socket has now (about `budget` bytes at most: rustls reads 4 KB
    /// at a time), decrypts them into `rbuf` and sends what the session must answer
    /// (handshake messages, alerts); once the handshake is done this also sends `wbuf`. As
    /// [`Conn::try_fill`].
    fn fill(
        &mut self,
        stream: &TcpStream,
        rbuf: &mut BytesMut,
        wbuf: &mut BytesMut,
        budget: usize,
    ) -> Result<bool, ClientError> {
        let mut read = 0;
        while read < budget {
            match self.session.read_tls(&mut SocketRead(stream)) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
            let state = match self.session.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Tell the broker why (rustls queued an alert); the error is what counts.
                    let _ = self.flush(stream, &mut BytesMut::new());
                    return Err(e.into());
                }
            };
            self.read_plaintext(state.plaintext_bytes_to_read(), rbuf)?;
        }
        if read == 0 {
            return Ok(false);
        }
        self.flush(stream, wbuf)?;
        Ok(true)
    }

    /// Appends the `n` decrypted bytes the session holds to `rbuf`.
    fn read_plaintext(&mut self, n: usize, rbuf: &mut BytesMut) -> Result<(), ClientError> {
        if n == 0 {
            return Ok(());
        }
        let start = rbuf.len();
        rbuf.resize(start + n, 0);
        let mut filled = start;
        while filled < start + n {
            match self.session.reader().read(&mut rbuf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    rbuf.truncate(filled);
                    return Err(e.into());
                }
            }
        }
        rbuf.truncate(filled);
        Ok(())
    }

    /// Writes pending records, then encrypts `wbuf` (once the handshake is done) and writes
    /// those, as far as the socket takes them now; records it does not take wait in `out`.
    /// As [`Conn::try_flush`].
    fn flush(&mut self, stream: &TcpStream, wbuf: &mut BytesMut) -> Result<(), ClientError> {
        loop {
            while !self.out.is_empty() {
                match stream.try_write(&self.out) {
                    Ok(0) => return Err(ClientError::Closed),
                    Ok(n) => self.out.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            if self.session.wants_write() {
                self.session.write_tls(&mut SocketOrSpill { stream, out: &mut self.out })?;
                continue;
            }
            if wbuf.is_empty() || self.session.is_handshaking() {
                return Ok(());
            }
            let n = self.session.writer().write(wbuf)?;
            if n == 0 {
                return Ok(());
            }
            wbuf.advance(n);
        }
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
        let unknown_ca = ClientError::Tls(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert_eq!(unknown_ca.kind(), "tls_unknown_ca");
    }

    /// Thousands of idle connections per worker: TLS must cost a plain one only a pointer.
    #[test]
    fn tls_state_is_boxed() {
        assert_eq!(size_of::<Option<Box<TlsState>>>(), size_of::<usize>());
        // 112 bytes before TLS support, plus the pointer.
        assert!(size_of::<Conn>() <= 120, "Conn is {} bytes", size_of::<Conn>());
    }
}
