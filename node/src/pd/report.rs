//! CORE. [`Reporter`]: which of a node's led ranges go into its next heartbeat, and their
//! write rates.
//!
//! A range is reported when it is new to this reporter (this node just became its leader,
//! or the PD leader changed and asked for everything), when its descriptor or pending set
//! changed since the last report, and otherwise every `refresh_beats` heartbeats, so a busy
//! node does not resend an unchanged city's worth of ranges every second. At most
//! `ranges_per_beat_max` ranges go into one heartbeat; the rest stay due for the next.
//!
//! Invariants: the reporter holds state only for ranges this node led at the last call
//! (bounded by the node's replicas); rates come from the replica's monotonic write counters
//! and the `now_ms` passed in, never from a clock read here.

use rustc_hash::FxHashMap;

use super::message::RangeReport;
use crate::group::{GroupId, NodeId, PeerStatus, RangeDescriptor, Role};

/// What decides whether a range changed: its descriptor (bounds change only with the
/// epoch) and its pending replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shape {
    desc: RangeDescriptor,
    pending: Vec<NodeId>,
}

struct Tracked {
    shape: Option<Shape>,
    reported_beat: u64,
    sample_ms: u64,
    written_keys: u64,
    written_bytes: u64,
    keys_per_sec: u64,
    bytes_per_sec: u64,
}

/// Chooses the ranges of each heartbeat.
pub struct Reporter {
    refresh_beats: u64,
    ranges_per_beat_max: usize,
    beat: u64,
    tracked: FxHashMap<GroupId, Tracked>,
}

impl Reporter {
    /// A reporter that refreshes unchanged ranges every `refresh_beats` heartbeats.
    pub fn new(refresh_beats: u64, ranges_per_beat_max: usize) -> Self {
        Self {
            refresh_beats: refresh_beats.max(1),
            ranges_per_beat_max: ranges_per_beat_max.max(1),
            beat: 0,
            tracked: FxHashMap::default(),
        }
    }

    /// Forgets what was reported: the next heartbeats carry every led range (a new PD
    /// leader starts with an empty view).
    pub fn reset(&mut self) {
        for t in self.tracked.values_mut() {
            t.shape = None;
        }
    }

    /// The reports for the next heartbeat from `statuses` (this node's replicas, any role),
    /// skipping `exclude` (the PD's own group).
    pub fn next(&mut self, statuses: &[PeerStatus], exclude: GroupId, now_ms: u64) -> Vec<RangeReport> {
        self.beat += 1;
        let mut out = Vec::new();
        let mut led = FxHashMap::default();
        for s in statuses.iter().filter(|s| s.role == Role::Leader && s.group_id != exclude) {
            led.insert(s.group_id, ());
            let t = self.tracked.entry(s.group_id).or_insert(Tracked {
                shape: None,
                reported_beat: 0,
                sample_ms: now_ms,
                written_keys: s.written_keys,
                written_bytes: s.written_bytes,
                keys_per_sec: 0,
                bytes_per_sec: 0,
            });
            let elapsed = now_ms.saturating_sub(t.sample_ms);
            if elapsed >= 1000 || s.written_keys < t.written_keys {
                let per_sec = |d: u64| d.saturating_mul(1000) / elapsed.max(1);
                t.keys_per_sec = per_sec(s.written_keys.saturating_sub(t.written_keys));
                t.bytes_per_sec = per_sec(s.written_bytes.saturating_sub(t.written_bytes));
                t.sample_ms = now_ms;
                t.written_keys = s.written_keys;
                t.written_bytes = s.written_bytes;
            }
            let shape = Shape { desc: s.desc.clone(), pending: s.pending.clone() };
            let changed = t.shape.as_ref() != Some(&shape);
            let stale = self.beat.saturating_sub(t.reported_beat) >= self.refresh_beats;
            if (changed || stale) && out.len() < self.ranges_per_beat_max {
                out.push(RangeReport {
                    desc: shape.desc.clone(),
                    pending: shape.pending.clone(),
                    keys: s.keys,
                    size_bytes: s.size_bytes,
                    write_keys_per_sec: t.keys_per_sec,
                    write_bytes_per_sec: t.bytes_per_sec,
                });
                t.shape = Some(shape);
                t.reported_beat = self.beat;
            }
        }
        self.tracked.retain(|g, _| led.contains_key(g));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(group: GroupId, role: Role, written: u64) -> PeerStatus {
        PeerStatus {
            group_id: group,
            node_id: 1,
            role,
            term: 2,
            leader: Some(1),
            commit: 10,
            applied: 10,
            last_index: 10,
            truncated_index: 5,
            hibernated: false,
            desc: RangeDescriptor::new(group, vec![group as u8], vec![group as u8 + 1], &[1, 2, 3]),
            digest: 0,
            keys: 3,
            size_bytes: 30,
            written_keys: written,
            written_bytes: written * 10,
            pending: Vec::new(),
        }
    }

    #[test]
    fn reports_new_and_changed_ranges_then_refreshes_periodically() {
        let mut r = Reporter::new(3, 100);
        let mut s =
            vec![status(1, Role::Leader, 0), status(2, Role::Follower, 0), status(9, Role::Leader, 0)];
        let ids = |v: Vec<RangeReport>| v.into_iter().map(|r| r.desc.id).collect::<Vec<_>>();
        assert_eq!(ids(r.next(&s, 9, 0)), vec![1], "followers and the excluded group are not reported");
        assert!(r.next(&s, 9, 1000).is_empty(), "unchanged");
        s[0].pending = vec![3];
        assert_eq!(ids(r.next(&s, 9, 2000)), vec![1], "pending set changed");
        assert!(r.next(&s, 9, 3000).is_empty());
        assert!(r.next(&s, 9, 4000).is_empty());
        assert_eq!(ids(r.next(&s, 9, 5000)), vec![1], "periodic refresh");
        r.reset();
        assert_eq!(ids(r.next(&s, 9, 6000)), vec![1], "everything after a reset");
    }

    #[test]
    fn write_rates_come_from_counter_deltas() {
        let mut r = Reporter::new(1, 100);
        r.next(&[status(1, Role::Leader, 100)], 0, 0);
        let reports = r.next(&[status(1, Role::Leader, 300)], 0, 2000);
        assert_eq!(reports[0].write_keys_per_sec, 100);
        assert_eq!(reports[0].write_bytes_per_sec, 1000);
    }

    #[test]
    fn a_heartbeat_carries_at_most_the_cap_and_the_rest_stay_due() {
        let mut r = Reporter::new(100, 2);
        let s: Vec<PeerStatus> = (1..=5).map(|g| status(g, Role::Leader, 0)).collect();
        let mut seen = Vec::new();
        for beat in 0..3 {
            let batch = r.next(&s, 0, beat * 1000);
            assert!(batch.len() <= 2);
            seen.extend(batch.into_iter().map(|r| r.desc.id));
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    }
}
