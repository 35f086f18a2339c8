//! CORE. How the PD group stores node admin states: key `node/` + the id as 20 decimal
//! digits (so keys sort by id), value one byte ([`NodeAdminState::to_byte`]); `Serving`
//! nodes have no key.

use std::collections::BTreeMap;

use super::driver::NodeAdminState;
use crate::group::NodeId;

/// Most node records read in one scan.
pub const NODES_MAX: usize = 100_000;

const PREFIX: &[u8] = b"node/";

/// The key of `node`'s record.
pub fn node_key(node: NodeId) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(format!("{node:020}").as_bytes());
    k
}

/// The span `[start, end)` holding every node record.
pub fn node_span() -> (Vec<u8>, Vec<u8>) {
    (PREFIX.to_vec(), b"node0".to_vec())
}

/// The states in scanned rows; rows that do not parse are skipped (and logged).
pub fn decode_states(rows: &[(Vec<u8>, Vec<u8>)]) -> BTreeMap<NodeId, NodeAdminState> {
    let mut out = BTreeMap::new();
    for (k, v) in rows {
        let id =
            k.strip_prefix(PREFIX).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| d.parse().ok());
        let state = match v.as_slice() {
            [b] => NodeAdminState::from_byte(*b),
            _ => None,
        };
        match (id, state) {
            (Some(id), Some(state)) => {
                out.insert(id, state);
            }
            _ => tracing::warn!(key = %String::from_utf8_lossy(k), "unreadable node record in the PD group"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_sort_by_id() {
        let (start, end) = node_span();
        let keys = [node_key(2), node_key(10), node_key(u64::MAX)];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys.iter().all(|k| k.as_slice() >= start.as_slice() && k.as_slice() < end.as_slice()));
        let rows = vec![
            (node_key(2), vec![b'd']),
            (node_key(10), vec![b'x']),
            (b"node/zz".to_vec(), vec![b'd']),
            (node_key(11), vec![b'?']),
        ];
        let states = decode_states(&rows);
        assert_eq!(states.len(), 2);
        assert_eq!(states[&2], NodeAdminState::Draining);
        assert_eq!(states[&10], NodeAdminState::Removed);
    }
}
