//! CORE. Operator actions from the admin API: list and inspect connected clients, kick one
//! (DISCONNECT 0x98 Administrative action to 5.0 clients, then close) and ban client ids
//! or user names until a deadline (CONNECT refused with 0x8A Banned). Bans by address are
//! the shell's (it knows addresses before CONNECT). Also: list and delete retained messages
//! (deleting journals the removal, as a client's empty retained PUBLISH would, but delivers
//! nothing), and publish as the broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::Broker;
use super::message::Message;
use super::session::ConnId;
use crate::mqtt::packet::QoS;
use crate::mqtt::properties::Properties;
use crate::mqtt::reason;
use crate::mqtt::topic;

/// Most bans held at once.
pub const BANS_MAX: usize = 4096;

/// What a ban matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BanKind {
    /// The CONNECT's client identifier.
    ClientId,
    /// The CONNECT's user name.
    User,
}

/// Bans in force, by what they match; each until its deadline.
#[derive(Debug, Default)]
pub(super) struct Bans {
    entries: BTreeMap<(BanKind, String), Instant>,
}

/// A connected client, as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection.
    pub conn: ConnId,
    /// Client identifier.
    pub client_id: String,
    /// User name it authenticated with.
    pub username: Option<String>,
    /// Protocol level (3, 4 or 5).
    pub protocol: u8,
    /// The peer's address.
    pub address: Option<std::net::IpAddr>,
    /// Wall-clock milliseconds when its socket was accepted.
    pub connected_since_ms: u64,
    /// Keep alive, seconds.
    pub keep_alive_secs: u16,
    /// Subscriptions of its session.
    pub subscriptions: Vec<String>,
    /// Messages queued for it.
    pub queued: usize,
    /// Messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages dropped for it (queue full, expired, too large).
    pub dropped: u64,
    /// Session expiry interval, seconds.
    pub session_expiry_secs: u32,
}

/// A retained message, as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedInfo {
    /// Its topic.
    pub topic: String,
    /// Payload bytes.
    pub bytes: usize,
    /// Its QoS (0, 1 or 2).
    pub qos: u8,
}

/// Why an operator's publish or retained request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// Not a valid topic name (or filter, for a list).
    #[error("invalid topic (reason 0x{0:02x})")]
    Topic(u8),
    /// `$SYS/` topics are the broker's own.
    #[error("$SYS/ topics are the broker's own")]
    Sys,
    /// Retained messages live in the cluster's ranges, not on this node.
    #[error("retained messages are kept by the cluster; not available through one node yet")]
    Clustered,
}

/// The listener's CONNECT token bucket (`connect-rate`, `connect-burst`).
#[derive(Debug, Default)]
pub(super) struct ConnectBucket {
    tokens: f64,
    at: Option<Instant>,
}

impl ConnectBucket {
    /// Takes a token at `now`; false when the bucket is empty (or the rate is 0: no limit,
    /// always true).
    pub(super) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let burst = f64::from(burst.max(1));
        let refill =
            self.at.map_or(burst, |at| now.saturating_duration_since(at).as_secs_f64() * f64::from(rate));
        self.tokens = (self.tokens + refill).min(burst);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a ban was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    /// [`BANS_MAX`] bans are in force.
    #[error("{BANS_MAX} bans in force already")]
    Full,
}

impl Bans {
    fn prune(&mut self, now: Instant) {
        self.entries.retain(|_, until| *until > now);
    }
}

impl Broker {
    /// Messages queued and in flight, summed over every session (one pass over the
    /// sessions: for scrapes, not for hot paths).
    pub fn queue_totals(&self) -> (u64, u64) {
        self.sessions
            .values()
            .fold((0, 0), |(q, i), s| (q + s.pending.len() as u64, i + s.inflight.len() as u64))
    }

    /// Connected clients, in connection order, at most `limit`.
    pub fn clients(&self, limit: usize) -> Vec<ClientInfo> {
        let mut conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, super::Phase::Connected))
            .map(|(&id, _)| id)
            .collect();
        conns.sort_unstable();
        conns.into_iter().take(limit).filter_map(|id| self.client_info(id)).collect()
    }

    /// The connected client `client_id`.
    pub fn client(&self, client_id: &str) -> Option<ClientInfo> {
        let s = self.sessions.get(self.by_client.get(client_id)?)?;
        self.client_info(s.conn?)
    }

    fn client_info(&self, conn: ConnId) -> Option<ClientInfo> {
        let c = self.conns.get(&conn)?;
        let s = self.sessions.get(&c.session?)?;
        let protocol = match c.protocol {
            crate::mqtt::packet::Protocol::V3_1 => 3,
            crate::mqtt::packet::Protocol::V3_1_1 => 4,
            crate::mqtt::packet::Protocol::V5 => 5,
        };
        let mut subscriptions: Vec<String> = s.subs.keys().map(ToString::to_string).collect();
        subscriptions.sort_unstable();
        Some(ClientInfo {
            conn,
            client_id: s.client_id.to_string(),
            username: c.username.as_deref().map(str::to_owned),
            protocol,
            address: c.peer,
            connected_since_ms: c.since_ms,
            keep_alive_secs: c.keep_alive_secs,
            subscriptions,
            queued: s.pending.len(),
            inflight: s.inflight.len(),
            dropped: s.dropped,
            session_expiry_secs: s.expiry_secs,
        })
    }

    /// Disconnects `client_id`: DISCONNECT 0x98 (5.0), then the connection closes and its
    /// will is published. Its session stays (per its expiry). Returns whether it was here.
    pub fn kick_client(&mut self, now: Instant, client_id: &str) -> bool {
        let Some(conn) =
            self.by_client.get(client_id).and_then(|k| self.sessions.get(k)).and_then(|s| s.conn)
        else {
            return false;
        };
        tracing::info!(
            client_id,
            conn,
            reason_code = reason::ADMINISTRATIVE_ACTION,
            "client kicked by an operator"
        );
        self.send_disconnect(conn, reason::ADMINISTRATIVE_ACTION, "disconnected by an operator");
        self.close_now(now, conn, Some(true));
        true
    }

    /// Bans `value` (a client id or user name) until `until`; replaces an earlier ban of it.
    pub fn ban(&mut self, now: Instant, kind: BanKind, value: &str, until: Instant) -> Result<(), BanError> {
        self.bans.prune(now);
        let key = (kind, value.to_owned());
        if !self.bans.entries.contains_key(&key) && self.bans.entries.len() >= BANS_MAX {
            return Err(BanError::Full);
        }
        tracing::info!(?kind, value, "ban recorded");
        self.bans.entries.insert(key, until);
        Ok(())
    }

    /// Lifts a ban; returns whether there was one.
    pub fn unban(&mut self, kind: BanKind, value: &str) -> bool {
        self.bans.entries.remove(&(kind, value.to_owned())).is_some()
    }

    /// Bans in force at `now`.
    pub fn bans(&self, now: Instant) -> Vec<(BanKind, String, Instant)> {
        let live = self.bans.entries.iter().filter(|(_, until)| **until > now);
        live.map(|((kind, value), until)| (*kind, value.clone(), *until)).collect()
    }

    /// Whether a CONNECT from `client_id` / `username` is banned at `now`.
    pub(super) fn banned(&self, now: Instant, client_id: &str, username: Option<&str>) -> bool {
        if self.bans.entries.is_empty() {
            return false;
        }
        let live = |kind, value: &str| {
            self.bans.entries.get(&(kind, value.to_owned())).is_some_and(|until| *until > now)
        };
        live(BanKind::ClientId, client_id) || username.is_some_and(|u| live(BanKind::User, u))
    }
}

impl Broker {
    fn operator_topic(&self, name: &str) -> Result<(), OperatorError> {
        topic::validate_topic_name(name, self.config.topic_limits()).map_err(OperatorError::Topic)?;
        if name.starts_with("$SYS") {
            return Err(OperatorError::Sys);
        }
        Ok(())
    }

    /// Retained messages matching `filter`, at most `limit`.
    pub fn retained_list(&self, filter: &str, limit: usize) -> Result<Vec<RetainedInfo>, OperatorError> {
        topic::validate_filter(filter, self.config.topic_limits()).map_err(OperatorError::Topic)?;
        if self.cluster_enabled() && !filter.starts_with('$') {
            return Err(OperatorError::Clustered);
        }
        let mut found = Vec::new();
        self.retained.matching(filter, &mut found);
        let mut list: Vec<RetainedInfo> = found
            .iter()
            .map(|m| RetainedInfo { topic: m.topic.to_string(), bytes: m.payload.len(), qos: m.qos as u8 })
            .collect();
        list.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        list.truncate(limit);
        Ok(list)
    }

    /// Removes the retained message of `topic` (journaled); delivers nothing. Returns
    /// whether there was one.
    pub fn delete_retained(&mut self, now: Instant, name: &str) -> Result<bool, OperatorError> {
        self.operator_topic(name)?;
        if self.cluster_enabled() {
            return Err(OperatorError::Clustered);
        }
        let mut found = Vec::new();
        self.retained.matching(name, &mut found);
        if found.is_empty() {
            return Ok(false);
        }
        let empty =
            Message::new(now, name.into(), Bytes::new(), QoS::AtMostOnce, true, Properties::default(), None);
        let empty = Arc::new(empty);
        self.retained.set(empty.clone());
        if self.journal_on() {
            self.journal_retained(&empty);
        }
        tracing::info!(topic = name, "retained message deleted by an operator");
        Ok(true)
    }

    /// Publishes as the broker (no publisher session); returns how many local sessions got
    /// it. In a cluster it is forwarded and retained as a client's publish would be.
    pub fn publish_operator(
        &mut self,
        now: Instant,
        name: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<usize, OperatorError> {
        self.operator_topic(name)?;
        let msg = Message::new(now, name.into(), payload, qos, retain, Properties::default(), None);
        let (delivered, _ops) = self.route_and_forward(now, Arc::new(msg));
        Ok(delivered)
    }
}
