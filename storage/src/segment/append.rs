//! Appending: one `pwrite` per batch, group commit by the configured [`SyncPolicy`], and
//! rolling to a new segment by size, index room or age.
//!
//! Call order for a caller with `SyncPolicy::Interval`: `append` as records arrive; when
//! `poll_timeout()` passes, `poll_sync(now)`; acknowledge records below `durable_offset()`.

use std::ops::Range;

use crate::config::SyncPolicy;
use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::segment::file::{Capacity, Segment};
use crate::segment::format::{FILE_HEADER_LEN, record_len};
use crate::segment::index::IndexPoints;
use crate::segment::{Record, SegmentLog, TOPIC_BYTES_MAX};

impl<F: FileSystem> SegmentLog<F> {
    /// Appends `records` as one batch (one `pwrite`) and returns the offsets they got.
    ///
    /// With [`SyncPolicy::EveryBatch`] the batch is durable when this returns; with
    /// `Interval`, records become durable at the next due sync (see [`Self::poll_sync`]);
    /// check [`Self::durable_offset`]. A batch is never split across segments.
    ///
    /// Errors: `RecordTooLarge`, `TopicTooLong`, `BatchTooLarge` (nothing written); `Io` from
    /// creating a new segment, e.g. ENOSPC (nothing written, the log stays usable); `Io` from
    /// the write or sync itself, which poisons the log.
    pub fn append(&mut self, now_ms: u64, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.check_poisoned()?;
        let first = self.next_offset();
        if records.is_empty() {
            return Ok(first..first);
        }
        let batch_bytes = self.check_batch(records)?;
        let points_max =
            IndexPoints::new(self.config.index_interval_bytes).points_max(records.len(), batch_bytes);
        let capacity = Capacity::for_batch(&self.config, batch_bytes, points_max);
        let active = self.active();
        let age_due = self
            .config
            .segment_age_ms_max
            .is_some_and(|age| active.ts_first_ms.is_some_and(|first| now_ms.saturating_sub(first) >= age));
        if !active.is_empty() && (age_due || !active.fits(records.len(), batch_bytes)) {
            self.roll_to(capacity)?;
        } else if !active.fits(records.len(), batch_bytes) {
            self.active_mut().grow(capacity)?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let written = self.active_mut().write_batch(records, &mut buf);
        self.buf = buf;
        self.poison_on_err(written)?;
        self.unsynced_since_ms.get_or_insert(now_ms);
        match self.config.sync {
            SyncPolicy::EveryBatch => self.sync()?,
            SyncPolicy::Interval { .. } => {
                self.poll_sync(now_ms)?;
            }
        }
        Ok(first..self.next_offset())
    }

    /// Validates the records and returns the batch's encoded size.
    fn check_batch(&self, records: &[Record<'_>]) -> Result<u64> {
        let mut bytes = 0u64;
        for r in records {
            if r.topic.len() > TOPIC_BYTES_MAX {
                return Err(Error::TopicTooLong { bytes: r.topic.len() });
            }
            let len = record_len(r.topic, r.payload);
            if len > u64::from(self.config.record_bytes_max) {
                return Err(Error::RecordTooLarge { bytes: len, bytes_max: self.config.record_bytes_max });
            }
            bytes += len;
        }
        if FILE_HEADER_LEN as u64 + bytes > u64::from(u32::MAX) {
            return Err(Error::BatchTooLarge { bytes });
        }
        Ok(bytes)
    }

    /// Makes every appended record durable now (`fdatasync`), whatever the policy. A failure
    /// poisons the log.
    pub fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if self.unsynced_since_ms.is_none() {
            return Ok(());
        }
        let synced = self.active().sync();
        self.poison_on_err(synced)?;
        self.durable_offset = self.next_offset();
        self.unsynced_since_ms = None;
        Ok(())
    }

    /// Syncs if the policy says a sync is due at `now_ms`; returns whether it synced.
    pub fn poll_sync(&mut self, now_ms: u64) -> Result<bool> {
        match self.poll_timeout() {
            Some(due_ms) if now_ms >= due_ms => self.sync().map(|()| true),
            _ => self.check_poisoned().map(|()| false),
        }
    }

    /// When the next sync is due (in the caller's milliseconds), if anything is unsynced.
    pub fn poll_timeout(&self) -> Option<u64> {
        let since = self.unsynced_since_ms?;
        match self.config.sync {
            SyncPolicy::EveryBatch => Some(since),
            SyncPolicy::Interval { interval_ms } => Some(since.saturating_add(interval_ms)),
        }
    }

    /// Seals the active segment and starts a new one, now. Does nothing if the active
    /// segment is empty.
    pub fn roll(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if self.active().is_empty() {
            return Ok(());
        }
        self.roll_to(Capacity::for_batch(&self.config, 0, 0))
    }

    /// FORMAT.md section 7, "Roll": sync, create the next segment (a failure here changes
    /// nothing), seal the current one (a failure here poisons).
    fn roll_to(&mut self, capacity: Capacity) -> Result<()> {
        self.sync()?;
        let next = self.next_offset();
        let spare = self.spares.pop();
        let segment = Segment::create(&self.fs, &self.dir, next, capacity, &self.config, spare.as_deref())?;
        let (fs, dir) = (&self.fs, &self.dir);
        let sealed = self.segments.last_mut().expect("there is always an active segment").seal(fs, dir);
        self.poison_on_err(sealed)?;
        self.segments.push(segment);
        Ok(())
    }
}
