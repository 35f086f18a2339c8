//! SHELL. Reactor threads: each owns an epoll instance (through mio) and the sockets of its
//! share of the clients. A round reads every ready socket, decodes, feeds all the packets
//! to the core in one locked section, then writes once to every client the core woke, the
//! encoding and the `write`s done outside the lock.
//!
//! Batching falls out of the rounds: messages routed to one subscriber by many publishers
//! in a round leave in one `write`. A connection woken by another thread (a publisher on
//! another reactor, the journal writer after an fsync, the timer task) is handed to its
//! reactor's inbox, and the reactor is woken once however many arrive.
//!
//! Back-pressure: a client whose socket did not take everything pulls nothing more from
//! the core until the kernel has taken the rest, so slow readers fill the core's bounded
//! queues, not ours.

use std::io;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;

use super::Shared;
use super::client::{Client, ReadOutcome, WriteOutcome};
use crate::broker::Transmit;
use crate::broker::session::ConnId;
use crate::clock;
use crate::mqtt::codec;
use crate::mqtt::error::DecodeError;
use crate::mqtt::packet::{Packet, Protocol};

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const FIRST_CLIENT: usize = 2;
/// Packets pulled from the core for one client per round.
const TRANSMIT_BUDGET: usize = 256;
/// Connections accepted per round before the clients get their turn.
const ACCEPT_BUDGET: usize = 512;
/// Packets decoded, or pulled from the core, per round: bounds the memory a round holds.
const ROUND_PACKETS: usize = 16 * 1024;
/// Readiness events taken per round.
const EVENTS: usize = 1024;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing client may take to accept its last bytes.
const LINGER: Duration = Duration::from_secs(5);
/// Pause after an accept error (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often reads paused for a lagging journal look at the lag again.
const LAG_RECHECK: Duration = Duration::from_millis(5);

/// A connection woken for writing: its slab slot and id (the id tells a reused slot apart).
pub(super) type FlushItem = (u32, ConnId);

/// Work other threads hand to a reactor.
#[derive(Default)]
struct Inbox {
    flush: Vec<FlushItem>,
    adopt: Vec<(TcpStream, IpAddr)>,
    stop_accepting: bool,
    stop: bool,
    /// The waker fired since the reactor last emptied the inbox.
    signalled: bool,
}

/// The part of a reactor other threads reach.
pub(super) struct Handle {
    waker: Waker,
    inbox: Mutex<Inbox>,
}

impl Handle {
    fn with_inbox(&self, f: impl FnOnce(&mut Inbox)) {
        let wake = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut inbox);
            !std::mem::replace(&mut inbox.signalled, true)
        };
        if wake && let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake a reactor");
        }
    }

    /// Asks the reactor to pull and write these connections' packets.
    pub(super) fn flush(&self, items: &[FlushItem]) {
        self.with_inbox(|i| i.flush.extend_from_slice(items));
    }

    fn adopt(&self, stream: TcpStream, ip: IpAddr) {
        self.with_inbox(|i| i.adopt.push((stream, ip)));
    }

    /// Closes the listener (if this reactor holds it).
    pub(super) fn stop_accepting(&self) {
        self.with_inbox(|i| i.stop_accepting = true);
    }

    /// Ends the reactor thread; its remaining sockets are closed.
    pub(super) fn stop(&self) {
        self.with_inbox(|i| i.stop = true);
    }
}

/// One round's input from one client.
struct Input {
    token: u32,
    conn: ConnId,
    /// End of this client's packets in the round's packet list.
    end: usize,
    failed: Option<DecodeError>,
    closed: bool,
    protocol: Option<Protocol>,
}

/// One round's output to one client.
struct Output {
    token: u32,
    conn: ConnId,
    end: usize,
    protocol: Protocol,
    close: bool,
    more: bool,
}

/// A reactor before and while it runs on its thread.
pub(super) struct Reactor {
    index: usize,
    shared: Arc<Shared>,
    poll: Poll,
    handle: Arc<Handle>,
    /// Every reactor's handle (this one's included), for handing out accepted sockets.
    peers: Vec<Arc<Handle>>,
    listener: Option<TcpListener>,
    next_peer: usize,
    accept_again: bool,
    accept_paused_until: Option<Instant>,
    /// Set while reads wait for the journal to catch up: when to look again.
    reads_paused_until: Option<Instant>,
    clients: Vec<Option<Client>>,
    free: Vec<u32>,
    read_list: Vec<u32>,
    write_list: Vec<u32>,
    flush: Vec<FlushItem>,
    inbox_flush: Vec<FlushItem>,
    inbox_adopt: Vec<(TcpStream, IpAddr)>,
    /// Source addresses of this reactor's clients that have not sent CONNECT yet.
    pending_ip: FxHashMap<u32, IpAddr>,
    lingering: Vec<(u32, ConnId, Instant)>,
    /// Clients whose bytes wait for their sockets, watched for `write-stall-timeout-secs`.
    stalled: Vec<(u32, ConnId)>,
    stall_timeout: Duration,
    packets: Vec<Packet>,
    inputs: Vec<Input>,
    outputs: Vec<Output>,
    read_chunk: Box<[u8]>,
    encoded: BytesMut,
}

impl Reactor {
    /// A reactor and the handle other threads use to reach it.
    pub(super) fn new(index: usize, shared: Arc<Shared>) -> io::Result<(Self, Arc<Handle>)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let handle = Arc::new(Handle { waker, inbox: Mutex::new(Inbox::default()) });
        let stall_timeout = Duration::from_secs(u64::from(shared.config.broker.write_stall_timeout_secs));
        let reactor = Self {
            index,
            shared,
            poll,
            handle: handle.clone(),
            peers: Vec::new(),
            listener: None,
            next_peer: 0,
            accept_again: false,
            accept_paused_until: None,
            reads_paused_until: None,
            clients: Vec::new(),
            free: Vec::new(),
            read_list: Vec::new(),
            write_list: Vec::new(),
            flush: Vec::new(),
            inbox_flush: Vec::new(),
            inbox_adopt: Vec::new(),
            pending_ip: FxHashMap::default(),
            lingering: Vec::new(),
            stalled: Vec::new(),
            stall_timeout,
            packets: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            read_chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            encoded: BytesMut::new(),
        };
        Ok((reactor, handle))
    }

    /// Makes this reactor the one that accepts connections.
    pub(super) fn listen(&mut self, mut listener: TcpListener) -> io::Result<()> {
        self.poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Tells the reactor about every reactor (itself included), indexed like `index`.
    pub(super) fn set_peers(&mut self, peers: Vec<Arc<Handle>>) {
        self.peers = peers;
    }

    /// Runs rounds until stopped.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, reactor = self.index, "reactor cannot poll; stopping");
                return;
            }
            let mut inbox = false;
            let mut accept = false;
            for ev in &events {
                match ev.token() {
                    WAKER => inbox = true,
                    LISTENER => accept = true,
                    Token(t) => {
                        let Some(k) = t.checked_sub(FIRST_CLIENT).and_then(|k| u32::try_from(k).ok()) else {
                            continue;
                        };
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.want_read(k);
                        }
                        if ev.is_writable() || ev.is_write_closed() {
                            self.write_list.push(k);
                        }
                    }
                }
            }
            if inbox && self.drain_inbox() {
                return;
            }
            if accept || self.accept_due() {
                self.accept();
            }
            self.read_round();
            self.write_round();
            self.flush_round();
            self.linger_round();
            self.stall_round();
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let reads_due = !self.read_list.is_empty() && self.reads_paused_until.is_none();
        if reads_due || !self.flush.is_empty() || self.accept_again {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout: Option<Duration> = None;
        let mut at = |t: Instant| {
            let d = t.saturating_duration_since(now);
            timeout = Some(timeout.map_or(d, |x| x.min(d)));
        };
        if let Some(t) = self.accept_paused_until {
            at(t);
        }
        if let Some(t) = self.reads_paused_until {
            at(t);
        }
        if let Some(&(_, _, t)) = self.lingering.iter().min_by_key(|l| l.2) {
            at(t);
        }
        let stall = |&(k, conn): &(u32, ConnId)| {
            self.clients.get(k as usize)?.as_ref().filter(|c| c.conn == conn)?.stall_deadline()
        };
        if let Some(t) = self.stalled.iter().filter_map(stall).min() {
            at(t);
        }
        timeout
    }

    fn client_mut(&mut self, k: u32) -> Option<&mut Client> {
        self.clients.get_mut(k as usize).and_then(Option::as_mut)
    }

    fn want_read(&mut self, k: u32) {
        if let Some(c) = self.client_mut(k)
            && !c.read_again
        {
            c.read_again = true;
            self.read_list.push(k);
        }
    }

    /// Takes what other threads left in the inbox. True when the reactor must stop.
    fn drain_inbox(&mut self) -> bool {
        let (stop, stop_accepting) = {
            let mut inbox = self.handle.inbox.lock().unwrap_or_else(|e| e.into_inner());
            inbox.signalled = false;
            std::mem::swap(&mut inbox.flush, &mut self.inbox_flush);
            std::mem::swap(&mut inbox.adopt, &mut self.inbox_adopt);
            (inbox.stop, std::mem::take(&mut inbox.stop_accepting))
        };
        if stop {
            self.close_all();
            return true;
        }
        if stop_accepting && let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
            self.accept_again = false;
            self.accept_paused_until = None;
        }
        self.flush.append(&mut self.inbox_flush);
        if !self.inbox_adopt.is_empty() {
            let streams = std::mem::take(&mut self.inbox_adopt);
            self.adopt(streams);
        }
        false
    }

    fn accept_due(&self) -> bool {
        self.accept_again || self.accept_paused_until.is_some_and(|t| Instant::now() >= t)
    }

    /// Accepts pending connections and deals them round robin over the reactors.
    fn accept(&mut self) {
        self.accept_again = false;
        if self.accept_paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.accept_paused_until = None;
        let Some(listener) = &self.listener else {
            return;
        };
        let mut mine = Vec::new();
        let mut budget = ACCEPT_BUDGET;
        loop {
            if budget == 0 {
                self.accept_again = true;
                break;
            }
            budget -= 1;
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.shared.addr_bans.banned(peer.ip()) {
                        tracing::info!(%peer, "address banned by an operator; closing");
                        continue;
                    }
                    if !self.shared.pending.admit(peer.ip()) {
                        tracing::debug!(%peer, "too many sockets without CONNECT from this address; closing");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let keepalive = self.shared.config.broker.tcp_keepalive_secs;
                    if keepalive > 0 {
                        let k = socket2::TcpKeepalive::new()
                            .with_time(Duration::from_secs(u64::from(keepalive)))
                            .with_interval(Duration::from_secs(10))
                            .with_retries(6);
                        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&k);
                    }
                    let to = self.next_peer;
                    self.next_peer = (self.next_peer + 1) % self.peers.len().max(1);
                    if to == self.index || self.peers.is_empty() {
                        mine.push((stream, peer.ip()));
                    } else {
                        self.peers[to].adopt(stream, peer.ip());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
        if !mine.is_empty() {
            self.adopt(mine);
        }
    }

    /// Registers sockets with this reactor and opens their connections in the core.
    fn adopt(&mut self, streams: Vec<(TcpStream, IpAddr)>) {
        let mut tokens = Vec::with_capacity(streams.len());
        for (mut stream, ip) in streams {
            let k = match self.free.pop() {
                Some(k) => k,
                None => {
                    let Ok(k) = u32::try_from(self.clients.len()) else {
                        tracing::error!("reactor slab full; refusing a connection");
                        continue;
                    };
                    self.clients.push(None);
                    k
                }
            };
            let token = Token(k as usize + FIRST_CLIENT);
            if let Err(e) =
                self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(error = %e, "cannot register a connection; closing it");
                self.free.push(k);
                self.shared.pending.release(ip);
                continue;
            }
            self.clients[k as usize] = Some(Client::new(stream));
            self.pending_ip.insert(k, ip);
            tokens.push(k);
        }
        let now = clock::now();
        let mut core = self.shared.lock();
        for k in tokens {
            let conn = core.broker.open(now);
            let ip = self.pending_ip.get(&k).copied();
            if let Some(ip) = ip {
                core.broker.set_peer(conn, ip);
            }
            let route = super::Route {
                reactor: self.index as u16,
                token: k,
                pending: false,
                ip,
                since_ms: clock::wall_ms(),
            };
            core.routes.insert(conn, route);
            if let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) {
                c.conn = conn;
            }
        }
        // A socket over the connection limit is closing already.
        core.notify_woken(Some((self.index, &mut self.flush)));
    }

    /// Reads every readable client and hands all the packets to the core at once.
    fn read_round(&mut self) {
        if self.read_list.is_empty() {
            return;
        }
        // The journal is too far behind: read nobody (the list waits) until it catches up.
        if self.shared.journal_lagging() {
            self.reads_paused_until = Some(Instant::now() + LAG_RECHECK);
            return;
        }
        self.reads_paused_until = None;
        let list = std::mem::take(&mut self.read_list);
        let max = self.shared.config.broker.max_packet_size as usize;
        self.packets.clear();
        self.inputs.clear();
        for (i, &k) in list.iter().enumerate() {
            if self.packets.len() >= ROUND_PACKETS {
                // Enough for one locked section: the rest (still marked) go first next round.
                self.read_list.extend_from_slice(&list[i..]);
                break;
            }
            let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) else {
                continue;
            };
            c.read_again = false;
            // A client whose bytes wait for its socket is not read: what it sends would only
            // queue more replies it does not take (a PINGREQ flood without reading). It is
            // read again once the backlog has left (`write_round`).
            if c.closing || c.has_backlog() {
                continue;
            }
            let start = self.packets.len();
            let mut failed = None;
            let (outcome, read) = c.read(&mut self.read_chunk, max, &mut self.packets, &mut failed);
            self.shared.counters.add_received(read);
            let closed = matches!(outcome, ReadOutcome::Closed);
            if matches!(outcome, ReadOutcome::More) && failed.is_none() {
                c.read_again = true;
                self.read_list.push(k);
            }
            if failed.is_some() {
                c.closing = true;
            }
            if self.packets.len() > start || failed.is_some() || closed {
                let end = self.packets.len();
                self.inputs.push(Input { token: k, conn: c.conn, end, failed, closed, protocol: None });
            }
        }
        drop(list);
        if self.inputs.is_empty() {
            return;
        }
        let now = clock::now();
        {
            let mut core = self.shared.lock();
            let mut packets = self.packets.drain(..);
            let mut at = 0;
            for input in &mut self.inputs {
                for p in packets.by_ref().take(input.end - at) {
                    core.broker.handle_packet(now, input.conn, p);
                }
                at = input.end;
                if let Some(e) = &input.failed {
                    tracing::debug!(conn = input.conn, error = %e, "bad packet from client");
                    core.broker.handle_decode_error(now, input.conn, e);
                }
                input.protocol = core.broker.conn_params(input.conn).and_then(|p| p.protocol);
            }
            core.notify_woken(Some((self.index, &mut self.flush)));
        }
        let inputs = std::mem::take(&mut self.inputs);
        for input in &inputs {
            if let Some(c) = self.client_mut(input.token)
                && c.conn == input.conn
            {
                if input.protocol.is_some() {
                    c.protocol = input.protocol;
                }
                if c.protocol.is_some()
                    && let Some(ip) = self.pending_ip.remove(&input.token)
                {
                    self.shared.pending.release(ip);
                }
                if input.closed {
                    self.close(input.token);
                }
            }
        }
        self.inputs = inputs;
    }

    /// Writes the bytes clients kept back, now that their sockets have room.
    fn write_round(&mut self) {
        let list = std::mem::take(&mut self.write_list);
        let stall_at = Instant::now() + self.stall_timeout;
        for &k in &list {
            let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) else {
                continue;
            };
            if !c.has_backlog() {
                continue;
            }
            let conn = c.conn;
            let outcome = c.write_backlog();
            if outcome == WriteOutcome::Blocked && c.start_stall_clock(stall_at) {
                self.stalled.push((k, conn));
            }
            match outcome {
                WriteOutcome::Done if c.closing => self.close(k),
                // The core may hold more for it, and it may have sent more while unread.
                WriteOutcome::Done => {
                    self.flush.push((k, conn));
                    self.want_read(k);
                }
                WriteOutcome::Blocked => {}
                WriteOutcome::Failed => self.close(k),
            }
        }
        self.write_list = list;
        self.write_list.clear();
    }

    /// Pulls the woken clients' packets from the core and writes them.
    fn flush_round(&mut self) {
        if self.flush.is_empty() {
            return;
        }
        let mut items = std::mem::take(&mut self.flush);
        items.retain(|&(k, conn)| match self.clients.get_mut(k as usize).and_then(Option::as_mut) {
            Some(c) if c.conn == conn && !c.queued => {
                c.queued = true;
                true
            }
            _ => false,
        });
        let now = clock::now();
        self.packets.clear();
        self.outputs.clear();
        {
            let mut core = self.shared.lock();
            for (i, &(k, conn)) in items.iter().enumerate() {
                if self.packets.len() >= ROUND_PACKETS {
                    // Bounded per round: the rest stay queued (and pending) for the next.
                    self.flush.extend_from_slice(&items[i..]);
                    break;
                }
                if let Some(r) = core.routes.get_mut(&conn) {
                    r.pending = false;
                }
                let Some(c) = self.clients.get(k as usize).and_then(Option::as_ref) else {
                    continue;
                };
                if c.has_backlog() {
                    // Pulled again once the socket has taken the backlog.
                    continue;
                }
                let start = self.packets.len();
                let t = core.broker.poll_transmit(now, conn, TRANSMIT_BUDGET, &mut self.packets);
                let protocol = core
                    .broker
                    .conn_params(conn)
                    .and_then(|p| p.protocol)
                    .or(c.protocol)
                    .unwrap_or(Protocol::V3_1_1);
                let end = self.packets.len();
                let more = end - start >= TRANSMIT_BUDGET;
                self.outputs.push(Output {
                    token: k,
                    conn,
                    end,
                    protocol,
                    close: t == Transmit::Close,
                    more,
                });
            }
            core.notify_woken(Some((self.index, &mut self.flush)));
        }
        for &(k, _) in &items {
            if let Some(c) = self.client_mut(k) {
                c.queued = false;
            }
        }
        items.clear();
        let outputs = std::mem::take(&mut self.outputs);
        let mut packets = std::mem::take(&mut self.packets);
        let mut drained = packets.drain(..);
        let mut at = 0;
        for out in &outputs {
            self.encoded.clear();
            for p in drained.by_ref().take(out.end - at) {
                codec::encode(&p, out.protocol, &mut self.encoded);
            }
            at = out.end;
            let Some(c) = self.clients.get_mut(out.token as usize).and_then(Option::as_mut) else {
                continue;
            };
            self.shared.counters.add_sent(self.encoded.len());
            let outcome = if self.encoded.is_empty() { WriteOutcome::Done } else { c.write(&self.encoded) };
            match outcome {
                WriteOutcome::Failed => self.close(out.token),
                WriteOutcome::Done if out.close => self.close(out.token),
                WriteOutcome::Done if out.more => self.flush.push((out.token, out.conn)),
                WriteOutcome::Done => {}
                WriteOutcome::Blocked if out.close => {
                    c.closing = true;
                    self.lingering.push((out.token, out.conn, Instant::now() + LINGER));
                }
                WriteOutcome::Blocked => {
                    if c.start_stall_clock(Instant::now() + self.stall_timeout) {
                        self.stalled.push((out.token, out.conn));
                    }
                }
            }
        }
        drop(drained);
        self.packets = packets;
        self.outputs = outputs;
        if self.flush.is_empty() {
            self.flush = items;
        }
        if self.encoded.capacity() > 1 << 20 {
            self.encoded = BytesMut::new();
        }
    }

    /// Closes clients that did not take their last bytes in time.
    fn linger_round(&mut self) {
        if self.lingering.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        self.lingering.retain(|&(k, conn, at)| {
            let alive = self.clients.get(k as usize).and_then(Option::as_ref).is_some_and(|c| c.conn == conn);
            if alive && now >= at {
                due.push(k);
            }
            alive && now < at
        });
        for k in due {
            self.close(k);
        }
    }

    /// Closes clients whose backlog has not left their socket by its deadline: a reader that
    /// stopped reading holds at most one pull of bytes, and only for `write-stall-timeout-secs`.
    fn stall_round(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        self.stalled.retain(|&(k, conn)| {
            let client = self.clients.get(k as usize).and_then(Option::as_ref).filter(|c| c.conn == conn);
            match client.and_then(Client::stall_deadline) {
                Some(at) if now >= at => {
                    due.push((k, conn));
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
        for (k, conn) in due {
            tracing::info!(
                conn,
                "closing a client that took none of its backlog in write-stall-timeout-secs"
            );
            self.close(k);
        }
    }

    /// Closes a client's socket and tells the core it is gone.
    fn close(&mut self, k: u32) {
        let Some(mut c) = self.clients.get_mut(k as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(k);
        if let Some(ip) = self.pending_ip.remove(&k) {
            self.shared.pending.release(ip);
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(Shutdown::Write);
        let conn = c.conn;
        drop(c);
        let now = clock::now();
        let mut core = self.shared.lock();
        core.routes.remove(&conn);
        core.broker.close(now, conn);
        core.notify_woken(Some((self.index, &mut self.flush)));
    }

    /// At stop: closes every socket left (the core is shutting down with the process).
    fn close_all(&mut self) {
        for slot in &mut self.clients {
            if let Some(mut c) = slot.take() {
                let _ = self.poll.registry().deregister(&mut c.stream);
                let _ = c.stream.shutdown(Shutdown::Write);
            }
        }
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }
}

/// Stops the reactors when dropped (the server future finished or was dropped).
pub(super) struct StopOnDrop(pub(super) Vec<Arc<Handle>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.stop();
        }
    }
}
#[cfg(test)]
mod tests {
    /// An idle connection costs its slab slot, its route and the core's state: keep the
    /// shell's part small (24 bytes in release; debug builds add mio's selector id).
    #[test]
    fn idle_client_state_stays_small() {
        assert!(size_of::<super::Client>() <= 40, "Client is {} bytes", size_of::<super::Client>());
        assert!(size_of::<super::super::Route>() <= 8, "Route is {} bytes", size_of::<super::super::Route>());
    }
}
