//! CORE. An application message as the broker holds it: decoded once, shared by `Arc`
//! between every subscriber queue and the retained store.
//!
//! Sharing goes down to the parts a delivery copies into its PUBLISH: the user properties
//! are one shared list (cloning a delivery's properties allocates nothing), and the topic
//! owns its bytes from the start, so every subscriber's outbound topic-alias map keeps a
//! reference to the one copy instead of its own (and none pins a publisher's read chunk).

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::mqtt::packet::QoS;
use crate::mqtt::properties::Properties;

/// Identifies a session inside one broker (never reused while the broker runs).
pub type SessionKey = u64;

/// One application message.
#[derive(Debug, PartialEq)]
pub struct Message {
    /// Topic name; owns its bytes (see the module doc).
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag it was published with.
    pub retain: bool,
    /// Properties forwarded to subscribers (publish properties minus topic alias and
    /// subscription identifiers, which are per hop).
    pub properties: Properties,
    /// When the message expires, from its Message Expiry Interval.
    pub expires_at: Option<Instant>,
    /// The publishing session, for No Local; `None` for broker-generated messages.
    pub publisher: Option<SessionKey>,
}

impl Message {
    /// What the message counts against a session queue's `max-queue-bytes-per-session`:
    /// topic, payload and forwarded properties.
    pub fn queued_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.encoded_len()
    }

    /// True once the expiry interval has passed (MQTT-3.3.2-5).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The Message Expiry Interval to forward: the original minus the time spent waiting in
    /// the broker, rounded up so a live message never reads 0 (MQTT-3.3.2-6).
    pub fn remaining_expiry_secs(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }

    /// A copy that owns its bytes. Decoded messages slice the connection's read buffer; one
    /// that will stay around (retained, queued for an offline session) is copied so it pins
    /// only its own bytes, not the whole read chunk.
    pub fn compacted(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.detached(),
            expires_at: self.expires_at,
            publisher: self.publisher,
        }
    }

    /// Builds a message, stamping its expiry from the properties. The topic is copied out
    /// of the buffer it was decoded from, once for all the message's deliveries.
    pub fn new(
        now: Instant,
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut properties: Properties,
        publisher: Option<SessionKey>,
    ) -> Self {
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties.message_expiry_interval.map(|s| now + Duration::from_secs(u64::from(s)));
        let topic = ByteString::from(&*topic);
        Self { topic, payload, qos, retain, properties, expires_at, publisher }
    }

    /// A QoS 0 retained message for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(topic: &str, payload: Bytes) -> Self {
        Self {
            topic: topic.into(),
            payload,
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
            expires_at: None,
            publisher: None,
        }
    }
}
