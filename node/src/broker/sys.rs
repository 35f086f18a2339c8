//! CORE. The core's statistics ([`Stats`], also exported by the shell's `/metrics`) and
//! `$SYS/broker/...`, published as retained messages every `sys-interval-secs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::Broker;
use super::message::Message;
use crate::mqtt::packet::QoS;
use crate::mqtt::properties::Properties;

/// Counters published under `$SYS/broker/...`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Messages dropped: queue full, expired, or too large for the client.
    pub messages_dropped: u64,
    /// Clients currently connected.
    pub clients_connected: u64,
    /// Highest number of clients connected at once.
    pub clients_maximum: u64,
    /// Sessions held, connected or not.
    pub sessions: u64,
    /// CONNECTs accepted (CONNACK success sent).
    pub connects_accepted: u64,
    /// Messages dropped, by reason (they sum to `messages_dropped`).
    pub dropped: Drops,
}

/// Dropped messages by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// The session's queue was full.
    pub queue_full: u64,
    /// The message expired before it could be sent.
    pub expired: u64,
    /// Larger than the client's maximum packet size.
    pub too_large: u64,
    /// A shared subscription group had no member to take it.
    pub no_member: u64,
}

impl Stats {
    /// Counts one dropped message.
    pub(crate) fn count_drop(&mut self, why: DropReason) {
        self.messages_dropped += 1;
        let d = &mut self.dropped;
        match why {
            DropReason::QueueFull => d.queue_full += 1,
            DropReason::Expired => d.expired += 1,
            DropReason::TooLarge => d.too_large += 1,
            DropReason::NoMember => d.no_member += 1,
        }
    }
}

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    Expired,
    TooLarge,
    NoMember,
}

impl Broker {
    pub(super) fn publish_sys(&mut self, now: Instant) {
        let stats = self.stats();
        let uptime = now.saturating_duration_since(self.started_at).as_secs();
        let journal_failed = u8::from(self.journal_failure().is_some());
        let values: [(&str, String); 10] = [
            ("version", format!("flotilla {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{uptime} seconds")),
            ("clients/connected", stats.clients_connected.to_string()),
            ("clients/maximum", stats.clients_maximum.to_string()),
            ("clients/total", stats.sessions.to_string()),
            ("messages/received", stats.messages_received.to_string()),
            ("messages/sent", stats.messages_sent.to_string()),
            ("subscriptions/count", self.subscription_count().to_string()),
            ("retained messages/count", self.retained.len().to_string()),
            // 1 once the journal could not be written (QoS 1/2 publishes are refused).
            ("journal/failed", journal_failed.to_string()),
        ];
        for (name, value) in values {
            let topic = format!("$SYS/broker/{name}");
            let msg = Message::new(
                now,
                topic.into(),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
                Properties::default(),
                None,
            );
            self.route(now, Arc::new(msg));
        }
    }
}
