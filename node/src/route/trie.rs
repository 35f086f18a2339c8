//! CORE. Subscription trie: topic filter -> subscribers, and topic -> matching subscribers.
//!
//! Each node is one filter level. `+` and `#` children are kept apart from literal children
//! so matching a topic of L levels visits at most the literal path plus the wildcard
//! branches that exist. Invariant: a node with no entries and no children is removed, so the
//! trie's size follows the live subscriptions. Property-tested against
//! [`crate::mqtt::topic::matches`].

use rustc_hash::FxHashMap;

use crate::mqtt::packet::SubOptions;

/// Options stored with one subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubEntry {
    /// Options from SUBSCRIBE, with `qos` already capped to the granted QoS.
    pub opts: SubOptions,
    /// Subscription identifier (v5), if given.
    pub sub_id: Option<u32>,
}

/// One filter level. Most nodes are leaves (the last level of one filter), so a leaf holds
/// only its entries; children and `#` entries live in a [`Branch`] allocated on first use.
#[derive(Clone, Debug)]
struct Node<K, V> {
    /// Entries of the filter ending exactly at this node.
    exact: Vec<(K, V)>,
    branch: Option<Box<Branch<K, V>>>,
}

/// The part of a node that only inner nodes need.
#[derive(Clone, Debug)]
struct Branch<K, V> {
    literal: FxHashMap<Box<str>, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// Entries of the filter ending in `#` below this node (the `#` level itself).
    hash: Vec<(K, V)>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self { exact: Vec::new(), branch: None }
    }
}

impl<K, V> Default for Branch<K, V> {
    fn default() -> Self {
        Self { literal: FxHashMap::default(), plus: None, hash: Vec::new() }
    }
}

impl<K, V> Branch<K, V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.plus.is_none() && self.hash.is_empty()
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.branch.is_none()
    }

    /// Drops the branch once nothing is left in it.
    fn prune(&mut self) {
        if self.branch.as_ref().is_some_and(|b| b.is_empty()) {
            self.branch = None;
        }
    }
}

/// Adds an entry; the first one allocates room for exactly one (most filters have one
/// subscriber), later ones grow as usual.
fn push<K, V>(entries: &mut Vec<(K, V)>, entry: (K, V)) {
    if entries.capacity() == 0 {
        entries.reserve_exact(1);
    }
    entries.push(entry);
}

/// Maps validated topic filters to `(K, V)` entries, one entry per key per filter.
#[derive(Clone, Debug)]
pub struct Trie<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for Trie<K, V> {
    fn default() -> Self {
        Self { root: Node::default(), len: 0 }
    }
}

impl<K: Copy + Eq, V: Clone> Trie<K, V> {
    /// Number of `(filter, key)` entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts or replaces the entry for `key` under `filter`. Returns true if it was new.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> bool {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        let mut slot = None;
        while let Some(level) = levels.next() {
            if level == "#" {
                slot = Some(&mut node.branch.get_or_insert_with(Box::default).hash);
                break;
            }
            // Field by field: `slot` may hold a borrow of `node.exact` from the last level.
            let branch = node.branch.get_or_insert_with(Box::default);
            node = if level == "+" {
                branch.plus.get_or_insert_with(Box::default)
            } else {
                branch.literal.entry(level.into()).or_default()
            };
            if levels.peek().is_none() {
                slot = Some(&mut node.exact);
            }
        }
        let Some(entries) = slot else {
            return false;
        };
        if let Some(e) = entries.iter_mut().find(|(k, _)| *k == key) {
            e.1 = value;
            return false;
        }
        push(entries, (key, value));
        self.len += 1;
        true
    }

    /// Removes the entry for `key` under `filter`. Returns its value if it existed.
    pub fn remove(&mut self, filter: &str, key: K) -> Option<V> {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Appends every `(K, V)` whose filter matches `topic` to `out` (a key appears once per
    /// matching filter). Topics starting with `$` are not matched by a leading wildcard.
    pub fn matches(&self, topic: &str, out: &mut Vec<(K, V)>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, 0, dollar, out);
    }
}

fn walk<K: Copy, V: Clone>(
    node: &Node<K, V>,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    out: &mut Vec<(K, V)>,
) {
    let wild_ok = !(depth == 0 && dollar);
    if wild_ok && let Some(b) = &node.branch {
        out.extend(b.hash.iter().cloned());
    }
    let Some(level) = levels.get(depth) else {
        out.extend(node.exact.iter().cloned());
        return;
    };
    let Some(b) = &node.branch else {
        return;
    };
    if let Some(child) = b.literal.get(*level) {
        walk(child, levels, depth + 1, dollar, out);
    }
    if wild_ok && let Some(plus) = &b.plus {
        walk(plus, levels, depth + 1, dollar, out);
    }
}

fn take<K: Eq, V>(entries: &mut Vec<(K, V)>, key: K) -> Option<V> {
    let i = entries.iter().position(|(k, _)| *k == key)?;
    let (_, v) = entries.swap_remove(i);
    if entries.is_empty() {
        *entries = Vec::new();
    }
    Some(v)
}

fn remove_at<K: Eq, V>(node: &mut Node<K, V>, levels: &[&str], key: K) -> Option<V> {
    let (first, rest) = levels.split_first()?;
    let branch = node.branch.as_deref_mut()?;
    let removed = if *first == "#" {
        take(&mut branch.hash, key)
    } else if *first == "+" {
        let child = branch.plus.as_deref_mut()?;
        let removed = if rest.is_empty() { take(&mut child.exact, key) } else { remove_at(child, rest, key) };
        if child.is_empty() {
            branch.plus = None;
        }
        removed
    } else {
        let child = branch.literal.get_mut(*first)?;
        let removed = if rest.is_empty() { take(&mut child.exact, key) } else { remove_at(child, rest, key) };
        if child.is_empty() {
            branch.literal.remove(*first);
        }
        removed
    };
    node.prune();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::topic::matches as oracle;
    use proptest::prelude::*;

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("".to_string()),
            Just("$s".to_string())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|v| v.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_string())], 1..5), any::<bool>())
            .prop_map(|(mut v, hash)| {
                if hash {
                    v.push("#".into());
                }
                v.join("/")
            })
    }

    proptest! {
        #[test]
        fn trie_matches_linear_scan(
            filters in prop::collection::vec(filter(), 0..40),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let mut trie = Trie::default();
            let mut live: Vec<(String, usize)> = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                trie.insert(f, i, ());
                live.push((f.clone(), i));
            }
            for r in removed {
                if live.is_empty() { break; }
                let (f, k) = live.remove(r.index(live.len()));
                prop_assert!(trie.remove(&f, k).is_some());
            }
            prop_assert_eq!(trie.len(), live.len());
            for t in &topics {
                let mut got = Vec::new();
                trie.matches(t, &mut got);
                let mut got: Vec<usize> = got.into_iter().map(|(k, _)| k).collect();
                got.sort_unstable();
                let mut want: Vec<usize> =
                    live.iter().filter(|(f, _)| oracle(f, t)).map(|(_, k)| *k).collect();
                want.sort_unstable();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }

    #[test]
    fn removing_last_entry_prunes_nodes() {
        let mut t: Trie<u32, ()> = Trie::default();
        t.insert("a/+/c/#", 1, ());
        t.insert("a/b", 2, ());
        assert_eq!(t.remove("a/+/c/#", 1), Some(()));
        assert_eq!(t.remove("a/b", 2), Some(()));
        assert!(t.root.is_empty());
        assert!(t.root.branch.is_none(), "an empty branch is freed");
        assert_eq!(t.remove("a/b", 2), None);
    }

    #[test]
    fn insert_same_key_replaces_value() {
        let mut t: Trie<u32, u8> = Trie::default();
        assert!(t.insert("x", 1, 0));
        assert!(!t.insert("x", 1, 2));
        let mut out = Vec::new();
        t.matches("x", &mut out);
        assert_eq!(out, vec![(1, 2)]);
        assert_eq!(t.len(), 1);
    }
}
