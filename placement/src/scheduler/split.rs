//! CORE. Split checker-scheduler: splits a candidate range (a suspect from a heartbeat, or
//! the patrol's slice) when it is over the size or key threshold of its keyspace (at the
//! middle, chosen by the leader), or over the write-load threshold (at the leader's hot-key
//! hint when it lies strictly inside the range, else the middle).
//!
//! A split needs a leader and a live quorum, nothing else: splitting does not move data.

use rand::rngs::SmallRng;

use super::{ScheduleContext, Scheduler};
use crate::operator::{OpClass, OpKind, SplitPolicy, build};
use crate::view::RangeInfo;

/// Size, key-count and load split.
#[derive(Debug, Clone, Copy, Default)]
pub struct Split;

impl Scheduler for Split {
    fn name(&self) -> &'static str {
        "split"
    }

    fn schedule(&mut self, cx: &mut ScheduleContext<'_>, _rng: &mut SmallRng) {
        let budget = cx.config().ops_per_scheduler_round_max;
        let mut admitted = 0;
        for &id in cx.candidates {
            let Some(range) = cx.view.range(id) else { continue };
            if cx.is_busy(id) || range.leader.is_none() || !range.has_quorum(|n| cx.nodes.is_up(n)) {
                continue;
            }
            let Some((kind, policy)) = split_reason(cx, range) else { continue };
            if admitted >= budget || !cx.controller().class_free(OpClass::Split) {
                cx.defer(id);
                continue;
            }
            if cx.admit(build::split(kind, range, policy, cx.now_ms)).is_ok() {
                admitted += 1;
            }
        }
    }
}

/// Why and where `range` should split, if it should.
pub fn split_reason(cx: &ScheduleContext<'_>, range: &RangeInfo) -> Option<(OpKind, SplitPolicy)> {
    let limits = cx.config().limits_for(&range.start_key);
    if range.size_bytes > limits.split_size_bytes || range.keys > limits.split_keys {
        return Some((OpKind::SplitSize, SplitPolicy::Middle));
    }
    let hot = range.write_bytes_per_sec > limits.load_split_write_bytes_per_sec
        || range.write_keys_per_sec > limits.load_split_write_keys_per_sec;
    if !hot {
        return None;
    }
    let policy = match &range.split_key_hint {
        Some(key) if key.as_slice() > range.start_key.as_slice() && range.contains_key(key) => {
            SplitPolicy::AtKey(key.clone())
        }
        _ => SplitPolicy::Middle,
    };
    Some((OpKind::SplitLoad, policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Step;
    use crate::scheduler::testkit::{MIB, key, range, run, view, zone_config};

    #[test]
    fn splits_big_and_hot_ranges_only() {
        let mut v = view(&["a", "b", "c"]);
        let mut big = range(1, &[1, 2, 3]);
        big.size_bytes = 100 * MIB;
        let mut hot = range(2, &[1, 2, 3]);
        hot.write_bytes_per_sec = 40 * MIB;
        hot.split_key_hint = Some([key(2), vec![7]].concat());
        let mut hot_bad_hint = range(3, &[1, 2, 3]);
        hot_bad_hint.write_keys_per_sec = 5_000;
        hot_bad_hint.split_key_hint = Some(key(3));
        for r in [big, hot, hot_bad_hint, range(4, &[1, 2, 3])] {
            v.put_range(r).unwrap();
        }
        let (_, ops) = run(&v, zone_config(), Box::new(Split), 0);
        let summary: Vec<_> = ops.iter().map(|o| (o.range.0, o.kind, o.steps[0].clone())).collect();
        assert_eq!(
            summary,
            vec![
                (1, OpKind::SplitSize, Step::Split { policy: SplitPolicy::Middle }),
                (
                    2,
                    OpKind::SplitLoad,
                    Step::Split { policy: SplitPolicy::AtKey([key(2), vec![7]].concat()) }
                ),
                (3, OpKind::SplitLoad, Step::Split { policy: SplitPolicy::Middle }),
            ]
        );
    }
}
