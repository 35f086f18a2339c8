//! CORE. Wildcard matching over the route rows of a sorted key space (CLUSTER.md section
//! 2.2): which rows' filters match a topic name, found by seeking, never by scanning rows
//! of unrelated filters.
//!
//! At level `i` of the topic the walk collects the rows of filter `prefix/#` (which also
//! matches the parent level), then descends into the literal level and into `+`, each only
//! if some key has that prefix (one seek); when the levels are used up it collects the
//! rows of the filter ending there. MQTT-4.7.2-1: a topic starting with `$` is not matched
//! by a filter starting with `+` or `#`. Cost: O(levels x matching branches x log n).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::route_keys::{END, LEVEL};

/// A sorted map the matcher can seek in.
pub trait Seek {
    /// The first pair at or after `from`.
    fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])>;
    /// The first pair strictly after `key`.
    fn after(&self, key: &[u8]) -> Option<(&[u8], &[u8])>;
}

impl Seek for BTreeMap<Vec<u8>, Vec<u8>> {
    fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])> {
        self.range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    fn after(&self, key: &[u8]) -> Option<(&[u8], &[u8])> {
        self.range::<[u8], _>((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

/// Rows matched for one topic; `truncated` when `limit` cut them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// The matching rows, in key order per filter.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// More rows matched than the limit.
    pub truncated: bool,
}

/// Every row under `tenant_prefix` whose filter matches `topic`, at most `limit`.
pub fn match_topic(map: &impl Seek, tenant_prefix: &[u8], topic: &str, limit: usize) -> Matched {
    let levels: Vec<&str> = topic.split('/').collect();
    let mut out = Matched::default();
    let mut prefix = tenant_prefix.to_vec();
    walk(map, &mut prefix, &levels, 0, topic.starts_with('$'), limit, &mut out);
    out
}

fn has_prefix(map: &impl Seek, p: &[u8]) -> bool {
    map.seek(p).is_some_and(|(k, _)| k.starts_with(p))
}

fn collect(map: &impl Seek, p: &[u8], limit: usize, out: &mut Matched) {
    let mut next = map.seek(p);
    while let Some((k, v)) = next {
        if !k.starts_with(p) {
            return;
        }
        if out.rows.len() >= limit {
            out.truncated = true;
            return;
        }
        out.rows.push((k.to_vec(), v.to_vec()));
        next = map.after(k);
    }
}

fn walk(
    map: &impl Seek,
    prefix: &mut Vec<u8>,
    levels: &[&str],
    i: usize,
    dollar: bool,
    limit: usize,
    out: &mut Matched,
) {
    let base = prefix.len();
    let wild_ok = !(i == 0 && dollar);
    if wild_ok {
        prefix.extend_from_slice(&[LEVEL, b'#', END, END]);
        collect(map, prefix, limit, out);
        prefix.truncate(base);
    }
    if i == levels.len() {
        prefix.push(END);
        collect(map, prefix, limit, out);
        prefix.truncate(base);
        return;
    }
    let plus = wild_ok.then_some("+");
    for level in std::iter::once(levels[i]).chain(plus) {
        prefix.push(LEVEL);
        prefix.extend_from_slice(level.as_bytes());
        prefix.push(END);
        if has_prefix(map, prefix) {
            walk(map, prefix, levels, i + 1, dollar, limit, out);
        }
        prefix.truncate(base);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::keys::{FAMILY_ROUTES, prefix};
    use crate::cluster::route_keys::{node_row_key, parse_row_key};
    use crate::mqtt::topic::matches;

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just(String::new()), Just("$s".to_string())]
    }

    fn filter() -> impl Strategy<Value = String> {
        (proptest::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..4), any::<bool>())
            .prop_map(|(mut ls, hash)| {
                if hash {
                    ls.push("#".into());
                }
                ls.join("/")
            })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_map(|ls| ls.join("/"))
    }

    proptest! {
        #[test]
        fn matches_exactly_the_rows_the_reference_matcher_matches(
            filters in proptest::collection::vec((filter(), 1u64..4), 0..40),
            topics in proptest::collection::vec(topic(), 1..10),
        ) {
            let mut map = BTreeMap::new();
            for (f, node) in &filters {
                map.insert(node_row_key(b"t", f, *node).unwrap(), vec![0; 9]);
                // Another tenant's rows never match.
                map.insert(node_row_key(b"u", f, *node).unwrap(), vec![0; 9]);
            }
            let p = prefix(FAMILY_ROUTES, b"t").unwrap();
            for t in &topics {
                let got = match_topic(&map, &p, t, usize::MAX);
                let mut got: Vec<(String, u64)> = got
                    .rows
                    .iter()
                    .map(|(k, _)| {
                        let r = parse_row_key(p.len(), k).expect("a row key");
                        (r.filter, r.node.expect("a node row"))
                    })
                    .collect();
                got.sort();
                let mut want: Vec<(String, u64)> =
                    filters.iter().filter(|(f, _)| matches(f, t)).map(|(f, n)| (f.clone(), *n)).collect();
                want.sort();
                want.dedup();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }

    #[test]
    fn a_limit_truncates_and_says_so() {
        let mut map = BTreeMap::new();
        for n in 0..10 {
            map.insert(node_row_key(b"", "a/#", n).unwrap(), vec![0; 9]);
        }
        let p = prefix(FAMILY_ROUTES, b"").unwrap();
        let m = match_topic(&map, &p, "a/b", 4);
        assert_eq!(m.rows.len(), 4);
        assert!(m.truncated);
        assert!(!match_topic(&map, &p, "a", 10).truncated, "`a/#` matches `a`: 10 rows");
        assert_eq!(match_topic(&map, &p, "b", 10).rows.len(), 0);
    }
}
