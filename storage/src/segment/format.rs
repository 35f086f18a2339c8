//! CORE. Byte layouts of records, file headers and index entries, as specified in
//! `storage/FORMAT.md` (which is normative; keep the two in step). Pure functions over byte
//! slices: no IO.
//!
//! Invariants:
//! - every encoder has a decoder that returns exactly what was encoded (tested below);
//! - decoders never panic on arbitrary bytes: they check lengths and return a [`Reason`].

use crate::error::Reason;

/// Bytes of the header of `.log`, `.idx` and `.tidx` files.
pub(crate) const FILE_HEADER_LEN: usize = 32;
/// Bytes of the `.tpx` header.
pub(crate) const TOPIC_HEADER_LEN: usize = 64;
/// Bytes of a record's fixed header (before topic and payload).
pub(crate) const RECORD_HEADER_LEN: usize = 28;
/// Bytes of an `.idx` entry.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of a `.tidx` entry.
pub(crate) const TIME_ENTRY_LEN: usize = 12;
/// Bytes of a `.tpx` directory entry.
pub(crate) const TOPIC_DIR_ENTRY_LEN: usize = 16;
/// The format version of every file.
pub(crate) const VERSION: u16 = 1;
/// The byte at position 8 of every record.
pub(crate) const RECORD_MAGIC: u8 = 0xF1;
/// Header flag of a sealed index file.
pub(crate) const FLAG_SEALED: u16 = 1;
/// Header flag of a `.log` that reuses a deleted segment's file: after its records come the
/// stale bytes of the former segment, not zeros.
pub(crate) const FLAG_RECYCLED: u16 = 2;

/// The four kinds of segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Log,
    OffsetIndex,
    TimeIndex,
    TopicIndex,
}

impl FileKind {
    pub(crate) const fn magic(self) -> &'static [u8; 8] {
        match self {
            Self::Log => b"FLOT.LOG",
            Self::OffsetIndex => b"FLOT.IDX",
            Self::TimeIndex => b"FLOT.TIX",
            Self::TopicIndex => b"FLOT.TPX",
        }
    }

    pub(crate) const fn extension(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::OffsetIndex => "idx",
            Self::TimeIndex => "tidx",
            Self::TopicIndex => "tpx",
        }
    }

    /// Bytes of one entry, for the two fixed-width index kinds.
    pub(crate) const fn entry_len(self) -> usize {
        match self {
            Self::OffsetIndex => OFFSET_ENTRY_LEN,
            Self::TimeIndex => TIME_ENTRY_LEN,
            Self::Log | Self::TopicIndex => 0,
        }
    }
}

pub(crate) fn u16_at(b: &[u8], pos: usize) -> u16 {
    u16::from_le_bytes([b[pos], b[pos + 1]])
}

pub(crate) fn u32_at(b: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]])
}

pub(crate) fn u64_at(b: &[u8], pos: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&b[pos..pos + 8]);
    u64::from_le_bytes(le)
}

/// The 32-byte header of `.log`, `.idx` and `.tidx` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) kind: FileKind,
    pub(crate) flags: u16,
    pub(crate) entry_count: u32,
    pub(crate) base_offset: u64,
    pub(crate) entries_crc: u32,
}

impl FileHeader {
    /// The header of an active file (no count, no checksum).
    pub(crate) fn active(kind: FileKind, base_offset: u64) -> Self {
        Self { kind, flags: 0, entry_count: 0, base_offset, entries_crc: 0 }
    }

    pub(crate) fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..8].copy_from_slice(self.kind.magic());
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.entry_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header of `kind` whose file name says `base_offset`.
    pub(crate) fn decode(kind: FileKind, base_offset: u64, b: &[u8]) -> Result<Self, Reason> {
        if b.len() < FILE_HEADER_LEN {
            return Err(Reason::Truncated);
        }
        if &b[0..8] != kind.magic() {
            return Err(Reason::Magic);
        }
        // The version before the checksum: another version may lay the header out otherwise.
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(Reason::Version(version));
        }
        if crc32c::crc32c(&b[0..28]) != u32_at(b, 28) {
            return Err(Reason::HeaderChecksum);
        }
        let flags = u16_at(b, 10);
        let flags_known = if kind == FileKind::Log { FLAG_RECYCLED } else { FLAG_SEALED };
        if flags & !flags_known != 0 {
            return Err(Reason::Flags(flags));
        }
        let found = u64_at(b, 16);
        if found != base_offset {
            return Err(Reason::BaseOffset { expected: base_offset, found });
        }
        Ok(Self { kind, flags, entry_count: u32_at(b, 12), base_offset, entries_crc: u32_at(b, 24) })
    }

    pub(crate) fn sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }

    pub(crate) fn recycled(&self) -> bool {
        self.kind == FileKind::Log && self.flags & FLAG_RECYCLED != 0
    }
}

/// The fixed part of a record, as read from its first 28 bytes (not yet checksummed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) length: u32,
    pub(crate) topic_len: u16,
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: u64,
}

impl RecordHeader {
    /// Reads the header at the start of `b`, which holds at least [`RECORD_HEADER_LEN`] bytes.
    /// Checks the length, magic and attributes, not the checksum.
    pub(crate) fn decode(b: &[u8]) -> Result<Self, Reason> {
        let length = u32_at(b, 0);
        if (length as usize) < RECORD_HEADER_LEN {
            return Err(Reason::RecordLength(length));
        }
        if b[8] != RECORD_MAGIC {
            return Err(Reason::RecordMagic(b[8]));
        }
        if b[9] != 0 {
            return Err(Reason::Flags(u16::from(b[9])));
        }
        let topic_len = u16_at(b, 10);
        if RECORD_HEADER_LEN + usize::from(topic_len) > length as usize {
            return Err(Reason::RecordLength(length));
        }
        Ok(Self { length, topic_len, offset: u64_at(b, 12), timestamp_ms: u64_at(b, 20) })
    }
}

/// The checksum of an encoded record `r` (exactly `length` bytes).
pub(crate) fn record_crc(r: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&r[0..4]), &r[8..])
}

/// Encoded size of a record.
pub(crate) fn record_len(topic: &[u8], payload: &[u8]) -> u64 {
    (RECORD_HEADER_LEN + topic.len() + payload.len()) as u64
}

/// Appends one encoded record to `buf`. The caller checked the sizes.
pub(crate) fn encode_record(buf: &mut Vec<u8>, offset: u64, timestamp_ms: u64, topic: &[u8], payload: &[u8]) {
    let start = buf.len();
    let length = RECORD_HEADER_LEN + topic.len() + payload.len();
    debug_assert!(u32::try_from(length).is_ok());
    debug_assert!(u16::try_from(topic.len()).is_ok());
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&(length as u32).to_le_bytes());
    header[8] = RECORD_MAGIC;
    header[10..12].copy_from_slice(&(topic.len() as u16).to_le_bytes());
    header[12..20].copy_from_slice(&offset.to_le_bytes());
    header[20..28].copy_from_slice(&timestamp_ms.to_le_bytes());
    buf.reserve(length);
    buf.extend_from_slice(&header);
    buf.extend_from_slice(topic);
    buf.extend_from_slice(payload);
    let crc = record_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record, borrowed from the log's memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's offset.
    pub offset: u64,
    /// The timestamp the writer gave it.
    pub timestamp_ms: u64,
    /// The topic.
    pub topic: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// Encoded size of the record in the log.
    pub fn encoded_len(&self) -> u64 {
        record_len(self.topic, self.payload)
    }
}

/// Decodes and fully checks the record at the start of `b` (which may continue past it).
/// `expected_offset` is the offset that belongs at this place.
pub(crate) fn decode_record(b: &[u8], expected_offset: u64) -> Result<RecordRef<'_>, Reason> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(Reason::RecordLength(if b.len() >= 4 { u32_at(b, 0) } else { 0 }));
    }
    let h = RecordHeader::decode(b)?;
    let len = h.length as usize;
    if len > b.len() {
        return Err(Reason::RecordLength(h.length));
    }
    let r = &b[..len];
    if record_crc(r) != u32_at(r, 4) {
        return Err(Reason::RecordChecksum);
    }
    if h.offset != expected_offset {
        return Err(Reason::Offset { expected: expected_offset, found: h.offset });
    }
    let topic_end = RECORD_HEADER_LEN + usize::from(h.topic_len);
    Ok(RecordRef {
        offset: h.offset,
        timestamp_ms: h.timestamp_ms,
        topic: &r[RECORD_HEADER_LEN..topic_end],
        payload: &r[topic_end..],
    })
}

/// Encodes an `.idx` entry.
pub(crate) fn offset_entry(rel_offset: u32, position: u32) -> [u8; OFFSET_ENTRY_LEN] {
    let mut b = [0u8; OFFSET_ENTRY_LEN];
    b[0..4].copy_from_slice(&rel_offset.to_le_bytes());
    b[4..8].copy_from_slice(&position.to_le_bytes());
    b
}

/// Encodes a `.tidx` entry.
pub(crate) fn time_entry(timestamp_ms: u64, rel_offset: u32) -> [u8; TIME_ENTRY_LEN] {
    let mut b = [0u8; TIME_ENTRY_LEN];
    b[0..8].copy_from_slice(&timestamp_ms.to_le_bytes());
    b[8..12].copy_from_slice(&rel_offset.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, 7, b"fleet/v1/telemetry", b"{\"speed\":50}");
        let r = decode_record(&buf, 42).unwrap();
        assert_eq!((r.offset, r.timestamp_ms), (42, 7));
        assert_eq!(r.topic, b"fleet/v1/telemetry");
        assert_eq!(r.payload, b"{\"speed\":50}");
        assert_eq!(r.encoded_len(), buf.len() as u64);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&bad, 42).is_err(), "flipped bit {bit} went unnoticed");
        }
    }

    #[test]
    fn record_with_other_offset_is_rejected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, 0, b"", b"");
        assert_eq!(decode_record(&buf, 6), Err(Reason::Offset { expected: 6, found: 5 }));
    }

    #[test]
    fn file_header_round_trips_and_rejects_other_kind_or_base() {
        let h = FileHeader {
            kind: FileKind::OffsetIndex,
            flags: FLAG_SEALED,
            entry_count: 3,
            base_offset: 9,
            entries_crc: 77,
        };
        let b = h.encode();
        assert_eq!(FileHeader::decode(FileKind::OffsetIndex, 9, &b), Ok(h));
        assert_eq!(FileHeader::decode(FileKind::TimeIndex, 9, &b), Err(Reason::Magic));
        assert_eq!(
            FileHeader::decode(FileKind::OffsetIndex, 8, &b),
            Err(Reason::BaseOffset { expected: 8, found: 9 })
        );
        let mut bad = b;
        bad[13] ^= 1;
        assert_eq!(FileHeader::decode(FileKind::OffsetIndex, 9, &bad), Err(Reason::HeaderChecksum));
        assert_eq!(FileHeader::decode(FileKind::OffsetIndex, 9, &b[..31]), Err(Reason::Truncated));
    }
}
