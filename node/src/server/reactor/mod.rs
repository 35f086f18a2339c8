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
//!
//! This file holds the reactor's state, its loop and the inbox; `accept` admits sockets,
//! `read` is the read path into the core, `write` the path out of it (pulls, writes,
//! stalls, lingering).

use std::io;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;

use super::Shared;
use super::client::Client;
use crate::broker::session::ConnId;
use crate::clock;
use crate::mqtt::packet::Packet;
use read::Input;
use write::Output;

mod accept;
mod read;
mod write;

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
    /// Clients whose PUBLISH waits for the journal to catch up (see `read`).
    lag_held: Vec<u32>,
    /// Set while `lag_held` is not empty: when to look at the journal's lag again.
    lag_recheck_at: Option<Instant>,
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
            lag_held: Vec::new(),
            lag_recheck_at: None,
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
        let reads_due = !self.read_list.is_empty();
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
        if let Some(t) = self.lag_recheck_at {
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
