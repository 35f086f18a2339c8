//! CORE. The range table every node keeps: key -> range (descriptor, epoch) and leader hint,
//! TiKV's region cache. It is fed by the placement driver (a full table with a version,
//! pushed when it changes), by this node's own replicas, and corrected by the replies of
//! requests (`NotLeader` moves the hint, `EpochNotMatch` brings newer descriptors).
//!
//! Invariants: entries never overlap; an entry is replaced only by descriptors at least as
//! new (a higher `epoch.version` wins where spans overlap; at equal versions the newer
//! report wins), so a stale report cannot bring back a range a split already cut.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::group::{GroupId, NodeId, RangeDescriptor};

/// One range as the table knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeEntry {
    /// The range.
    pub desc: RangeDescriptor,
    /// The node believed to lead it.
    pub leader: Option<NodeId>,
}

impl RangeEntry {
    /// Nodes to try, the leader hint first, then the voters.
    pub fn candidates(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self.leader.into_iter().collect();
        for &v in self.desc.voters.iter().chain(&self.desc.outgoing) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

/// The key -> range map.
#[derive(Clone, Debug, Default)]
pub struct RangeTable {
    /// By start key.
    by_start: BTreeMap<Vec<u8>, RangeEntry>,
    /// The placement driver's table version this table last took in full (0: none).
    pd_version: u64,
}

impl RangeTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The range holding `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<&RangeEntry> {
        let (_, entry) =
            self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        entry.desc.contains_key(key).then_some(entry)
    }

    /// The range with id `group`.
    pub fn get(&self, group: GroupId) -> Option<&RangeEntry> {
        self.by_start.values().find(|e| e.desc.id == group)
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Every range, by start key.
    pub fn entries(&self) -> impl Iterator<Item = &RangeEntry> + '_ {
        self.by_start.values()
    }

    /// The placement driver's version of the table last taken in full.
    pub fn pd_version(&self) -> u64 {
        self.pd_version
    }

    /// Learns `desc` (and its leader, if known). Refused (false) if an overlapping entry is
    /// newer; otherwise every overlapping entry is replaced.
    pub fn learn(&mut self, desc: RangeDescriptor, leader: Option<NodeId>) -> bool {
        let overlapping = self.overlapping(&desc.start, &desc.end);
        for start in &overlapping {
            let e = &self.by_start[start];
            let same = e.desc.id == desc.id;
            if e.desc.epoch.version > desc.epoch.version
                || (same
                    && e.desc.epoch.version == desc.epoch.version
                    && e.desc.epoch.conf_ver > desc.epoch.conf_ver)
            {
                return false;
            }
        }
        let mut leader = leader;
        for start in overlapping {
            if let Some(old) = self.by_start.remove(&start)
                && leader.is_none()
                && old.desc.id == desc.id
            {
                leader = old.leader.filter(|l| desc.has_member(*l));
            }
        }
        self.by_start.insert(desc.start.clone(), RangeEntry { desc, leader });
        true
    }

    /// Replaces the whole table with the placement driver's, at `version`; entries this node
    /// knows to be newer (from replies after the driver's snapshot was taken) are kept.
    pub fn replace(&mut self, version: u64, ranges: Vec<(RangeDescriptor, Option<NodeId>)>) {
        let old = std::mem::take(&mut self.by_start);
        for (desc, leader) in ranges {
            self.learn(desc, leader);
        }
        for (_, e) in old {
            self.learn(e.desc, e.leader);
        }
        self.pd_version = version;
    }

    /// `group`'s leader is (believed to be) `leader`.
    pub fn set_leader(&mut self, group: GroupId, leader: Option<NodeId>) {
        if let Some(e) = self.by_start.values_mut().find(|e| e.desc.id == group) {
            e.leader = leader.filter(|l| e.desc.has_member(*l));
        }
    }

    /// Forgets `group` (it was removed, or answered that the key is not its own).
    pub fn forget(&mut self, group: GroupId) {
        self.by_start.retain(|_, e| e.desc.id != group);
    }

    /// Start keys of the entries overlapping `[start, end)` (empty `end` = unbounded).
    fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        // The entry starting at or before `start` may reach into the span.
        if let Some((k, e)) =
            self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(start))).next_back()
            && (e.desc.end.is_empty() || e.desc.end.as_slice() > start)
        {
            out.push(k.clone());
        }
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        for (k, _) in self.by_start.range::<[u8], _>((Bound::Excluded(start), upper)) {
            out.push(k.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn desc(id: GroupId, start: &[u8], end: &[u8], version: u64) -> RangeDescriptor {
        let mut d = RangeDescriptor::new(id, start.to_vec(), end.to_vec(), &[1, 2, 3]);
        d.epoch.version = version;
        d
    }

    #[test]
    fn split_replaces_parent_and_stale_reports_are_refused() {
        let mut t = RangeTable::new();
        assert!(t.learn(desc(1, b"a", b"z", 1), Some(2)));
        assert_eq!(t.lookup(b"m").map(|e| e.desc.id), Some(1));
        assert_eq!(t.lookup(b"z"), None);
        // The split: left keeps [a, m), right [m, z), both version 2.
        assert!(t.learn(desc(1, b"a", b"m", 2), None));
        assert_eq!(t.lookup(b"a").and_then(|e| e.leader), Some(2), "same range keeps its leader hint");
        assert_eq!(t.lookup(b"q"), None, "the old span beyond the split is forgotten");
        assert!(t.learn(desc(7, b"m", b"z", 2), Some(3)));
        assert_eq!(t.lookup(b"q").map(|e| e.desc.id), Some(7));
        // A stale report of the parent must not come back.
        assert!(!t.learn(desc(1, b"a", b"z", 1), Some(1)));
        assert_eq!(t.lookup(b"q").map(|e| e.desc.id), Some(7));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(7).map(RangeEntry::candidates), Some(vec![3, 1, 2]));
    }

    #[test]
    fn pd_table_replaces_but_keeps_newer_entries() {
        let mut t = RangeTable::new();
        t.learn(desc(1, b"a", b"m", 3), Some(1));
        t.replace(5, vec![(desc(1, b"a", b"z", 2), Some(2)), (desc(9, b"z", b"", 1), None)]);
        assert_eq!(t.pd_version(), 5);
        assert_eq!(t.lookup(b"b").map(|e| e.desc.epoch.version), Some(3));
        assert_eq!(t.lookup(b"q"), None, "the driver's older parent does not cover the split-off half");
        assert_eq!(t.lookup(b"zz").map(|e| e.desc.id), Some(9));
    }

    proptest! {
        /// Whatever order descriptors arrive in, entries never overlap and every key maps
        /// to the newest descriptor covering it.
        #[test]
        fn entries_never_overlap(cuts in proptest::collection::vec((0u8..50, 0u8..50, 1u64..6), 1..40)) {
            let mut t = RangeTable::new();
            for (i, (a, b, v)) in cuts.into_iter().enumerate() {
                let (lo, hi) = (a.min(b), a.max(b).saturating_add(1));
                t.learn(desc(i as u64, &[lo], &[hi], v), None);
            }
            let entries: Vec<&RangeEntry> = t.entries().collect();
            for w in entries.windows(2) {
                prop_assert!(w[0].desc.end.as_slice() <= w[1].desc.start.as_slice());
            }
            for k in 0u8..52 {
                if let Some(e) = t.lookup(&[k]) {
                    prop_assert!(e.desc.contains_key(&[k]));
                }
            }
        }
    }
}
