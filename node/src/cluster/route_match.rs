//! CORE. Wildcard matching over a range's route rows ([`route_keys`](super::route_keys)):
//! which rows' filters match a topic name, found by seeks in the sorted keys, never by a
//! scan of unrelated rows.
//!
//! The walk is depth-first over the topic's levels. At level `i`, with `key` the prefix of
//! the filters whose first `i` levels match so far, it:
//! - collects the rows of `key | #` (a `#` there matches the rest, including nothing: `a/#`
//!   matches `a`);
//! - once the levels are used up, collects the rows of `key | end` (the exact filter);
//! - else descends into `key | level` and `key | +`, each only if some key has that prefix
//!   (one seek each).
//!
//! A topic starting with `$` is not matched by a filter starting with `+` or `#`
//! (MQTT-4.7.2-1). The cost is O(levels x matching branches x log n) seeks plus one seek
//! per returned row; the result is bounded by a row limit and says when it was cut.
//! The walk keeps its own stack, so a deep topic cannot overflow the thread's stack.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::route_keys::{LEVEL_END, push_level};

/// A sorted key-value map, as far as matching needs it.
pub trait SortedView {
    /// The first pair whose key is at or after `from`.
    fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])>;
}

impl SortedView for BTreeMap<Vec<u8>, Vec<u8>> {
    fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])> {
        self.range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

/// `view` restricted to the keys in `[start, end)` (empty `end` = unbounded): a range's
/// matcher never returns keys outside the range.
pub struct Bounded<'a, V: SortedView + ?Sized> {
    view: &'a V,
    start: &'a [u8],
    end: &'a [u8],
}

impl<'a, V: SortedView + ?Sized> Bounded<'a, V> {
    /// The keys of `view` in `[start, end)`.
    pub fn new(view: &'a V, start: &'a [u8], end: &'a [u8]) -> Self {
        Self { view, start, end }
    }
}

impl<V: SortedView + ?Sized> SortedView for Bounded<'_, V> {
    fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])> {
        let (k, v) = self.view.seek(from.max(self.start))?;
        (self.end.is_empty() || k < self.end).then_some((k, v))
    }
}

/// The rows matching one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// Matching `(key, value)` rows, at most the limit.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// More rows matched than the limit allowed.
    pub truncated: bool,
}

/// Every row under `tenant_prefix` (the route family prefix of one tenant) whose filter
/// matches `topic`, at most `limit` of them. A string that is not a valid topic name
/// (empty, or holding `+`, `#` or U+0000) matches nothing.
pub fn match_topic<V: SortedView + ?Sized>(
    view: &V,
    tenant_prefix: &[u8],
    topic: &str,
    limit: usize,
) -> Matched {
    let mut out = Matched::default();
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return out;
    }
    let levels: Vec<&str> = topic.split('/').collect();
    let dollar = topic.starts_with('$');
    // Branches to visit: (depth, prefix of the filters matching the first `depth` levels).
    let mut stack: Vec<(usize, Vec<u8>)> = vec![(0, tenant_prefix.to_vec())];
    while let Some((depth, mut key)) = stack.pop() {
        let wild_ok = !(depth == 0 && dollar);
        let len = key.len();
        if wild_ok {
            push_level(&mut key, b"#");
            key.push(LEVEL_END);
            collect(view, &key, limit, &mut out);
            key.truncate(len);
        }
        let Some(level) = levels.get(depth) else {
            key.push(LEVEL_END);
            collect(view, &key, limit, &mut out);
            continue;
        };
        if out.truncated {
            break;
        }
        if wild_ok {
            let mut plus = key.clone();
            push_level(&mut plus, b"+");
            if has_prefix(view, &plus) {
                stack.push((depth + 1, plus));
            }
        }
        push_level(&mut key, level.as_bytes());
        if has_prefix(view, &key) {
            stack.push((depth + 1, key));
        }
    }
    out
}

/// Whether some key starts with `prefix`.
fn has_prefix<V: SortedView + ?Sized>(view: &V, prefix: &[u8]) -> bool {
    view.seek(prefix).is_some_and(|(k, _)| k.starts_with(prefix))
}

/// Appends the rows whose key starts with `prefix`, up to `limit` rows in all.
fn collect<V: SortedView + ?Sized>(view: &V, prefix: &[u8], limit: usize, out: &mut Matched) {
    if out.truncated {
        return;
    }
    let mut from = prefix.to_vec();
    while let Some((k, v)) = view.seek(&from) {
        if !k.starts_with(prefix) {
            return;
        }
        if out.rows.len() >= limit {
            out.truncated = true;
            return;
        }
        out.rows.push((k.to_vec(), v.to_vec()));
        // The next key after `k`.
        from.clear();
        from.extend_from_slice(k);
        from.push(0);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::cluster::keys;
    use crate::cluster::route_keys::{NodeRow, node_row_key, parse_row_key};
    use crate::group::NodeId;
    use crate::route::trie::Trie;

    type Map = BTreeMap<Vec<u8>, Vec<u8>>;

    fn insert(map: &mut Map, tenant: &[u8], filter: &str, node: NodeId) {
        let value = NodeRow { incarnation: 1, max_qos: 1 }.encode();
        map.insert(node_row_key(tenant, filter, node).unwrap(), value);
    }

    /// The (filter, node) pairs `topic` matches for `tenant`.
    fn matched(view: &impl SortedView, tenant: &[u8], topic: &str) -> BTreeSet<(String, NodeId)> {
        let prefix = keys::prefix(keys::FAMILY_ROUTES, tenant).unwrap();
        let m = match_topic(view, &prefix, topic, usize::MAX);
        assert!(!m.truncated);
        m.rows
            .iter()
            .map(|(k, _)| {
                let row = parse_row_key(prefix.len(), k).expect("a row key");
                (row.filter, row.node.expect("a node row"))
            })
            .collect()
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".into()), Just("b".into()), Just("".into()), Just("$s".into())]
    }

    /// Topic names (never empty: MQTT-4.7.3-1; the matcher matches nothing for "").
    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|v| v.join("/")).prop_filter("empty", |t| !t.is_empty())
    }

    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_string())], 0..5), any::<bool>())
            .prop_map(|(mut v, hash)| {
                if hash || v.is_empty() {
                    v.push("#".into());
                }
                v.join("/")
            })
    }

    proptest! {
        #[test]
        fn matches_what_the_trie_matches(
            subs in prop::collection::btree_set((filter(), 1..4u64), 0..40),
            topics in prop::collection::vec(topic(), 1..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut map = Map::new();
            let mut trie: Trie<(usize, NodeId), ()> = Trie::default();
            let filters: Vec<String> = subs.iter().map(|(f, _)| f.clone()).collect();
            for (i, (f, node)) in subs.iter().enumerate() {
                insert(&mut map, b"t", f, *node);
                // Noise: the same filters for tenants that share bytes with "t".
                insert(&mut map, b"tt", f, *node);
                insert(&mut map, b"", f, *node);
                trie.insert(f, (i, *node), ());
            }
            let keys: Vec<Vec<u8>> = map.keys().cloned().collect();
            let split = keys.get(cut.index(keys.len().max(1))).cloned().unwrap_or_default();
            for t in &topics {
                let mut want = Vec::new();
                trie.matches(t, &mut want);
                let want: BTreeSet<(String, NodeId)> =
                    want.into_iter().map(|((i, n), ())| (filters[i].clone(), n)).collect();
                prop_assert_eq!(&matched(&map, b"t", t), &want, "topic {}", t);
                // A range split anywhere: the two halves answer the same, each only its rows.
                let mut halves = matched(&Bounded::new(&map, b"", &split), b"t", t);
                let right = matched(&Bounded::new(&map, &split, b""), b"t", t);
                prop_assert_eq!(halves.len() + right.len(), want.len(), "split at {:?}", split);
                halves.extend(right);
                prop_assert_eq!(&halves, &want, "topic {} split at {:?}", t, split);
            }
        }
    }

    #[test]
    fn mqtt_4_7_1_2_multi_level_wildcard_matches_the_parent_level() {
        let mut map = Map::new();
        for f in ["sport/tennis/player1/#", "sport/#", "#", "sport/+", "+/+", "sport/tennis/#"] {
            insert(&mut map, b"", f, 1);
        }
        let got: Vec<String> = matched(&map, b"", "sport/tennis/player1").into_iter().map(|r| r.0).collect();
        assert_eq!(got, vec!["#", "sport/#", "sport/tennis/#", "sport/tennis/player1/#"]);
        let got: Vec<String> = matched(&map, b"", "sport").into_iter().map(|r| r.0).collect();
        assert_eq!(got, vec!["#", "sport/#"]);
        let got: Vec<String> = matched(&map, b"", "sport/").into_iter().map(|r| r.0).collect();
        assert_eq!(got, vec!["#", "+/+", "sport/#", "sport/+"]);
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_are_not_matched_by_leading_wildcards() {
        let mut map = Map::new();
        for f in ["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+"] {
            insert(&mut map, b"", f, 1);
        }
        let got: Vec<String> = matched(&map, b"", "$SYS/monitor/Clients").into_iter().map(|r| r.0).collect();
        assert_eq!(got, vec!["$SYS/#", "$SYS/monitor/+"]);
        assert!(matched(&map, b"", "a/+").is_empty(), "a filter is no topic name");
        assert!(matched(&map, b"", "").is_empty());
    }

    #[test]
    fn tenants_are_isolated() {
        let mut map = Map::new();
        insert(&mut map, b"a", "#", 1);
        insert(&mut map, b"a", "x", 1);
        insert(&mut map, b"ab", "x", 2);
        assert_eq!(matched(&map, b"ab", "x"), BTreeSet::from([("x".to_string(), 2)]));
        assert_eq!(matched(&map, b"a", "x").len(), 2);
        assert!(matched(&map, b"", "x").is_empty());
    }

    #[test]
    fn the_limit_cuts_and_says_so() {
        let mut map = Map::new();
        for node in 1..=5 {
            insert(&mut map, b"", "a/#", node);
        }
        let prefix = keys::prefix(keys::FAMILY_ROUTES, b"").unwrap();
        let m = match_topic(&map, &prefix, "a/b", 3);
        assert_eq!((m.rows.len(), m.truncated), (3, true));
        let m = match_topic(&map, &prefix, "a/b", 5);
        assert_eq!((m.rows.len(), m.truncated), (5, false));
    }

    /// Counts seeks.
    struct Counting<'a>(&'a Map, Cell<usize>);

    impl SortedView for Counting<'_> {
        fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])> {
            self.1.set(self.1.get() + 1);
            self.0.seek(from)
        }
    }

    #[test]
    fn cost_follows_matching_branches_not_the_table() {
        let mut map = Map::new();
        for i in 0..5_000 {
            insert(&mut map, b"", &format!("fleet/{i}/+/speed"), 1);
            insert(&mut map, b"", &format!("other/{i}/#"), 2);
        }
        insert(&mut map, b"", "fleet/+/engine/#", 3);
        let view = Counting(&map, Cell::new(0));
        let got = matched(&view, b"", "fleet/42/engine/temp");
        assert_eq!(got, BTreeSet::from([("fleet/+/engine/#".to_string(), 3)]));
        assert!(view.1.get() < 40, "{} seeks for 10,001 rows", view.1.get());
    }
}
