//! CORE. The single-node broker as one sans-IO state machine.
//!
//! [`Broker`] owns every session, the subscription trie, shared groups, retained messages,
//! will and expiry timers and statistics. It performs no IO and reads no clock: the shell
//! passes `now` into every call. The call order, as in quinn-proto:
//!
//! 1. `open(now)` when a socket is accepted, giving a [`ConnId`];
//! 2. `handle_packet(now, conn, packet)` for each decoded packet, `handle_decode_error` when
//!    the bytes are bad, `keep_alive_expired` when the shell's read deadline passes, and
//!    `close(now, conn)` when the socket is gone;
//! 3. after any call, `poll_woken()` names connections that have something to write, and
//!    `poll_transmit(conn, budget, out)` hands over their packets (and says when to close);
//! 4. `handle_timeout(now)` whenever `poll_timeout()` has passed (wills, session expiry,
//!    `$SYS`).

mod cluster;
mod cluster_session;
#[cfg(test)]
mod cluster_tests;
mod cluster_wait;
mod connect;
mod durable;
#[cfg(test)]
mod durable_tests;
mod limits;
mod operator;
mod outbox;
mod pending;
mod publish;
mod restore;
mod shared;
mod subscribe;
mod sys;
mod test_bugs;
#[cfg(test)]
mod tests;

pub mod auth;
pub mod config;
pub mod journal;
pub mod session;
pub use crate::route::{message, retained, trie};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use crate::mqtt::error::DecodeError;
use crate::mqtt::packet::{Disconnect, Packet, Protocol};
use crate::mqtt::properties::Properties;
use crate::mqtt::reason;
use auth::Authenticator;
use config::BrokerConfig;
use message::SessionKey;
pub use operator::{BANS_MAX, BanError, BanKind, ClientInfo, OperatorError, RetainedInfo};
pub use restore::RestoreReport;
use retained::Retained;
use session::{Conn, ConnId, Phase, Session, ShareId, SubEntry};
use shared::SharedGroup;
pub(crate) use sys::DropReason;
pub use sys::{Drops, Stats};
use trie::Trie;

pub use crate::route::plan::Target;
pub use cluster::{Acquired, ClusterOp, OpId, OpOutcome, ShareName};

/// Timers the core keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Publish a delayed will if the session is still disconnected at this generation.
    Will { session: SessionKey, generation: u64 },
    /// End a disconnected session if it is still at this generation.
    Expire { session: SessionKey, generation: u64 },
    /// Publish `$SYS` statistics.
    Sys,
    /// Drop expired retained messages.
    RetainedPurge,
    /// Check the keep alive of a connection (checked lazily: at most once per period).
    KeepAlive { conn: ConnId },
    /// Close a connection that has not completed CONNECT in time.
    ConnectDeadline { conn: ConnId },
}

/// What the shell should do after writing the packets of a `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Keep the connection open.
    Open,
    /// Close the connection once the packets are written.
    Close,
}

/// Connection parameters the shell needs after CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnParams {
    /// Negotiated protocol, `None` before CONNECT.
    pub protocol: Option<Protocol>,
    /// Keep alive in force, seconds (0: none).
    pub keep_alive_secs: u16,
}

/// The broker core. See the module documentation for the call order.
pub struct Broker {
    config: BrokerConfig,
    auth: Box<dyn Authenticator>,
    conns: FxHashMap<ConnId, Box<Conn>>,
    next_conn: ConnId,
    sessions: FxHashMap<SessionKey, Box<Session>>,
    by_client: FxHashMap<ByteString, SessionKey>,
    next_session: SessionKey,
    trie: Trie<Target, SubEntry>,
    shared: FxHashMap<ShareId, SharedGroup>,
    shared_index: FxHashMap<(ByteString, ByteString), ShareId>,
    next_group: ShareId,
    retained: Retained,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    woken: Vec<ConnId>,
    stats: Stats,
    /// CONNECTs refused, by CONNACK reason code (at most 256 entries).
    refusals: BTreeMap<u8, u64>,
    /// Client ids and user names refused until a deadline.
    bans: operator::Bans,
    /// Admission control of CONNECTs.
    connect_bucket: operator::ConnectBucket,
    started_at: Instant,
    shutting_down: bool,
    /// Scratch buffer for trie matches, reused across publishes.
    scratch: Vec<(Target, SubEntry)>,
    /// Reused by every route: the delivery plan of one message.
    planned: Vec<crate::route::plan::Planned>,
    /// Salt for assigned client identifiers.
    id_salt: u64,
    /// Journal state; `None` when nothing is persisted.
    journal: Option<Box<durable::JournalState>>,
    /// The seam to the cluster; `None` in a single-node broker.
    cluster: Option<Box<cluster::ClusterState>>,
    /// The wills of sessions restored from the journal are the cluster's to publish.
    wills_by_cluster: bool,
}

impl Broker {
    /// Builds a broker. `config` must have passed `validate()`; `seed` is the randomness
    /// the core may use (it salts assigned client identifiers so they differ per run).
    pub fn new(config: BrokerConfig, auth: Box<dyn Authenticator>, now: Instant, seed: u64) -> Self {
        let mut b = Self {
            config,
            auth,
            conns: FxHashMap::default(),
            next_conn: 1,
            sessions: FxHashMap::default(),
            by_client: FxHashMap::default(),
            next_session: 1,
            trie: Trie::default(),
            shared: FxHashMap::default(),
            shared_index: FxHashMap::default(),
            next_group: 1,
            retained: Retained::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            woken: Vec::new(),
            stats: Stats::default(),
            refusals: BTreeMap::new(),
            bans: operator::Bans::default(),
            connect_bucket: operator::ConnectBucket::default(),
            started_at: now,
            shutting_down: false,
            scratch: Vec::new(),
            planned: Vec::new(),
            id_salt: seed,
            journal: None,
            cluster: None,
            wills_by_cluster: false,
        };
        if b.config.sys_interval_secs > 0 {
            b.publish_sys(now);
            b.schedule(now + Duration::from_secs(u64::from(b.config.sys_interval_secs)), Timer::Sys);
        }
        b.schedule(now + Duration::from_secs(5), Timer::RetainedPurge);
        b
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Current statistics.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.sessions = self.sessions.len() as u64;
        s
    }

    /// CONNECTs refused so far, by CONNACK reason code (the 5.0 code, also for 3.x clients).
    pub fn refusals(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.refusals.iter().map(|(&code, &n)| (code, n))
    }

    /// Number of subscriptions (trie entries plus shared-group members).
    pub fn subscription_count(&self) -> usize {
        let shared_members: usize = self.shared.values().map(|g| g.members.len()).sum();
        self.trie.len() - self.shared.len() + shared_members
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Registers a newly accepted connection.
    pub fn open(&mut self, now: Instant) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, Box::new(Conn::new(now)));
        let timeout = Duration::from_secs(u64::from(self.config.connect_timeout_secs));
        self.schedule(now + timeout, Timer::ConnectDeadline { conn: id });
        // Sockets waiting for CONNECT hold descriptors too: past the limit, closed at once.
        if self.conns.len() > self.connection_limit() {
            tracing::debug!(conn = id, "connection limit reached; closing a new socket");
            self.close_now(now, id, None);
        }
        id
    }

    /// Records the peer address of `conn` and when it was accepted (wall-clock ms), as the
    /// shell saw them.
    pub fn set_peer(&mut self, conn: ConnId, ip: std::net::IpAddr, since_ms: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(ip);
            c.since_ms = since_ms;
        }
    }

    /// Parameters of a connection, for the shell's decoder and keep-alive deadline.
    pub fn conn_params(&self, conn: ConnId) -> Option<ConnParams> {
        let c = self.conns.get(&conn)?;
        let protocol = match c.phase {
            Phase::AwaitConnect => None,
            _ => Some(c.protocol),
        };
        Some(ConnParams { protocol, keep_alive_secs: c.keep_alive_secs })
    }

    /// `max-connections`; 0 (derived by the server from the descriptor limit, so unset in
    /// a core built directly) is no limit.
    pub(super) fn connection_limit(&self) -> usize {
        match self.config.max_connections {
            0 => usize::MAX,
            n => n,
        }
    }

    /// Why `packet` exceeds the configured user property limits, if it does.
    fn user_properties_excess(&self, packet: &Packet) -> Option<&'static str> {
        let (count_max, bytes_max) = (self.config.max_user_properties, self.config.max_user_property_bytes);
        limits::user_properties_excess(limits::property_blocks(packet), count_max, bytes_max)
    }

    /// Maximum packet size the broker accepts, for the shell's decoder.
    pub fn max_packet_size(&self) -> usize {
        self.config.max_packet_size as usize
    }

    /// Handles one decoded packet from `conn`.
    pub fn handle_packet(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_seen = now;
        // CONNECT is checked in `handle_connect`, where a refusal is a CONNACK.
        if !matches!(packet, Packet::Connect(_))
            && let Some(text) = self.user_properties_excess(&packet)
        {
            return self.protocol_error(now, conn, reason::PACKET_TOO_LARGE, text);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match (&c.phase, packet) {
            (Phase::Closing, _) => {}
            (Phase::AwaitConnect, Packet::Connect(connect)) => self.handle_connect(now, conn, *connect),
            (Phase::AwaitConnect, _) => self.close_now(now, conn, None),
            (Phase::Authenticating(_), Packet::Auth(a)) => self.handle_connect_auth(now, conn, a),
            (Phase::Authenticating(_), _) => {
                self.protocol_error(now, conn, reason::PROTOCOL_ERROR, "packet before CONNACK")
            }
            (Phase::Acquiring(_), p) => self.hold_early(now, conn, p),
            (Phase::Connected, p) => self.handle_connected(now, conn, p),
        }
    }

    fn handle_connected(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.handle_publish(now, conn, p),
            Packet::PubAck(r) => self.handle_puback(now, conn, r.packet_id),
            Packet::PubRec(r) => self.handle_pubrec(now, conn, r),
            Packet::PubRel(r) => self.handle_pubrel(now, conn, r.packet_id),
            Packet::PubComp(r) => self.handle_pubcomp(now, conn, r.packet_id),
            Packet::Subscribe(s) => self.handle_subscribe(now, conn, s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(now, conn, u),
            Packet::PingReq => self.send(conn, Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(now, conn, d),
            Packet::Auth(a) => self.handle_reauth(now, conn, a),
            Packet::Connect(_) => self.protocol_error(now, conn, reason::PROTOCOL_ERROR, "second CONNECT"),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.protocol_error(now, conn, reason::PROTOCOL_ERROR, "server-only packet from client")
            }
        }
    }

    /// The shell could not decode the bytes from `conn`: answer with the reason code the
    /// spec names (v5) and close.
    pub fn handle_decode_error(&mut self, now: Instant, conn: ConnId, err: &DecodeError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if matches!(c.phase, Phase::AwaitConnect) {
            // Before CONNECT the version is unknown; only an unsupported version gets a
            // CONNACK (3.1.1 return code 1, MQTT-3.1.2-2), sent in 3.1.1 framing.
            // A client speaking an unknown level cannot be assumed to parse 5.0 framing;
            // 3.1.1 framing with return code 1 is what every version understands.
            if let DecodeError::UnsupportedProtocol(_) = err
                && let Some(c) = self.conns.get_mut(&conn)
            {
                c.protocol = Protocol::V3_1_1;
                c.phase = Phase::Closing;
                let ack = crate::mqtt::packet::ConnAck {
                    session_present: false,
                    reason_code: reason::UNSUPPORTED_PROTOCOL_VERSION,
                    properties: Properties::default(),
                };
                self.send(conn, Packet::ConnAck(ack));
            }
            self.close_now(now, conn, None);
            return;
        }
        self.protocol_error(now, conn, err.reason_code(), "undecodable packet");
    }

    /// Starts keep-alive supervision of a connected client.
    fn arm_keep_alive(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn)
            && c.keep_alive_secs > 0
        {
            let at = now + keep_alive_window(c.keep_alive_secs);
            self.schedule(at, Timer::KeepAlive { conn });
        }
    }

    /// Disconnects a client silent for 1.5 times its keep alive (MQTT-3.1.2-22), or
    /// re-arms the check at the deadline its last packet set.
    fn check_keep_alive(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !c.is_connected() || c.keep_alive_secs == 0 {
            return;
        }
        let deadline = c.last_seen + keep_alive_window(c.keep_alive_secs);
        if now >= deadline {
            self.protocol_error(now, conn, reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout");
        } else {
            self.schedule(deadline, Timer::KeepAlive { conn });
        }
    }

    /// The socket of `conn` is gone. Detaches its session (publishing the will unless the
    /// client disconnected normally) and forgets the connection.
    pub fn close(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn)
            && !matches!(c.phase, Phase::Closing)
        {
            self.detach(now, conn, true);
        }
        self.drop_held(conn);
        self.conns.remove(&conn);
    }

    /// Starts a graceful shutdown: DISCONNECT 0x8B to every v5 client, then close all.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let c = &self.conns[&id];
            if c.is_connected() && c.protocol.is_v5() {
                self.send_disconnect(id, reason::SERVER_SHUTTING_DOWN, "server shutting down");
            }
            self.close_now(now, id, Some(false));
        }
    }

    /// The next connection with something to write, if any.
    pub fn poll_woken(&mut self) -> Option<ConnId> {
        let id = self.woken.pop()?;
        if let Some(c) = self.conns.get_mut(&id) {
            c.woken = false;
        }
        Some(id)
    }

    /// Moves up to `budget` packets for `conn` into `out`: control packets first, then queued
    /// messages as the client's window allows. `Transmit::Close` means close after writing.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        conn: ConnId,
        budget: usize,
        out: &mut Vec<Packet>,
    ) -> Transmit {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Transmit::Close;
        };
        // Take the deque itself: an idle connection keeps no packet buffer allocated.
        let start = out.len();
        out.extend(std::mem::take(&mut c.outbox));
        c.outbox_bytes = 0;
        if c.protocol.is_v5() && c.client_max_packet_size < u32::MAX {
            // MQTT-3.1.2-25: never exceed the client's maximum; diagnostics go first.
            let max = c.client_max_packet_size as usize;
            for p in &mut out[start..] {
                if crate::mqtt::codec::encoded_len(p, c.protocol) > max {
                    outbox::strip_diagnostics(p);
                }
            }
        }
        if matches!(c.phase, Phase::Closing) {
            return Transmit::Close;
        }
        if c.is_connected() && !self.has_parked(conn) {
            self.fill_from_queue(now, conn, budget, out);
            test_bugs::reorder_batch(&mut out[start..]);
        }
        Transmit::Open
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(at, seq), &timer)) = self.timers.iter().next() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, seq));
            match timer {
                Timer::Will { session, generation } => self.fire_will(now, session, generation),
                Timer::Expire { session, generation } => self.expire_session(now, session, generation),
                Timer::Sys => {
                    self.publish_sys(now);
                    let every = Duration::from_secs(u64::from(self.config.sys_interval_secs));
                    self.schedule(now + every, Timer::Sys);
                }
                Timer::KeepAlive { conn } => self.check_keep_alive(now, conn),
                Timer::ConnectDeadline { conn } => {
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| matches!(c.phase, Phase::AwaitConnect | Phase::Authenticating(_)))
                    {
                        tracing::debug!(conn, "no CONNECT in time");
                        self.close_now(now, conn, None);
                    }
                }
                Timer::RetainedPurge => {
                    self.retained.purge_expired(now);
                    self.schedule(now + Duration::from_secs(5), Timer::RetainedPurge);
                }
            }
        }
    }

    /// When `handle_timeout` next needs to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
    }

    /// Schedules a will or expiry timer of offline session `key`, remembered in the session
    /// so that [`Self::cancel_session_timers`] can remove it.
    fn schedule_for_session(&mut self, key: SessionKey, at: Instant, timer: Timer) {
        self.schedule(at, timer);
        if let Some(s) = self.sessions.get_mut(&key) {
            s.timers.push((at, self.timer_seq));
        }
    }

    /// Removes the will and expiry timers of session `key` (it came back, or it ended).
    fn cancel_session_timers(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.get_mut(&key) {
            for t in std::mem::take(&mut s.timers) {
                self.timers.remove(&t);
            }
        }
    }

    /// Queues a control packet for `conn` and wakes it. While journal records emitted
    /// before it are not durable, the packet waits (it may acknowledge them).
    fn send(&mut self, conn: ConnId, packet: Packet) {
        if let Some(packet) = self.hold_behind(conn, packet) {
            self.send_now(conn, packet);
        }
    }

    /// [`Self::send`] for a packet no cluster operation holds back.
    fn send_now(&mut self, conn: ConnId, packet: Packet) {
        let Some(packet) = self.park_if_needed(conn, packet) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            outbox::push(c, packet);
            if !c.woken {
                c.woken = true;
                self.woken.push(conn);
            }
        }
    }

    fn wake(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.woken
        {
            c.woken = true;
            self.woken.push(conn);
        }
    }

    /// Properties carrying a reason string, if the client wants diagnostics.
    fn reason_props(&self, conn: ConnId, text: &str) -> Properties {
        let wants = self.conns.get(&conn).is_some_and(|c| c.problem_info && c.protocol.is_v5());
        Properties { reason_string: wants.then(|| text.into()), ..Properties::default() }
    }

    fn send_disconnect(&mut self, conn: ConnId, code: u8, text: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.close_reason = Some(code);
        }
        // DISCONNECT always may carry a reason string (MQTT-3.14.2-3 concerns size only).
        let v5 = self.conns.get(&conn).is_some_and(|c| c.protocol.is_v5());
        if !v5 {
            return;
        }
        let properties = Properties { reason_string: Some(text.into()), ..Properties::default() };
        self.send_closing(conn, Packet::Disconnect(Disconnect { reason_code: code, properties }));
    }

    /// Queues the last packet of a connection that closes at once (a refusing CONNACK, a
    /// DISCONNECT): not parked behind records waiting for the journal, where it would never
    /// leave. It promises nothing about durability.
    fn send_closing(&mut self, conn: ConnId, packet: Packet) {
        if let Some(c) = self.conns.get_mut(&conn) {
            outbox::push(c, packet);
        }
        self.wake(conn);
    }

    /// A protocol violation: DISCONNECT with `code` (v5 after CONNACK), CONNACK with `code`
    /// (v5 before CONNACK), or a plain close (3.x); the will is published.
    fn protocol_error(&mut self, now: Instant, conn: ConnId, code: u8, text: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        tracing::debug!(conn, code, text, "closing connection on protocol error");
        match c.phase {
            Phase::Connected => self.send_disconnect(conn, code, text),
            Phase::Authenticating(_) | Phase::Acquiring(_) if c.protocol.is_v5() => {
                let properties = self.reason_props(conn, text);
                let ack =
                    crate::mqtt::packet::ConnAck { session_present: false, reason_code: code, properties };
                self.send(conn, Packet::ConnAck(ack));
            }
            _ => {}
        }
        self.close_now(now, conn, Some(true));
    }

    /// Marks `conn` closing. `will`: `Some(publish?)` detaches the session if attached.
    fn close_now(&mut self, now: Instant, conn: ConnId, will: Option<bool>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.phase, Phase::Closing) {
            return;
        }
        let attached = matches!(c.phase, Phase::Connected);
        c.phase = Phase::Closing;
        self.wake(conn);
        if attached {
            self.detach(now, conn, will.unwrap_or(true));
        }
    }
}

/// One and a half times the keep alive (MQTT-3.1.2-22).
fn keep_alive_window(secs: u16) -> Duration {
    Duration::from_millis(u64::from(secs) * 1500)
}
