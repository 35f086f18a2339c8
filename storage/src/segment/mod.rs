//! SHELL over CORE pieces. [`SegmentLog`]: the append-only, offset-indexed, memory-mapped log
//! of one message-log group (ARCHITECTURE.md section 9).
//!
//! The state lives here; its operations live in sibling files: [`append`]
//! (append, group commit, roll), [`read`] (by offset, by topic, by time),
//! [`retain`] (retention), [`recovery`] (open). Formats: [`format`](mod@format),
//! [`index`], [`topic_index`]; one segment's files: [`file`](mod@file).
//!
//! Time is the caller's: every operation that depends on it takes `now_ms`; nothing here
//! reads a clock. Synchronous: callers run it on their own threads.
//!
//! Invariants:
//! - `segments` is never empty, sorted by base offset, contiguous (each base is the previous
//!   segment's next offset); the last segment is active, all others are sealed;
//! - `durable_offset <= next_offset`, and every record below `durable_offset` was
//!   `fdatasync`ed;
//! - once `poisoned`, every operation returns `Error::Poisoned`: nothing is written after a
//!   failed write, sync or seal, and nothing possibly half-updated is read.

mod append;
pub(crate) mod file;
pub(crate) mod format;
pub(crate) mod index;
mod read;
pub(crate) mod recovery;
mod retain;
pub(crate) mod topic_index;

use std::path::{Path, PathBuf};

use crate::config::LogConfig;
use crate::env::{FileSystem, OsFs};
use crate::error::{Error, Result};
use file::Segment;
use recovery::RecoveryReport;

pub use retain::RetainReport;

/// Longest topic a record can carry, in bytes (MQTT's limit too).
pub const TOPIC_BYTES_MAX: usize = u16::MAX as usize;

/// One record to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The writer's timestamp (HLC), in milliseconds; used by `offset_for_time`, age-based
    /// rolls and retention. Need not be monotonic.
    pub timestamp_ms: u64,
    /// The topic, at most [`TOPIC_BYTES_MAX`] bytes.
    pub topic: &'a [u8],
    /// The payload: opaque bytes.
    pub payload: &'a [u8],
}

/// A summary of one segment, for observability and for callers that plan retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The first offset.
    pub base_offset: u64,
    /// One past the last offset.
    pub next_offset: u64,
    /// Size of the `.log`'s records, header included.
    pub bytes: u64,
    /// Largest record timestamp, `None` if the segment is empty.
    pub timestamp_max_ms: Option<u64>,
    /// True for all segments but the active (last) one.
    pub sealed: bool,
}

/// The segment log of one directory. See the module doc for the invariants.
///
/// ```no_run
/// use storage::{LogConfig, OsFs, Record, SegmentLog};
/// let mut log = SegmentLog::open(OsFs, "/var/lib/flotilla/lg-7", LogConfig::default())?;
/// let now_ms = 1_700_000_000_000;
/// let offsets = log.append(now_ms, &[Record { timestamp_ms: now_ms, topic: b"fleet/v1/gps", payload: b"{}" }])?;
/// for r in log.read_topics(&[b"fleet/v1/gps"], offsets.start, 1 << 20)? {
///     println!("{} {:?}", r.offset, r.payload);
/// }
/// log.close()?;
/// # Ok::<(), storage::Error>(())
/// ```
pub struct SegmentLog<F: FileSystem = OsFs> {
    fs: F,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment<F::File>>,
    /// Spare `.log` files of deleted segments, reused by the next rolls; at most
    /// `config.recycle_segments_max`.
    spares: Vec<PathBuf>,
    durable_offset: u64,
    /// `now_ms` of the first append after the last sync, if anything is unsynced.
    unsynced_since_ms: Option<u64>,
    poisoned: bool,
    /// Scratch for encoding a batch.
    buf: Vec<u8>,
    report: RecoveryReport,
    _lock: F::Lock,
}

impl<F: FileSystem> std::fmt::Debug for SegmentLog<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.dir)
            .field("start_offset", &self.start_offset())
            .field("next_offset", &self.next_offset())
            .field("durable_offset", &self.durable_offset)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<F: FileSystem> SegmentLog<F> {
    /// Opens the log in `dir` (created if missing), recovering it as FORMAT.md section 8 and
    /// `config.recovery` say; see [`Self::recovery_report`] for what was done.
    ///
    /// Fails with `Locked` if the directory is open elsewhere, `Corruption` on damage that
    /// recovery may not cut in strict mode, `Config` on an invalid configuration.
    pub fn open(fs: F, dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        fs.create_dir_all(&dir).map_err(Error::io("mkdir", &dir))?;
        let lock_path = dir.join("LOCK");
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone() },
            _ => Error::io("flock", &lock_path)(e),
        })?;
        let recovery::OpenedLog { segments, spares, report } = recovery::open_segments(&fs, &dir, &config)?;
        let next = segments.last().expect("open returns an active segment").next_offset;
        Ok(Self {
            fs,
            dir,
            config,
            segments,
            spares,
            durable_offset: next,
            unsynced_since_ms: None,
            poisoned: false,
            buf: Vec::new(),
            report,
            _lock: lock,
        })
    }

    /// What recovery did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> u64 {
        self.segments[0].base_offset
    }

    /// The offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Every record below this offset is durable (synced).
    pub fn durable_offset(&self) -> u64 {
        self.durable_offset
    }

    /// True once a write, sync or seal failed; see [`Error::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The segments, oldest first; the last is active.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                bytes: s.data_end,
                timestamp_max_ms: s.ts_max_ms,
                sealed: !s.is_active(),
            })
            .collect()
    }

    /// Total size of the segments' records (the `.log` files' used bytes).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.data_end).sum()
    }

    /// Syncs what is unsynced, then unmaps the active segment and trims its preallocated tail
    /// so the next open scans only records. Dropping the log without `close` is safe too (the
    /// next open recovers), but does not sync.
    pub fn close(mut self) -> Result<()> {
        self.check_poisoned()?;
        self.sync()?;
        let active = self.segments.pop().expect("there is always an active segment");
        active.trim()
    }

    fn active(&self) -> &Segment<F::File> {
        self.segments.last().expect("there is always an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment<F::File> {
        self.segments.last_mut().expect("there is always an active segment")
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned { Err(Error::Poisoned) } else { Ok(()) }
    }

    /// Marks the log poisoned when `r` is an error.
    fn poison_on_err<T>(&mut self, r: Result<T>) -> Result<T> {
        self.poisoned |= r.is_err();
        r
    }
}
