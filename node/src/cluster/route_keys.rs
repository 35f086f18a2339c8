//! CORE. The route ("R") family (CLUSTER.md section 2.2): one row per (filter, receiver).
//!
//! ```text
//! key   := prefix(R, tenant) | (0x01 level 0x00)* | 0x00 | kind:u8 | receiver
//! kind  := 'N' node row: receiver = node id (u64 big endian), value = incarnation:u64 max_qos:u8
//! ```
//!
//! Each level is escaped with a leading 0x01, so empty levels (`a//b`) stay unambiguous and
//! the lone 0x00 ends the filter; `+` and `#` are ordinary level bytes, so the rows under a
//! level prefix are one contiguous span (the matcher seeks through them). Decoding is
//! total: bad input gives `None`, never a panic.

use super::keys::{FAMILY_ROUTES, KeyError, prefix};
use crate::group::NodeId;

/// A node row: `filter -> node` for a node with a non-persistent subscriber to it.
pub const KIND_NODE: u8 = b'N';
/// Starts every level.
pub(crate) const LEVEL: u8 = 0x01;
/// Ends a level, and (alone) the filter.
pub(crate) const END: u8 = 0x00;

/// Appends the escaped levels of `filter` and the end marker.
pub(crate) fn push_levels(k: &mut Vec<u8>, filter: &str) {
    for level in filter.split('/') {
        k.push(LEVEL);
        k.extend_from_slice(level.as_bytes());
        k.push(END);
    }
    k.push(END);
}

/// The key prefix of every row of `filter` (through the end marker).
pub fn filter_key(tenant: &[u8], filter: &str) -> Result<Vec<u8>, KeyError> {
    let mut k = prefix(FAMILY_ROUTES, tenant)?;
    push_levels(&mut k, filter);
    Ok(k)
}

/// The node row of `node` for `filter`.
pub fn node_row_key(tenant: &[u8], filter: &str, node: NodeId) -> Result<Vec<u8>, KeyError> {
    let mut k = filter_key(tenant, filter)?;
    k.push(KIND_NODE);
    k.extend_from_slice(&node.to_be_bytes());
    Ok(k)
}

/// `[start, end)` of every route row of `tenant`.
pub fn family_span(tenant: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let start = prefix(FAMILY_ROUTES, tenant)?;
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        // The prefix ends with the version byte (1), never 0xFF.
        *last += 1;
    }
    Ok((start, end))
}

/// A node row's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The writing node's incarnation (rows of an earlier one are stale).
    pub incarnation: u64,
    /// Highest QoS of the node's subscriptions to the filter.
    pub max_qos: u8,
}

impl NodeRow {
    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.incarnation.to_be_bytes().to_vec();
        b.push(self.max_qos);
        b
    }

    /// Decodes a value.
    pub fn decode(v: &[u8]) -> Option<Self> {
        let (inc, qos) = v.split_at_checked(8)?;
        let [max_qos] = qos else { return None };
        (*max_qos <= 2).then(|| Self {
            incarnation: u64::from_be_bytes(inc.try_into().unwrap_or_default()),
            max_qos: *max_qos,
        })
    }
}

/// A decoded row key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// The filter.
    pub filter: String,
    /// The row's kind.
    pub kind: u8,
    /// The receiving node, for a node row.
    pub node: Option<NodeId>,
}

/// Decodes a row key (`tenant_prefix_len` = the length of `prefix(R, tenant)`).
pub fn parse_row_key(tenant_prefix_len: usize, key: &[u8]) -> Option<RouteRow> {
    let mut rest = key.get(tenant_prefix_len..)?;
    let mut levels: Vec<&str> = Vec::new();
    loop {
        let (&b, tail) = rest.split_first()?;
        match b {
            END => {
                rest = tail;
                break;
            }
            LEVEL => {
                let end = tail.iter().position(|&c| c == END)?;
                levels.push(std::str::from_utf8(&tail[..end]).ok()?);
                rest = &tail[end + 1..];
            }
            _ => return None,
        }
    }
    if levels.is_empty() {
        return None;
    }
    let (&kind, receiver) = rest.split_first()?;
    let node = match kind {
        KIND_NODE => Some(u64::from_be_bytes(receiver.try_into().ok()?)),
        _ => None,
    };
    Some(RouteRow { filter: levels.join("/"), kind, node })
}

/// The nodes of the node rows among `rows` (deduplicated; the highest `max_qos` per node).
pub fn node_rows(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<(NodeId, NodeRow)> {
    let mut out: Vec<(NodeId, NodeRow)> = Vec::new();
    for (key, value) in rows {
        // The receiver is the key's last 8 bytes, after the kind byte.
        let Some(tail) = key.len().checked_sub(9).map(|i| &key[i..]) else { continue };
        if tail[0] != KIND_NODE {
            continue;
        }
        let (Ok(node), Some(row)) = (tail[1..].try_into().map(u64::from_be_bytes), NodeRow::decode(value))
        else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == node) {
            Some((_, r)) => r.max_qos = r.max_qos.max(row.max_qos),
            None => out.push((node, row)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_round_trip_and_keep_empty_levels_apart() {
        let p = prefix(FAMILY_ROUTES, b"t").unwrap().len();
        for f in ["a", "a/", "/a", "a//b", "+/#", "#", "a/b/c"] {
            let k = node_row_key(b"t", f, 7).unwrap();
            assert_eq!(
                parse_row_key(p, &k),
                Some(RouteRow { filter: f.into(), kind: KIND_NODE, node: Some(7) })
            );
        }
        let a = filter_key(b"t", "a").unwrap();
        let a_empty = filter_key(b"t", "a/").unwrap();
        assert!(!a_empty.starts_with(&a) && !a.starts_with(&a_empty), "`a` and `a/` never share rows");
        let (s, e) = family_span(b"t").unwrap();
        let k = node_row_key(b"t", "x", 1).unwrap();
        assert!(k >= s && k < e);
        let other = node_row_key(b"tt", "x", 1).unwrap();
        assert!(!(other >= s && other < e), "another tenant's rows lie outside the span");
        let rows = vec![
            (node_row_key(b"t", "a", 2).unwrap(), NodeRow { incarnation: 1, max_qos: 0 }.encode()),
            (node_row_key(b"t", "+", 2).unwrap(), NodeRow { incarnation: 1, max_qos: 2 }.encode()),
            (node_row_key(b"t", "#", 3).unwrap(), vec![1]),
        ];
        assert_eq!(node_rows(&rows), vec![(2, NodeRow { incarnation: 1, max_qos: 2 })]);
    }
}
