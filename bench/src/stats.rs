//! CORE. What a run measures and how the pieces from several workers add up.
//!
//! - [`Latency`]: an HDR histogram of microseconds (3 significant digits, up to 10 minutes),
//!   shipped between processes as `(value, count)` pairs and merged exactly.
//! - [`SeqSet`]: the sequence numbers received on one stream, as a bitmap; union across
//!   workers counts the overlap as duplicates.
//! - [`Tracker`]: one `SeqSet` per stream `(slot, publisher)`. A *slot* is one logical
//!   receiver: a single client, or a set of clients that together should see each message
//!   once (the vehicles of the point-to-point pattern, the members of a shared subscription).
//!
//! Invariants: `unique` of a stream equals the number of set bits; every insert either sets a
//! new bit or counts one duplicate, so `unique + dups` equals the number of inserts.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histogram tracks, in microseconds (larger values saturate).
const LATENCY_MAX_US: u64 = 600_000_000;

/// Sequence numbers at or above this are treated as corrupt (the bitmap would be huge).
pub const SEQ_MAX: u64 = 1 << 28;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Bounds and precision are constants within range: creation cannot fail.
        Self(Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).unwrap_or_else(|_| unreachable!()))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides; `add` only fails when `other` does not fit.
        let _ = self.0.add(&other.0);
    }

    /// The summary figures reported for a run.
    pub fn percentiles(&self) -> Percentiles {
        let h = &self.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |p: f64| h.value_at_quantile(p);
        Percentiles {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max(),
        }
    }

    /// The serializable form.
    pub fn to_wire(&self) -> LatencyWire {
        let counts = self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        LatencyWire { counts }
    }

    /// Rebuilds a histogram from its serializable form.
    pub fn from_wire(w: &LatencyWire) -> Self {
        let mut h = Self::default();
        for &(value, count) in &w.counts {
            let _ = h.0.record_n(value.clamp(1, LATENCY_MAX_US), count);
        }
        h
    }
}

/// A histogram as `(highest equivalent value, count)` pairs: exact at its precision.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LatencyWire {
    /// Recorded buckets.
    pub counts: Vec<(u64, u64)>,
}

/// Latency summary of a run, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// Received sequence numbers of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    unique: u64,
    dups: u64,
    reordered: u64,
    last: Option<u64>,
}

/// What [`SeqSet::insert`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time this sequence number arrived.
    New,
    /// It had arrived before.
    Duplicate,
    /// Out of the trackable range.
    Corrupt,
}

impl SeqSet {
    /// Records `seq`. `ordered`: the stream travels one path (one publisher connection to
    /// one subscriber connection), so a lower sequence number than the last is a reordering.
    pub fn insert(&mut self, seq: u64, ordered: bool) -> Seen {
        if seq >= SEQ_MAX {
            return Seen::Corrupt;
        }
        if ordered && self.last.is_some_and(|l| seq < l) {
            self.reordered += 1;
        }
        self.last = Some(seq);
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if w >= self.words.len() {
            // Grow geometrically: streams fill from 0 upwards.
            let len = (w + 1).max(self.words.len() * 2).max(4);
            self.words.resize(len, 0);
        }
        if self.words[w] & bit != 0 {
            self.dups += 1;
            return Seen::Duplicate;
        }
        self.words[w] |= bit;
        self.unique += 1;
        Seen::New
    }

    /// Whether `seq` has arrived.
    pub fn contains(&self, seq: u64) -> bool {
        self.words.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Arrivals of an already received sequence number.
    pub fn dups(&self) -> u64 {
        self.dups
    }

    /// Arrivals with a lower sequence number than the one before.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Union with `other`; sequence numbers present in both count as duplicates.
    pub fn merge(&mut self, other: &Self) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut overlap = 0u64;
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            overlap += u64::from((*a & b).count_ones());
            *a |= b;
        }
        self.unique += other.unique - overlap;
        self.dups += other.dups + overlap;
        self.reordered += other.reordered;
    }

    /// The serializable form: sorted inclusive ranges, or a hex bitmap when that is shorter.
    pub fn to_wire(&self) -> SeqSetWire {
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for (i, &word) in self.words.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                let bit = u64::from(w.trailing_zeros());
                w &= w - 1;
                let seq = i as u64 * 64 + bit;
                match ranges.last_mut() {
                    Some(r) if r[1] + 1 == seq => r[1] = seq,
                    _ => ranges.push([seq, seq]),
                }
            }
            // Ranges cost about 16 characters each in JSON, a bitmap 16 per word.
            if ranges.len() > self.words.len() {
                let hex = self.words.iter().map(|w| format!("{w:016x}")).collect();
                return self.wire(None, Some(hex));
            }
        }
        self.wire(Some(ranges), None)
    }

    fn wire(&self, ranges: Option<Vec<[u64; 2]>>, bitmap_hex: Option<String>) -> SeqSetWire {
        SeqSetWire { ranges, bitmap_hex, dups: self.dups, reordered: self.reordered }
    }

    /// Rebuilds a set from its serializable form.
    pub fn from_wire(w: &SeqSetWire) -> Result<Self, WireError> {
        let mut set = Self { dups: w.dups, reordered: w.reordered, ..Self::default() };
        if let Some(hex) = &w.bitmap_hex {
            if hex.len() % 16 != 0 || hex.len() / 16 > (SEQ_MAX / 64) as usize {
                return Err(WireError("bitmap length"));
            }
            for chunk in hex.as_bytes().chunks(16) {
                let s = std::str::from_utf8(chunk).map_err(|_| WireError("bitmap text"))?;
                let word = u64::from_str_radix(s, 16).map_err(|_| WireError("bitmap digit"))?;
                set.unique += u64::from(word.count_ones());
                set.words.push(word);
            }
        }
        for &[lo, hi] in w.ranges.iter().flatten() {
            if lo > hi || hi >= SEQ_MAX {
                return Err(WireError("range"));
            }
            let need = (hi / 64 + 1) as usize;
            if need > set.words.len() {
                set.words.resize(need, 0);
            }
            for seq in lo..=hi {
                let (i, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                if set.words[i] & bit == 0 {
                    set.words[i] |= bit;
                    set.unique += 1;
                }
            }
        }
        Ok(set)
    }
}

/// A malformed serialized set (from a worker that is not this version of the harness).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed sequence set: {0}")]
pub struct WireError(&'static str);

/// Serializable [`SeqSet`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeqSetWire {
    /// Inclusive ranges of received sequence numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<[u64; 2]>>,
    /// Bitmap words, 16 hex digits each, bit `n` of word `w` is sequence `64 w + n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmap_hex: Option<String>,
    /// Duplicates seen inside the worker.
    pub dups: u64,
    /// Out-of-order arrivals seen inside the worker.
    pub reordered: u64,
}

/// Identifies a stream: messages of one publisher as seen by one logical receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    /// The logical receiver.
    pub slot: u64,
    /// Global index of the publisher.
    pub publisher: u32,
}

/// Loss and duplicate accounting over every stream.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    streams: HashMap<StreamKey, SeqSet>,
}

/// Totals of a [`Tracker`].
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tally {
    /// Distinct messages received, summed over streams.
    pub unique: u64,
    /// Duplicate arrivals.
    pub dups: u64,
    /// Out-of-order arrivals.
    pub reordered: u64,
    /// Streams.
    pub streams: u64,
}

impl Tracker {
    /// Records the arrival of `seq` from `publisher` at `slot` (see [`SeqSet::insert`] for
    /// `ordered`).
    pub fn insert(&mut self, slot: u64, publisher: u32, seq: u64, ordered: bool) -> Seen {
        self.streams.entry(StreamKey { slot, publisher }).or_default().insert(seq, ordered)
    }

    /// The set of one stream.
    pub fn stream(&self, slot: u64, publisher: u32) -> Option<&SeqSet> {
        self.streams.get(&StreamKey { slot, publisher })
    }

    /// Adds every stream of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (k, s) in &other.streams {
            self.streams.entry(*k).or_default().merge(s);
        }
    }

    /// Totals over all streams.
    pub fn tally(&self) -> Tally {
        let mut t = Tally { streams: self.streams.len() as u64, ..Tally::default() };
        for s in self.streams.values() {
            t.unique += s.unique;
            t.dups += s.dups;
            t.reordered += s.reordered;
        }
        t
    }

    /// The serializable form.
    pub fn to_wire(&self) -> Vec<(StreamKey, SeqSetWire)> {
        let mut v: Vec<_> = self.streams.iter().map(|(k, s)| (*k, s.to_wire())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Rebuilds a tracker from its serializable form.
    pub fn from_wire(w: &[(StreamKey, SeqSetWire)]) -> Result<Self, WireError> {
        let mut t = Self::default();
        for (k, s) in w {
            t.streams.entry(*k).or_default().merge(&SeqSet::from_wire(s)?);
        }
        Ok(t)
    }
}

/// Loss accounting for a run: what should have arrived against what did.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accounting {
    /// Deliveries the scenario expected (messages sent times their intended receivers).
    pub expected: u64,
    /// Distinct deliveries observed.
    pub unique: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of a message its receiver already had.
    pub duplicates: u64,
    /// Distinct deliveries beyond the expected number (misrouted or stale messages).
    pub unexpected: u64,
    /// Deliveries that arrived out of order within their stream.
    pub reordered: u64,
}

impl Accounting {
    /// Compares `expected` deliveries with a tracker's totals.
    pub fn new(expected: u64, tally: Tally) -> Self {
        Self {
            expected,
            unique: tally.unique,
            lost: expected.saturating_sub(tally.unique),
            duplicates: tally.dups,
            unexpected: tally.unique.saturating_sub(expected),
            reordered: tally.reordered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_counts_unique_dups_and_reorders() {
        let mut s = SeqSet::default();
        for seq in [0, 1, 2, 2, 5, 3, 0] {
            s.insert(seq, true);
        }
        assert_eq!(s.unique(), 5);
        assert_eq!(s.dups(), 2);
        assert_eq!(s.reordered(), 2);
        assert!(s.contains(5) && !s.contains(4));
        assert_eq!(s.insert(SEQ_MAX, true), Seen::Corrupt);
    }

    #[test]
    fn merge_counts_overlap_as_duplicates() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        (0..100).for_each(|i| {
            a.insert(i, true);
        });
        (50..300).for_each(|i| {
            b.insert(i, true);
        });
        a.merge(&b);
        assert_eq!(a.unique(), 300);
        assert_eq!(a.dups(), 50);
    }

    #[test]
    fn wire_round_trip_in_both_encodings() {
        let mut contiguous = SeqSet::default();
        (0..10_000).for_each(|i| {
            contiguous.insert(i, true);
        });
        let w = contiguous.to_wire();
        assert_eq!(w.ranges.as_deref(), Some(&[[0, 9_999]][..]));
        assert_eq!(SeqSet::from_wire(&w).map(|s| s.unique()), Ok(10_000));

        let mut sparse = SeqSet::default();
        (0..10_000).filter(|i| i % 3 == 0).for_each(|i| {
            sparse.insert(i, true);
        });
        sparse.insert(3, true);
        let w = sparse.to_wire();
        assert!(w.bitmap_hex.is_some());
        let back = SeqSet::from_wire(&w).unwrap_or_default();
        assert_eq!(back.unique(), sparse.unique());
        assert_eq!(back.dups(), 1);
        assert!(back.contains(9_999) && !back.contains(9_998));
    }

    #[test]
    fn tracker_wire_merge_and_accounting() {
        let mut a = Tracker::default();
        let mut b = Tracker::default();
        for seq in 0..10 {
            a.insert(0, 1, seq, true);
            b.insert(0, 1, seq + 5, true);
            b.insert(7, 2, seq, true);
        }
        let mut merged = Tracker::from_wire(&a.to_wire()).unwrap_or_default();
        merged.merge(&Tracker::from_wire(&b.to_wire()).unwrap_or_default());
        let t = merged.tally();
        assert_eq!((t.unique, t.dups, t.streams), (25, 5, 2));
        let acc = Accounting::new(30, t);
        assert_eq!((acc.lost, acc.duplicates, acc.unexpected), (5, 5, 0));
    }

    #[test]
    fn latency_wire_round_trip_is_exact() {
        let mut h = Latency::default();
        for us in [3, 50, 50, 900, 12_345, 2_000_000] {
            h.record_us(us);
        }
        let back = Latency::from_wire(&h.to_wire());
        assert_eq!(back.percentiles(), h.percentiles());
        let mut m = Latency::default();
        m.merge(&back);
        m.merge(&h);
        assert_eq!(m.count(), 12);
    }
}
