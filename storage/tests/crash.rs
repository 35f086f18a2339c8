//! Crashes: a torn write at every byte position of the last batch recovers exactly the
//! complete records, and a crash at every step of a roll, of retention, or of recovery itself
//! leaves a log that opens with every acknowledged record and no phantom.
//!
//! A crash is `FaultyFs` cutting the write that crosses a byte budget (or refusing the
//! operation after an op budget) and failing everything after; the test then drops the log
//! and reopens the directory with the real file system.

use storage::env::FileSystem;
use storage::env::faulty::FaultyFs;
use storage::{LogConfig, OsFs, Record, SegmentLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        segment_age_ms_max: None,
        index_interval_bytes: 100,
        index_bytes_max: 512,
        ..LogConfig::default()
    }
}

fn topic(i: u64) -> Vec<u8> {
    format!("t/{}", i % 3).into_bytes()
}

/// Payload sizes vary; none makes a record length a multiple of 256, so the first byte
/// written of any record is non-zero.
fn payload(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8 + 1; 10 + (i % 17) as usize]
}

fn record_len(i: u64) -> u64 {
    28 + topic(i).len() as u64 + payload(i).len() as u64
}

fn append<F: FileSystem>(log: &mut SegmentLog<F>, from: u64, to: u64) -> storage::Result<()> {
    let topics: Vec<_> = (from..to).map(topic).collect();
    let payloads: Vec<_> = (from..to).map(payload).collect();
    let records: Vec<_> = (0..topics.len())
        .map(|k| Record { timestamp_ms: from + k as u64, topic: &topics[k], payload: &payloads[k] })
        .collect();
    log.append(0, &records).map(|_| ())
}

/// Checks that the log holds exactly records `start..n`, by offset, by topic and by time.
fn assert_exactly<F: FileSystem>(log: &SegmentLog<F>, n: u64) {
    let start = log.start_offset();
    assert_eq!(log.next_offset(), n);
    let records = log.read_from(0, u64::MAX).unwrap();
    assert_eq!(records.len() as u64, n - start);
    for (r, offset) in records.iter().zip(start..) {
        assert_eq!(r.offset, offset);
        assert_eq!((r.topic, r.payload, r.timestamp_ms), (&topic(offset)[..], &payload(offset)[..], offset));
    }
    let t1 = topic(1);
    let by_topic: Vec<u64> = log.read_topics(&[&t1], 0, u64::MAX).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(by_topic, (start..n).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    if n > start {
        assert_eq!(log.offset_for_time(n - 1).unwrap(), Some(n - 1));
    }
    assert_eq!(log.offset_for_time(n).unwrap(), None);
}

/// Tears the write of a last batch of `batch` records after each of its byte positions.
fn torn_last_batch_recovers_exactly_the_complete_records(prior: u64, batch: u64) {
    let batch_bytes: u64 = (prior..prior + batch).map(record_len).sum();
    for cut in 0..=batch_bytes {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let mut log = SegmentLog::open(fs.clone(), dir.path(), config()).unwrap();
        append(&mut log, 0, prior).unwrap();
        // The byte budget must cover the batch only, not a new segment's header.
        if log.segments().last().unwrap().bytes + batch_bytes > u64::from(config().segment_bytes_max) {
            log.roll().unwrap();
        }
        fs.set(|f| f.crash_after_write_bytes = Some(cut));
        assert!(append(&mut log, prior, prior + batch).is_err());
        assert_eq!(log.durable_offset(), prior, "nothing of the torn batch was acknowledged");
        drop(log);

        let complete = (prior..prior + batch).scan(0, |sum, i| {
            *sum += record_len(i);
            Some(*sum)
        });
        let survivors = complete.filter(|&end| end <= cut).count() as u64;
        let mut log = SegmentLog::open(OsFs, dir.path(), config())
            .unwrap_or_else(|e| panic!("open after a cut at byte {cut}: {e}"));
        assert_exactly(&log, prior + survivors);
        let torn = !log.recovery_report().torn_tails.is_empty();
        let partial = cut > (prior..prior + survivors).map(record_len).sum::<u64>();
        assert_eq!(
            torn, partial,
            "cut at byte {cut}: a torn tail is reported iff a partial record was written"
        );

        // Appends continue at the right offset, and the torn bytes never come back.
        let n = prior + survivors;
        append(&mut log, n, n + 3).unwrap();
        drop(log);
        let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
        assert_exactly(&log, n + 3);
        assert!(log.recovery_report().torn_tails.is_empty());
    }
}

#[test]
fn torn_last_record_at_every_byte_recovers_exactly_the_complete_records() {
    torn_last_batch_recovers_exactly_the_complete_records(5, 1);
}

#[test]
fn torn_last_batch_at_every_byte_recovers_exactly_the_complete_records() {
    torn_last_batch_recovers_exactly_the_complete_records(3, 4);
}

#[test]
fn torn_last_record_after_sealed_segments_recovers_exactly_the_complete_records() {
    torn_last_batch_recovers_exactly_the_complete_records(60, 1);
}

/// Runs `setup` (no faults), then `action` with a crash before mutating operation number
/// `ops`, for every `ops` until `action` completes without crashing; after each crash the
/// directory must open and hold exactly `0..expected(acked)` where `acked` says whether
/// `action` returned Ok.
fn crash_at_every_step(
    setup: impl Fn(&mut SegmentLog<FaultyFs>),
    action: impl Fn(&mut SegmentLog<FaultyFs>) -> storage::Result<()>,
    acked_before: u64,
    acked_after: u64,
) {
    crash_at_every_step_with(config(), setup, action, acked_before, acked_after);
}

fn crash_at_every_step_with(
    config: LogConfig,
    setup: impl Fn(&mut SegmentLog<FaultyFs>),
    action: impl Fn(&mut SegmentLog<FaultyFs>) -> storage::Result<()>,
    acked_before: u64,
    acked_after: u64,
) {
    for ops in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let mut log = SegmentLog::open(fs.clone(), dir.path(), config.clone()).unwrap();
        setup(&mut log);
        fs.set(|f| f.crash_after_ops = Some(ops));
        let done = action(&mut log).is_ok();
        let crashed = fs.faults().crashed();
        drop(log);
        let log = SegmentLog::open(OsFs, dir.path(), config.clone())
            .unwrap_or_else(|e| panic!("open after a crash at op {ops}: {e}"));
        let n = log.next_offset();
        assert!(
            n >= acked_before && (!done || n >= acked_after),
            "crash at op {ops}: lost acknowledged records"
        );
        assert!(n <= acked_after, "crash at op {ops}: phantom records");
        assert_exactly(&log, n);
        drop(log);
        // A second open agrees.
        let log = SegmentLog::open(OsFs, dir.path(), config.clone()).unwrap();
        assert_eq!(log.next_offset(), n);
        if !crashed {
            assert!(done);
            assert!(ops >= 10, "only {ops} steps: the action did not roll");
            return;
        }
    }
}

#[test]
fn crash_at_every_step_of_a_roll_keeps_every_acknowledged_record() {
    crash_at_every_step(|log| append(log, 0, 20).unwrap(), |log| append(log, 20, 60), 20, 60);
}

#[test]
fn crash_at_every_step_of_an_explicit_roll_keeps_every_record() {
    crash_at_every_step(
        |log| append(log, 0, 7).unwrap(),
        |log| {
            log.roll()?;
            append(log, 7, 8)
        },
        7,
        8,
    );
}

#[test]
fn crash_at_every_step_of_a_roll_into_a_recycled_file_keeps_every_record() {
    // Retention leaves a spare whose former records fill the file; the roll reuses it.
    let mut config = config();
    config.retention.age_ms_max = Some(0);
    crash_at_every_step_with(
        config,
        |log| {
            for i in 0..40 {
                append(log, i, i + 1).unwrap();
            }
            let start = log.segments()[1].base_offset;
            assert_eq!(log.retain(1000, start).unwrap().segments_deleted, 1);
            assert!(log.dir().join(format!("{:020}.spare", 0)).exists());
        },
        |log| {
            log.roll()?;
            append(log, 40, 42)
        },
        40,
        42,
    );
}

#[test]
fn crash_at_every_step_of_retention_leaves_a_contiguous_log() {
    for ops in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let mut config = config();
        config.retention.age_ms_max = Some(0);
        let mut log = SegmentLog::open(fs.clone(), dir.path(), config.clone()).unwrap();
        for i in 0..80 {
            append(&mut log, i, i + 1).unwrap();
        }
        let sealed = log.segments().len() - 1;
        assert!(sealed >= 3);
        fs.set(|f| f.crash_after_ops = Some(ops));
        let done = log.retain(1000, 50).map(|r| assert!(r.segments_deleted >= 2)).is_ok();
        drop(log);
        let log = SegmentLog::open(OsFs, dir.path(), config).unwrap();
        assert_eq!(log.next_offset(), 80);
        let records = log.read_from(0, u64::MAX).unwrap();
        assert_eq!(records.first().unwrap().offset, log.start_offset());
        assert_eq!(records.len() as u64, 80 - log.start_offset());
        assert!(log.start_offset() <= 50, "retention deleted a needed record");
        if done {
            assert!(ops >= 4, "only {ops} steps: retention deleted nothing");
            return;
        }
    }
    panic!("retention never completed");
}

#[test]
fn crash_at_every_step_of_recovery_is_recovered_by_the_next_open() {
    // A crash mid-roll leaves an unsealed non-last segment and a torn tail for recovery to fix;
    // then recovery itself crashes at every step.
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut log = SegmentLog::open(fs.clone(), dir.path(), config()).unwrap();
    append(&mut log, 0, 20).unwrap();
    fs.set(|f| f.crash_after_ops = Some(4));
    let _ = append(&mut log, 20, 60);
    drop(log);
    let template = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, template.path().join(path.file_name().unwrap())).unwrap();
    }
    for ops in 0.. {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(template.path()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let fs = FaultyFs::new();
        fs.set(|f| f.crash_after_ops = Some(ops));
        let opened = SegmentLog::open(fs.clone(), dir.path(), config()).is_ok();
        let log = SegmentLog::open(OsFs, dir.path(), config())
            .unwrap_or_else(|e| panic!("open after recovery crashed at op {ops}: {e}"));
        assert!(log.next_offset() >= 20);
        assert_exactly(&log, log.next_offset());
        if opened && !fs.faults().crashed() {
            assert!(ops >= 5, "only {ops} steps: recovery had nothing to do");
            return;
        }
    }
}
