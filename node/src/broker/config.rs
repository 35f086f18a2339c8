//! CORE. Broker limits and behaviour switches, validated once and handed to the core.

use serde::{Deserialize, Serialize};

use crate::mqtt::topic::TopicLimits;

/// Highest `max-topic-levels`: matching and the trie recurse once per level.
pub const TOPIC_LEVELS_MAX: usize = 128;

/// A user allowed to connect with a password.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct User {
    /// User name.
    pub username: String,
    /// Password, compared in constant time.
    pub password: String,
}

/// Everything the broker core needs to know from configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerConfig {
    /// Maximum simultaneous client sockets, those still waiting for CONNECT included: a socket
    /// accepted beyond it is closed at once, a CONNECT beyond it gets CONNACK 0x97 (v5) / 3
    /// (v3). 0 derives it from the process's descriptor limit (`RLIMIT_NOFILE`) minus
    /// `reserved-descriptors`.
    pub max_connections: usize,
    /// Most sockets one source address may hold open before they send CONNECT; more are
    /// closed at accept. 0 is no limit. Generous by default: many devices may share one
    /// address behind a NAT and reconnect at once.
    pub max_pending_connects_per_address: u32,
    /// Descriptors kept for the journal, raft log, cluster transport and admin endpoint when
    /// `max-connections` is derived from `RLIMIT_NOFILE`.
    pub reserved_descriptors: usize,
    /// Maximum unacknowledged QoS 1/2 messages per direction per client: the Receive Maximum
    /// the broker announces, and the cap on the window it uses towards a client.
    pub max_inflight: u16,
    /// Maximum messages queued per session (offline, or online behind a full window).
    pub max_queued_messages: usize,
    /// Maximum packet size accepted from clients, in bytes, fixed header included.
    pub max_packet_size: u32,
    /// Maximum levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Maximum length in bytes of a topic name or filter.
    pub max_topic_len: usize,
    /// Maximum subscriptions per client; 0 means unlimited.
    pub max_subscriptions_per_client: usize,
    /// Maximum bytes of topic filters one client's subscriptions hold, summed; a filter past
    /// it gets SUBACK 0x97 (v5) / 0x80 (3.1.1).
    pub max_subscription_bytes_per_client: usize,
    /// Maximum sessions the broker holds, connected or not; a CONNECT that would create one
    /// more gets CONNACK 0x97 (v5) / 3 (3.1.1).
    pub max_sessions: usize,
    /// Maximum topic filters in one SUBSCRIBE packet; more get DISCONNECT 0x97 (v5) or a
    /// closed connection (3.1.1).
    pub max_filters_per_subscribe: usize,
    /// Maximum MQTT 5 user properties in one packet (a will's counted with its CONNECT); more
    /// get DISCONNECT (or CONNACK) 0x95 and a closed connection.
    pub max_user_properties: usize,
    /// Maximum bytes of user property names and values in one packet, summed.
    pub max_user_property_bytes: usize,
    /// Most topic aliases the broker assigns towards one v5 client (the client's Topic Alias
    /// Maximum, capped by this): each alias holds a topic for the connection's life.
    pub topic_alias_out_max: u16,
    /// Bytes of queued messages one pull moves from a session's queue to its socket (at least
    /// one message): what a reader that stops reading can hold outside the shared queues.
    pub max_transmit_bytes: usize,
    /// Bytes of messages (topic, payload, properties) one session's queue holds; past it
    /// the queue is full as at `max-queued-messages` (a queue takes any one message).
    pub max_queue_bytes_per_session: usize,
    /// Bytes of control packets (acknowledgements, PINGRESP, retransmissions) queued for one
    /// connection, counted with their in-memory slots; past it the client is not read until
    /// they have been written.
    pub max_outbox_bytes: usize,
    /// Seconds a client may leave bytes unread in its socket's backlog before it is closed;
    /// it is not read meanwhile.
    pub write_stall_timeout_secs: u32,
    /// Keep alive imposed (as Server Keep Alive) on an MQTT 5 client that asks for none, in
    /// seconds, so a silent dead client is closed; 0 leaves such clients unsupervised.
    pub default_keep_alive_secs: u16,
    /// Seconds of silence before TCP keepalive probes a client socket (every 10 s, 6 probes),
    /// so a peer that vanished without a FIN is found even when it asked for no MQTT keep
    /// alive; 0 turns TCP keepalive off.
    pub tcp_keepalive_secs: u32,
    /// Session Expiry Interval of MQTT 3.1.1 persistent sessions (clean session 0), seconds,
    /// capped by `max-session-expiry-secs`.
    pub default_session_expiry_secs: u32,
    /// Cap on the Session Expiry Interval a client may ask for, in seconds (3.1.1 persistent
    /// sessions get `default-session-expiry-secs`); 4294967295 means never expire.
    pub max_session_expiry_secs: u32,
    /// Maximum keep alive in seconds; a v5 client asking for more (or 0) is told this value
    /// with Server Keep Alive. 0 means no cap.
    pub max_keep_alive_secs: u16,
    /// Topic Alias Maximum announced to v5 clients (aliases the broker accepts).
    pub topic_alias_max: u16,
    /// Highest QoS the broker grants (0, 1 or 2).
    pub max_qos: u8,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Accept connections without a user name.
    pub allow_anonymous: bool,
    /// Users allowed to connect with a password.
    pub users: Vec<User>,
    /// Seconds between `$SYS/broker/...` updates; 0 disables them.
    pub sys_interval_secs: u32,
    /// Seconds a new connection may take to complete CONNECT before it is closed.
    pub connect_timeout_secs: u16,
    /// Prefix of the Response Information returned to v5 clients that request it; the
    /// client identifier is appended.
    pub response_information_prefix: String,
    /// CONNECTs accepted per second on the listener (a token bucket); more are refused with
    /// CONNACK 0x9F Connection rate exceeded (3.1.1: 0x03) and closed. 0 is no limit.
    pub connect_rate: u32,
    /// Burst of CONNECTs the bucket holds (at least 1 when `connect-rate` is on).
    pub connect_burst: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            reserved_descriptors: 256,
            max_pending_connects_per_address: 1024,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_packet_size: 1024 * 1024,
            max_topic_levels: 32,
            max_topic_len: 65_535,
            max_subscriptions_per_client: 10_000,
            max_filters_per_subscribe: 100,
            max_subscription_bytes_per_client: 1 << 20,
            max_sessions: 1_000_000,
            max_user_properties: 64,
            max_user_property_bytes: 16 << 10,
            topic_alias_out_max: 64,
            default_session_expiry_secs: 2 * 60 * 60,
            max_transmit_bytes: 1 << 20,
            max_queue_bytes_per_session: 16 << 20,
            max_outbox_bytes: 64 << 10,
            tcp_keepalive_secs: 60,
            default_keep_alive_secs: 300,
            write_stall_timeout_secs: 30,
            max_session_expiry_secs: u32::MAX,
            max_keep_alive_secs: 0,
            topic_alias_max: 64,
            max_qos: 2,
            retain_available: true,
            allow_anonymous: true,
            users: Vec::new(),
            sys_interval_secs: 10,
            connect_timeout_secs: 10,
            response_information_prefix: "response/".into(),
            connect_rate: 0,
            connect_burst: 100,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A value is outside its allowed range.
    #[error("{field} is {value}, but {rule}")]
    OutOfRange {
        /// Config key.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        rule: &'static str,
    },
}

fn bad(field: &'static str, value: impl ToString, rule: &'static str) -> ConfigError {
    ConfigError::OutOfRange { field, value: value.to_string(), rule }
}

impl BrokerConfig {
    /// Checks cross-field and range rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_inflight == 0 {
            return Err(bad("max-inflight", self.max_inflight, "it must be at least 1"));
        }
        if self.max_queued_messages == 0 {
            return Err(bad("max-queued-messages", 0, "it must be at least 1"));
        }
        if !(64..=268_435_460).contains(&self.max_packet_size) {
            return Err(bad("max-packet-size", self.max_packet_size, "it must be 64..=268435460"));
        }
        if !(1..=TOPIC_LEVELS_MAX).contains(&self.max_topic_levels) {
            return Err(bad("max-topic-levels", self.max_topic_levels, "it must be 1..=128"));
        }
        if self.max_transmit_bytes == 0 {
            return Err(bad("max-transmit-bytes", 0, "it must be at least 1"));
        }
        if self.max_queue_bytes_per_session == 0 {
            return Err(bad("max-queue-bytes-per-session", 0, "it must be at least 1"));
        }
        if self.max_outbox_bytes == 0 {
            return Err(bad("max-outbox-bytes", 0, "it must be at least 1"));
        }
        if self.write_stall_timeout_secs == 0 {
            return Err(bad("write-stall-timeout-secs", 0, "it must be at least 1"));
        }
        if self.max_filters_per_subscribe == 0 {
            return Err(bad("max-filters-per-subscribe", 0, "it must be at least 1"));
        }
        if !(1..=65_535).contains(&self.max_topic_len) {
            return Err(bad("max-topic-len", self.max_topic_len, "it must be 1..=65535"));
        }
        if self.max_qos > 2 {
            return Err(bad("max-qos", self.max_qos, "it must be 0, 1 or 2"));
        }
        Ok(())
    }

    /// Topic limits derived from this config.
    pub fn topic_limits(&self) -> TopicLimits {
        TopicLimits { levels_max: self.max_topic_levels, len_max: self.max_topic_len }
    }
}
