//! The crate's error type.
//!
//! One enum, because every operation of the log can hit the same few failure classes and a
//! caller acts on the class, not on the operation: retry later ([`Error::Io`] with
//! `ENOSPC`), stop and reopen ([`Error::Poisoned`]), call an operator ([`Error::Corruption`]),
//! or fix its own input (the rest). Expected states, such as reading past the end, are
//! values, not errors.

use std::io;
use std::path::PathBuf;

/// What a failed operation means for the caller; see the variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed. `op` names the operation, `file` the file (or directory).
    #[error("{op} {}: {source}", file.display())]
    Io {
        /// The operation, for example `"fdatasync"` or `"fallocate"`.
        op: &'static str,
        /// The file or directory it was applied to.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file holds bytes that cannot be what this crate wrote. Never skipped silently; open
    /// the log with [`RecoveryMode::Repair`](crate::RecoveryMode::Repair) to cut it off.
    #[error("corrupt {} at byte {position}{}: {reason}", file.display(), offset_suffix(*offset))]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte position in `file` where the damage was found (a record's first byte, or the
        /// header or entry that failed).
        position: u64,
        /// The offset of the record expected at `position`, when known.
        offset: Option<u64>,
        /// What is wrong.
        reason: Reason,
    },
    /// An earlier write, sync or seal failed, so the state on disk is unknown. Every later
    /// operation fails with this; drop the log and reopen it to run recovery.
    #[error("the log is poisoned by an earlier failed write or sync; reopen it to recover")]
    Poisoned,
    /// Another `SegmentLog` (in this or another process) has the directory open.
    #[error("{} is locked by another open log", dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// The configuration breaks a rule; the message says which.
    #[error("invalid log config: {0}")]
    Config(&'static str),
    /// A record is larger than `LogConfig::record_bytes_max`.
    #[error("record of {bytes} bytes exceeds record_bytes_max = {bytes_max}")]
    RecordTooLarge {
        /// Encoded size of the record.
        bytes: u64,
        /// The configured limit.
        bytes_max: u32,
    },
    /// A topic is longer than [`TOPIC_BYTES_MAX`](crate::TOPIC_BYTES_MAX).
    #[error("topic of {bytes} bytes exceeds {} bytes", crate::TOPIC_BYTES_MAX)]
    TopicTooLong {
        /// Length of the topic.
        bytes: usize,
    },
    /// A batch is too large to fit in one segment (positions are 32-bit).
    #[error("batch of {bytes} bytes cannot fit in one segment")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
    },
    /// A reset to an offset before the log's end (records are never renumbered).
    #[error("cannot reset the log to offset {offset}: it already ends at {next_offset}")]
    ResetBackwards {
        /// The offset asked for.
        offset: u64,
        /// The log's next offset.
        next_offset: u64,
    },
}

fn offset_suffix(offset: Option<u64>) -> String {
    offset.map_or_else(String::new, |o| format!(" (offset {o})"))
}

impl Error {
    /// True if this is an I/O error caused by a full disk (`ENOSPC`): free space (for example
    /// with `retain`) and retry; the log is not poisoned by it unless a write hit it.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }

    pub(crate) fn io(op: &'static str, file: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let file = file.into();
        move |source| Self::Io { op, file, source }
    }
}

/// Why bytes were judged corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The file is shorter than its header or than what its header announces.
    #[error("file too short")]
    Truncated,
    /// The magic bytes are not the ones for this kind of file.
    #[error("bad magic")]
    Magic,
    /// A format version this build does not know.
    #[error("unknown format version {0}")]
    Version(u16),
    /// Unknown flag or attribute bits are set.
    #[error("unknown flags {0:#x}")]
    Flags(u16),
    /// The header's own checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The base offset in a header differs from the one in the file name.
    #[error("base offset {found} does not match the file name ({expected})")]
    BaseOffset {
        /// From the file name.
        expected: u64,
        /// From the header.
        found: u64,
    },
    /// A record's length field is impossible.
    #[error("bad record length {0}")]
    RecordLength(u32),
    /// A record does not start with the record magic byte.
    #[error("bad record magic {0:#x}")]
    RecordMagic(u8),
    /// A record's checksum does not match its bytes.
    #[error("record checksum mismatch")]
    RecordChecksum,
    /// A record holds another offset than the one expected at its place.
    #[error("expected offset {expected}, found {found}")]
    Offset {
        /// The offset that belongs at this position.
        expected: u64,
        /// The offset the record holds.
        found: u64,
    },
    /// Segments do not cover one contiguous range of offsets.
    #[error("offset gap: expected a segment starting at {expected}, found {found}")]
    Gap {
        /// The previous segment's next offset.
        expected: u64,
        /// This segment's base offset.
        found: u64,
    },
    /// An index file's checksum does not match its entries.
    #[error("index checksum mismatch")]
    IndexChecksum,
    /// An index entry points outside its segment or breaks the index's order.
    #[error("index entry out of range")]
    IndexEntry,
    /// The topic index lists a record under another topic than the record's own.
    #[error("topic index disagrees with the record's topic")]
    TopicMismatch,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
