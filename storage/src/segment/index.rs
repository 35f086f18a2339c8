//! CORE (over mapped bytes). The sparse offset index (`.idx`) and time index (`.tidx`) of a
//! segment: which records become index points, and lookups by binary search over the map.
//!
//! Invariants:
//! - [`IndexPoints`] is the only place that decides index points, used by appends and by the
//!   recovery scan alike, so a rebuilt index equals the one written by appends;
//! - both files have one entry per index point, in the same order; relative offsets and
//!   positions strictly increase, time index timestamps never decrease (a running maximum);
//! - a sealed index is checked against its `entries_crc` once, lazily, before its first use.

use std::path::Path;
use std::sync::OnceLock;

use crate::env::Map;
use crate::error::{Error, Reason, Result};
use crate::segment::format::{
    FILE_HEADER_LEN, FileKind, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN, offset_entry, time_entry, u32_at, u64_at,
};

/// Decides which records are index points and what their time entry says.
#[derive(Debug, Clone)]
pub(crate) struct IndexPoints {
    interval_bytes: u64,
    last_point_pos: Option<u64>,
    ts_max_ms: Option<u64>,
}

impl IndexPoints {
    pub(crate) fn new(interval_bytes: u32) -> Self {
        Self { interval_bytes: u64::from(interval_bytes), last_point_pos: None, ts_max_ms: None }
    }

    /// Observes the next record of the segment (at `position`, `rel_offset` from the base);
    /// returns its `.idx` and `.tidx` entries if it is an index point.
    pub(crate) fn observe(
        &mut self,
        rel_offset: u32,
        position: u64,
        timestamp_ms: u64,
    ) -> Option<([u8; OFFSET_ENTRY_LEN], [u8; TIME_ENTRY_LEN])> {
        let ts_max = self.ts_max_ms.map_or(timestamp_ms, |m| m.max(timestamp_ms));
        self.ts_max_ms = Some(ts_max);
        if self.last_point_pos.is_some_and(|last| position - last < self.interval_bytes) {
            return None;
        }
        self.last_point_pos = Some(position);
        debug_assert!(u32::try_from(position).is_ok());
        Some((offset_entry(rel_offset, position as u32), time_entry(ts_max, rel_offset)))
    }

    /// An upper bound on the index points a batch of `records` records and `bytes` bytes adds.
    pub(crate) fn points_max(&self, records: usize, bytes: u64) -> u64 {
        (records as u64).min(bytes / self.interval_bytes + 1)
    }

    /// Largest timestamp seen so far.
    pub(crate) fn ts_max_ms(&self) -> Option<u64> {
        self.ts_max_ms
    }
}

/// Where an index's entries live: in memory while the segment is active (the file holds only
/// its header until the seal writes them, so appends cost no index `pwrite`), in the file's
/// map once sealed.
#[derive(Debug)]
enum Entries {
    Memory(Vec<u8>),
    Mapped(Map),
}

/// One index file's entries: `[32, 32 + count * entry_len)` of the file once sealed.
#[derive(Debug)]
pub(crate) struct IndexFile {
    kind: FileKind,
    entries: Entries,
    count: u32,
    /// The sealed header's `entries_crc`; meaningless while active.
    crc: u32,
    /// Set once the entries were checked against `crc` (true) or failed (false).
    verified: OnceLock<bool>,
}

impl IndexFile {
    /// The index of the active segment, held in memory: trusted.
    pub(crate) fn active(kind: FileKind, entries: Vec<u8>) -> Self {
        debug_assert_eq!(entries.len() % kind.entry_len(), 0);
        let count = (entries.len() / kind.entry_len()) as u32;
        Self { kind, entries: Entries::Memory(entries), count, crc: 0, verified: OnceLock::from(true) }
    }

    /// A sealed index read from disk; checked on first use.
    pub(crate) fn sealed(kind: FileKind, map: Map, count: u32, crc: u32) -> Self {
        Self { kind, entries: Entries::Mapped(map), count, crc, verified: OnceLock::new() }
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Appends entries to an active index.
    pub(crate) fn push(&mut self, entries: &[u8]) {
        debug_assert_eq!(entries.len() % self.kind.entry_len(), 0);
        match &mut self.entries {
            Entries::Memory(v) => v.extend_from_slice(entries),
            Entries::Mapped(_) => unreachable!("only an active index grows"),
        }
        self.count += (entries.len() / self.kind.entry_len()) as u32;
    }

    /// Makes this index sealed and already verified (this process wrote it).
    pub(crate) fn seal_written(&mut self, map: Map, crc: u32) {
        self.entries = Entries::Mapped(map);
        self.crc = crc;
        self.verified = OnceLock::from(true);
    }

    /// The entries, back to back.
    pub(crate) fn entries(&self) -> &[u8] {
        match &self.entries {
            Entries::Memory(v) => v,
            Entries::Mapped(map) => {
                let end = FILE_HEADER_LEN + self.count as usize * self.kind.entry_len();
                map.get(FILE_HEADER_LEN..end).unwrap_or(&[])
            }
        }
    }

    /// Fails with `Corruption` if the (sealed) entries do not match their checksum.
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        let ok = *self.verified.get_or_init(|| {
            let entries = self.entries();
            entries.len() == self.count as usize * self.kind.entry_len()
                && crc32c::crc32c(entries) == self.crc
        });
        if ok {
            Ok(())
        } else {
            Err(Error::Corruption {
                file: path.to_owned(),
                position: FILE_HEADER_LEN as u64,
                offset: None,
                reason: Reason::IndexChecksum,
            })
        }
    }

    fn entry(&self, i: usize) -> &[u8] {
        let w = self.kind.entry_len();
        &self.entries()[i * w..(i + 1) * w]
    }

    /// `.idx`: the last entry whose relative offset is `<= rel_offset`, as (relative offset,
    /// position).
    pub(crate) fn offset_floor(&self, rel_offset: u32) -> Option<(u32, u32)> {
        debug_assert_eq!(self.kind, FileKind::OffsetIndex);
        let n = self.entries().len() / OFFSET_ENTRY_LEN;
        let i = partition_point(n, |i| u32_at(self.entry(i), 0) <= rel_offset);
        let e = self.entry(i.checked_sub(1)?);
        Some((u32_at(e, 0), u32_at(e, 4)))
    }

    /// `.tidx`: the relative offset of the last entry whose timestamp is `< timestamp_ms`.
    pub(crate) fn time_floor_before(&self, timestamp_ms: u64) -> Option<u32> {
        debug_assert_eq!(self.kind, FileKind::TimeIndex);
        let n = self.entries().len() / TIME_ENTRY_LEN;
        let i = partition_point(n, |i| u64_at(self.entry(i), 0) < timestamp_ms);
        Some(u32_at(self.entry(i.checked_sub(1)?), 8))
    }

    /// The first entry, for sanity checks on open.
    pub(crate) fn first(&self) -> Option<&[u8]> {
        (self.count > 0).then(|| self.entry(0))
    }
}

/// The number of leading indexes in `0..n` for which `pred` holds (`pred` must be true on a
/// prefix and false after it).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_record_is_always_an_index_point_then_every_interval() {
        let mut p = IndexPoints::new(100);
        assert!(p.observe(0, 32, 5).is_some());
        assert!(p.observe(1, 82, 3).is_none());
        let (o, t) = p.observe(2, 132, 4).unwrap();
        assert_eq!(o, offset_entry(2, 132));
        assert_eq!(t, time_entry(5, 2), "the time entry carries the running maximum");
        assert_eq!(p.ts_max_ms(), Some(5));
    }

    #[test]
    fn partition_point_finds_the_boundary() {
        for n in 0..10 {
            for k in 0..=n {
                assert_eq!(partition_point(n, |i| i < k), k);
            }
        }
    }
}
