//! CORE. Merge checker-scheduler (PD `merge_checker`): a candidate range that is small, has
//! few keys and is cold is merged into an adjacent neighbour (the smaller of the two that
//! qualify), after the merge operator has moved its replicas onto the neighbour's nodes.
//!
//! Rules, all required:
//! * both ranges healthy and idle, and in the same keyspace unless `merge_across_keyspaces`;
//! * neither range, nor the boundary between them, produced by a split within
//!   `split_merge_interval_ms` ([`crate::protection::SplitProtection`]);
//! * the merged range stays below the split thresholds (size, keys and write load), so the
//!   split checker does not cut it again at once.

use rand::rngs::SmallRng;

use super::{ScheduleContext, Scheduler};
use crate::operator::{OpClass, build};
use crate::view::RangeInfo;

/// Merge of small, cold neighbours.
#[derive(Debug, Clone, Copy, Default)]
pub struct Merge;

impl Scheduler for Merge {
    fn name(&self) -> &'static str {
        "merge"
    }

    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, _rng: &mut SmallRng) {
        let budget = cx.config().ops_per_scheduler_round_max;
        let mut admitted = 0;
        for &id in cx.candidates {
            let Some(source) = cx.view.range(id) else { continue };
            if !is_mergeable_source(cx, source) {
                continue;
            }
            if admitted >= budget || !cx.controller().class_free(OpClass::Merge) {
                cx.defer(id);
                continue;
            }
            let Some(target) = pick_target(cx, source) else {
                let neighbour_busy = [cx.view.prev_range(source), cx.view.next_range(source)]
                    .into_iter()
                    .flatten()
                    .any(|n| cx.is_busy(n.id));
                if neighbour_busy {
                    cx.defer(id);
                }
                continue;
            };
            let op = build::merge(source, target, |a, b| cx.nodes.shares_domain(a, b), cx.now_ms);
            if cx.admit(op).is_ok() {
                admitted += 1;
            }
        }
    }
}

/// Small, few keys, cold, healthy, idle and not protected.
pub fn is_mergeable_source(cx: &ScheduleContext<'_>, range: &RangeInfo) -> bool {
    let limits = cx.config().limits_for(&range.start_key);
    range.size_bytes < limits.merge_size_bytes_max
        && range.keys < limits.merge_keys_max
        && range.write_bytes_per_sec < limits.merge_write_bytes_per_sec_max
        && !cx.is_busy(range.id)
        && cx.is_healthy(range)
        && !cx.protection.is_range_protected(range.id, cx.now_ms)
}

/// The smaller qualifying neighbour of `source`.
fn pick_target<'v>(cx: &ScheduleContext<'v>, source: &RangeInfo) -> Option<&'v RangeInfo> {
    let prev = cx.view.prev_range(source).filter(|t| fits(cx, source, t, &source.start_key));
    let next = cx.view.next_range(source).filter(|t| fits(cx, source, t, &source.end_key));
    match (prev, next) {
        (Some(p), Some(n)) => Some(if n.size_bytes < p.size_bytes { n } else { p }),
        (p, n) => p.or(n),
    }
}

/// `target` may absorb `source` across `boundary`.
fn fits(cx: &ScheduleContext<'_>, source: &RangeInfo, target: &RangeInfo, boundary: &[u8]) -> bool {
    let limits = cx.config().limits_for(&source.start_key);
    let same_keyspace =
        cx.config().merge_across_keyspaces || source.start_key.first() == target.start_key.first();
    same_keyspace
        && source.size_bytes + target.size_bytes < limits.split_size_bytes
        && source.keys + target.keys < limits.split_keys
        && source.write_bytes_per_sec + target.write_bytes_per_sec < limits.load_split_write_bytes_per_sec
        && source.write_keys_per_sec + target.write_keys_per_sec < limits.load_split_write_keys_per_sec
        && !cx.is_busy(target.id)
        && cx.is_healthy(target)
        && !cx.protection.is_range_protected(target.id, cx.now_ms)
        && !cx.protection.is_boundary_protected(boundary, cx.now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Step;
    use crate::scheduler::testkit::{MIB, key, range, run, touch, view, zone_config};
    use crate::view::RangeId;

    fn small(id: u64, nodes: &[u64], size_mib: u64) -> RangeInfo {
        let mut r = range(id, nodes);
        r.size_bytes = size_mib * MIB;
        r.keys = 1_000;
        r
    }

    #[test]
    fn merges_small_range_into_smaller_neighbour_after_aligning_peers() {
        let mut v = view(&["a", "b", "c", "a", "b", "c"]);
        v.put_range(small(1, &[1, 2, 3], 10)).unwrap();
        v.put_range(small(2, &[4, 5, 6], 4)).unwrap();
        v.put_range(small(3, &[4, 5, 6], 8)).unwrap();
        let mut config = zone_config();
        config.merge_ops_max = 1;
        let (_, ops) = run(&v, config, Box::new(Merge), 0);
        assert_eq!(ops.len(), 1);
        let op = &ops[0];
        // Range 1's neighbour is 2; 2 and 3 would pick each other but the merge limit is 1.
        assert_eq!((op.range, op.related), (RangeId(1), Some(RangeId(2))));
        assert_eq!(op.steps.last(), Some(&Step::Merge { target: RangeId(2), target_version: 1 }));
        // Same-zone pairing: node 4 (zone a) replaces node 1 (zone a), which leads, so
        // leadership moves to 4 before 1 goes.
        assert_eq!(
            op.steps[..4],
            [
                Step::AddLearner { node: crate::view::NodeId(4) },
                Step::PromoteLearner { node: crate::view::NodeId(4) },
                Step::TransferLeader { from: crate::view::NodeId(1), to: crate::view::NodeId(4) },
                Step::RemovePeer { node: crate::view::NodeId(1) },
            ]
        );
    }

    #[test]
    fn no_merge_across_recent_split_boundary_or_keyspace_or_above_split_size() {
        let mut v = view(&["a", "b", "c"]);
        v.put_range(small(1, &[1, 2, 3], 10)).unwrap();
        v.put_range(small(2, &[1, 2, 3], 10)).unwrap();
        let mut coordinator =
            crate::Coordinator::with_schedulers(zone_config(), vec![Box::new(Merge)]).unwrap();
        coordinator.record_split(&[], key(2), 0);
        let interval_ms = zone_config().split_merge_interval_ms;
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        touch(&mut v, interval_ms - 1);
        assert!(coordinator.schedule(&v, interval_ms - 1, &mut rng).is_empty());
        touch(&mut v, interval_ms);
        assert_eq!(coordinator.schedule(&v, interval_ms, &mut rng).len(), 1);

        let mut v = view(&["a", "b", "c"]);
        v.put_range(small(1, &[1, 2, 3], 10)).unwrap();
        v.put_range(small(2, &[1, 2, 3], 60)).unwrap();
        let (_, ops) = run(&v, zone_config(), Box::new(Merge), 0);
        assert!(ops.is_empty(), "merged range would exceed the split size");

        let mut v = view(&["a", "b", "c"]);
        let mut left = small(1, &[1, 2, 3], 1);
        left.end_key = b"S".to_vec();
        left.start_key = b"Q".to_vec();
        let mut right = small(2, &[1, 2, 3], 1);
        right.start_key = b"S".to_vec();
        right.end_key = b"T".to_vec();
        v.put_range(left).unwrap();
        v.put_range(right).unwrap();
        let (_, ops) = run(&v, zone_config(), Box::new(Merge), 0);
        assert!(ops.is_empty(), "different keyspaces");
    }
}
