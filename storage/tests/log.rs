//! Behaviour of the segment log through its public API, on the real file system: appends and
//! reads, rolls, reopen, topic replay, time lookup, retention, group commit, locking and
//! index rebuilds.

use std::path::Path;

use storage::{Error, LogConfig, OsFs, Record, RecordRef, Retention, SegmentLog, SyncPolicy};

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        segment_age_ms_max: None,
        index_interval_bytes: 256,
        index_bytes_max: 1024,
        ..LogConfig::default()
    }
}

fn topic(i: u64) -> Vec<u8> {
    format!("fleet/v{}/telemetry", i % 5).into_bytes()
}

fn payload(i: u64) -> Vec<u8> {
    format!("payload-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

/// Appends records `from..to` (timestamp = 1000 + i), one batch per `batch` records.
fn append_range(log: &mut SegmentLog, from: u64, to: u64, batch: usize) {
    let topics: Vec<_> = (from..to).map(topic).collect();
    let payloads: Vec<_> = (from..to).map(payload).collect();
    let records: Vec<_> = (0..(to - from) as usize)
        .map(|k| Record { timestamp_ms: 1000 + from + k as u64, topic: &topics[k], payload: &payloads[k] })
        .collect();
    for chunk in records.chunks(batch) {
        let first = log.next_offset();
        let offsets = log.append(2000, chunk).unwrap();
        assert_eq!(offsets, first..first + chunk.len() as u64);
    }
}

fn assert_record(r: &RecordRef<'_>, i: u64) {
    assert_eq!(r.offset, i);
    assert_eq!(r.timestamp_ms, 1000 + i);
    assert_eq!(r.topic, topic(i));
    assert_eq!(r.payload, payload(i));
}

fn read_all(log: &SegmentLog, from: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = log.read_from(next, 700).unwrap();
        let Some(last) = batch.last() else { return out };
        for r in &batch {
            assert_record(r, r.offset);
            out.push(r.offset);
        }
        next = last.offset + 1;
    }
}

fn files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == ext))
        .count()
}

#[test]
fn appended_records_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 300, 7);
    assert!(log.segments().len() > 5, "4 KiB segments must have rolled");
    assert_eq!(read_all(&log, 0), (0..300).collect::<Vec<_>>());
    assert_eq!(read_all(&log, 123), (123..300).collect::<Vec<_>>());
    assert!(log.read_from(300, 1 << 20).unwrap().is_empty());
    assert_eq!(log.durable_offset(), 300);
}

#[test]
fn read_from_returns_at_least_one_record_even_if_larger_than_bytes_max() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 10, 10);
    let one = log.read_from(3, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_record(&one[0], 3);
    let two_bytes = one[0].encoded_len() + log.read_from(4, 1).unwrap()[0].encoded_len();
    assert_eq!(log.read_from(3, two_bytes).unwrap().len(), 2);
}

#[test]
fn sealed_segments_have_all_four_files_and_the_active_has_no_topic_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 200, 3);
    let segments = log.segments();
    let sealed = segments.iter().filter(|s| s.sealed).count();
    assert_eq!(sealed, segments.len() - 1);
    assert!(!segments.last().unwrap().sealed);
    for ext in ["log", "idx", "tidx"] {
        assert_eq!(files(dir.path(), ext), segments.len(), "{ext}");
    }
    assert_eq!(files(dir.path(), "tpx"), sealed);
    for pair in segments.windows(2) {
        assert_eq!(pair[0].next_offset, pair[1].base_offset, "segments are contiguous");
        assert!(pair[0].bytes <= 4096);
    }
}

#[test]
fn records_survive_close_and_reopen_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 150, 4);
    let before = log.segments();
    log.close().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    assert!(log.recovery_report().torn_tails.is_empty());
    assert_eq!(log.segments(), before);
    assert_eq!(log.next_offset(), 150);
    append_range(&mut log, 150, 220, 5);
    drop(log); // no close: the next open recovers from the preallocated file
    let log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    assert!(log.recovery_report().torn_tails.is_empty());
    assert_eq!(read_all(&log, 0), (0..220).collect::<Vec<_>>());
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 3, 3);
    let big = vec![7u8; 10_000];
    let r = [Record { timestamp_ms: 5, topic: b"big", payload: &big }; 2];
    assert_eq!(log.append(0, &r).unwrap(), 3..5);
    let segments = log.segments();
    assert_eq!(segments.len(), 2);
    assert_eq!((segments[1].base_offset, segments[1].next_offset), (3, 5));
    assert_eq!(log.read_from(4, 1).unwrap()[0].payload, &big[..]);
    log.close().unwrap();
    let log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    assert_eq!(log.read_from(3, u64::MAX).unwrap().len(), 2);
}

#[test]
fn segments_roll_by_age_of_their_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_age_ms_max: Some(1000), ..small_config() };
    let mut log = SegmentLog::open(OsFs, dir.path(), config).unwrap();
    let rec = |ts| [Record { timestamp_ms: ts, topic: b"t", payload: b"p" }];
    log.append(10_000, &rec(10_000)).unwrap();
    log.append(10_999, &rec(10_999)).unwrap();
    assert_eq!(log.segments().len(), 1);
    log.append(11_000, &rec(11_000)).unwrap();
    assert_eq!(log.segments().iter().map(|s| s.base_offset).collect::<Vec<_>>(), [0, 2]);
}

#[test]
fn read_topics_returns_exactly_the_requested_topics_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 400, 9);
    let check = |log: &SegmentLog| {
        for wanted in [vec![1u64], vec![0, 3], vec![4, 2, 2], vec![0, 1, 2, 3, 4]] {
            let names: Vec<Vec<u8>> = wanted.iter().map(|&w| topic(w)).collect();
            let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
            for from in [0, 1, 57, 399, 400] {
                let mut got = Vec::new();
                let mut next = from;
                loop {
                    let batch = log.read_topics(&refs, next, 500).unwrap();
                    let Some(last) = batch.last() else { break };
                    next = last.offset + 1;
                    for r in &batch {
                        assert_record(r, r.offset);
                        got.push(r.offset);
                    }
                }
                let expected: Vec<u64> = (from..400).filter(|i| wanted.contains(&(i % 5))).collect();
                assert_eq!(got, expected, "topics {wanted:?} from {from}");
            }
        }
        assert!(log.read_topics(&[b"no/such/topic"], 0, u64::MAX).unwrap().is_empty());
    };
    check(&log);
    log.close().unwrap();
    check(&SegmentLog::open(OsFs, dir.path(), small_config()).unwrap());
}

#[test]
fn offset_for_time_returns_the_first_offset_at_or_after_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    // Non-monotonic timestamps: a saw tooth.
    let stamps: Vec<u64> = (0..500).map(|i| 100 + (i % 50) * 3 + i / 2).collect();
    for chunk in stamps.chunks(11) {
        let records: Vec<_> =
            chunk.iter().map(|&ts| Record { timestamp_ms: ts, topic: b"t", payload: &[1; 40] }).collect();
        log.append(0, &records).unwrap();
    }
    let expected = |t: u64| stamps.iter().position(|&ts| ts >= t).map(|i| i as u64);
    let check = |log: &SegmentLog| {
        for t in 0..stamps.iter().max().unwrap() + 3 {
            assert_eq!(log.offset_for_time(t).unwrap(), expected(t), "t = {t}");
        }
    };
    check(&log);
    log.close().unwrap();
    check(&SegmentLog::open(OsFs, dir.path(), small_config()).unwrap());
}

#[test]
fn retention_deletes_whole_segments_by_size_age_and_needed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 300, 5);
    let segments = log.segments();
    let n = segments.len();
    // Age: everything is old at t = 10^6, but a session still needs offset 100.
    let mut aged = log.config().clone();
    aged.retention = Retention { bytes_max: None, age_ms_max: Some(0) };
    drop(log);
    let mut log = SegmentLog::open(OsFs, dir.path(), aged).unwrap();
    let report = log.retain(1_000_000, 100).unwrap();
    let holding_100 = segments.iter().position(|s| s.next_offset > 100).unwrap();
    assert_eq!(report.segments_deleted, holding_100);
    assert_eq!(log.start_offset(), segments[holding_100].base_offset);
    assert_eq!(
        read_all(&log, 0).first(),
        Some(&segments[holding_100].base_offset),
        "reads start at the log start"
    );
    // Nothing needed any more: every sealed segment goes, the active one stays.
    let report = log.retain(1_000_000, u64::MAX).unwrap();
    assert_eq!(report.segments_deleted, n - 1 - holding_100);
    assert_eq!(log.segments().len(), 1);
    assert_eq!(files(dir.path(), "log"), 1);
    assert_eq!(files(dir.path(), "tpx"), 0);
    drop(log);

    // Size: the cap wins over sessions' needs.
    let dir = tempfile::tempdir().unwrap();
    let mut capped = small_config();
    capped.retention = Retention { bytes_max: Some(10_000), age_ms_max: None };
    let mut log = SegmentLog::open(OsFs, dir.path(), capped).unwrap();
    append_range(&mut log, 0, 300, 5);
    log.retain(0, 0).unwrap();
    assert!(log.bytes() <= 10_000);
    assert!(
        log.bytes() + log.segments()[0].bytes > 10_000 || log.segments().len() == 1,
        "deletes no more than needed"
    );
    // Age alone with a fresh clock deletes nothing.
    let mut young = small_config();
    young.retention = Retention { bytes_max: None, age_ms_max: Some(1_000_000) };
    drop(log);
    let mut log = SegmentLog::open(OsFs, dir.path(), young).unwrap();
    assert_eq!(log.retain(2000, u64::MAX).unwrap().segments_deleted, 0);
}

#[test]
fn interval_sync_policy_syncs_when_the_caller_says_the_interval_passed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { sync: SyncPolicy::Interval { interval_ms: 5 }, ..small_config() };
    let mut log = SegmentLog::open(OsFs, dir.path(), config).unwrap();
    let rec = [Record { timestamp_ms: 0, topic: b"t", payload: b"p" }];
    log.append(100, &rec).unwrap();
    log.append(102, &rec).unwrap();
    assert_eq!(log.durable_offset(), 0);
    assert_eq!(log.poll_timeout(), Some(105), "due 5 ms after the oldest unsynced append");
    assert!(!log.poll_sync(104).unwrap());
    assert!(log.poll_sync(105).unwrap());
    assert_eq!((log.durable_offset(), log.poll_timeout()), (2, None));
    log.append(200, &rec).unwrap();
    log.append(206, &rec).unwrap(); // an append past the deadline syncs by itself
    assert_eq!(log.durable_offset(), 4);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    assert!(matches!(SegmentLog::open(OsFs, dir.path(), small_config()), Err(Error::Locked { .. })));
    drop(log);
    SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
}

#[test]
fn invalid_records_and_configs_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { record_bytes_max: 100, ..small_config() };
    let mut log = SegmentLog::open(OsFs, dir.path(), config).unwrap();
    let long_topic = vec![b'a'; storage::TOPIC_BYTES_MAX + 1];
    let r = log.append(0, &[Record { timestamp_ms: 0, topic: &long_topic, payload: b"" }]);
    assert!(matches!(r, Err(Error::TopicTooLong { .. })));
    let r = log.append(0, &[Record { timestamp_ms: 0, topic: b"t", payload: &[0; 100] }]);
    assert!(matches!(r, Err(Error::RecordTooLarge { bytes: 129, bytes_max: 100 })));
    assert_eq!(log.append(0, &[]).unwrap(), 0..0);
    assert_eq!(log.next_offset(), 0);
    assert!(!log.is_poisoned());
    drop(log);
    let bad = LogConfig { index_interval_bytes: 0, ..small_config() };
    assert!(matches!(SegmentLog::open(OsFs, dir.path(), bad), Err(Error::Config(_))));
}

#[test]
fn missing_or_damaged_indexes_of_sealed_segments_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    append_range(&mut log, 0, 200, 4);
    let segments = log.segments();
    log.close().unwrap();
    let name = |s: &storage::SegmentInfo, ext: &str| dir.path().join(format!("{:020}.{ext}", s.base_offset));
    std::fs::remove_file(name(&segments[0], "idx")).unwrap();
    std::fs::remove_file(name(&segments[1], "tpx")).unwrap();
    std::fs::write(name(&segments[2], "tidx"), b"garbage").unwrap();
    let tidx = name(&segments[3], "tidx");
    let len = std::fs::metadata(&tidx).unwrap().len();
    std::fs::File::options().write(true).open(&tidx).unwrap().set_len(len - 12).unwrap();

    let log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    let rebuilt = &log.recovery_report().indexes_rebuilt;
    for s in &segments[..4] {
        assert!(rebuilt.contains(&name(s, "log")), "{} not rebuilt", s.base_offset);
    }
    assert_eq!(log.segments(), segments);
    assert_eq!(read_all(&log, 0), (0..200).collect::<Vec<_>>());
    for t in [1000, 1050, 1199] {
        assert_eq!(log.offset_for_time(t).unwrap(), Some(t - 1000));
    }
    drop(log);
    let log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt.len(), 1, "only the active segment is scanned");
}

#[test]
fn deleted_segments_are_recycled_and_their_former_records_never_reappear() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        recycle_segments_max: 2,
        retention: Retention { bytes_max: None, age_ms_max: Some(0) },
        ..small_config()
    };
    let mut log = SegmentLog::open(OsFs, dir.path(), config.clone()).unwrap();
    append_range(&mut log, 0, 300, 5);
    let sealed = log.segments().len() - 1;
    assert!(sealed > 2);
    let report = log.retain(1_000_000, u64::MAX).unwrap();
    assert_eq!(report.segments_deleted, sealed);
    assert_eq!(files(dir.path(), "spare"), 2, "two spares kept, the rest deleted");
    assert_eq!(files(dir.path(), "log"), 1);
    // The next rolls reuse the spares: their tails still hold the former records.
    append_range(&mut log, 300, 400, 5);
    assert_eq!(files(dir.path(), "spare"), 0);
    let start = log.start_offset();
    assert_eq!(read_all(&log, 0), (start..400).collect::<Vec<_>>());
    // A crash (no close) leaves the active segment's former bytes behind its records.
    drop(log);
    let mut log = SegmentLog::open(OsFs, dir.path(), config.clone()).unwrap();
    let report = log.recovery_report();
    assert!(report.torn_tails.is_empty() && report.repairs.is_empty(), "{report:?}");
    assert_eq!(read_all(&log, 0), (start..400).collect::<Vec<_>>());
    append_range(&mut log, 400, 450, 5);
    log.close().unwrap();
    let log = SegmentLog::open(OsFs, dir.path(), config).unwrap();
    assert_eq!(read_all(&log, 0), (start..450).collect::<Vec<_>>());
}

#[test]
fn small_segments_are_deleted_not_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { retention: Retention { bytes_max: None, age_ms_max: Some(0) }, ..small_config() };
    let mut log = SegmentLog::open(OsFs, dir.path(), config).unwrap();
    append_range(&mut log, 0, 3, 3);
    log.roll().unwrap();
    append_range(&mut log, 3, 4, 1);
    assert_eq!(log.retain(1_000_000, u64::MAX).unwrap().segments_deleted, 1);
    assert_eq!(files(dir.path(), "spare"), 0);
}

#[test]
fn a_log_opened_at_a_base_offset_starts_there_and_a_reset_jumps_forward() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open_at(OsFs, dir.path(), small_config(), 1000).unwrap();
    assert_eq!((log.start_offset(), log.next_offset()), (1000, 1000));
    append_range(&mut log, 1000, 1200, 7);
    assert!(log.segments().len() > 2);
    assert_eq!(read_all(&log, 0), (1000..1200).collect::<Vec<_>>());
    drop(log);
    // A base it already reaches: opened as it was.
    let mut log = SegmentLog::open_at(OsFs, dir.path(), small_config(), 1100).unwrap();
    assert_eq!((log.start_offset(), log.next_offset()), (1000, 1200));
    assert!(matches!(log.reset(1199), Err(Error::ResetBackwards { offset: 1199, next_offset: 1200 })));
    log.reset(5000).unwrap();
    assert_eq!((log.start_offset(), log.next_offset(), log.durable_offset()), (5000, 5000, 5000));
    assert!(read_all(&log, 0).is_empty());
    assert_eq!(log.segments().len(), 1, "every older segment deleted");
    append_range(&mut log, 5000, 5050, 5);
    drop(log);
    let log = SegmentLog::open(OsFs, dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0), (5000..5050).collect::<Vec<_>>());
    drop(log);
    // Behind a snapshot: reset on open, no file of the old records left.
    let log = SegmentLog::open_at(OsFs, dir.path(), small_config(), 9000).unwrap();
    assert_eq!((log.start_offset(), log.next_offset()), (9000, 9000));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().filter(|n| n.ends_with(".log")).all(|n| n.contains("9000")), "{names:?}");
}
