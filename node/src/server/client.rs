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
    write: BytesMut,
    /// While bytes wait for the socket: when the client is closed unless they have all left.
    stall_deadline: Option<Instant>,
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
    pub(super) conn: ConnId,
    bufs: Option<Box<Buffers>>,
}

impl Client {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self { stream, protocol: None, closing: false, queued: false, read_again: false, conn: 0, bufs: None }
    }

    /// Reads what the socket has (up to the budget) through `scratch` and decodes whole
    /// packets into `out`. A decode error stops decoding; the error goes to `failed`.
    /// Also returns the number of bytes read.
    pub(super) fn read(
        &mut self,
        scratch: &mut [u8],
        max_packet_size: usize,
        out: &mut Vec<Packet>,
        failed: &mut Option<DecodeError>,
    ) -> (ReadOutcome, usize) {
        let mut rbuf = match &mut self.bufs {
            Some(b) => std::mem::take(&mut b.read),
            None => BytesMut::new(),
        };
        let mut total = 0;
        let outcome = loop {
            match self.stream.read(scratch) {
                Ok(0) => break ReadOutcome::Closed,
                Ok(n) => {
                    // Grow by exactly what arrived: a small packet costs a small allocation.
                    rbuf.extend_from_slice(&scratch[..n]);
                    total += n;
                    if total >= READ_BUDGET {
                        break ReadOutcome::More;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break ReadOutcome::Closed,
            }
        };
        while !rbuf.is_empty() {
            match codec::decode(&mut rbuf, self.protocol, max_packet_size) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        self.protocol = c.protocol;
                    }
                    out.push(p);
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
            self.bufs.get_or_insert_with(Box::default).read = rbuf;
        } else {
            self.drop_empty_buffers();
        }
        (outcome, total)
    }

    fn drop_empty_buffers(&mut self) {
        if self.bufs.as_ref().is_some_and(|b| b.read.is_empty() && b.write.is_empty()) {
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
                    self.bufs.get_or_insert_with(Box::default).write.extend_from_slice(&bytes[at..]);
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
                Ok(n) => b.write.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return WriteOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return WriteOutcome::Failed,
            }
        }
        b.write = BytesMut::new();
        b.stall_deadline = None;
        self.drop_empty_buffers();
        WriteOutcome::Done
    }
}
