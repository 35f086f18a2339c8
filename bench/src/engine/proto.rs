//! CORE. The worker protocol: what a coordinator tells a worker to run ([`WorkerSpec`],
//! [`Command`]) and what the worker reports back ([`Event`]). Every type is serde, so the
//! same values travel over a channel (in-process workers) or as JSON lines over a worker
//! process's stdin/stdout.
//!
//! Client indices: member `k` of group `id` has the global index `(id << 26) | k`; it names
//! the client in client ids and is the publisher number in every payload stamp.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use node::mqtt::packet::Protocol;
use serde::{Deserialize, Serialize};

use crate::stats::{LatencyWire, SeqSetWire, StreamKey};
use crate::tls::TlsSpec;

/// Bits of the global index that hold the group-relative index `k`.
pub const GROUP_SHIFT: u32 = 26;

/// Largest number of members a group may have.
pub const GROUP_MEMBERS_MAX: u64 = 1 << GROUP_SHIFT;

/// The global index of member `k` of group `id`.
pub fn global_index(id: u32, k: u64) -> u64 {
    (u64::from(id) << GROUP_SHIFT) | k
}

/// Index of the broker address that member `k` of a group with `shift` connects to, of `n`
/// addresses: `(k + shift) mod n`. Groups that publish get shift 1 and the others 0, so with
/// several addresses publisher `i` and subscriber `i` are on different nodes; with one
/// address every member gets address 0.
pub fn broker_slot(k: u64, shift: u64, n: usize) -> usize {
    if n <= 1 { 0 } else { ((k % n as u64 + shift % n as u64) % n as u64) as usize }
}

/// MQTT protocol version spoken by the bench clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[serde(rename = "5")]
    V5,
}

impl MqttVersion {
    /// The codec's protocol value.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::V311 => Protocol::V3_1_1,
            Self::V5 => Protocol::V5,
        }
    }
}

/// Everything one worker runs: its share of each client group of the scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerSpec {
    /// Worker number, from 0.
    pub worker: u32,
    /// Run identifier, part of every client id so runs never share sessions.
    pub run_id: String,
    /// Broker addresses (one broker, or a cluster's nodes); each member connects to the one
    /// [`crate::scenario::layout::broker_slot`] assigns it.
    pub brokers: Vec<SocketAddr>,
    /// Local addresses clients bind to, round-robin by client; empty lets the OS choose.
    pub sources: Vec<IpAddr>,
    /// Protocol version.
    pub protocol: MqttVersion,
    /// Keep alive in CONNECT, seconds (0: none).
    pub keep_alive_secs: u16,
    /// Connection attempts per second of this worker; 0 means as fast as possible.
    pub connect_rate: f64,
    /// Connection attempts in progress at once.
    pub connect_concurrency: u32,
    /// Bound on one connect (TCP + CONNACK) and on silence while waiting for acks.
    pub op_timeout_ms: u64,
    /// Bound on a whole step (connect, subscribe, disconnect, reconnect, settle).
    pub step_timeout_ms: u64,
    /// Client groups.
    pub groups: Vec<GroupSpec>,
    /// TLS to the broker; `None`: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// This worker's members of one client group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupSpec {
    /// Group name, used in commands.
    pub name: String,
    /// Group number, part of the global index.
    pub id: u32,
    /// Group-relative index `k` of this worker's first member.
    pub offset: u64,
    /// Members in this worker.
    pub count: u64,
    /// Client id pattern (see [`crate::engine::pattern`]).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Session expiry interval requested by MQTT 5 clients, seconds.
    pub session_expiry_secs: u32,
    /// Mostly idle clients: small buffers, freed when empty.
    pub lean: bool,
    /// Number of regions; member `k` is in region `k % regions` (pattern `{r}`).
    pub regions: u64,
    /// What the members subscribe to.
    pub subscribe: Option<SubSpec>,
    /// What the members publish.
    pub publish: Option<PubSpec>,
    /// Member `k` connects to broker address `(k + broker_shift) mod n` (1 for publishing
    /// groups, so publishers and subscribers of the same index are on different nodes).
    #[serde(default)]
    pub broker_shift: u64,
}

/// Subscriptions of each member of a group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SubSpec {
    /// Filter patterns; filter `j` (0-based) of a member uses pattern `j % filters.len()`.
    pub filters: Vec<String>,
    /// Filters per member.
    pub count: u32,
    /// Requested QoS.
    pub qos: u8,
    /// Filters per SUBSCRIBE packet.
    pub per_packet: u32,
    /// SUBSCRIBE packets outstanding at once per member.
    pub window: u32,
    /// Subscribe right after connecting (else on a `Subscribe` command).
    pub on_connect: bool,
    /// Logical receiver for accounting.
    pub slot: Slot,
    /// Topic pattern every delivery should carry; others count as misrouted.
    pub expect_topic: Option<String>,
}

/// The logical receiver a delivery is accounted to (see [`crate::stats`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Slot {
    /// All members of all groups with this number are one receiver: each message should reach
    /// one of them (point-to-point, shared subscriptions).
    Shared(u32),
    /// Every member is its own receiver (wildcard fan-in, broadcast fan-out).
    PerClient,
}

impl Slot {
    /// The tracker slot of the member with global index `global`.
    pub fn key(self, global: u64) -> u64 {
        match self {
            Self::Shared(n) => (1 << 63) | u64::from(n),
            Self::PerClient => global,
        }
    }
}

/// What each member of a group publishes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PubSpec {
    /// Topic of each message.
    pub topic: TopicSpec,
    /// QoS.
    pub qos: u8,
    /// Payload bytes (at least the 24-byte stamp).
    pub payload_len: u32,
    /// Open or closed loop.
    pub load: Load,
}

/// How a publisher picks the topic of a message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum TopicSpec {
    /// One topic per member, from a pattern (`fleet/{k}/telemetry`, `region/{r}/broadcast`).
    Own(String),
    /// A random subscribed member of `group` in this worker; the topic is `pattern` expanded
    /// for that member.
    Peer {
        /// Target group.
        group: String,
        /// Topic pattern of the target.
        pattern: String,
    },
}

/// Publishing discipline.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub enum Load {
    /// Open loop: a fixed rate per member, messages spread evenly in time.
    Rate {
        /// Messages per second per member.
        per_client_per_sec: f64,
    },
    /// Closed loop: as fast as the broker confirms, with this many unconfirmed messages.
    /// QoS 1/2 are confirmed by PUBACK/PUBCOMP; QoS 0 by a PINGRESP after every half window
    /// (a broker answers PINGREQ after it has processed the PUBLISH packets before it).
    Window {
        /// Unconfirmed messages per member.
        inflight: u32,
    },
}

/// Timing of a traffic phase, on the harness clock.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrafficWindow {
    /// When publishing starts.
    pub start_ns: u64,
    /// Warm-up: published and delivered but not measured.
    pub warmup_ms: u64,
    /// Measurement window; publishing stops at its end.
    pub measure_ms: u64,
    /// Longest wait for acks and deliveries after publishing stops.
    pub drain_max_ms: u64,
    /// The drain ends early after this long without a delivery and with no unacked message.
    pub quiet_ms: u64,
}

impl TrafficWindow {
    /// Start of the measurement window.
    pub fn measure_start_ns(&self) -> u64 {
        self.start_ns + crate::clock::ms_to_ns(self.warmup_ms)
    }

    /// End of the measurement window and of publishing.
    pub fn measure_end_ns(&self) -> u64 {
        self.measure_start_ns() + crate::clock::ms_to_ns(self.measure_ms)
    }
}

/// Coordinator to worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// Connect every member of these groups (and subscribe those that do so on connect).
    Connect {
        /// Group names.
        groups: Vec<String>,
    },
    /// Subscribe the connected members of these groups.
    Subscribe {
        /// Group names.
        groups: Vec<String>,
    },
    /// Start publishing (returns at once; `Done::Traffic` comes after the drain).
    Traffic(TrafficWindow),
    /// Drop a fraction of a group's connected members.
    Disconnect {
        /// Group name.
        group: String,
        /// Fraction of members, 0..=1 (chosen by a hash of the index, the same every run).
        fraction: f64,
        /// TCP reset without DISCONNECT (a network failure) instead of a clean DISCONNECT.
        abrupt: bool,
    },
    /// Reconnect every member of a group that is down.
    Reconnect {
        /// Group name.
        group: String,
    },
    /// Wait until deliveries stop.
    Settle {
        /// Quiet period that ends the wait.
        quiet_ms: u64,
        /// Longest wait.
        max_ms: u64,
    },
    /// Send the accounting report.
    Report,
    /// Disconnect everything and exit.
    Shutdown {
        /// Afterwards connect each persistent-session member once with a clean session, so the
        /// broker drops the session.
        purge_sessions: bool,
    },
}

/// Which step a `Done` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// `Connect`.
    Connect,
    /// `Subscribe`.
    Subscribe,
    /// `Traffic`.
    Traffic,
    /// `Disconnect`.
    Disconnect,
    /// `Reconnect`.
    Reconnect,
    /// `Settle`.
    Settle,
}

/// Worker to coordinator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Event {
    /// Cumulative counters, sent periodically.
    Progress(Progress),
    /// A step finished.
    Done(Box<Done>),
    /// The accounting report.
    Report(Box<WorkerReport>),
    /// The worker cannot continue.
    Failed(String),
}

/// The result of a step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Done {
    /// A connect, subscribe, disconnect or reconnect step.
    Phase(Step, PhaseStats),
    /// A traffic step.
    Traffic(TrafficStats),
}

impl Done {
    /// The step this answers.
    pub fn step(&self) -> Step {
        match self {
            Self::Phase(s, _) => *s,
            Self::Traffic(_) => Step::Traffic,
        }
    }
}

/// Cumulative counters of one worker.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// Worker number.
    pub worker: u32,
    /// Harness-clock time of the reading.
    pub at_ns: u64,
    /// Clients connected now.
    pub connected: u64,
    /// Filters subscribed (SUBACK success codes) so far.
    pub subscriptions: u64,
    /// Messages published.
    pub sent: u64,
    /// Messages confirmed by the broker.
    pub acked: u64,
    /// Messages delivered to clients.
    pub received: u64,
    /// Connection failures and losses.
    pub errors: u64,
}

/// Outcome of a connect, subscribe, disconnect, reconnect or settle step in one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseStats {
    /// Worker number.
    pub worker: u32,
    /// Clients the step applied to.
    pub attempted: u64,
    /// Clients that completed it.
    pub ok: u64,
    /// Clients that failed it.
    pub failed: u64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// Harness-clock time the step started.
    pub started_ns: u64,
    /// Harness-clock time the last client finished (0 if none).
    pub finished_ns: u64,
    /// Per-client time to complete (connect + CONNACK, plus SUBACKs when subscribing).
    pub latency: LatencyWire,
    /// Filters granted.
    pub subscriptions_ok: u64,
    /// Filters refused or unanswered.
    pub subscriptions_failed: u64,
    /// Connections that found their session present.
    pub session_present: u64,
    /// Per group, members holding their subscriptions, by region.
    pub subscribed_by_region: BTreeMap<String, Vec<u64>>,
    /// Deliveries so far (settle).
    pub received: u64,
    /// Harness-clock time of the last delivery (settle; 0 if none).
    pub last_rx_ns: u64,
}

/// Outcome of a traffic step in one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrafficStats {
    /// Worker number.
    pub worker: u32,
    /// Per publishing group, messages sent by region of the publisher.
    pub sent_by_region: BTreeMap<String, Vec<u64>>,
    /// Messages sent in total.
    pub sent: u64,
    /// Messages confirmed by the broker (QoS 1/2).
    pub acked: u64,
    /// QoS 1/2 messages never confirmed.
    pub unacked: u64,
    /// Messages a publisher had no subscribed target for.
    pub no_target: u64,
    /// Deliveries received inside the measurement window.
    pub received_in_window: u64,
    /// Messages sent inside the measurement window.
    pub sent_in_window: u64,
    /// Worst lag of an open-loop publisher behind its schedule, microseconds: large values
    /// mean the load generator, not the broker, limited the rate.
    pub lag_max_us: u64,
    /// Harness-clock time of the first and last delivery of the step (0 if none).
    pub first_rx_ns: u64,
    /// See `first_rx_ns`.
    pub last_rx_ns: u64,
}

/// Accounting a worker sends at the end of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerReport {
    /// Worker number.
    pub worker: u32,
    /// Received sequence numbers per stream.
    pub streams: Vec<(StreamKey, SeqSetWire)>,
    /// End-to-end latency of deliveries of messages sent in the measurement window.
    pub latency: LatencyWire,
    /// Deliveries received.
    pub received: u64,
    /// Deliveries without a bench stamp.
    pub foreign: u64,
    /// Deliveries on a topic other than the receiver's own.
    pub misrouted: u64,
    /// Deliveries with an impossible sequence number.
    pub corrupt: u64,
    /// Connection losses and protocol errors by kind.
    pub errors: BTreeMap<String, u64>,
}
