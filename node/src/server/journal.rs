//! SHELL. The journal on disk: replay at startup, and a writer thread that appends the
//! core's records to a `storage::SegmentLog` with group commit and reports them durable.
//!
//! One journal record is one log record (offsets and sequence numbers advance together).
//! The writer takes every record the core emitted since its last round, writes them as one
//! batch (one `pwrite`, one `fdatasync` under `sync = "every-batch"`), then tells the core the
//! sequence number they reached, which releases the acknowledgements that waited for them.
//! After `checkpoint-bytes` of journal (or twice the last checkpoint, if larger) it asks the
//! core for a checkpoint (a `Reset` plus a snapshot), rolls to a new segment first, and once
//! the checkpoint is durable deletes the segments before it (the log's retention deletes
//! every sealed segment below the offset it is given).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use storage::{LogConfig, OsFs, RecoveryMode, Retention, SegmentLog, SyncPolicy};

use super::Shared;
use crate::broker::journal::{Record, WallClock};
use crate::broker::{Broker, RestoreReport};
use crate::clock;
use crate::config::{StorageConfig, SyncMode};

/// Why the journal could not be opened or replayed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage layer refused (IO error, corruption, lock held by another process).
    #[error("journal in {dir}: {source}{hint}")]
    Storage {
        /// The journal directory.
        dir: PathBuf,
        /// What storage reported.
        source: storage::Error,
        /// How to recover, when there is a way.
        hint: &'static str,
    },
    /// A record passed its checksum but does not decode: written by another version.
    #[error("journal in {dir}: record at offset {offset} does not decode ({reason}); {hint}")]
    Record {
        /// The journal directory.
        dir: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// Decoder's reason.
        reason: String,
        /// How to recover.
        hint: &'static str,
    },
}

const REPAIR_HINT: &str =
    "; start with --repair to cut the journal at the first damaged record (what follows it is lost)";

fn storage_error(dir: &Path, source: storage::Error) -> JournalError {
    let hint = if matches!(source, storage::Error::Corruption { .. }) { REPAIR_HINT } else { "" };
    JournalError::Storage { dir: dir.to_owned(), source, hint }
}

/// An open journal, replayed into the broker, ready for its writer thread.
pub struct OpenJournal {
    log: SegmentLog,
    dir: PathBuf,
    config: StorageConfig,
    /// Journal bytes written since the last checkpoint's `Reset`, its snapshot included.
    bytes_since_checkpoint: u64,
    /// Bytes of the last checkpoint (its `Reset`, snapshot and whatever shared its batch).
    snapshot_bytes: u64,
}

impl OpenJournal {
    /// True when the journal has grown enough since the last checkpoint to write another:
    /// `checkpoint-bytes`, or twice the last snapshot when that is larger, so a state bigger
    /// than `checkpoint-bytes` is rewritten only after as many new bytes as it holds (never
    /// in a loop of checkpoints that each trigger the next).
    fn checkpoint_due(&self) -> bool {
        self.bytes_since_checkpoint > self.config.checkpoint_bytes.max(2 * self.snapshot_bytes)
    }
}

/// Opens `data_dir/journal`, replays it into `broker` and turns journaling on.
pub fn open(
    data_dir: &Path,
    config: &StorageConfig,
    broker: &mut Broker,
    now: Instant,
) -> Result<(OpenJournal, RestoreReport), JournalError> {
    let dir = data_dir.join("journal");
    let log_config = LogConfig {
        segment_bytes_max: config.segment_bytes,
        sync: match config.sync {
            SyncMode::EveryBatch => SyncPolicy::EveryBatch,
            SyncMode::Interval => SyncPolicy::Interval { interval_ms: config.sync_interval_ms },
        },
        recovery: if config.repair { RecoveryMode::Repair } else { RecoveryMode::Strict },
        segment_age_ms_max: None,
        // Sealed segments below a durable checkpoint's `Reset` are deleted by `retain` (the
        // offset passed is the `Reset`'s); nothing else deletes journal segments.
        retention: Retention { bytes_max: None, age_ms_max: Some(0) },
        // Index files sized to the segment (an entry per 4 KiB), not storage's 10 MiB default.
        index_bytes_max: (config.segment_bytes / 4096 * 8 + 64).max(4096),
        // A record holds at most one message or a retained message plus framing.
        record_bytes_max: (broker.max_packet_size() as u32).saturating_add(64 << 10).max(16 << 20),
        ..LogConfig::default()
    };
    let log = SegmentLog::open(OsFs, &dir, log_config).map_err(|e| storage_error(&dir, e))?;
    let recovered = log.recovery_report();
    if !recovered.torn_tails.is_empty() {
        tracing::info!(dir = %dir.display(), cuts = ?recovered.torn_tails, "journal: torn tail truncated");
    }
    if !recovered.repairs.is_empty() {
        tracing::warn!(dir = %dir.display(), cuts = ?recovered.repairs, "journal repaired: records lost");
    }
    let clock = WallClock::new(now, clock::wall_ms());
    let mut records = Vec::new();
    let mut offset = log.start_offset();
    while offset < log.next_offset() {
        let batch = log.read_from(offset, 4 << 20).map_err(|e| storage_error(&dir, e))?;
        for r in &batch {
            let record = Record::decode(Bytes::copy_from_slice(r.payload), &clock).map_err(|e| {
                JournalError::Record {
                    dir: dir.clone(),
                    offset: r.offset,
                    reason: e.to_string(),
                    hint: REPAIR_HINT,
                }
            })?;
            records.push(record);
            offset = r.offset + 1;
        }
        if batch.is_empty() {
            break;
        }
    }
    broker.enable_journal(0);
    let report = broker.restore(now, records);
    let bytes_since_checkpoint = log.bytes();
    let journal = OpenJournal { log, dir, config: config.clone(), bytes_since_checkpoint, snapshot_bytes: 0 };
    Ok((journal, report))
}

/// Wakes the writer when the core has records for it.
#[derive(Default)]
pub struct Kick {
    state: Mutex<KickState>,
    cond: Condvar,
}

#[derive(Default)]
struct KickState {
    pending: bool,
    stop: bool,
}

impl Kick {
    /// There are records to write.
    pub fn kick(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.pending {
            s.pending = true;
            self.cond.notify_one();
        }
    }

    /// Write what is left, then stop.
    pub fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stop = true;
        self.cond.notify_one();
    }

    /// Waits up to `timeout` for a kick; returns `(kicked, stopping)`.
    fn wait(&self, timeout: Duration) -> (bool, bool) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut s, _) = self
            .cond
            .wait_timeout_while(s, timeout, |s| !s.pending && !s.stop)
            .unwrap_or_else(|e| e.into_inner());
        let kicked = std::mem::take(&mut s.pending);
        (kicked, s.stop)
    }
}

/// Starts the writer thread.
pub(super) fn spawn_writer(shared: Arc<Shared>, journal: OpenJournal, kick: Arc<Kick>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || {
            Writer {
                shared,
                journal,
                kick,
                pending: VecDeque::new(),
                pending_seq: None,
                inflight: VecDeque::new(),
                reset_at: None,
                checkpoint_requested: false,
                retry: None,
            }
            .run()
        })
        .expect("spawning the journal thread")
}

/// True if `e` is the file system running out of space (or quota).
fn is_disk_full(e: &storage::Error) -> bool {
    let storage::Error::Io { source: io, .. } = e else { return false };
    matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// First and longest wait before retrying a write that failed without poisoning the log.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One encoded record waiting to be appended.
struct Pending {
    bytes: BytesMut,
    /// A checkpoint's `Reset`: the log rolls before it.
    reset: bool,
}

/// Writes that failed without poisoning the log, being retried.
struct Retry {
    backoff: Duration,
    failures: u64,
}

struct Writer {
    shared: Arc<Shared>,
    journal: OpenJournal,
    kick: Arc<Kick>,
    /// Records taken from the core but not appended yet (kept across a recoverable failure).
    pending: VecDeque<Pending>,
    /// The core's sequence number once every pending record is appended.
    pending_seq: Option<u64>,
    /// `(end offset, seq)` of batches written but perhaps not yet durable.
    inflight: VecDeque<(u64, u64)>,
    /// Offset of the last checkpoint's `Reset`, until older segments are deleted.
    reset_at: Option<u64>,
    /// A checkpoint was asked of the core and its `Reset` is not written yet.
    checkpoint_requested: bool,
    /// Set while writes fail with errors that left the log usable.
    retry: Option<Retry>,
}

impl Writer {
    fn run(mut self) {
        let mut records = Vec::new();
        loop {
            let wait = self.journal.log.poll_timeout().map_or(Duration::from_millis(200), |at| {
                Duration::from_millis(at.saturating_sub(clock::wall_ms()).max(1))
            });
            let (_, stopping) = self.kick.wait(wait);
            records.clear();
            let seq = self.shared.lock().broker.poll_journal(&mut records);
            self.take(&records, seq);
            let started = Instant::now();
            let written = self.write();
            if !records.is_empty() {
                self.shared.counters.journal_sync.observe(started.elapsed().as_secs_f64());
            }
            match written {
                Ok(()) => self.recovered(),
                // Creating a segment failed (EMFILE, ENOSPC, ...) and nothing was written:
                // keep the records and try again; acknowledgements wait meanwhile.
                Err(e) if !self.journal.log.is_poisoned() && matches!(e, storage::Error::Io { .. }) => {
                    if stopping {
                        tracing::error!(error = %e, "journal: stopping with records not written");
                        return;
                    }
                    self.backoff(&e);
                    continue;
                }
                Err(e) => return self.fail(&e),
            }
            if stopping && self.shared.lock().broker.journal_lag() == 0 {
                return;
            }
        }
    }

    /// Only a failure that poisoned the log (a failed write or fsync, whose effect on disk is
    /// unknown) switches journaling off.
    fn fail(&self, e: &storage::Error) {
        let disk_full = is_disk_full(e);
        tracing::error!(dir = %self.journal.dir.display(), error = %e, disk_full,
            "journal write failed: nothing more is made durable until restart; QoS 1/2 \
             publishes are refused (5.0: reason 0x97 if the disk is full, else 0x80; 3.1.1: \
             disconnected), QoS 0 goes on; $SYS/broker/journal/failed is 1");
        let mut core = self.shared.lock();
        core.broker.journal_failed(clock::now(), disk_full);
        core.notify_woken(None);
    }

    fn backoff(&mut self, e: &storage::Error) {
        let retry = self.retry.get_or_insert(Retry { backoff: RETRY_MIN, failures: 0 });
        retry.failures += 1;
        // Log the first failure and then every 64th, not one line per retry.
        if retry.failures % 64 == 1 {
            tracing::warn!(dir = %self.journal.dir.display(), error = %e, failures = retry.failures,
                "journal write failed, log unharmed: retrying with backoff; acknowledgements wait");
        }
        std::thread::sleep(retry.backoff);
        retry.backoff = (retry.backoff * 2).min(RETRY_MAX);
    }

    fn recovered(&mut self) {
        if let Some(retry) = self.retry.take() {
            tracing::info!(dir = %self.journal.dir.display(), failures = retry.failures,
                "journal writes resumed");
        }
    }

    /// Encodes the records just taken from the core onto the pending queue.
    fn take(&mut self, records: &[Record], seq: u64) {
        if records.is_empty() {
            return;
        }
        let wall = WallClock::new(clock::now(), clock::wall_ms());
        for r in records {
            let mut bytes = BytesMut::new();
            r.encode(&wall, &mut bytes);
            self.pending.push_back(Pending { bytes, reset: matches!(r, Record::Reset) });
        }
        self.pending_seq = Some(seq);
    }

    /// Appends the pending records, one batch per checkpoint boundary (a checkpoint starts a
    /// fresh segment, so everything before it can be deleted). Each batch is appended whole or
    /// not at all, so a retry resumes where the failure stopped.
    fn append_pending(&mut self, now_ms: u64) -> Result<(), storage::Error> {
        while let Some(first) = self.pending.front_mut() {
            let checkpoint = first.reset;
            if checkpoint {
                self.journal.log.roll()?;
                first.reset = false;
                self.reset_at = Some(self.journal.log.next_offset());
                self.checkpoint_requested = false;
                self.journal.bytes_since_checkpoint = 0;
            }
            let n = self.pending.iter().skip(1).position(|p| p.reset).map_or(self.pending.len(), |i| i + 1);
            let batch: Vec<storage::Record<'_>> = self
                .pending
                .iter()
                .take(n)
                .map(|p| storage::Record { timestamp_ms: now_ms, topic: b"", payload: &p.bytes })
                .collect();
            self.journal.log.append(now_ms, &batch)?;
            let bytes: u64 = self.pending.drain(..n).map(|p| p.bytes.len() as u64 + 28).sum();
            self.journal.bytes_since_checkpoint += bytes;
            if checkpoint {
                self.journal.snapshot_bytes = self.journal.bytes_since_checkpoint;
            }
        }
        if let Some(seq) = self.pending_seq.take() {
            self.inflight.push_back((self.journal.log.next_offset(), seq));
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), storage::Error> {
        let now_ms = clock::wall_ms();
        self.append_pending(now_ms)?;
        self.journal.log.poll_sync(now_ms)?;
        let durable = self.journal.log.durable_offset();
        let mut reached = None;
        while let Some(&(end, seq)) = self.inflight.front() {
            if end > durable {
                break;
            }
            reached = Some(seq);
            self.inflight.pop_front();
        }
        if let Some(seq) = reached {
            let mut core = self.shared.lock();
            core.broker.handle_durable(seq);
            core.notify_woken(None);
            if self.journal.checkpoint_due() && !self.checkpoint_requested {
                self.checkpoint_requested = true;
                core.broker.checkpoint();
                self.kick.kick();
            }
        }
        if let Some(at) = self.reset_at
            && durable > at
        {
            // A failed deletion leaves the log usable: warn, and try again next round.
            match self.journal.log.retain(now_ms, at) {
                Ok(report) => {
                    tracing::debug!(?report, "journal checkpoint complete; older segments deleted");
                    self.reset_at = None;
                }
                Err(e) if !self.journal.log.is_poisoned() => {
                    tracing::warn!(error = %e, "journal: deleting segments before a checkpoint failed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
