//! CORE. Split-merge protection (PD `split-merge-interval`): for a while after a split, the
//! ranges it produced and the boundary it cut are not merged, so a load split is not undone
//! by the merge checker the moment the load dips.
//!
//! Invariant: an entry protects until its expiry time; re-protecting extends, never shortens.
//! Expired entries are dropped by [`SplitProtection::expire`] in expiry order (expiries are
//! pushed in non-decreasing order because the interval is fixed and `now_ms` does not go back).

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use crate::view::RangeId;

#[derive(Debug, Clone)]
enum Protected {
    Range(RangeId),
    Boundary(Vec<u8>),
}

/// Ranges and boundaries recently produced by splits.
#[derive(Debug, Clone, Default)]
pub struct SplitProtection {
    ranges: FxHashMap<RangeId, u64>,
    boundaries: BTreeMap<Vec<u8>, u64>,
    queue: VecDeque<(u64, Protected)>,
}

impl SplitProtection {
    /// Protects `range` until `until_ms`.
    pub fn protect_range(&mut self, range: RangeId, until_ms: u64) {
        let entry = self.ranges.entry(range).or_default();
        *entry = (*entry).max(until_ms);
        self.queue.push_back((until_ms, Protected::Range(range)));
    }

    /// Protects the split boundary `key` until `until_ms`.
    pub fn protect_boundary(&mut self, key: Vec<u8>, until_ms: u64) {
        let entry = self.boundaries.entry(key.clone()).or_default();
        *entry = (*entry).max(until_ms);
        self.queue.push_back((until_ms, Protected::Boundary(key)));
    }

    /// True if `range` may not be merged at `now_ms`.
    pub fn is_range_protected(&self, range: RangeId, now_ms: u64) -> bool {
        self.ranges.get(&range).is_some_and(|&until| now_ms < until)
    }

    /// True if a merge across `key` may not happen at `now_ms`.
    pub fn is_boundary_protected(&self, key: &[u8], now_ms: u64) -> bool {
        self.boundaries.get(key).is_some_and(|&until| now_ms < until)
    }

    /// Number of live entries (ranges plus boundaries).
    pub fn len(&self) -> usize {
        self.ranges.len() + self.boundaries.len()
    }

    /// True if nothing is protected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries that expired by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while self.queue.front().is_some_and(|(until, _)| *until <= now_ms) {
            let Some((_, item)) = self.queue.pop_front() else { break };
            match item {
                Protected::Range(id) => {
                    if self.ranges.get(&id).is_some_and(|&until| until <= now_ms) {
                        self.ranges.remove(&id);
                    }
                }
                Protected::Boundary(key) => {
                    if self.boundaries.get(&key).is_some_and(|&until| until <= now_ms) {
                        self.boundaries.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_expires_and_extends() {
        let mut p = SplitProtection::default();
        p.protect_range(RangeId(1), 100);
        p.protect_boundary(b"k".to_vec(), 100);
        assert!(p.is_range_protected(RangeId(1), 99));
        assert!(p.is_boundary_protected(b"k", 99));
        p.protect_range(RangeId(1), 200);
        p.expire(150);
        assert!(p.is_range_protected(RangeId(1), 150));
        assert!(!p.is_boundary_protected(b"k", 150));
        p.expire(200);
        assert!(p.is_empty());
    }
}
