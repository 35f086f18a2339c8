//! CORE. Session state: what survives a connection (subscriptions, the outbound QoS window,
//! the queue, inbound QoS 2 packet ids) and the per-connection state that does not.
//!
//! Invariants: `inflight.len()` never exceeds the window of the attached connection when a
//! new message is admitted; `pending.len() <= max_queued_messages` and `pending_bytes <=
//! max_queue_bytes_per_session` unless `pending` holds one delivery; `qos0_pending` counts the
//! QoS 0 deliveries in `pending` and `pending_bytes` sums their messages' `queued_bytes`;
//! packet ids in `inflight` are distinct and non-zero.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use rustc_hash::{FxHashMap, FxHashSet};

use super::auth::AuthExchange;
use super::message::Message;
use crate::mqtt::packet::{Protocol, QoS, Will};

/// Identifies a network connection inside one broker.
pub type ConnId = u64;

pub use crate::route::shared::ShareId;
pub use crate::route::trie::SubEntry;

/// A message on its way to one session.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// QoS of this delivery (the minimum of published and granted).
    pub qos: QoS,
    /// Retain flag to send.
    pub retain: bool,
    /// Subscription identifiers of every matching subscription that has one.
    pub sub_ids: Vec<u32>,
    /// Set when the message came through a shared subscription, for redelivery.
    pub shared: Option<ShareId>,
    /// The journal id of the stored message, when the session is journaled.
    pub msg_id: Option<super::journal::MsgId>,
}

/// State of an outbound QoS 1/2 flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// One outbound QoS 1/2 message in flight.
#[derive(Clone, Debug)]
pub struct Inflight {
    /// Packet identifier.
    pub packet_id: u16,
    /// The message.
    pub delivery: Delivery,
    /// Where the flow is.
    pub state: OutState,
}

/// A session (MQTT section 4.1).
pub struct Session {
    /// Client identifier.
    pub client_id: ByteString,
    /// The attached connection, if online.
    pub conn: Option<ConnId>,
    /// Bumped on every attach and detach so stale timers can be told apart.
    pub generation: u64,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_secs: u32,
    /// Subscriptions by the filter text the client sent (including `$share/...`).
    pub subs: FxHashMap<ByteString, SubEntry>,
    /// Outbound QoS 1/2 messages awaiting acknowledgement, in send order.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting to be sent.
    pub pending: VecDeque<Delivery>,
    /// QoS 0 deliveries in `pending`.
    pub qos0_pending: usize,
    /// `Message::queued_bytes` summed over `pending`.
    pub pending_bytes: usize,
    /// Retained messages matched by a new subscription that did not fit the queue yet: they
    /// enter `pending` as it drains, so a filter matching more retained messages than
    /// `max-queued-messages` is served in turn instead of overflowing the queue.
    pub retained_backlog: Option<Box<VecDeque<Delivery>>>,
    /// Inbound QoS 2 packet ids that got PUBREC and await PUBREL.
    pub qos2_in: FxHashSet<u16>,
    /// Next outbound packet id to try.
    pub next_packet_id: u16,
    /// Keys of the will and expiry timers scheduled while it is offline, cancelled when it
    /// comes back or ends (a connect/disconnect cycle would otherwise leave one per cycle).
    pub timers: Vec<(Instant, u64)>,
    /// A will waiting for its delay to pass (set while disconnected).
    pub will_pending: Option<Box<(Will, Option<String>)>>,
    /// Messages dropped for this session because its queue was full or they expired.
    pub dropped: u64,
    /// The session is recorded in the journal (persistent, journaling on).
    pub journaled: bool,
    /// The connection epoch of the session's record in the cluster (0 on a single node):
    /// the guard of every write this node makes to the record.
    pub cluster_epoch: u64,
    /// The record's generation at that epoch.
    pub cluster_generation: u64,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: ByteString, expiry_secs: u32) -> Self {
        Self {
            client_id,
            conn: None,
            generation: 0,
            expiry_secs,
            subs: FxHashMap::default(),
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
            qos0_pending: 0,
            pending_bytes: 0,
            retained_backlog: None,
            qos2_in: FxHashSet::default(),
            next_packet_id: 1,
            timers: Vec::new(),
            will_pending: None,
            dropped: 0,
            journaled: false,
            cluster_epoch: 0,
            cluster_generation: 0,
        }
    }

    /// Allocates a packet id not used by any inflight message. The caller guarantees the
    /// window is below 65,535.
    pub fn alloc_packet_id(&mut self) -> u16 {
        debug_assert!(self.inflight.len() < usize::from(u16::MAX));
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Pops the next pending delivery, keeping the counts right.
    pub fn pop_pending(&mut self) -> Option<Delivery> {
        let d = self.pending.pop_front()?;
        if d.qos == QoS::AtMostOnce {
            self.qos0_pending -= 1;
        }
        self.pending_bytes -= d.msg.queued_bytes();
        Some(d)
    }

    /// Appends a delivery to the queue, keeping the counts right (the caller has checked
    /// the caps with [`Self::make_room`]).
    pub fn push_pending(&mut self, d: Delivery) {
        if d.qos == QoS::AtMostOnce {
            self.qos0_pending += 1;
        }
        self.pending_bytes += d.msg.queued_bytes();
        self.pending.push_back(d);
    }

    /// Recomputes the counts after `pending` was edited in place.
    pub fn recount(&mut self) {
        self.qos0_pending = self.pending.iter().filter(|d| d.qos == QoS::AtMostOnce).count();
        self.pending_bytes = self.pending.iter().map(|d| d.msg.queued_bytes()).sum();
    }

    /// True if a delivery of `bytes` fits the queue's caps (an empty queue takes any one).
    pub fn fits(&self, bytes: usize, max_len: usize, max_bytes: usize) -> bool {
        self.pending.is_empty() || (self.pending.len() < max_len && self.pending_bytes + bytes <= max_bytes)
    }

    /// Makes room for a delivery of `qos` costing `bytes` under the caps: for QoS 1/2,
    /// queued QoS 0 deliveries go first, oldest first. Returns whether it fits now and how
    /// many queued deliveries were dropped for it.
    pub fn make_room(&mut self, qos: QoS, bytes: usize, max_len: usize, max_bytes: usize) -> (bool, u64) {
        let mut dropped = 0;
        while !self.fits(bytes, max_len, max_bytes) && qos != QoS::AtMostOnce && self.qos0_pending > 0 {
            let Some(i) = self.pending.iter().position(|x| x.qos == QoS::AtMostOnce) else {
                break;
            };
            let old = self.pending.remove(i).expect("index from position");
            self.qos0_pending -= 1;
            self.pending_bytes -= old.msg.queued_bytes();
            dropped += 1;
        }
        (self.fits(bytes, max_len, max_bytes), dropped)
    }

    /// Removes every delivery that came through shared group `group` from the queue and the
    /// inflight window, for redelivery to another member.
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let mut taken = Vec::new();
        self.inflight.retain(|f| {
            // A QoS 2 message already released (PUBREC received) belongs to this client.
            let keep = f.delivery.shared.is_none() || f.state == OutState::Released;
            if !keep {
                taken.push(f.delivery.clone());
            }
            keep
        });
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for d in self.pending.drain(..) {
            if d.shared.is_some() {
                taken.push(d);
            } else {
                kept.push_back(d);
            }
        }
        self.pending = kept;
        self.recount();
        taken
    }
}

/// Where a connection is in its life.
pub enum Phase {
    /// Waiting for CONNECT.
    AwaitConnect,
    /// CONNECT received; an enhanced authentication exchange is running.
    Authenticating(Box<PendingConnect>),
    /// CONNECT accepted locally; the cluster is fencing the session record (CONNACK
    /// follows its outcome).
    Acquiring(Box<Acquiring>),
    /// CONNACK sent; the session is attached.
    Connected,
    /// The broker decided to close; only the outbox is still written.
    Closing,
}

/// A CONNECT held while enhanced authentication runs.
pub struct PendingConnect {
    /// The CONNECT packet.
    pub connect: crate::mqtt::packet::Connect,
    /// The running exchange.
    pub exchange: Box<dyn AuthExchange>,
    /// Whether the client id was assigned by the broker.
    pub assigned_id: bool,
}

/// A CONNECT waiting for the cluster to hand it the session.
pub struct Acquiring {
    /// The CONNECT packet.
    pub connect: crate::mqtt::packet::Connect,
    /// Whether the client id was assigned by the broker.
    pub assigned_id: bool,
    /// Authentication data for the CONNACK (enhanced authentication).
    pub auth_data: Option<bytes::Bytes>,
    /// Packets the client sent after CONNECT, handled once connected.
    pub early: Vec<crate::mqtt::packet::Packet>,
}

/// Rarely used per-connection state, boxed so an idle connection stays small.
#[derive(Default)]
pub struct ConnExtras {
    /// Topic aliases the broker assigned towards the client.
    pub alias_out: FxHashMap<ByteString, u16>,
    /// Topic aliases the client set towards the broker.
    pub alias_in: FxHashMap<u16, ByteString>,
    /// Authentication method of the connection (v5 enhanced auth), for re-authentication.
    pub auth_method: Option<ByteString>,
    /// A re-authentication exchange in progress.
    pub reauth: Option<Box<dyn AuthExchange>>,
}

/// Per-connection state.
pub struct Conn {
    /// Where the connection is.
    pub phase: Phase,
    /// Protocol negotiated by CONNECT.
    pub protocol: Protocol,
    /// Already queued for a wake-up.
    pub woken: bool,
    /// The client asked for reason strings and user properties on errors.
    pub problem_info: bool,
    /// Keep alive in force, seconds.
    pub keep_alive_secs: u16,
    /// The client's Receive Maximum.
    pub client_receive_max: u16,
    /// The client's Topic Alias Maximum.
    pub client_alias_max: u16,
    /// The client's Maximum Packet Size.
    pub client_max_packet_size: u32,
    /// The attached session.
    pub session: Option<super::message::SessionKey>,
    /// Control packets and retransmissions to write, in order, before queued messages.
    pub outbox: Vec<crate::mqtt::packet::Packet>,
    /// What `outbox` holds against `max-outbox-bytes` (see `broker::outbox`).
    pub outbox_bytes: usize,
    /// When the last packet arrived (keep alive).
    pub last_seen: Instant,
    /// The will of this connection.
    pub will: Option<Box<Will>>,
    /// User name the client authenticated with.
    pub username: Option<Arc<str>>,
    /// Aliases and authentication state, allocated on first use.
    pub extras: Option<Box<ConnExtras>>,
    /// The peer's address, as the shell reported it (for logs and the admin API).
    pub peer: Option<std::net::IpAddr>,
    /// Wall-clock milliseconds when the shell accepted the socket (for the admin API).
    pub since_ms: u64,
    /// The reason code of the DISCONNECT sent or received, for the disconnect log line.
    pub close_reason: Option<u8>,
}

impl Conn {
    /// A connection that has not yet sent CONNECT.
    pub fn new(now: Instant) -> Self {
        Self {
            phase: Phase::AwaitConnect,
            protocol: Protocol::V3_1_1,
            woken: false,
            problem_info: true,
            keep_alive_secs: 0,
            client_receive_max: u16::MAX,
            client_alias_max: 0,
            client_max_packet_size: u32::MAX,
            session: None,
            outbox: Vec::new(),
            outbox_bytes: 0,
            last_seen: now,
            will: None,
            username: None,
            extras: None,
            peer: None,
            since_ms: 0,
            close_reason: None,
        }
    }

    /// True once CONNACK has been sent and the connection is not closing.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected)
    }

    /// The extras, allocated on first use.
    pub fn extras(&mut self) -> &mut ConnExtras {
        self.extras.get_or_insert_with(Box::default)
    }
}
