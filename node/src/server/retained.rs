//! SHELL. Retained messages in the retained ("M") ranges (CLUSTER.md section 2.3): a write
//! is a `Put` (or a `Delete` for an empty payload) committed before the publisher's ack; a
//! new subscription reads the filter's candidate spans with lease reads on the range
//! leaders (linearizable: never a stale answer) and keeps the rows whose topic matches.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::dispatch::ClusterLink;
use crate::broker::OpOutcome;
use crate::broker::message::Message;
use crate::cluster::keys;
use crate::cluster::retained_keys::{self, StoredRetained};
use crate::group::{Command, ReadPolicy};
use crate::mqtt::packet::QoS;
use crate::mqtt::properties::{Properties, PropertyContext};
use crate::mqtt::topic::{TopicLimits, matches};

/// Retained messages one read returns at most.
const READ_MAX: usize = 100_000;

/// Stores `msg` as its topic's retained message (an empty payload clears it).
pub(crate) async fn write(link: &ClusterLink, msg: &Message) -> OpOutcome {
    let Ok(key) = retained_keys::topic_key(&link.tenant, &msg.topic) else { return OpOutcome::Failed };
    let command = if msg.payload.is_empty() {
        Command::Delete { key }
    } else {
        let now = Instant::now();
        let mut properties = BytesMut::new();
        if !msg.properties.is_empty() {
            let mut props = msg.properties.clone();
            props.message_expiry_interval = None;
            props.encode(&mut properties);
        }
        let expiry_at_ms = msg
            .expires_at
            .map_or(0, |at| crate::clock::wall_ms() + at.saturating_duration_since(now).as_millis() as u64);
        let stored = StoredRetained {
            qos: msg.qos as u8,
            expiry_at_ms,
            properties: properties.to_vec(),
            payload: msg.payload.to_vec(),
        };
        Command::Put { key, value: stored.encode() }
    };
    match link.client.propose(command).await {
        Ok(_) => OpOutcome::Done { nodes: 0 },
        Err(e) => {
            tracing::debug!(topic = %msg.topic, error = %e, "retained write failed");
            OpOutcome::Failed
        }
    }
}

/// The retained messages matching `filter`.
pub(crate) async fn read(link: &ClusterLink, filter: &str, limits: TopicLimits) -> OpOutcome {
    let (Ok(spans), Ok(prefix)) = (
        retained_keys::filter_spans(&link.tenant, filter, limits.levels_max),
        keys::prefix(keys::FAMILY_RETAINED, &link.tenant),
    ) else {
        return OpOutcome::Failed;
    };
    let (now, now_wall) = (Instant::now(), crate::clock::wall_ms());
    let mut found = Vec::new();
    for (start, end) in spans {
        let rows = match link
            .client
            .scan(&start, &end, READ_MAX - found.len().min(READ_MAX), ReadPolicy::Lease)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(filter, error = %e, "retained read failed");
                return OpOutcome::Failed;
            }
        };
        for (key, value) in rows {
            let (Some(topic), Some(stored)) =
                (retained_keys::topic_of(prefix.len(), &key), StoredRetained::decode(&value))
            else {
                continue;
            };
            if !matches(filter, topic) || (stored.expiry_at_ms != 0 && stored.expiry_at_ms <= now_wall) {
                continue;
            }
            if let Some(m) = to_message(topic, stored, now, now_wall) {
                found.push(Arc::new(m));
            }
        }
        if found.len() >= READ_MAX {
            break;
        }
    }
    OpOutcome::Retained(found)
}

fn to_message(topic: &str, s: StoredRetained, now: Instant, now_wall: u64) -> Option<Message> {
    let mut properties = if s.properties.is_empty() {
        Properties::default()
    } else {
        Properties::decode(&mut Bytes::from(s.properties), PropertyContext::Publish).ok()?
    };
    if s.expiry_at_ms != 0 {
        let left_ms = s.expiry_at_ms - now_wall;
        properties.message_expiry_interval =
            Some(u32::try_from(left_ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1));
    }
    let qos = QoS::from_u8(s.qos)?;
    Some(Message::new(now, topic.into(), Bytes::from(s.payload), qos, true, properties, None))
}
