//! SHELL. Admission: the listening reactor accepts connections (pausing after accept
//! errors such as EMFILE), checks the per-address limit on sockets without CONNECT, and
//! deals the sockets round robin over the reactors, which register them and open their
//! connections in the core.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{ACCEPT_BACKOFF, ACCEPT_BUDGET, FIRST_CLIENT, Reactor};
use crate::clock;
use crate::server::Route;
use crate::server::client::Client;

impl Reactor {
    pub(super) fn accept_due(&self) -> bool {
        self.accept_again || self.accept_paused_until.is_some_and(|t| Instant::now() >= t)
    }

    /// Accepts pending connections and deals them round robin over the reactors.
    pub(super) fn accept(&mut self) {
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
    pub(super) fn adopt(&mut self, streams: Vec<(TcpStream, IpAddr)>) {
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
            if let Some(&ip) = self.pending_ip.get(&k) {
                core.broker.set_peer(conn, ip, clock::wall_ms());
            }
            core.routes.insert(conn, Route { reactor: self.index as u16, token: k, pending: false });
            if let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) {
                c.conn = conn;
            }
        }
        // A socket over the connection limit is closing already.
        core.notify_woken(Some((self.index, &mut self.flush)));
    }
}
