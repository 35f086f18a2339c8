//! CORE. The route (`R`) family's key layout: one row per (filter, receiver), ordered so that
//! every filter with a given level prefix is one contiguous key span, which is what
//! [`route_match`](super::route_match) walks.
//!
//! ```text
//! row    := keys::prefix('R', tenant) | level* | 0x00 | kind:u8 | receiver
//! level  := 0x01 | level bytes | 0x00        (one per '/'-separated level of the filter)
//! kind N := node row, receiver = node id:u64 big endian, value = NodeRow
//! kind G := shared row, receiver = group length:u16 | group | node id:u64 (both big
//!           endian), value = NodeRow: some session on the node is a member of the shared
//!           subscription `$share/{group}/{filter}`
//! ```
//!
//! Invariants:
//! - A level never holds 0x00 (MQTT forbids U+0000 in topics and filters; [`filter_key`]
//!   refuses it), so `prefix | level_0 .. level_i` is a key prefix of exactly the filters
//!   whose first `i + 1` levels are those, and the lone 0x00 (never a level's 0x01) ends the
//!   filter: `a` and `a/b`, `a//b` and `a/b` are told apart.
//! - `+` and `#` are ordinary level bytes: the filter `a/#` is the level `a` then the level
//!   `#`, so the rows of `a/#` are the span `prefix | 0x01 a 0x00 | 0x01 # 0x00 | 0x00`.
//! - The tenant prefix carries the tenant's length, so tenant `a` never prefixes tenant `ab`.

use super::keys::{self, FAMILY_ROUTES, KeyError};
use crate::group::NodeId;

/// Kind of a node row: some non-persistent session on the receiver node subscribes.
pub const KIND_NODE: u8 = b'N';
/// Kind of a shared row: some session on the receiver node is a member of a shared group.
pub const KIND_SHARED: u8 = b'G';
/// Marks the start of a level.
pub(crate) const LEVEL_START: u8 = 0x01;
/// Ends a level, and (alone, where a level would start) ends the filter.
pub(crate) const LEVEL_END: u8 = 0x00;

/// The value of a node row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The node's incarnation when it wrote the row (a restarted node's rows are stale).
    pub incarnation: u64,
    /// The highest QoS any of the node's sessions was granted for the filter.
    pub max_qos: u8,
}

/// Encoded size of a [`NodeRow`].
const NODE_ROW_BYTES: usize = 9;

impl NodeRow {
    /// `incarnation:u64 big endian | max_qos:u8`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(NODE_ROW_BYTES);
        v.extend_from_slice(&self.incarnation.to_be_bytes());
        v.push(self.max_qos);
        v
    }

    /// Reads what [`encode`](Self::encode) wrote; `None` for any other length.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let bytes: &[u8; NODE_ROW_BYTES] = value.try_into().ok()?;
        let (inc, qos) = bytes.split_at(8);
        Some(Self { incarnation: u64::from_be_bytes(inc.try_into().ok()?), max_qos: qos[0] })
    }
}

/// A parsed route row key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// The filter, levels joined with `/`.
    pub filter: String,
    /// The row kind ([`KIND_NODE`], [`KIND_SHARED`]).
    pub kind: u8,
    /// The receiver node of a node or shared row; `None` for other kinds.
    pub node: Option<NodeId>,
    /// The group of a shared row.
    pub group: Option<String>,
}

/// Appends one level's encoding.
pub(crate) fn push_level(key: &mut Vec<u8>, level: &[u8]) {
    key.push(LEVEL_START);
    key.extend_from_slice(level);
    key.push(LEVEL_END);
}

/// The key prefix of every row of `filter`: the tenant prefix, the levels, the end marker.
pub fn filter_key(tenant: &[u8], filter: &str) -> Result<Vec<u8>, KeyError> {
    if filter.as_bytes().contains(&0) {
        return Err(KeyError::NulInFilter);
    }
    let mut key = keys::prefix(FAMILY_ROUTES, tenant)?;
    key.reserve(filter.len() + 2 * filter.split('/').count() + 10);
    for level in filter.split('/') {
        push_level(&mut key, level.as_bytes());
    }
    key.push(LEVEL_END);
    Ok(key)
}

/// The key of `node`'s row for `filter`.
pub fn node_row_key(tenant: &[u8], filter: &str, node: NodeId) -> Result<Vec<u8>, KeyError> {
    let mut key = filter_key(tenant, filter)?;
    key.push(KIND_NODE);
    key.extend_from_slice(&node.to_be_bytes());
    Ok(key)
}

/// The key of `node`'s row for members of the shared group `group` on `filter`.
pub fn shared_row_key(tenant: &[u8], filter: &str, group: &str, node: NodeId) -> Result<Vec<u8>, KeyError> {
    let len = u16::try_from(group.len()).map_err(|_| KeyError::GroupTooLong(group.len()))?;
    let mut key = filter_key(tenant, filter)?;
    key.push(KIND_SHARED);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key.extend_from_slice(&node.to_be_bytes());
    Ok(key)
}

/// The key of `node`'s row for a subscription filter as the client sent it: the group's
/// shared row for `$share/{group}/{filter}`, the node row otherwise.
pub fn subscription_row_key(tenant: &[u8], filter: &str, node: NodeId) -> Result<Vec<u8>, KeyError> {
    match crate::mqtt::topic::parse_shared(filter) {
        Ok(Some(sf)) => shared_row_key(tenant, sf.filter, sf.group, node),
        _ => node_row_key(tenant, filter, node),
    }
}

/// `[start, end)` holding every route key of `tenant`: the tenant prefix, and the prefix
/// with its last byte (the key version, never 0xff) plus one.
pub fn family_span(tenant: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let start = keys::prefix(FAMILY_ROUTES, tenant)?;
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        // The last byte is KEY_VERSION: adding one cannot overflow.
        *last = last.saturating_add(1);
    }
    Ok((start, end))
}

/// The length of the tenant prefix a route key starts with (`fam | tlen | tenant | ver`).
pub fn tenant_prefix_len(key: &[u8]) -> Option<usize> {
    if key.first() != Some(&FAMILY_ROUTES) {
        return None;
    }
    let len = 3 + usize::from(*key.get(1)?);
    (key.len() >= len).then_some(len)
}

/// Parses a row key whose tenant prefix is `tenant_prefix_len` bytes long; `None` if it is
/// not a well-formed row key (levels not UTF-8, no end marker, no kind, a node row whose
/// receiver is not 8 bytes).
pub fn parse_row_key(tenant_prefix_len: usize, key: &[u8]) -> Option<RouteRow> {
    let mut rest = key.get(tenant_prefix_len..)?;
    let mut levels: Vec<&str> = Vec::new();
    loop {
        let (&marker, after) = rest.split_first()?;
        match marker {
            LEVEL_END => {
                rest = after;
                break;
            }
            LEVEL_START => {
                let end = after.iter().position(|&b| b == LEVEL_END)?;
                levels.push(std::str::from_utf8(&after[..end]).ok()?);
                rest = &after[end + 1..];
            }
            _ => return None,
        }
    }
    if levels.is_empty() {
        return None;
    }
    let (&kind, receiver) = rest.split_first()?;
    let (node, group) = match kind {
        KIND_NODE => (Some(NodeId::from_be_bytes(receiver.try_into().ok()?)), None),
        KIND_SHARED => {
            let (len, rest) = receiver.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let (group, node) = (rest.get(..len)?, rest.get(len..)?);
            let group = std::str::from_utf8(group).ok()?.to_owned();
            (Some(NodeId::from_be_bytes(node.try_into().ok()?)), Some(group))
        }
        _ => (None, None),
    };
    Some(RouteRow { filter: levels.join("/"), kind, node, group })
}

/// Where a topic's messages go, from its matching route rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Nodes with a node row for a matching filter, in node order.
    pub nodes: Vec<NodeId>,
    /// Per shared subscription `(group, filter)` matching the topic, the nodes with members,
    /// in node order.
    pub shared: Vec<SharedTarget>,
}

/// The nodes holding members of one shared subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTarget {
    /// The group name.
    pub group: String,
    /// The group's filter.
    pub filter: String,
    /// Nodes with members, in node order, at least one.
    pub nodes: Vec<NodeId>,
}

/// The targets among `rows` (route rows of any tenant); rows that are not well-formed node
/// or shared rows are skipped.
pub fn targets(rows: &[(Vec<u8>, Vec<u8>)]) -> Targets {
    use std::collections::{BTreeMap, BTreeSet};
    let mut nodes = BTreeSet::new();
    let mut shared: BTreeMap<(String, String), BTreeSet<NodeId>> = BTreeMap::new();
    for (key, value) in rows {
        let Some(row) = tenant_prefix_len(key).and_then(|n| parse_row_key(n, key)) else { continue };
        let (Some(node), Some(_)) = (row.node, NodeRow::decode(value)) else { continue };
        match row.group {
            None => {
                nodes.insert(node);
            }
            Some(group) => {
                shared.entry((group, row.filter)).or_default().insert(node);
            }
        }
    }
    Targets {
        nodes: nodes.into_iter().collect(),
        shared: shared
            .into_iter()
            .map(|((group, filter), nodes)| SharedTarget {
                group,
                filter,
                nodes: nodes.into_iter().collect(),
            })
            .collect(),
    }
}

/// The node receivers among `rows` (route rows of any tenant), one per node in node order,
/// keeping the highest `max_qos` (and the highest incarnation) any of its rows holds.
/// Rows that are not well-formed node rows are skipped.
pub fn node_rows(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<(NodeId, NodeRow)> {
    let mut out: std::collections::BTreeMap<NodeId, NodeRow> = std::collections::BTreeMap::new();
    for (key, value) in rows {
        let Some(row) = tenant_prefix_len(key).and_then(|n| parse_row_key(n, key)) else { continue };
        let (KIND_NODE, Some(node), Some(v)) = (row.kind, row.node, NodeRow::decode(value)) else { continue };
        out.entry(node)
            .and_modify(|have| {
                have.max_qos = have.max_qos.max(v.max_qos);
                have.incarnation = have.incarnation.max(v.incarnation);
            })
            .or_insert(v);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_row_round_trips_and_bad_values_are_refused() {
        let row = NodeRow { incarnation: 0x0102_0304_0506_0708, max_qos: 2 };
        assert_eq!(row.encode(), vec![1, 2, 3, 4, 5, 6, 7, 8, 2]);
        assert_eq!(NodeRow::decode(&row.encode()), Some(row));
        for bad in [&[][..], &[1; 8], &[1; 10]] {
            assert_eq!(NodeRow::decode(bad), None);
        }
    }

    #[test]
    fn keys_parse_back_including_empty_levels_and_wildcards() {
        for filter in ["a", "a/b", "a//b", "/", "//", "+/#", "#", "$SYS/+", "a/b/"] {
            let key = node_row_key(b"t", filter, 7).unwrap();
            let n = tenant_prefix_len(&key).unwrap();
            assert_eq!(n, 4);
            let row = parse_row_key(n, &key).unwrap();
            assert_eq!(row, RouteRow { filter: filter.into(), kind: KIND_NODE, node: Some(7), group: None });
            let key = subscription_row_key(b"t", &format!("$share/g/{filter}"), 7).unwrap();
            let row = parse_row_key(n, &key).unwrap();
            let shared =
                RouteRow { filter: filter.into(), kind: KIND_SHARED, node: Some(7), group: Some("g".into()) };
            assert_eq!(row, shared);
            assert!(key.starts_with(&filter_key(b"t", filter).unwrap()));
            assert_eq!(parse_row_key(n, &key[..key.len() - 1]), None, "a short shared receiver");
            assert!(key.starts_with(&filter_key(b"t", filter).unwrap()));
        }
        assert_eq!(filter_key(b"", "a//b").unwrap(), b"R\0\x01\x01a\0\x01\0\x01b\0\0".to_vec());
        assert_eq!(filter_key(b"", "a\0b"), Err(KeyError::NulInFilter));
        assert!(filter_key(&[0; 256], "a").is_err());
        let key = node_row_key(b"", "a", 1).unwrap();
        assert_eq!(parse_row_key(3, &key[..key.len() - 1]), None, "a short receiver");
        assert_eq!(parse_row_key(3, &key[..6]), None, "no end marker");
        assert_eq!(parse_row_key(3, b""), None);
        assert_eq!(parse_row_key(3, b"R\0\x01\0N"), None, "no level");
        assert_eq!(parse_row_key(3, b"R\0\x01\x07"), None, "a bad marker");
    }

    #[test]
    fn a_filter_is_one_span_apart_from_its_extensions() {
        // `a` and its rows sort apart from `a/b` and `ab`: prefix(a) is not a prefix of them.
        let a = filter_key(b"t", "a").unwrap();
        for other in ["a/b", "ab", "a/", "/a", "+"] {
            let k = node_row_key(b"t", other, 1).unwrap();
            assert!(!k.starts_with(&a), "{other}");
        }
        // Every row of a tenant lies in its family span, and no row of another tenant does.
        let (start, end) = family_span(b"a").unwrap();
        for (tenant, filter) in [(&b"a"[..], "x"), (b"a", "#"), (b"a", "\u{10ffff}")] {
            let k = node_row_key(tenant, filter, u64::MAX).unwrap();
            assert!(start <= k && k < end);
        }
        for tenant in [&b"ab"[..], b"", b"b", b"\x7f"] {
            let k = node_row_key(tenant, "x", 1).unwrap();
            assert!(!(start <= k && k < end), "{tenant:?}");
        }
    }

    #[test]
    fn targets_split_node_rows_from_shared_groups() {
        let v = NodeRow { incarnation: 1, max_qos: 1 }.encode();
        let row = |filter: &str, node| (subscription_row_key(b"t", filter, node).unwrap(), v.clone());
        let rows = vec![
            row("a/+", 3),
            row("$share/g/a/+", 2),
            row("$share/g/a/+", 1),
            row("$share/g/a/#", 2),
            row("$share/h/a/+", 2),
            row("a/#", 3),
            row("a/#", 1),
            (shared_row_key(b"t", "a/b", "x", 5).unwrap(), b"bad".to_vec()),
        ];
        let t = targets(&rows);
        assert_eq!(t.nodes, vec![1, 3]);
        let shared: Vec<_> =
            t.shared.iter().map(|s| (s.group.as_str(), s.filter.as_str(), s.nodes.clone())).collect();
        assert_eq!(shared, vec![("g", "a/#", vec![2]), ("g", "a/+", vec![1, 2]), ("h", "a/+", vec![2])]);
        assert_eq!(
            node_rows(&rows).iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![1, 3],
            "shared rows are not node rows"
        );
    }

    #[test]
    fn node_rows_dedup_receivers_keeping_the_highest_qos() {
        let row = |f: &str, node, inc, qos| {
            (node_row_key(b"t", f, node).unwrap(), NodeRow { incarnation: inc, max_qos: qos }.encode())
        };
        let mut rows = vec![row("a/+", 2, 5, 0), row("a/#", 2, 5, 2), row("#", 1, 3, 1), row("a/b", 2, 5, 1)];
        rows.push((node_row_key(b"t", "x", 4).unwrap(), b"bad".to_vec()));
        rows.push((b"garbage".to_vec(), NodeRow { incarnation: 1, max_qos: 1 }.encode()));
        let got = node_rows(&rows);
        assert_eq!(
            got,
            vec![(1, NodeRow { incarnation: 3, max_qos: 1 }), (2, NodeRow { incarnation: 5, max_qos: 2 })]
        );
    }
}
