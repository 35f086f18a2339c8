//! Configuration of a [`SegmentLog`](crate::SegmentLog): typed, with defaults, validated once
//! by `SegmentLog::open`.
//!
//! Defaults follow ARCHITECTURE.md section 18: 256 MiB or 1 h segments, an index entry every
//! 4 KiB, index files of at most 10 MiB.

use crate::error::{Error, Result};
use crate::segment::format::{FILE_HEADER_LEN, OFFSET_ENTRY_LEN, RECORD_HEADER_LEN};

/// When appended records are made durable with `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every `append` syncs before it returns: what it returns is durable.
    EveryBatch,
    /// Group commit over time: `append` and `poll_sync` sync once the oldest unsynced record
    /// is `interval_ms` old (by the `now_ms` the caller passes). `poll_timeout` says when.
    Interval {
        /// Longest time a record may stay unsynced, in milliseconds.
        interval_ms: u64,
    },
}

/// What `SegmentLog::open` does with corruption it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Truncate torn tails, rebuild missing or inconsistent indexes, and fail with
    /// `Error::Corruption` on anything else. Trusts consistent sealed segments (their record
    /// checksums are verified when read).
    #[default]
    Strict,
    /// For operators (`--repair`): scan every segment, rebuild every index, and cut the log at
    /// the first corrupt record, deleting everything after it. The report says what was cut.
    Repair,
}

/// Which sealed segments `SegmentLog::retain` deletes, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Hard cap on the total size of the `.log` files: the oldest sealed segments are deleted
    /// until the log fits, even if a session still needs them (for that session, the data
    /// counts as expired).
    pub bytes_max: Option<u64>,
    /// A sealed segment whose newest record is older than this (by `now_ms`) is deleted once no
    /// session needs it (all its offsets are below the `needed_offset_min` passed to
    /// `retain`). `Some(0)` deletes as soon as nobody needs it; `None` never by age.
    pub age_ms_max: Option<u64>,
}

/// Configuration of one segment log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls when the next batch would not fit. At most 4 GiB (positions are 32-bit).
    /// A batch larger than this gets a segment of its own, sized to fit.
    pub segment_bytes_max: u32,
    /// A segment rolls on the first append at which its first record is this old.
    pub segment_age_ms_max: Option<u64>,
    /// Bytes of records between two index points (sparse offset and time index entries).
    pub index_interval_bytes: u32,
    /// Size of a segment's `.idx` file, header included; a full index rolls the segment. The
    /// `.tidx` holds the same number of entries.
    pub index_bytes_max: u32,
    /// Largest encoded record (28-byte header + topic + payload).
    pub record_bytes_max: u32,
    /// How many `.log` files of segments deleted by retention are kept as spares and reused
    /// for new segments. Overwriting blocks that are already written makes each `fdatasync` a
    /// pure data flush, without the unwritten-extent conversion a fresh `fallocate`d file
    /// costs (about 30% of an fsync on ext4). Each spare holds a segment's worth of disk,
    /// and the expired records in it until they are overwritten. 0 disables recycling.
    pub recycle_segments_max: usize,
    /// When to `fdatasync`.
    pub sync: SyncPolicy,
    /// What `retain` deletes.
    pub retention: Retention,
    /// What `open` does with corruption.
    pub recovery: RecoveryMode,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 256 << 20,
            segment_age_ms_max: Some(60 * 60 * 1000),
            index_interval_bytes: 4096,
            index_bytes_max: 10 << 20,
            record_bytes_max: 16 << 20,
            recycle_segments_max: 1,
            sync: SyncPolicy::EveryBatch,
            retention: Retention::default(),
            recovery: RecoveryMode::Strict,
        }
    }
}

impl LogConfig {
    /// Checks the cross-field rules; `SegmentLog::open` calls it.
    pub fn validate(&self) -> Result<()> {
        let header = FILE_HEADER_LEN as u32;
        if self.segment_bytes_max < header + RECORD_HEADER_LEN as u32 {
            return Err(Error::Config("segment_bytes_max must hold the header and one empty record"));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::Config("index_interval_bytes must be positive"));
        }
        if self.index_bytes_max < header + OFFSET_ENTRY_LEN as u32 {
            return Err(Error::Config("index_bytes_max must hold the header and one entry"));
        }
        if self.record_bytes_max < RECORD_HEADER_LEN as u32 || self.record_bytes_max > u32::MAX - header {
            return Err(Error::Config("record_bytes_max must be in [28, 4 GiB - 32]"));
        }
        if let SyncPolicy::Interval { interval_ms: 0 } = self.sync {
            return Err(Error::Config("a sync interval of 0 ms is SyncPolicy::EveryBatch"));
        }
        Ok(())
    }
}
