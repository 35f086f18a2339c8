//! CORE. [`ClusterView`]: nodes and ranges as the latest heartbeats describe them, with the
//! indexes schedulers need kept up to date incrementally on every heartbeat (per-node replica
//! and leader sets, per-node counts of pending replicas and bytes, and ranges by start key).
//!
//! Invariants, holding after every successful call:
//! * ranges in the view never overlap, and `by_start` indexes exactly the ranges held; a report that overlaps older ranges removes them (PD's
//!   region tree), one that overlaps a newer range is rejected;
//! * an epoch never goes backwards for a range id;
//! * `node_ranges(n)` holds exactly the ranges with a replica on `n`, `node_leaders(n)` exactly
//!   those led from `n`, and `pending_count(n)` / `node_size_bytes(n)` are the sums over them;
//! * every replica sits on a registered node, at most one per node, and the leader is a voter.
//!
//! Nothing here reads a clock; liveness takes `now_ms` from the caller.

mod index;
mod node;
mod range;

use std::collections::BTreeMap;
use std::ops::Bound;

pub use index::IdSet;
pub use node::{NodeHeartbeat, NodeId, NodeInfo, NodeState};
pub use range::{Epoch, RangeId, RangeInfo, Replica, Role, majority, quorum_of};

use rustc_hash::FxHashMap;

use crate::error::ViewError;

#[derive(Debug, Clone)]
struct NodeEntry {
    info: NodeInfo,
    replicas: IdSet,
    leaders: IdSet,
    pending: u32,
    size_bytes: u64,
}

/// The cluster as the placement driver last heard it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    nodes: BTreeMap<NodeId, NodeEntry>,
    ranges: FxHashMap<RangeId, RangeInfo>,
    by_start: BTreeMap<Vec<u8>, RangeId>,
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    // ---- nodes ----

    /// Registers a node, or replaces its registration (labels, capacity, state, heartbeat time).
    pub fn put_node(&mut self, info: NodeInfo) {
        match self.nodes.get_mut(&info.id) {
            Some(entry) => entry.info = info,
            None => {
                let entry = NodeEntry {
                    info: info.clone(),
                    replicas: IdSet::default(),
                    leaders: IdSet::default(),
                    pending: 0,
                    size_bytes: 0,
                };
                self.nodes.insert(info.id, entry);
            }
        }
    }

    /// Applies a store heartbeat received at `now_ms`.
    pub fn handle_node_heartbeat(&mut self, hb: NodeHeartbeat, now_ms: u64) -> Result<(), ViewError> {
        let entry = self.nodes.get_mut(&hb.id).ok_or(ViewError::NodeNotRegistered(hb.id))?;
        entry.info.capacity_bytes = hb.capacity_bytes;
        entry.info.available_bytes = hb.available_bytes;
        entry.info.busy = hb.busy;
        entry.info.last_heartbeat_ms = entry.info.last_heartbeat_ms.max(now_ms);
        Ok(())
    }

    /// Sets a node's admin state (e.g. starts a drain).
    pub fn set_node_state(&mut self, id: NodeId, state: NodeState) -> Result<(), ViewError> {
        let entry = self.nodes.get_mut(&id).ok_or(ViewError::NodeNotRegistered(id))?;
        entry.info.state = state;
        Ok(())
    }

    /// A node's registration and latest heartbeat.
    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id).map(|e| &e.info)
    }

    /// All nodes, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> + '_ {
        self.nodes.values().map(|e| &e.info)
    }

    /// Number of registered nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// True if the node is registered and its liveness lease has not expired.
    pub fn is_node_up(&self, id: NodeId, now_ms: u64, down_after_ms: u64) -> bool {
        self.node(id).is_some_and(|n| n.is_up(now_ms, down_after_ms))
    }

    /// Ranges with a replica (any role) on `id`; empty for an unknown node.
    pub fn node_ranges(&self, id: NodeId) -> &IdSet {
        self.nodes.get(&id).map_or(&EMPTY, |e| &e.replicas)
    }

    /// Ranges led from `id`.
    pub fn node_leaders(&self, id: NodeId) -> &IdSet {
        self.nodes.get(&id).map_or(&EMPTY, |e| &e.leaders)
    }

    /// Number of replicas on `id`.
    pub fn replica_count(&self, id: NodeId) -> usize {
        self.node_ranges(id).len()
    }

    /// Number of leaders on `id`.
    pub fn leader_count(&self, id: NodeId) -> usize {
        self.node_leaders(id).len()
    }

    /// Replicas on `id` still catching up.
    pub fn pending_count(&self, id: NodeId) -> u32 {
        self.nodes.get(&id).map_or(0, |e| e.pending)
    }

    /// Sum of the sizes of the ranges with a replica on `id`.
    pub fn node_size_bytes(&self, id: NodeId) -> u64 {
        self.nodes.get(&id).map_or(0, |e| e.size_bytes)
    }

    // ---- ranges ----

    /// A range by id.
    pub fn range(&self, id: RangeId) -> Option<&RangeInfo> {
        self.ranges.get(&id)
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// All ranges, in key order.
    pub fn ranges(&self) -> impl Iterator<Item = &RangeInfo> + '_ {
        self.by_start.values().map(|id| &self.ranges[id])
    }

    /// Ranges starting at or after `key`, in key order (the patrol's cursor walk).
    pub fn ranges_from_key(&self, key: &[u8]) -> impl Iterator<Item = &RangeInfo> + '_ {
        self.by_start
            .range::<[u8], _>((Bound::Included(key), Bound::Unbounded))
            .map(|(_, id)| &self.ranges[id])
    }

    /// The range containing `key`, if any.
    pub fn range_at_key(&self, key: &[u8]) -> Option<&RangeInfo> {
        let (_, id) = self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        self.ranges.get(id).filter(|r| r.contains_key(key))
    }

    /// The range ending exactly where `range` starts.
    pub fn prev_range(&self, range: &RangeInfo) -> Option<&RangeInfo> {
        if range.start_key.is_empty() {
            return None;
        }
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(range.start_key.as_slice())))
            .next_back()?;
        self.ranges.get(id).filter(|p| p.end_key == range.start_key)
    }

    /// The range starting exactly where `range` ends.
    pub fn next_range(&self, range: &RangeInfo) -> Option<&RangeInfo> {
        if !range.has_end() {
            return None;
        }
        self.by_start.get(&range.end_key).and_then(|id| self.ranges.get(id))
    }

    /// Applies a range heartbeat. Returns the ids of ranges removed because the report
    /// covers them with a newer version (e.g. the source of a merge); the caller tells the
    /// coordinator about them.
    pub fn put_range(&mut self, info: RangeInfo) -> Result<Vec<RangeId>, ViewError> {
        self.validate(&info)?;
        if let Some(old) = self.ranges.get(&info.id)
            && info.epoch.is_stale_against(&old.epoch)
        {
            return Err(ViewError::StaleEpoch { range: info.id, current: old.epoch, reported: info.epoch });
        }
        let overlapped = self.overlapping(&info)?;
        for id in &overlapped {
            self.remove_range(*id);
        }
        let old = self.ranges.remove(&info.id);
        reindex(&mut self.nodes, &mut self.by_start, old.as_ref(), Some(&info));
        self.ranges.insert(info.id, info);
        Ok(overlapped)
    }

    /// Forgets a range (tombstoned, or merged away). Returns what the view held.
    pub fn remove_range(&mut self, id: RangeId) -> Option<RangeInfo> {
        let old = self.ranges.remove(&id)?;
        reindex(&mut self.nodes, &mut self.by_start, Some(&old), None);
        Some(old)
    }

    fn validate(&self, info: &RangeInfo) -> Result<(), ViewError> {
        let malformed = |reason| Err(ViewError::Malformed { range: info.id, reason });
        if info.has_end() && info.start_key >= info.end_key {
            return malformed("start_key is not below end_key");
        }
        for (i, replica) in info.replicas.iter().enumerate() {
            if !self.nodes.contains_key(&replica.node) {
                return Err(ViewError::UnknownNode { range: info.id, node: replica.node });
            }
            if info.replicas[..i].iter().any(|r| r.node == replica.node) {
                return malformed("two replicas on one node");
            }
        }
        if let Some(leader) = info.leader {
            let votes = info.replica(leader).is_some_and(|r| r.role != Role::Learner);
            if !votes {
                return malformed("leader is not a voter");
            }
        }
        if info.pending.iter().any(|n| !info.has_replica(*n)) {
            return malformed("pending replica not in the replica list");
        }
        Ok(())
    }

    /// Ranges other than `info.id` whose span overlaps `info`'s; errors if one is newer.
    fn overlapping(&self, info: &RangeInfo) -> Result<Vec<RangeId>, ViewError> {
        let upper = if info.has_end() { Bound::Excluded(info.end_key.as_slice()) } else { Bound::Unbounded };
        let mut out = Vec::new();
        for (_, &id) in self.by_start.range::<[u8], _>((Bound::Unbounded, upper)).rev() {
            if id == info.id {
                continue;
            }
            let other = &self.ranges[&id];
            if other.has_end() && other.end_key <= info.start_key {
                break;
            }
            if other.epoch.version > info.epoch.version {
                return Err(ViewError::OverlapsNewer { range: info.id, other: id });
            }
            out.push(id);
        }
        Ok(out)
    }
}

static EMPTY: std::sync::LazyLock<IdSet> = std::sync::LazyLock::new(IdSet::default);

/// Moves `old`'s contribution to the indexes over to `new` (either may be absent).
fn reindex(
    nodes: &mut BTreeMap<NodeId, NodeEntry>,
    by_start: &mut BTreeMap<Vec<u8>, RangeId>,
    old: Option<&RangeInfo>,
    new: Option<&RangeInfo>,
) {
    let id = old.or(new).map(|r| r.id).expect("reindex needs a range");
    if let Some(old) = old {
        for replica in &old.replicas {
            let entry = nodes.get_mut(&replica.node).expect("replica nodes are registered");
            entry.size_bytes -= old.size_bytes;
            if !new.is_some_and(|n| n.has_replica(replica.node)) {
                entry.replicas.remove(id);
            }
        }
        for node in &old.pending {
            nodes.get_mut(node).expect("registered").pending -= 1;
        }
        if let Some(leader) = old.leader
            && new.is_none_or(|n| n.leader != Some(leader))
        {
            nodes.get_mut(&leader).expect("registered").leaders.remove(id);
        }
        if new.is_none_or(|n| n.start_key != old.start_key) && by_start.get(&old.start_key) == Some(&id) {
            by_start.remove(&old.start_key);
        }
    }
    if let Some(new) = new {
        for replica in &new.replicas {
            let entry = nodes.get_mut(&replica.node).expect("validated");
            entry.size_bytes += new.size_bytes;
            entry.replicas.insert(id);
        }
        for node in &new.pending {
            nodes.get_mut(node).expect("validated").pending += 1;
        }
        if let Some(leader) = new.leader {
            nodes.get_mut(&leader).expect("validated").leaders.insert(id);
        }
        by_start.insert(new.start_key.clone(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_with_nodes(n: u64) -> ClusterView {
        let mut view = ClusterView::new();
        for id in 1..=n {
            view.put_node(NodeInfo::new(NodeId(id), BTreeMap::new(), 1 << 40, 0));
        }
        view
    }

    fn range(id: u64, start: &[u8], end: &[u8], version: u64, nodes: &[u64]) -> RangeInfo {
        RangeInfo {
            id: RangeId(id),
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            epoch: Epoch { version, conf_ver: 1 },
            replicas: nodes.iter().map(|n| Replica::voter(NodeId(*n))).collect(),
            leader: nodes.first().map(|n| NodeId(*n)),
            pending: Vec::new(),
            size_bytes: 10,
            keys: 1,
            write_bytes_per_sec: 0,
            write_keys_per_sec: 0,
            split_key_hint: None,
        }
    }

    #[test]
    fn indexes_follow_replica_and_leader_changes() {
        let mut view = view_with_nodes(4);
        view.put_range(range(1, b"a", b"m", 1, &[1, 2, 3])).unwrap();
        assert_eq!(view.replica_count(NodeId(1)), 1);
        assert_eq!(view.leader_count(NodeId(1)), 1);
        assert_eq!(view.node_size_bytes(NodeId(2)), 10);

        let mut moved = range(1, b"a", b"m", 1, &[2, 3, 4]);
        moved.epoch.conf_ver = 3;
        moved.pending = vec![NodeId(4)];
        moved.size_bytes = 20;
        view.put_range(moved).unwrap();
        assert_eq!(view.replica_count(NodeId(1)), 0);
        assert_eq!(view.leader_count(NodeId(1)), 0);
        assert_eq!(view.leader_count(NodeId(2)), 1);
        assert_eq!(view.pending_count(NodeId(4)), 1);
        assert_eq!(view.node_size_bytes(NodeId(2)), 20);
        assert_eq!(view.node_size_bytes(NodeId(1)), 0);
    }

    #[test]
    fn stale_epoch_is_rejected() {
        let mut view = view_with_nodes(3);
        let mut r = range(1, b"a", b"m", 2, &[1, 2, 3]);
        view.put_range(r.clone()).unwrap();
        r.epoch.version = 1;
        assert!(matches!(view.put_range(r), Err(ViewError::StaleEpoch { .. })));
    }

    #[test]
    fn merge_report_removes_covered_source_and_split_keeps_both() {
        let mut view = view_with_nodes(3);
        view.put_range(range(1, b"a", b"f", 1, &[1, 2, 3])).unwrap();
        view.put_range(range(2, b"f", b"m", 1, &[1, 2, 3])).unwrap();
        assert_eq!(view.next_range(view.range(RangeId(1)).unwrap()).unwrap().id, RangeId(2));
        assert_eq!(view.prev_range(view.range(RangeId(2)).unwrap()).unwrap().id, RangeId(1));

        // Range 2 absorbs range 1.
        let removed = view.put_range(range(2, b"a", b"m", 2, &[1, 2, 3])).unwrap();
        assert_eq!(removed, vec![RangeId(1)]);
        assert_eq!(view.range_count(), 1);
        assert_eq!(view.replica_count(NodeId(1)), 1);
        assert_eq!(view.range_at_key(b"b").unwrap().id, RangeId(2));

        // Split again: the original shrinks first, then the new range appears.
        view.put_range(range(2, b"a", b"g", 3, &[1, 2, 3])).unwrap();
        let removed = view.put_range(range(3, b"g", b"m", 3, &[1, 2, 3])).unwrap();
        assert!(removed.is_empty());
        assert_eq!(view.replica_count(NodeId(3)), 2);
    }

    #[test]
    fn overlap_with_newer_range_is_rejected() {
        let mut view = view_with_nodes(3);
        view.put_range(range(1, b"a", b"m", 5, &[1, 2, 3])).unwrap();
        let err = view.put_range(range(2, b"c", b"z", 4, &[1, 2, 3])).unwrap_err();
        assert_eq!(err, ViewError::OverlapsNewer { range: RangeId(2), other: RangeId(1) });
    }

    #[test]
    fn malformed_reports_are_rejected() {
        let mut view = view_with_nodes(3);
        let mut r = range(1, b"a", b"m", 1, &[1, 2, 2]);
        assert!(matches!(view.put_range(r.clone()), Err(ViewError::Malformed { .. })));
        r = range(1, b"a", b"m", 1, &[1, 2, 9]);
        assert!(matches!(view.put_range(r), Err(ViewError::UnknownNode { .. })));
        r = range(1, b"m", b"a", 1, &[1, 2, 3]);
        assert!(matches!(view.put_range(r), Err(ViewError::Malformed { .. })));
    }
}
