//! Retention: deletes whole sealed segments, oldest first, by size, by age, and by the lowest
//! offset any session still needs (see [`Retention`](crate::Retention)). The active segment
//! is never deleted; roll it first (age-based rolls do that on append). The `.log` of a
//! deleted segment becomes a spare for the next roll while there are fewer than
//! `recycle_segments_max` spares (see `LogConfig::recycle_segments_max`).

use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::segment::SegmentLog;
use crate::segment::file::spare_path;

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
}
