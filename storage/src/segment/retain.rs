//! Retention: deletes whole sealed segments, oldest first, by size, by age, and by the lowest
//! offset any session still needs (see [`Retention`](crate::Retention)). The active segment
//! is never deleted; roll it first (age-based rolls do that on append). The `.log` of a
//! deleted segment becomes a spare for the next roll while there are fewer than
//! `recycle_segments_max` spares (see `LogConfig::recycle_segments_max`).
//!
//! Resets ([`SegmentLog::reset`], [`SegmentLog::open_at`]) delete every segment and start an
//! empty log at a later offset: a replica whose log is behind the snapshot it installs.

use std::path::Path;

use crate::LogConfig;
use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::segment::SegmentLog;
use crate::segment::file::{Capacity, Segment, spare_path};

/// What [`SegmentLog::retain`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetainReport {
    /// Number of segments deleted.
    pub segments_deleted: usize,
    /// Bytes of records deleted.
    pub bytes_deleted: u64,
    /// The log's first offset afterwards.
    pub start_offset: u64,
}

impl<F: FileSystem> SegmentLog<F> {
    /// Applies the retention policy at `now_ms`. `needed_offset_min` is the lowest offset any
    /// session still needs (`u64::MAX` if none needs anything): segments holding it or later
    /// offsets survive age-based deletion, but not the `bytes_max` cap.
    ///
    /// Deletion goes segment by segment; an error leaves the segments not yet deleted in
    /// place (the log stays usable).
    pub fn retain(&mut self, now_ms: u64, needed_offset_min: u64) -> Result<RetainReport> {
        self.check_poisoned()?;
        let policy = self.config.retention;
        let mut total = self.bytes();
        let mut count = 0;
        for seg in &self.segments[..self.segments.len() - 1] {
            let over_cap = policy.bytes_max.is_some_and(|max| total > max);
            let unneeded = seg.next_offset <= needed_offset_min;
            let expired = policy
                .age_ms_max
                .is_some_and(|age| seg.ts_max_ms.is_none_or(|ts| now_ms.saturating_sub(ts) > age));
            if !(over_cap || (unneeded && expired)) {
                break;
            }
            total -= seg.data_end;
            count += 1;
        }
        let mut report = RetainReport::default();
        for _ in 0..count {
            let seg = self.segments.remove(0);
            let bytes = seg.data_end;
            // Only a file of at least half a segment is worth reusing.
            if self.spares.len() < self.config.recycle_segments_max
                && 2 * bytes >= u64::from(self.config.segment_bytes_max)
            {
                let spare = spare_path(&self.dir, seg.base_offset);
                seg.recycle(&self.fs, &spare)?;
                self.spares.push(spare);
            } else {
                seg.delete(&self.fs)?;
            }
            report.segments_deleted += 1;
            report.bytes_deleted += bytes;
        }
        if count > 0 {
            self.fs.sync_dir(&self.dir).map_err(Error::io("fsync", &self.dir))?;
        }
        report.start_offset = self.start_offset();
        Ok(report)
    }

    /// Opens the log in `dir` like [`open`](Self::open), starting it at `base_offset`: a log
    /// that ends before `base_offset` (empty, for a new replica, or behind a snapshot) is
    /// reset there; one that already reaches it is opened as it is.
    pub fn open_at(fs: F, dir: impl AsRef<Path>, config: LogConfig, base_offset: u64) -> Result<Self> {
        let mut log = Self::open(fs, dir, config)?;
        if log.next_offset() < base_offset {
            log.reset(base_offset)?;
        }
        Ok(log)
    }

    /// Empties the log and starts it at `base_offset` (at or past its end): a new empty
    /// active segment begins there, then every older segment is deleted, so the log's
    /// offsets jump to `base_offset` and no record is renumbered. A crash between the two
    /// steps leaves older segments in place, which a later reset deletes. An error while
    /// deleting poisons the log (reopen it, and reset again).
    pub fn reset(&mut self, base_offset: u64) -> Result<()> {
        self.check_poisoned()?;
        let next_offset = self.next_offset();
        if base_offset < next_offset {
            return Err(Error::ResetBackwards { offset: base_offset, next_offset });
        }
        if base_offset > next_offset {
            let capacity = Capacity::for_batch(&self.config, 0, 0);
            let spare = self.spares.pop();
            let seg =
                Segment::create(&self.fs, &self.dir, base_offset, capacity, &self.config, spare.as_deref())?;
            self.segments.push(seg);
        }
        let old = self.segments.len() - 1;
        let mut deleted = Ok(());
        for seg in self.segments.drain(..old) {
            if deleted.is_ok() {
                deleted = seg.delete(&self.fs);
            }
        }
        let synced =
            deleted.and_then(|()| self.fs.sync_dir(&self.dir).map_err(Error::io("fsync", &self.dir)));
        self.poison_on_err(synced)?;
        self.durable_offset = base_offset;
        self.unsynced_since_ms = None;
        Ok(())
    }
}
