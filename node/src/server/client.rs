//! SHELL. One client socket as its reactor holds it: bytes in, decoded packets out, and the
//! bytes the socket has not yet taken.
//!
//! Memory: an idle client is this struct in its reactor's slab and nothing else: no read or
//! write buffer (each is allocated when bytes arrive or cannot leave, and dropped once
//! empty), no timer (keep alive and the CONNECT deadline are core timers), no task, no
//! per-socket registration object in user space (epoll keeps that in the kernel).

use std::io::{self, Read, Write};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;

use crate::broker::session::ConnId;
use crate::mqtt::codec;
use crate::mqtt::error::DecodeError;
use crate::mqtt::packet::{Packet, Protocol};

/// Bytes read from one client per round before the others get their turn.
const READ_BUDGET: usize = 64 * 1024;
/// Packets decoded from one client per round (a 64 KiB read of PINGREQ is 32,768 packets):
/// the rest stay as bytes, and the socket is not read, until the next round.
const READ_PACKETS: usize = 1024;

/// What a read produced.
pub(super) enum ReadOutcome {
    /// The socket is drained for now.
    Drained,
    /// The read budget ran out with bytes possibly left: read again next round.
    More,
    /// The peer closed or the socket failed.
    Closed,
}

/// What a write left behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriteOutcome {
    /// Everything was written.
    Done,
    /// The socket is full; the rest waits for writability.
    Blocked,
    /// The socket failed.
    Failed,
}

/// Bytes a client holds between rounds: a partial packet read, or bytes the socket has not
/// taken. Boxed and allocated only while either exists, so an idle client holds none.
#[derive(Default)]
struct Buffers {
    read: BytesMut,
    /// `read` holds whole packets left over by the per-round cap: decode them before
    /// reading more from the socket.
    capped: bool,
    /// Packets decoded but not handed to the core: its outbox for this client was full
    /// (`Broker::accepts_input`). They go first at the next read.
    unread: Vec<Packet>,
    write: BytesMut,
    /// Bytes of `write` up to the end of the packet it begins inside (0: `write` begins
    /// with a whole packet). Lets a stalled client's backlog be cut at a packet boundary.
    partial: usize,
    /// While bytes wait for the socket: when the client is closed unless they have all left.
    stall_deadline: Option<Instant>,
}

impl Buffers {
    /// Drops the first `n` bytes of `write` (the socket took them), keeping `partial`.
    fn consume(&mut self, n: usize) {
        let mut at = 0;
        while at < n {
            if self.partial == 0 {
                self.partial = frame_len(&self.write[at..]);
            }
            let d = (n - at).min(self.partial);
            self.partial -= d;
            at += d;
        }
        self.write.advance(n);
    }
}

/// Length of the encoded packet `bytes` begins with (all of `bytes` if its header is cut).
fn frame_len(bytes: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, b) in bytes.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return (1 + i + 1 + len).min(bytes.len());
        }
    }
    bytes.len()
}

/// The first packet boundary at or after byte `at` of `bytes` (whole packets).
fn next_boundary(bytes: &[u8], at: usize) -> usize {
    let mut end = 0;
    while end < at && end < bytes.len() {
        end += frame_len(&bytes[end..]).max(1);
    }
    end
}

/// A client connection owned by a reactor.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    /// Protocol for decoding, known once CONNECT has been read.
    pub(super) protocol: Option<Protocol>,
    /// The core said close: nothing more is read, and the socket closes once the backlog
    /// drains.
    pub(super) closing: bool,
    /// Already in this round's flush list.
    pub(super) queued: bool,
    /// Already in the read list.
    pub(super) read_again: bool,
    /// Its PUBLISH waits for the journal: in the reactor's `lag_held`, not read meanwhile.
    pub(super) lag_wait: bool,
    pub(super) conn: ConnId,
    bufs: Option<Box<Buffers>>,
}

impl Client {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            protocol: None,
            closing: false,
            queued: false,
            read_again: false,
            lag_wait: false,
            conn: 0,
            bufs: None,
        }
    }

    /// Reads what the socket has (up to the budget) through `scratch` and decodes whole
    /// packets into `out` (up to `READ_PACKETS`). A decode error stops decoding; the error
    /// goes to `failed`. Packets kept back by [`Self::keep_unread`] come out first, alone.
    /// Also returns the number of bytes read from the socket.
    pub(super) fn read(
        &mut self,
        scratch: &mut [u8],
        max_packet_size: usize,
        out: &mut Vec<Packet>,
        failed: &mut Option<DecodeError>,
    ) -> (ReadOutcome, usize) {
        if let Some(b) = &mut self.bufs
            && !b.unread.is_empty()
        {
            out.append(&mut b.unread);
            b.unread = Vec::new();
            return (ReadOutcome::More, 0);
        }
        let (mut rbuf, capped) = match &mut self.bufs {
            Some(b) => (std::mem::take(&mut b.read), std::mem::take(&mut b.capped)),
            None => (BytesMut::new(), false),
        };
        let (mut outcome, total) =
            if capped { (ReadOutcome::More, 0) } else { self.fill(&mut rbuf, scratch) };
        let mut decoded = 0;
        let mut capped = false;
        while !rbuf.is_empty() {
            // Past the cap the bytes wait, unless the peer is gone (they are its last words).
            if decoded == READ_PACKETS && !matches!(outcome, ReadOutcome::Closed) {
                outcome = ReadOutcome::More;
                capped = true;
                break;
            }
            match codec::decode(&mut rbuf, self.protocol, max_packet_size) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        self.protocol = c.protocol;
                    }
                    out.push(p);
                    decoded += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    *failed = Some(e);
                    rbuf.clear();
                    break;
                }
            }
        }
        if !rbuf.is_empty() {
            let b = self.bufs.get_or_insert_with(Box::default);
            b.read = rbuf;
            b.capped = capped;
        } else {
            self.drop_empty_buffers();
        }
        (outcome, total)
    }

    /// Reads from the socket into `rbuf` until it would block or the round's budget is
    /// spent; also returns the bytes read.
    fn fill(&mut self, rbuf: &mut BytesMut, scratch: &mut [u8]) -> (ReadOutcome, usize) {
        let mut total = 0;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return (ReadOutcome::Closed, total),
                Ok(n) => {
                    // Grow by exactly what arrived: a small packet costs a small allocation.
                    rbuf.extend_from_slice(&scratch[..n]);
                    total += n;
                    if total >= READ_BUDGET {
                        return (ReadOutcome::More, total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (ReadOutcome::Drained, total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return (ReadOutcome::Closed, total),
            }
        }
    }

    /// Keeps decoded packets the core would not take yet (its outbox for this client is
    /// full); the next read returns them before anything else.
    pub(super) fn keep_unread(&mut self, packets: Vec<Packet>) {
        if !packets.is_empty() {
            self.bufs.get_or_insert_with(Box::default).unread = packets;
        }
    }

    fn drop_empty_buffers(&mut self) {
        if self.bufs.as_ref().is_some_and(|b| b.read.is_empty() && b.write.is_empty() && b.unread.is_empty())
        {
            self.bufs = None;
        }
    }

    /// True while bytes wait for the socket: the client pulls nothing more from the core
    /// until they have left, so back-pressure reaches the core's bounded queues.
    pub(super) fn has_backlog(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.write.is_empty())
    }

    /// Writes `bytes` (encoded packets); what the socket does not take is kept.
    pub(super) fn write(&mut self, bytes: &[u8]) -> WriteOutcome {
        if let Some(b) = &mut self.bufs
            && !b.write.is_empty()
        {
            b.write.extend_from_slice(bytes);
            return self.write_backlog();
        }
        let mut at = 0;
        while at < bytes.len() {
            match self.stream.write(&bytes[at..]) {
                Ok(0) => return WriteOutcome::Failed,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let b = self.bufs.get_or_insert_with(Box::default);
                    b.write.extend_from_slice(&bytes[at..]);
                    b.partial = next_boundary(bytes, at) - at;
                    return WriteOutcome::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return WriteOutcome::Failed,
            }
        }
        WriteOutcome::Done
    }

    /// Starts the stall clock of a client whose bytes wait for the socket, if not running:
    /// true if it was started now (the caller watches the deadline).
    pub(super) fn start_stall_clock(&mut self, deadline: Instant) -> bool {
        match &mut self.bufs {
            Some(b) if !b.write.is_empty() && b.stall_deadline.is_none() => {
                b.stall_deadline = Some(deadline);
                true
            }
            _ => false,
        }
    }

    /// When the client is closed unless its backlog has left, if bytes wait.
    pub(super) fn stall_deadline(&self) -> Option<Instant> {
        self.bufs.as_ref().filter(|b| !b.write.is_empty()).and_then(|b| b.stall_deadline)
    }

    /// Writes the kept bytes, after the socket became writable.
    pub(super) fn write_backlog(&mut self) -> WriteOutcome {
        let Some(b) = &mut self.bufs else {
            return WriteOutcome::Done;
        };
        while !b.write.is_empty() {
            match self.stream.write(&b.write) {
                Ok(0) => return WriteOutcome::Failed,
                Ok(n) => b.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return WriteOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return WriteOutcome::Failed,
            }
        }
        b.write = BytesMut::new();
        b.partial = 0;
        b.stall_deadline = None;
        self.drop_empty_buffers();
        WriteOutcome::Done
    }

    /// Drops the backlog's whole packets, keeping the rest of the one the socket took part
    /// of (so what follows starts on a packet boundary): a stalled client is being closed,
    /// and its last packet (DISCONNECT) is written after this if the socket has room.
    pub(super) fn cut_backlog(&mut self) {
        if let Some(b) = &mut self.bufs {
            b.write.truncate(b.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::{Client, READ_PACKETS, ReadOutcome, frame_len, next_boundary};
    use crate::mqtt::packet::{Packet, Protocol};

    /// Hardening: one 64 KiB read of PINGREQ decoded to 32,768 packets (about 15 MiB of
    /// `Packet`s, and as many replies) in one round. Now a round decodes at most
    /// `READ_PACKETS` per client; the rest wait as bytes, and the socket is not read more
    /// until they are decoded.
    #[test]
    fn a_round_decodes_at_most_read_packets_from_one_client() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut peer = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let mut c = Client::new(mio::net::TcpStream::from_std(server));
        c.protocol = Some(Protocol::V3_1_1);
        let count = 3 * READ_PACKETS + 10;
        peer.write_all(&[0xC0, 0x00].repeat(count)).expect("PINGREQs");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut scratch = vec![0; 16 << 10];
        let (mut got, mut rounds) = (0, 0);
        while got < count && rounds < 100 {
            let mut out = Vec::new();
            let mut failed = None;
            let (outcome, _) = c.read(&mut scratch, 1 << 20, &mut out, &mut failed);
            assert!(failed.is_none());
            assert!(out.len() <= READ_PACKETS, "{} packets decoded in one round", out.len());
            assert!(out.iter().all(|p| *p == Packet::PingReq));
            if out.len() == READ_PACKETS {
                assert!(matches!(outcome, ReadOutcome::More), "a capped round asks to be read again");
            }
            got += out.len();
            rounds += 1;
        }
        assert_eq!(got, count, "every PINGREQ decoded, over {rounds} rounds");
        assert!(rounds >= 4);
    }

    #[test]
    fn frame_lengths_follow_the_remaining_length_varint() {
        // PINGRESP, then a PUBLISH with remaining length 200 (two varint bytes).
        let mut bytes = vec![0xD0, 0x00, 0x30, 0xC8, 0x01];
        bytes.extend(std::iter::repeat_n(0, 200));
        assert_eq!(frame_len(&bytes), 2);
        assert_eq!(frame_len(&bytes[2..]), 203);
        assert_eq!(next_boundary(&bytes, 0), 0);
        assert_eq!(next_boundary(&bytes, 1), 2);
        assert_eq!(next_boundary(&bytes, 2), 2);
        assert_eq!(next_boundary(&bytes, 3), 205);
        assert_eq!(next_boundary(&bytes, 204), 205);
    }
}
