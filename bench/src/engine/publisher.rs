//! SHELL. The publishing half of a member: open-loop pacing or a closed-loop window, packet
//! identifiers and the QoS 1/2 flows, stamped payloads.
//!
//! Invariants: `inflight.len()` never exceeds the window (`room()` is checked before each
//! send); the worker's `inflight` counter moves with every push and pop here; packet ids in
//! `inflight` are distinct and in `1..=PUB_ID_MAX` (ids above it are the subscriber's).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use node::mqtt::packet::{Packet, PubResp, Publish, QoS};

use super::ctx::{Ctx, add, sub};
use super::pattern::expand;
use super::proto::{Load, TopicSpec, TrafficWindow, global_index};
use crate::client::Conn;
use crate::clock;
use crate::stamp::Stamp;

/// Messages encoded per wake-up, so one publisher cannot starve the others.
const FILL_BATCH_MAX: usize = 256;

/// Write backlog above which a publisher stops encoding (the socket is full).
const BACKLOG_MAX: usize = 256 * 1024;

/// Highest packet id used for PUBLISH; SUBSCRIBE uses the ids above.
pub(crate) const PUB_ID_MAX: u16 = 0xEFFF;

/// Unacknowledged QoS 1/2 messages of an open-loop publisher, unless the broker allows fewer.
const OPEN_LOOP_INFLIGHT_MAX: usize = 1024;

/// Pause after a publisher found no subscribed target.
const NO_TARGET_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Debug)]
enum Target {
    Own(ByteString),
    Peer { group: usize, pattern: String, cache: Vec<Option<ByteString>> },
}

#[derive(Clone, Copy, Debug)]
struct Flight {
    id: u16,
    released: bool,
}

#[derive(Clone, Copy, Debug)]
struct Active {
    window: TrafficWindow,
    start: Instant,
    stop: Instant,
}

/// Publishing state of one member; it survives reconnections (sequence numbers go on).
#[derive(Debug)]
pub(crate) struct Publisher {
    group: usize,
    /// Index of the broker address this publisher is connected to.
    broker: usize,
    region: usize,
    pub_id: u32,
    qos: QoS,
    payload_len: usize,
    load: Load,
    target: Target,
    seq: u64,
    active: Option<Active>,
    interval: Duration,
    next_due: Instant,
    backoff_until: Option<Instant>,
    inflight: VecDeque<Flight>,
    next_id: u16,
    receive_max: usize,
    unconfirmed: u32,
    pings: VecDeque<u32>,
    since_ping: u32,
    scratch: BytesMut,
}

impl Publisher {
    /// The publisher of local member `idx` of group `group`, if the group publishes.
    pub(crate) fn new(ctx: &Ctx, group: usize, idx: u64) -> Option<Self> {
        let g = &ctx.groups[group];
        let spec = g.spec.publish.as_ref()?;
        let vars = g.vars(&ctx.spec.run_id, idx);
        let target = match &spec.topic {
            TopicSpec::Own(p) => Target::Own(ByteString::from(expand(p, &vars))),
            TopicSpec::Peer { group: to, pattern } => {
                let to = ctx.group_index(to)?;
                let cache = vec![None; ctx.groups[to].members.len()];
                Target::Peer { group: to, pattern: pattern.clone(), cache }
            }
        };
        let interval = match spec.load {
            Load::Rate { per_client_per_sec } if per_client_per_sec > 0.0 => {
                Duration::from_secs_f64(1.0 / per_client_per_sec)
            }
            _ => Duration::MAX,
        };
        Some(Self {
            group,
            region: g.region(idx),
            broker: ctx.broker_of(group, idx).0,
            pub_id: global_index(g.spec.id, g.spec.offset + idx) as u32,
            qos: QoS::from_u8(spec.qos).unwrap_or(QoS::AtMostOnce),
            payload_len: spec.payload_len as usize,
            load: spec.load,
            target,
            seq: 0,
            active: None,
            interval,
            next_due: Instant::now(),
            backoff_until: None,
            inflight: VecDeque::new(),
            next_id: 0,
            receive_max: OPEN_LOOP_INFLIGHT_MAX,
            unconfirmed: 0,
            pings: VecDeque::new(),
            since_ping: 0,
            scratch: BytesMut::new(),
        })
    }

    /// Applies the broker's Receive Maximum (MQTT 5 CONNACK).
    pub(crate) fn set_receive_max(&mut self, n: Option<u16>) {
        self.receive_max = n.map_or(OPEN_LOOP_INFLIGHT_MAX, |n| usize::from(n).min(OPEN_LOOP_INFLIGHT_MAX));
    }

    /// Follows the traffic window of the control channel.
    pub(crate) fn set_window(&mut self, ctx: &Ctx, w: Option<TrafficWindow>) {
        match (w, self.active) {
            (Some(w), Some(a)) if a.window == w => {}
            (Some(window), _) => {
                let start = clock::instant_at(window.start_ns);
                let stop = clock::instant_at(window.measure_end_ns());
                // A random phase spreads the members of a group evenly over each interval.
                let phase = if self.interval < Duration::from_secs(3600) {
                    let nanos = self.interval.as_nanos().max(1) as u64;
                    Duration::from_nanos(ctx.random_below(nanos))
                } else {
                    Duration::ZERO
                };
                self.next_due = start + phase;
                self.active = Some(Active { window, start, stop });
            }
            (None, _) => self.active = None,
        }
    }

    fn room(&self) -> bool {
        match (self.qos, self.load) {
            (QoS::AtMostOnce, Load::Rate { .. }) => true,
            (QoS::AtMostOnce, Load::Window { inflight }) => self.unconfirmed < inflight,
            (_, Load::Window { inflight }) => self.inflight.len() < (inflight as usize).min(self.receive_max),
            (_, Load::Rate { .. }) => self.inflight.len() < self.receive_max,
        }
    }

    /// When the publisher next wants to run, given the connection's write backlog.
    pub(crate) fn next_wake(&self, now: Instant, backlog: usize) -> Option<Instant> {
        let a = self.active?;
        if now < a.start {
            return Some(a.start);
        }
        if now >= a.stop || backlog >= BACKLOG_MAX || !self.room() {
            return None;
        }
        let at = match self.load {
            Load::Rate { .. } => self.next_due.min(a.stop),
            Load::Window { .. } => now,
        };
        Some(self.backoff_until.map_or(at, |b| at.max(b)))
    }

    /// Encodes the messages due at `now` into `conn`'s write buffer.
    pub(crate) fn fill(&mut self, conn: &mut Conn, ctx: &Ctx, now: Instant) {
        let Some(a) = self.active else {
            return;
        };
        if now < a.start || now >= a.stop || self.backoff_until.is_some_and(|b| now < b) {
            return;
        }
        self.backoff_until = None;
        let now_ns = clock::now_ns();
        let measuring = (a.window.measure_start_ns()..a.window.measure_end_ns()).contains(&now_ns);
        let mut sent = 0u64;
        for _ in 0..FILL_BATCH_MAX {
            if conn.write_backlog() >= BACKLOG_MAX || !self.room() {
                break;
            }
            if let Load::Rate { .. } = self.load {
                if self.next_due > now {
                    break;
                }
                let lag = now.duration_since(self.next_due).as_micros() as u64;
                if lag > ctx.counters.lag_max_us.get() {
                    ctx.counters.lag_max_us.set(lag);
                }
                self.next_due += self.interval;
            }
            if !self.send_one(conn, ctx, now_ns) {
                add(&ctx.counters.no_target, 1);
                self.backoff_until = Some(now + NO_TARGET_BACKOFF);
                break;
            }
            sent += 1;
        }
        add(&ctx.counters.sent, sent);
        if measuring {
            add(&ctx.counters.sent_in_window, sent);
        }
        add(&ctx.groups[self.group].sent_by_region[self.region], sent);
    }

    fn topic(&mut self, ctx: &Ctx) -> Option<ByteString> {
        match &mut self.target {
            Target::Own(t) => Some(t.clone()),
            Target::Peer { group, pattern, cache } => {
                let idx = ctx.peer_pick(*group, Some(self.broker))?;
                let slot = &mut cache[idx as usize];
                let topic = slot.get_or_insert_with(|| {
                    let g = &ctx.groups[*group];
                    ByteString::from(expand(pattern, &g.vars(&ctx.spec.run_id, idx)))
                });
                Some(topic.clone())
            }
        }
    }

    fn alloc_id(&mut self) -> u16 {
        loop {
            self.next_id = if self.next_id >= PUB_ID_MAX { 1 } else { self.next_id + 1 };
            let id = self.next_id;
            if !self.inflight.iter().any(|f| f.id == id) {
                return id;
            }
        }
    }

    fn send_one(&mut self, conn: &mut Conn, ctx: &Ctx, now_ns: u64) -> bool {
        let Some(topic) = self.topic(ctx) else {
            return false;
        };
        let stamp = Stamp { publisher: self.pub_id, seq: self.seq, sent_ns: now_ns };
        self.seq += 1;
        let payload = stamp.payload(self.payload_len, &mut self.scratch);
        let packet_id = if self.qos == QoS::AtMostOnce {
            0
        } else {
            let id = self.alloc_id();
            self.inflight.push_back(Flight { id, released: false });
            add(&ctx.counters.inflight, 1);
            id
        };
        let publish = Publish { qos: self.qos, topic, packet_id, payload, ..Publish::default() };
        conn.queue(&Packet::Publish(publish));
        if let (QoS::AtMostOnce, Load::Window { inflight }) = (self.qos, self.load) {
            self.unconfirmed += 1;
            self.since_ping += 1;
            if self.since_ping >= (inflight / 2).max(1) {
                conn.queue(&Packet::PingReq);
                self.pings.push_back(self.since_ping);
                self.since_ping = 0;
            }
        }
        true
    }

    fn complete(&mut self, ctx: &Ctx, id: u16, reason: u8) {
        let Some(pos) = self.inflight.iter().position(|f| f.id == id) else {
            ctx.error("ack_for_unknown_packet_id");
            return;
        };
        self.inflight.remove(pos);
        sub(&ctx.counters.inflight, 1);
        if reason >= 0x80 {
            ctx.error("publish_refused");
        } else {
            add(&ctx.counters.acked, 1);
        }
    }

    /// PUBACK (QoS 1).
    pub(crate) fn on_puback(&mut self, ctx: &Ctx, r: &PubResp) {
        self.complete(ctx, r.packet_id, r.reason_code);
    }

    /// PUBREC (QoS 2): release the message, or end the flow on an error reason code.
    pub(crate) fn on_pubrec(&mut self, ctx: &Ctx, r: &PubResp, conn: &mut Conn) {
        if r.reason_code >= 0x80 {
            self.complete(ctx, r.packet_id, r.reason_code);
            return;
        }
        match self.inflight.iter_mut().find(|f| f.id == r.packet_id) {
            Some(f) => f.released = true,
            None => ctx.error("ack_for_unknown_packet_id"),
        }
        conn.queue(&Packet::PubRel(PubResp::new(r.packet_id)));
    }

    /// PUBCOMP (QoS 2).
    pub(crate) fn on_pubcomp(&mut self, ctx: &Ctx, r: &PubResp) {
        if !self.inflight.iter().any(|f| f.id == r.packet_id && f.released) {
            ctx.error("pubcomp_before_pubrec");
        }
        self.complete(ctx, r.packet_id, r.reason_code);
    }

    /// A keep-alive PINGREQ was sent: its PINGRESP confirms nothing.
    pub(crate) fn on_keepalive_ping(&mut self) {
        self.pings.push_back(0);
    }

    /// PINGRESP: the batch of QoS 0 messages before the matching PINGREQ was processed.
    pub(crate) fn on_pingresp(&mut self) {
        if let Some(batch) = self.pings.pop_front() {
            self.unconfirmed = self.unconfirmed.saturating_sub(batch);
        }
    }

    /// The connection is gone: unacknowledged messages are counted as such and forgotten.
    pub(crate) fn connection_lost(&mut self, ctx: &Ctx) {
        let n = self.inflight.len() as u64;
        self.inflight.clear();
        sub(&ctx.counters.inflight, n);
        add(&ctx.counters.unacked, n);
        self.unconfirmed = 0;
        self.since_ping = 0;
        self.pings.clear();
    }
}
