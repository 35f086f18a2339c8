//! CORE (over mapped bytes). The per-segment topic index: for each topic, the relative offsets
//! of its records, so a session replays only its topics without reading other payloads.
//!
//! The active segment keeps it in memory ([`ActiveTopics`]: the lists, a `BTreeMap` from topic
//! to list so sealing writes them in sorted order with no extra sort and iteration is
//! deterministic, and the last list used, so a run of records on one topic costs one byte
//! comparison each instead of a tree lookup). Sealing encodes it
//! into the `.tpx` file (layout in FORMAT.md section 6), which [`SealedTopics`] binary
//! searches over its map.
//!
//! Invariants:
//! - every record of the segment is in exactly one list, and each list ascends;
//! - a sealed `.tpx` body is checked against its `body_crc` once, lazily, before first use,
//!   and every lookup bounds-checks what it reads, so a damaged file yields `Corruption`,
//!   never a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use crate::env::Map;
use crate::error::{Error, Reason, Result};
use crate::segment::format::{
    FileKind, TOPIC_DIR_ENTRY_LEN, TOPIC_HEADER_LEN, VERSION, u16_at, u32_at, u64_at,
};

/// The `.tpx` header: also the seal record of its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicHeader {
    pub(crate) topic_count: u32,
    pub(crate) base_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) log_bytes: u64,
    pub(crate) ts_max_ms: u64,
    pub(crate) body_bytes: u64,
    pub(crate) body_crc: u32,
}

impl TopicHeader {
    pub(crate) fn encode(&self) -> [u8; TOPIC_HEADER_LEN] {
        let mut b = [0u8; TOPIC_HEADER_LEN];
        b[0..8].copy_from_slice(FileKind::TopicIndex.magic());
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.topic_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.log_bytes.to_le_bytes());
        b[40..48].copy_from_slice(&self.ts_max_ms.to_le_bytes());
        b[48..56].copy_from_slice(&self.body_bytes.to_le_bytes());
        b[56..60].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the header of a `.tpx` named after `base_offset`, including that
    /// the sizes it announces are consistent with a file of `file_len` bytes.
    pub(crate) fn decode(base_offset: u64, b: &[u8], file_len: u64) -> Result<Self, Reason> {
        if b.len() < TOPIC_HEADER_LEN {
            return Err(Reason::Truncated);
        }
        if &b[0..8] != FileKind::TopicIndex.magic() {
            return Err(Reason::Magic);
        }
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(Reason::Version(version));
        }
        if crc32c::crc32c(&b[0..60]) != u32_at(b, 60) {
            return Err(Reason::HeaderChecksum);
        }
        let flags = u16_at(b, 10);
        if flags != 0 {
            return Err(Reason::Flags(flags));
        }
        let h = Self {
            topic_count: u32_at(b, 12),
            base_offset: u64_at(b, 16),
            next_offset: u64_at(b, 24),
            log_bytes: u64_at(b, 32),
            ts_max_ms: u64_at(b, 40),
            body_bytes: u64_at(b, 48),
            body_crc: u32_at(b, 56),
        };
        if h.base_offset != base_offset {
            return Err(Reason::BaseOffset { expected: base_offset, found: h.base_offset });
        }
        let records = h.next_offset.checked_sub(h.base_offset).ok_or(Reason::IndexEntry)?;
        let body_min = u64::from(h.topic_count) * TOPIC_DIR_ENTRY_LEN as u64 + 4 * records;
        if records == 0 || records > u64::from(u32::MAX) || h.topic_count == 0 || body_min > h.body_bytes {
            return Err(Reason::IndexEntry);
        }
        if TOPIC_HEADER_LEN as u64 + h.body_bytes != file_len {
            return Err(Reason::Truncated);
        }
        Ok(h)
    }

    pub(crate) fn record_count(&self) -> u64 {
        self.next_offset - self.base_offset
    }
}

/// The topic index of the active segment.
#[derive(Debug, Default)]
pub(crate) struct ActiveTopics {
    /// Topic and relative offsets, in order of first appearance.
    lists: Vec<(Box<[u8]>, Vec<u32>)>,
    /// Topic to its index in `lists`.
    by_topic: BTreeMap<Box<[u8]>, usize>,
    /// Index in `lists` of the last topic pushed.
    last: usize,
}

impl ActiveTopics {
    pub(crate) fn push(&mut self, topic: &[u8], rel_offset: u32) {
        if let Some((name, list)) = self.lists.get_mut(self.last)
            && **name == *topic
        {
            list.push(rel_offset);
            return;
        }
        let i = match self.by_topic.get(topic) {
            Some(&i) => i,
            None => {
                self.by_topic.insert(topic.into(), self.lists.len());
                self.lists.push((topic.into(), Vec::new()));
                self.lists.len() - 1
            }
        };
        self.lists[i].1.push(rel_offset);
        self.last = i;
    }

    /// Pushes consecutive records, the first at `first_rel_offset`.
    pub(crate) fn push_batch<'a>(&mut self, topics: impl Iterator<Item = &'a [u8]>, first_rel_offset: u32) {
        for (i, topic) in topics.enumerate() {
            self.push(topic, first_rel_offset + i as u32);
        }
    }

    pub(crate) fn get(&self, topic: &[u8]) -> Option<&[u32]> {
        self.by_topic.get(topic).map(|&i| self.lists[i].1.as_slice())
    }

    /// The topics starting with `prefix` and their lists, in topic order.
    pub(crate) fn with_prefix<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u32])> {
        self.by_topic
            .range::<[u8], _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(_, &i)| (&*self.lists[i].0, self.lists[i].1.as_slice()))
    }

    /// The lists in topic order.
    fn sorted(&self) -> impl Iterator<Item = (&[u8], &[u32])> {
        self.by_topic.values().map(|&i| (&*self.lists[i].0, self.lists[i].1.as_slice()))
    }

    /// Encodes the whole `.tpx` file for a segment with these header fields (the counts and
    /// body fields are filled in here).
    pub(crate) fn encode(&self, mut header: TopicHeader) -> Vec<u8> {
        let count = self.lists.len();
        let names_bytes: usize = self.lists.iter().map(|(k, _)| k.len()).sum();
        let names_padded = names_bytes.next_multiple_of(4);
        let records: usize = self.lists.iter().map(|(_, l)| l.len()).sum();
        debug_assert_eq!(records as u64, header.next_offset - header.base_offset);
        let body_bytes = count * TOPIC_DIR_ENTRY_LEN + names_padded + 4 * records;
        let mut out = Vec::with_capacity(TOPIC_HEADER_LEN + body_bytes);
        out.resize(TOPIC_HEADER_LEN, 0);
        let (mut name_pos, mut list_start) = (0u32, 0u32);
        for (name, list) in self.sorted() {
            out.extend_from_slice(&name_pos.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&list_start.to_le_bytes());
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            name_pos += name.len() as u32;
            list_start += list.len() as u32;
        }
        for (name, _) in self.sorted() {
            out.extend_from_slice(name);
        }
        out.resize(out.len() + names_padded - names_bytes, 0);
        for (_, list) in self.sorted() {
            for rel in list {
                out.extend_from_slice(&rel.to_le_bytes());
            }
        }
        debug_assert_eq!(out.len(), TOPIC_HEADER_LEN + body_bytes);
        header.topic_count = count as u32;
        header.body_bytes = body_bytes as u64;
        header.body_crc = crc32c::crc32c(&out[TOPIC_HEADER_LEN..]);
        out[..TOPIC_HEADER_LEN].copy_from_slice(&header.encode());
        out
    }
}

/// The topic index of a sealed segment, over the map of its `.tpx`.
#[derive(Debug)]
pub(crate) struct SealedTopics {
    map: Map,
    header: TopicHeader,
    verified: OnceLock<bool>,
}

impl SealedTopics {
    /// `verified` is true when this process just wrote the file.
    pub(crate) fn new(map: Map, header: TopicHeader, verified: bool) -> Self {
        let cell = OnceLock::new();
        if verified {
            let _ = cell.set(true);
        }
        Self { map, header, verified: cell }
    }

    fn corrupt(path: &Path, position: usize, reason: Reason) -> Error {
        Error::Corruption { file: path.to_owned(), position: position as u64, offset: None, reason }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let ok = *self.verified.get_or_init(|| {
            self.map.len() as u64 == TOPIC_HEADER_LEN as u64 + self.header.body_bytes
                && crc32c::crc32c(&self.map[TOPIC_HEADER_LEN..]) == self.header.body_crc
        });
        if ok { Ok(()) } else { Err(Self::corrupt(path, TOPIC_HEADER_LEN, Reason::IndexChecksum)) }
    }

    /// The name of directory entry `i` (bounds-checked).
    fn name(&self, i: usize, path: &Path) -> Result<&[u8]> {
        let m = &self.map[..];
        let names_start = TOPIC_HEADER_LEN + self.header.topic_count as usize * TOPIC_DIR_ENTRY_LEN;
        let lists_start = m.len() - 4 * self.header.record_count() as usize;
        let e = TOPIC_HEADER_LEN + i * TOPIC_DIR_ENTRY_LEN;
        let start = names_start + u32_at(m, e) as usize;
        let end = start + usize::from(u16_at(m, e + 4));
        m.get(start..end.min(lists_start))
            .filter(|n| start + n.len() == end)
            .ok_or_else(|| Self::corrupt(path, e, Reason::IndexEntry))
    }

    /// The relative offsets of directory entry `i` (bounds-checked).
    fn list(&self, i: usize, path: &Path) -> Result<RelOffsets<'_>> {
        let m = &self.map[..];
        let lists_start = m.len() - 4 * self.header.record_count() as usize;
        let e = TOPIC_HEADER_LEN + i * TOPIC_DIR_ENTRY_LEN;
        let start = lists_start + 4 * u32_at(m, e + 8) as usize;
        let end = start + 4 * u32_at(m, e + 12) as usize;
        let list = m.get(start..end).ok_or_else(|| Self::corrupt(path, e, Reason::IndexEntry))?;
        Ok(RelOffsets::Mapped(list))
    }

    /// The first directory entry whose name is not below `key`.
    fn lower_bound(&self, key: &[u8], path: &Path) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.header.topic_count as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.name(mid, path)? < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The relative offsets of `topic`'s records, if it has any in this segment.
    pub(crate) fn get(&self, topic: &[u8], path: &Path) -> Result<Option<RelOffsets<'_>>> {
        self.check(path)?;
        let i = self.lower_bound(topic, path)?;
        if i < self.header.topic_count as usize && self.name(i, path)? == topic {
            return self.list(i, path).map(Some);
        }
        Ok(None)
    }

    /// The topics starting with `prefix` and their lists, in topic order.
    pub(crate) fn with_prefix(&self, prefix: &[u8], path: &Path) -> Result<Vec<(&[u8], RelOffsets<'_>)>> {
        self.check(path)?;
        let mut out = Vec::new();
        for i in self.lower_bound(prefix, path)?..self.header.topic_count as usize {
            let name = self.name(i, path)?;
            if !name.starts_with(prefix) {
                break;
            }
            out.push((name, self.list(i, path)?));
        }
        Ok(out)
    }
}

/// An ascending list of relative offsets, in memory or in a map.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RelOffsets<'a> {
    Memory(&'a [u32]),
    /// Little-endian `u32`s.
    Mapped(&'a [u8]),
}

impl RelOffsets<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Memory(l) => l.len(),
            Self::Mapped(b) => b.len() / 4,
        }
    }

    pub(crate) fn get(&self, i: usize) -> u32 {
        match self {
            Self::Memory(l) => l[i],
            Self::Mapped(b) => u32_at(b, 4 * i),
        }
    }

    /// Index of the first element `>= rel_offset`.
    pub(crate) fn lower_bound(&self, rel_offset: u32) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid) < rel_offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base: u64, records: u64) -> TopicHeader {
        TopicHeader {
            topic_count: 0,
            base_offset: base,
            next_offset: base + records,
            log_bytes: 100,
            ts_max_ms: 5,
            body_bytes: 0,
            body_crc: 0,
        }
    }

    #[test]
    fn encoded_header_decodes_and_announces_the_file_length() {
        let mut t = ActiveTopics::default();
        for (i, topic) in [&b"b"[..], b"a", b"abc", b"b"].iter().enumerate() {
            t.push(topic, i as u32);
        }
        let bytes = t.encode(header(10, 4));
        let h = TopicHeader::decode(10, &bytes, bytes.len() as u64).unwrap();
        assert_eq!((h.topic_count, h.record_count()), (3, 4));
        assert_eq!(h.body_crc, crc32c::crc32c(&bytes[TOPIC_HEADER_LEN..]));
        assert_eq!(TopicHeader::decode(10, &bytes, bytes.len() as u64 + 1), Err(Reason::Truncated));
        assert_eq!(
            TopicHeader::decode(11, &bytes, bytes.len() as u64),
            Err(Reason::BaseOffset { expected: 11, found: 10 })
        );
    }

    #[test]
    fn rel_offsets_lower_bound() {
        let l = RelOffsets::Memory(&[1, 3, 5]);
        assert_eq!([0, 1, 2, 3, 6].map(|x| l.lower_bound(x)), [0, 0, 1, 1, 3]);
    }
}
