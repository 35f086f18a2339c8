//! Reading through the maps: by offset ([`SegmentLog::read_from`]), by topic
//! ([`SegmentLog::read_topics`]) and by time ([`SegmentLog::offset_for_time`]).
//!
//! Every record returned has had its checksum and offset verified; records skipped on the way
//! (other topics, or before the target offset) are hopped over by their length field, so
//! their payloads are not read. Anything inconsistent is `Error::Corruption` naming the file
//! and byte position; bounds are checked before every slice, so damage never panics.

use crate::env::{File, FileSystem};
use crate::error::{Reason, Result};
use crate::segment::SegmentLog;
use crate::segment::file::{Segment, Topics, corrupt};
use crate::segment::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN, RecordHeader, RecordRef, decode_record};
use crate::segment::topic_index::RelOffsets;

/// Which topics a read wants.
enum Select<'q> {
    /// These exact names, sorted and without duplicates.
    Topics(&'q [&'q [u8]]),
    /// Names starting with `prefix` that `matches` accepts.
    Matching { prefix: &'q [u8], matches: &'q dyn Fn(&[u8]) -> bool },
}

impl<F: FileSystem> SegmentLog<F> {
    /// Records from `offset` on, in offset order, until their encoded size would pass
    /// `bytes_max` (at least one record is returned if any exists, so a reader always makes
    /// progress). Below [`start_offset`](Self::start_offset), reading starts there (those
    /// records were deleted by retention); at or past the end, the result is empty.
    pub fn read_from(&self, offset: u64, bytes_max: u64) -> Result<Vec<RecordRef<'_>>> {
        self.check_poisoned()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut offset = offset.max(self.start_offset());
        for seg in &self.segments[self.segment_for(offset)..] {
            if offset >= seg.next_offset {
                continue;
            }
            let mut pos = seg.position_of(offset)?;
            while offset < seg.next_offset {
                let r = seg.record_at(pos, offset)?;
                let len = r.encoded_len();
                if !out.is_empty() && bytes + len > bytes_max {
                    return Ok(out);
                }
                bytes += len;
                out.push(r);
                pos += len;
                offset += 1;
            }
        }
        Ok(out)
    }

    /// The records of `topics` (exact topic names, duplicates ignored) from `from_offset` on,
    /// in offset order, until their encoded size would pass `bytes_max` (at least one record
    /// if any matches). Continue from the last returned offset + 1. Uses the per-segment topic
    /// index: the payloads of other topics are never read.
    pub fn read_topics(
        &self,
        topics: &[&[u8]],
        from_offset: u64,
        bytes_max: u64,
    ) -> Result<Vec<RecordRef<'_>>> {
        let mut topics = topics.to_vec();
        topics.sort_unstable();
        topics.dedup();
        self.read_selected(&Select::Topics(&topics), from_offset, bytes_max)
    }

    /// The records whose topic starts with `prefix` and satisfies `matches` (a topic filter
    /// with wildcards: `prefix` is its literal part up to the first wildcard, `matches` the
    /// whole test), from `from_offset` on, in offset order, bounded like
    /// [`read_topics`](Self::read_topics). Each segment's topic index is walked from
    /// `prefix` only, and `matches` sees each of its topics once; payloads of other topics
    /// are never read.
    pub fn read_matching(
        &self,
        prefix: &[u8],
        matches: &dyn Fn(&[u8]) -> bool,
        from_offset: u64,
        bytes_max: u64,
    ) -> Result<Vec<RecordRef<'_>>> {
        self.read_selected(&Select::Matching { prefix, matches }, from_offset, bytes_max)
    }

    /// The records of the topics `select` picks, merged in offset order.
    fn read_selected(
        &self,
        select: &Select<'_>,
        from_offset: u64,
        bytes_max: u64,
    ) -> Result<Vec<RecordRef<'_>>> {
        self.check_poisoned()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let from = from_offset.max(self.start_offset());
        for seg in &self.segments[self.segment_for(from)..] {
            if from >= seg.next_offset {
                continue;
            }
            let from_rel = (from.max(seg.base_offset) - seg.base_offset) as u32;
            // One cursor per selected topic that has records here: (topic, list, next index).
            let mut lists: Vec<_> = seg
                .topic_lists(select)?
                .into_iter()
                .map(|(topic, list)| {
                    let i = list.lower_bound(from_rel);
                    (topic, list, i)
                })
                .collect();
            let mut cursor = None;
            loop {
                let next =
                    lists.iter_mut().filter(|(_, l, i)| *i < l.len()).min_by_key(|(_, l, i)| l.get(*i));
                let Some((topic, list, i)) = next else { break };
                let offset = seg.base_offset + u64::from(list.get(*i));
                *i += 1;
                if offset >= seg.next_offset {
                    return Err(corrupt(seg.topics_path(), 0, Some(offset), Reason::IndexEntry));
                }
                let pos = seg.seek(cursor, offset)?;
                let r = seg.record_at(pos, offset)?;
                if r.topic != *topic {
                    return Err(corrupt(seg.topics_path(), 0, Some(offset), Reason::TopicMismatch));
                }
                let len = r.encoded_len();
                if !out.is_empty() && bytes + len > bytes_max {
                    return Ok(out);
                }
                bytes += len;
                out.push(r);
                cursor = Some((pos + len, offset + 1));
            }
        }
        Ok(out)
    }

    /// The first offset whose record's timestamp is `>= timestamp_ms`, or `None` if every
    /// record is older. With non-monotonic timestamps this is still the lowest such offset.
    pub fn offset_for_time(&self, timestamp_ms: u64) -> Result<Option<u64>> {
        self.check_poisoned()?;
        for seg in &self.segments {
            if seg.ts_max_ms.is_some_and(|m| m >= timestamp_ms)
                && let Some(offset) = seg.first_at_or_after(timestamp_ms)?
            {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// Index of the segment holding `offset` (the last one if `offset` is past the end).
    fn segment_for(&self, offset: u64) -> usize {
        self.segments.partition_point(|s| s.next_offset <= offset).min(self.segments.len() - 1)
    }
}

impl<Fl: File> Segment<Fl> {
    /// The file to name when the topic index is wrong (the `.log` while it is in memory).
    fn topics_path(&self) -> &std::path::Path {
        match self.topics {
            Topics::Active(_) => &self.paths.log,
            Topics::Sealed(_) => &self.paths.topics,
        }
    }

    fn topic_list(&self, topic: &[u8]) -> Result<Option<RelOffsets<'_>>> {
        match &self.topics {
            Topics::Active(t) => Ok(t.get(topic).map(RelOffsets::Memory)),
            Topics::Sealed(t) => t.get(topic, &self.paths.topics),
        }
    }

    /// The topics `select` picks that have records here, with their lists.
    fn topic_lists<'s>(&'s self, select: &Select<'s>) -> Result<Vec<(&'s [u8], RelOffsets<'s>)>> {
        match *select {
            Select::Topics(topics) => {
                let mut out = Vec::with_capacity(topics.len());
                for &topic in topics {
                    if let Some(list) = self.topic_list(topic)? {
                        out.push((topic, list));
                    }
                }
                Ok(out)
            }
            Select::Matching { prefix, matches } => {
                let found: Vec<(&[u8], RelOffsets<'_>)> = match &self.topics {
                    Topics::Active(t) => {
                        t.with_prefix(prefix).map(|(n, l)| (n, RelOffsets::Memory(l))).collect()
                    }
                    Topics::Sealed(t) => t.with_prefix(prefix, &self.paths.topics)?,
                };
                Ok(found.into_iter().filter(|(name, _)| matches(name)).collect())
            }
        }
    }

    /// The fixed header of the record at `pos`, bounds-checked, checksum not verified.
    fn header_at(&self, pos: u64) -> Result<RecordHeader> {
        let log = self.log_bytes();
        let bad = |reason| corrupt(&self.paths.log, pos, None, reason);
        let start = usize::try_from(pos).unwrap_or(usize::MAX);
        let b = log
            .get(start..)
            .filter(|b| b.len() >= RECORD_HEADER_LEN)
            .ok_or_else(|| bad(Reason::Truncated))?;
        let h = RecordHeader::decode(b).map_err(bad)?;
        if h.length as usize > b.len() {
            return Err(bad(Reason::RecordLength(h.length)));
        }
        Ok(h)
    }

    /// The verified record `offset` at `pos`.
    pub(crate) fn record_at(&self, pos: u64, offset: u64) -> Result<RecordRef<'_>> {
        let start = usize::try_from(pos).unwrap_or(usize::MAX);
        let b = self.log_bytes().get(start..).unwrap_or(&[]);
        decode_record(b, offset).map_err(|reason| corrupt(&self.paths.log, pos, Some(offset), reason))
    }

    /// Position of record `offset` (which this segment holds), from the sparse index.
    pub(crate) fn position_of(&self, offset: u64) -> Result<u64> {
        self.seek(None, offset)
    }

    /// Position of record `offset`, hopping from `cursor` (a position and the offset of the
    /// record there) when the index cannot get closer.
    fn seek(&self, cursor: Option<(u64, u64)>, offset: u64) -> Result<u64> {
        assert!(offset >= self.base_offset);
        assert!(offset < self.next_offset);
        self.offsets.check(&self.paths.offsets)?;
        let rel = (offset - self.base_offset) as u32;
        let bad = || corrupt(&self.paths.offsets, FILE_HEADER_LEN as u64, Some(offset), Reason::IndexEntry);
        let (rel_entry, pos_entry) = self.offsets.offset_floor(rel).ok_or_else(bad)?;
        if u64::from(pos_entry) < FILE_HEADER_LEN as u64 || u64::from(pos_entry) >= self.data_end {
            return Err(bad());
        }
        let from_index = (u64::from(pos_entry), self.base_offset + u64::from(rel_entry));
        let (mut pos, mut at) = match cursor {
            Some(c) if c.1 <= offset && c.1 >= from_index.1 => c,
            _ => from_index,
        };
        while at < offset {
            let h = self.header_at(pos)?;
            if h.offset != at {
                return Err(corrupt(
                    &self.paths.log,
                    pos,
                    Some(at),
                    Reason::Offset { expected: at, found: h.offset },
                ));
            }
            pos += u64::from(h.length);
            at += 1;
        }
        Ok(pos)
    }

    /// The first offset in this segment whose timestamp is `>= timestamp_ms`.
    pub(crate) fn first_at_or_after(&self, timestamp_ms: u64) -> Result<Option<u64>> {
        self.times.check(&self.paths.times)?;
        // The last index point whose running maximum is below the target: no record up to it
        // qualifies, and the next index point's running maximum does, so at most one index
        // interval is scanned.
        let (mut offset, mut pos) = match self.times.time_floor_before(timestamp_ms) {
            Some(rel) => {
                let offset = self.base_offset + u64::from(rel);
                if offset >= self.next_offset {
                    return Err(corrupt(
                        &self.paths.times,
                        FILE_HEADER_LEN as u64,
                        Some(offset),
                        Reason::IndexEntry,
                    ));
                }
                let pos = self.position_of(offset)?;
                (offset + 1, pos + u64::from(self.header_at(pos)?.length))
            }
            None => (self.base_offset, FILE_HEADER_LEN as u64),
        };
        while offset < self.next_offset {
            let h = self.header_at(pos)?;
            if h.timestamp_ms >= timestamp_ms {
                self.record_at(pos, offset)?;
                return Ok(Some(offset));
            }
            pos += u64::from(h.length);
            offset += 1;
        }
        Ok(None)
    }
}
