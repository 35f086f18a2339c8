//! CORE. Retained messages: one per topic, found by topic filter at SUBSCRIBE time.
//!
//! A level tree of topic names. A literal filter is one lookup; `+` visits the children of
//! one level and `#` a subtree, so a SUBSCRIBE costs the matching part of the tree, not a
//! scan of every retained topic. Invariant: a node with no message and no children is
//! removed.

use std::sync::Arc;

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

    /// Removes retained messages whose expiry has passed, by visiting the whole tree; the
    /// caller runs this on a slow timer.
    pub fn purge_expired(&mut self, now: std::time::Instant) -> usize {
        let purged = purge(&mut self.root, now);
        self.len -= purged;
        purged
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

fn purge(node: &mut Node, now: std::time::Instant) -> usize {
    let mut n = 0;
    if node.message.as_ref().is_some_and(|m| m.is_expired(now)) {
        node.message = None;
        n += 1;
    }
    node.children.retain(|_, child| {
        n += purge(child, now);
        child.message.is_some() || !child.children.is_empty()
    });
    n
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
    fn mqtt_3_3_1_6_empty_payload_clears_retained() {
        let mut r = Retained::default();
        r.set(msg("a/b", b"x"));
        r.set(msg("a/b", b""));
        assert!(r.is_empty());
        assert!(r.root.children.is_empty());
    }
}
