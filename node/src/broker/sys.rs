//! CORE. `$SYS/broker/...` statistics, published as retained messages every
//! `sys-interval-secs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::Broker;
use super::message::Message;
use crate::mqtt::packet::QoS;
use crate::mqtt::properties::Properties;

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
