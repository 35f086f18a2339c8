//! CORE. The delivery plan: the subscriptions a topic matched, folded into one delivery per
//! session (MQTT-3.3.4-2 for 3.1.1; allowed in 5.0 with every subscription identifier
//! attached, MQTT-3.3.4-3/-4) and one pick per shared group. The broker carries the plan
//! out (queues, journal); with the cluster, route-range leaders answer lookups with the
//! same fold per node.

use super::message::{Message, SessionKey};
use super::shared::ShareId;
use super::trie::SubEntry;
use crate::mqtt::packet::QoS;

/// Who a trie entry delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// One session.
    Session(SessionKey),
    /// A shared subscription group; one member gets each message.
    Shared(ShareId),
}

/// What one target gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    /// One member of the group gets the message.
    Shared(ShareId),
    /// The session gets one delivery.
    Session {
        /// The session.
        key: SessionKey,
        /// The highest QoS of its matching subscriptions, capped by the message's.
        qos: QoS,
        /// Retain as published by any matching subscription that asks for it.
        retain: bool,
        /// Identifiers of every matching subscription that has one.
        sub_ids: Vec<u32>,
    },
}

/// Folds `matches` (sorted here by target) into the plan for `msg`, appended to `out`. A
/// session whose every match is `no_local` against the publisher gets nothing.
pub fn plan(msg: &Message, matches: &mut [(Target, SubEntry)], out: &mut Vec<Planned>) {
    matches.sort_unstable_by_key(|(t, _)| *t);
    let mut i = 0;
    while i < matches.len() {
        let target = matches[i].0;
        let mut j = i + 1;
        while j < matches.len() && matches[j].0 == target {
            j += 1;
        }
        match target {
            // Each shared group appears once in the trie per filter; one pick per group.
            Target::Shared(group) => out.push(Planned::Shared(group)),
            Target::Session(key) => {
                let mut agg: Option<Planned> = None;
                for (_, entry) in &matches[i..j] {
                    fold(&mut agg, msg, entry, key);
                }
                out.extend(agg);
            }
        }
        i = j;
    }
}

/// Folds one matching subscription into the session's single delivery.
fn fold(agg: &mut Option<Planned>, msg: &Message, entry: &SubEntry, key: SessionKey) {
    if entry.opts.no_local && msg.publisher == Some(key) {
        return;
    }
    let qos = msg.qos.min(entry.opts.qos);
    let retain = msg.retain && entry.opts.retain_as_published;
    let planned = agg.get_or_insert_with(|| Planned::Session { key, qos, retain, sub_ids: Vec::new() });
    if let Planned::Session { qos: q, retain: r, sub_ids, .. } = planned {
        *q = (*q).max(qos);
        *r |= retain;
        if let Some(id) = entry.sub_id {
            sub_ids.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::mqtt::packet::SubOptions;

    fn entry(qos: QoS, sub_id: Option<u32>, no_local: bool, rap: bool) -> SubEntry {
        SubEntry {
            opts: SubOptions { qos, no_local, retain_as_published: rap, ..SubOptions::default() },
            sub_id,
        }
    }

    #[test]
    fn one_delivery_per_session_with_every_subscription_id_and_one_pick_per_group() {
        let props = crate::mqtt::properties::Properties::default();
        let msg = Message::new(
            Instant::now(),
            "a/b".into(),
            bytes::Bytes::new(),
            QoS::ExactlyOnce,
            true,
            props,
            Some(7),
        );
        let mut matches = vec![
            (Target::Session(2), entry(QoS::AtMostOnce, Some(1), false, false)),
            (Target::Shared(9), SubEntry::default()),
            (Target::Session(2), entry(QoS::AtLeastOnce, Some(4), false, true)),
            (Target::Session(7), entry(QoS::ExactlyOnce, None, true, false)),
            (Target::Session(3), entry(QoS::ExactlyOnce, None, false, false)),
        ];
        let mut out = Vec::new();
        plan(&msg, &mut matches, &mut out);
        assert_eq!(
            out,
            vec![
                Planned::Session { key: 2, qos: QoS::AtLeastOnce, retain: true, sub_ids: vec![1, 4] },
                Planned::Session { key: 3, qos: QoS::ExactlyOnce, retain: false, sub_ids: vec![] },
                Planned::Shared(9),
            ],
            "session 7 is the publisher with no_local: nothing for it"
        );
    }
}
