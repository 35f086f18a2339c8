//! CORE. [`IdSet`]: the per-node index of ranges (all replicas, or only leaders) that the view keeps
//! up to date on every heartbeat, so schedulers can sample a node's ranges in O(1) instead of
//! scanning 100 000 ranges.
//!
//! Invariant: `pos[ids[i]] == i` for every `i`, and `ids` holds no duplicates. Order depends
//! only on the sequence of inserts and removes, so sampling with a seeded rng is reproducible.

use rand::Rng;
use rustc_hash::FxHashMap;

use crate::view::RangeId;

/// A set of range ids with O(1) insert, remove, membership and uniform random sampling.
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    ids: Vec<RangeId>,
    pos: FxHashMap<RangeId, u32>,
}

impl IdSet {
    /// Number of ranges in the set.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// True if `id` is in the set.
    pub fn contains(&self, id: RangeId) -> bool {
        self.pos.contains_key(&id)
    }

    /// The id at slot `index` (slots are dense: `0..len()`); for cursor-style sweeps.
    pub fn get(&self, index: usize) -> Option<RangeId> {
        self.ids.get(index).copied()
    }

    /// The ids, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = RangeId> + '_ {
        self.ids.iter().copied()
    }

    /// A uniformly random member, or `None` if empty.
    pub fn sample(&self, rng: &mut impl Rng) -> Option<RangeId> {
        if self.ids.is_empty() {
            return None;
        }
        self.get(rng.random_range(0..self.ids.len()))
    }

    pub(crate) fn insert(&mut self, id: RangeId) -> bool {
        if self.pos.contains_key(&id) {
            return false;
        }
        let slot = u32::try_from(self.ids.len()).expect("fewer than 2^32 ranges per node");
        self.pos.insert(id, slot);
        self.ids.push(id);
        true
    }

    pub(crate) fn remove(&mut self, id: RangeId) -> bool {
        let Some(slot) = self.pos.remove(&id) else {
            return false;
        };
        let slot = slot as usize;
        self.ids.swap_remove(slot);
        if let Some(&moved) = self.ids.get(slot) {
            self.pos.insert(moved, slot as u32);
        }
        debug_assert_eq!(self.ids.len(), self.pos.len());
        true
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn insert_remove_keeps_positions_consistent() {
        let mut set = IdSet::default();
        for i in 0..10 {
            assert!(set.insert(RangeId(i)));
        }
        assert!(!set.insert(RangeId(3)));
        assert!(set.remove(RangeId(3)));
        assert!(!set.remove(RangeId(3)));
        assert!(set.remove(RangeId(9)));
        assert_eq!(set.len(), 8);
        for (slot, id) in set.iter().enumerate() {
            assert_eq!(set.pos[&id] as usize, slot);
        }
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..100 {
            let id = set.sample(&mut rng).expect("non-empty");
            assert!(set.contains(id));
        }
    }
}
