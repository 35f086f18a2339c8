//! CORE. Retained messages: one per topic, found by topic filter at SUBSCRIBE time.
//!
//! A level tree of topic names. A literal filter is one lookup; `+` visits the children of
//! one level and `#` a subtree, so a SUBSCRIBE costs the matching part of the tree, not a
//! scan of every retained topic. Invariant: a node with no message and no children is
//! removed. Messages with an expiry are also listed in `expiring`, ordered by deadline, so
//! purging costs the expired messages only, never a walk of the tree.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use rustc_hash::FxHashMap;

use super::message::Message;

#[derive(Default, Debug)]
struct Node {
    children: FxHashMap<Box<str>, Self>,
    message: Option<Arc<Message>>,
}

/// The retained message store.
#[derive(Default, Debug)]
pub struct Retained {
    root: Node,
    len: usize,
    /// `(deadline, topic)` of retained messages with an expiry; may hold stale entries for
    /// topics since replaced or cleared, which the purge skips.
    expiring: BTreeSet<(Instant, ByteString)>,
}

impl Retained {
    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `message` as the retained message of its topic, or clears the topic when the
    /// payload is empty (MQTT-3.3.1-6, -7).
    pub fn set(&mut self, message: Arc<Message>) {
        let topic = message.topic.clone();
        if message.payload.is_empty() {
            let levels: Vec<&str> = topic.split('/').collect();
            if clear(&mut self.root, &levels) {
                self.len -= 1;
            }
            return;
        }
        let message = Arc::new(message.compacted());
        if let Some(at) = message.expires_at {
            self.expiring.insert((at, message.topic.clone()));
        }
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.message.replace(message).is_none() {
            self.len += 1;
        }
    }

    /// Appends the retained messages whose topics match `filter` to `out`.
    pub fn matching(&self, filter: &str, out: &mut Vec<Arc<Message>>) {
        let levels: Vec<&str> = filter.split('/').collect();
        collect(&self.root, &levels, 0, out);
    }

    /// Removes retained messages whose expiry has passed; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some((at, _)) = self.expiring.first() {
            if *at > now {
                break;
            }
            let Some((_, topic)) = self.expiring.pop_first() else {
                break;
            };
            let levels: Vec<&str> = topic.split('/').collect();
            if lookup(&self.root, &levels).is_some_and(|m| m.is_expired(now))
                && clear(&mut self.root, &levels)
            {
                self.len -= 1;
                purged += 1;
            }
        }
        purged
    }
}

fn lookup<'a>(node: &'a Node, levels: &[&str]) -> Option<&'a Arc<Message>> {
    match levels.split_first() {
        None => node.message.as_ref(),
        Some((first, rest)) => lookup(node.children.get(*first)?, rest),
    }
}

fn clear(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let cleared = clear(child, rest);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(*first);
    }
    cleared
}

fn collect(node: &Node, levels: &[&str], depth: usize, out: &mut Vec<Arc<Message>>) {
    let Some(level) = levels.get(depth) else {
        out.extend(node.message.iter().cloned());
        return;
    };
    match *level {
        "#" => subtree(node, depth == 0, out),
        "+" => {
            for (name, child) in &node.children {
                if depth == 0 && name.starts_with('$') {
                    continue;
                }
                collect(child, levels, depth + 1, out);
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                collect(child, levels, depth + 1, out);
            }
        }
    }
}

/// Everything at and below `node` (`#` also matches the parent level, MQTT 4.7.1.2).
fn subtree(node: &Node, at_root: bool, out: &mut Vec<Arc<Message>>) {
    out.extend(node.message.iter().cloned());
    for (name, child) in &node.children {
        if at_root && name.starts_with('$') {
            continue;
        }
        subtree(child, false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::topic::matches;
    use bytes::Bytes;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message::for_test(topic, Bytes::from_static(payload)))
    }

    #[test]
    fn retained_lookup_agrees_with_matcher() {
        let mut r = Retained::default();
        let topics = ["a", "a/b", "a/b/c", "$SYS/x", "b/b", "/a", "a//c"];
        for t in topics {
            r.set(msg(t, b"x"));
        }
        assert_eq!(r.len(), topics.len());
        for f in ["#", "+", "a/#", "+/b", "a/+/c", "$SYS/#", "+/+", "/+", "a/b", "x/#"] {
            let mut out = Vec::new();
            r.matching(f, &mut out);
            let mut got: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
            got.sort();
            let mut want: Vec<String> =
                topics.iter().filter(|t| matches(f, t)).map(|t| t.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "filter {f}");
        }
    }

    #[test]
    fn expired_retained_messages_are_purged_and_replaced_ones_kept() {
        let now = Instant::now();
        let mut r = Retained::default();
        let with_expiry = |topic: &str, secs: u64| {
            let mut m = Message::for_test(topic, Bytes::from_static(b"x"));
            m.expires_at = Some(now + std::time::Duration::from_secs(secs));
            Arc::new(m)
        };
        r.set(with_expiry("a", 5));
        r.set(with_expiry("b", 5));
        r.set(msg("b", b"no expiry")); // replaces b: its old deadline is stale
        r.set(with_expiry("c", 50));
        assert_eq!(r.purge_expired(now + std::time::Duration::from_secs(4)), 0);
        assert_eq!(r.purge_expired(now + std::time::Duration::from_secs(5)), 1);
        let mut out = Vec::new();
        r.matching("#", &mut out);
        let mut topics: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
        topics.sort();
        assert_eq!(topics, ["b", "c"]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn mqtt_3_3_1_6_empty_payload_clears_retained() {
        let mut r = Retained::default();
        r.set(msg("a/b", b"x"));
        r.set(msg("a/b", b""));
        assert!(r.is_empty());
        assert!(r.root.children.is_empty());
    }
}
