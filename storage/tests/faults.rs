//! Disk faults and damage: a failed fsync poisons the log, a full disk is an error (never
//! SIGBUS), short writes are retried, and corruption is reported with file and position (or
//! cut by repair), never skipped.

use std::path::{Path, PathBuf};

use storage::env::faulty::FaultyFs;
use storage::{Error, LogConfig, OsFs, Reason, Record, RecoveryMode, SegmentLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        segment_age_ms_max: None,
        index_interval_bytes: 200,
        index_bytes_max: 1024,
        ..LogConfig::default()
    }
}

fn repair() -> LogConfig {
    LogConfig { recovery: RecoveryMode::Repair, ..config() }
}

fn payload(i: u64) -> Vec<u8> {
    vec![i as u8; 20 + (i % 13) as usize]
}

fn append<F: storage::env::FileSystem>(log: &mut SegmentLog<F>, from: u64, to: u64) -> storage::Result<()> {
    for i in from..to {
        let p = payload(i);
        log.append(i, &[Record { timestamp_ms: i, topic: b"t", payload: &p }])?;
    }
    Ok(())
}

/// Offsets of all records, checking their contents.
fn offsets<F: storage::env::FileSystem>(log: &SegmentLog<F>) -> storage::Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut next = log.start_offset();
    loop {
        let batch = log.read_from(next, 4096)?;
        let Some(last) = batch.last() else { return Ok(out) };
        for r in &batch {
            assert_eq!(r.payload, payload(r.offset));
            out.push(r.offset);
        }
        next = last.offset + 1;
    }
}

fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Position of record `offset` in its segment `base`, computed from the record sizes.
fn position(base: u64, offset: u64) -> u64 {
    32 + (base..offset).map(|i| 28 + 1 + payload(i).len() as u64).sum::<u64>()
}

fn flip_byte(path: &Path, pos: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[pos as usize] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_failed_fsync_poisons_the_log_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut log = SegmentLog::open(fs.clone(), dir.path(), config()).unwrap();
    append(&mut log, 0, 5).unwrap();
    fs.set(|f| f.sync_fails = true);
    let err = append(&mut log, 5, 6).unwrap_err();
    assert!(matches!(err, Error::Io { op: "fdatasync", .. }), "{err}");
    assert!(log.is_poisoned());
    assert_eq!(log.durable_offset(), 5);
    fs.set(|f| f.sync_fails = false);
    assert!(matches!(append(&mut log, 6, 7), Err(Error::Poisoned)));
    assert!(matches!(log.sync(), Err(Error::Poisoned)));
    assert!(matches!(log.read_from(0, 100), Err(Error::Poisoned)));
    assert!(matches!(log.retain(0, 0), Err(Error::Poisoned)));
    assert!(matches!(log.close(), Err(Error::Poisoned)));
    // Reopening runs recovery; the synced records are there, the unsynced one may be.
    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    let got = offsets(&log).unwrap();
    assert!(got == (0..5).collect::<Vec<_>>() || got == (0..6).collect::<Vec<_>>(), "{got:?}");
}

#[test]
fn a_failed_fsync_of_data_at_roll_poisons_but_one_of_the_new_segment_does_not() {
    // Creating the next segment fails before anything refers to it: it is removed, and the
    // log carries on.
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut log = SegmentLog::open(fs.clone(), dir.path(), config()).unwrap();
    append(&mut log, 0, 5).unwrap();
    fs.set(|f| f.sync_fails = true);
    assert!(matches!(log.roll(), Err(Error::Io { op: "fsync", .. })));
    assert!(!log.is_poisoned());
    fs.set(|f| f.sync_fails = false);
    log.roll().unwrap();
    append(&mut log, 5, 6).unwrap();
    assert_eq!(log.segments().len(), 2);
    drop(log);

    // Syncing the records of the segment being sealed fails: poisoned.
    let dir = tempfile::tempdir().unwrap();
    let lazy = LogConfig { sync: storage::SyncPolicy::Interval { interval_ms: 1000 }, ..config() };
    let mut log = SegmentLog::open(fs.clone(), dir.path(), lazy).unwrap();
    append(&mut log, 0, 5).unwrap();
    assert_eq!(log.durable_offset(), 0);
    fs.set(|f| f.sync_fails = true);
    assert!(matches!(log.roll(), Err(Error::Io { op: "fdatasync", .. })));
    assert!(log.is_poisoned());
}

#[test]
fn a_full_disk_at_roll_is_an_error_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut log = SegmentLog::open(fs.clone(), dir.path(), config()).unwrap();
    append(&mut log, 0, 20).unwrap();
    assert_eq!(log.segments().len(), 1);
    fs.set(|f| f.no_space = true);
    // Appends into the preallocated active segment need no new space.
    append(&mut log, 20, 30).unwrap();
    // The append that needs a new segment fails cleanly: no SIGBUS, nothing written.
    let next = log.next_offset();
    let err = append(&mut log, next, 100).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(!log.is_poisoned());
    let stuck = log.next_offset();
    assert_eq!(offsets(&log).unwrap(), (0..stuck).collect::<Vec<_>>());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4, "the half-made segment was removed");
    fs.set(|f| f.no_space = false);
    append(&mut log, stuck, stuck + 100).unwrap();
    assert!(log.segments().len() > 1);
    log.close().unwrap();
    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    assert_eq!(offsets(&log).unwrap(), (0..stuck + 100).collect::<Vec<_>>());
}

#[test]
fn a_full_disk_when_opening_a_new_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    fs.set(|f| f.no_space = true);
    let err = SegmentLog::open(fs, dir.path(), config()).unwrap_err();
    assert!(err.is_no_space(), "{err}");
}

#[test]
fn short_writes_are_retried_until_complete() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    fs.set(|f| f.short_writes = true);
    let mut log = SegmentLog::open(fs, dir.path(), config()).unwrap();
    append(&mut log, 0, 200).unwrap();
    assert!(log.segments().len() > 3);
    log.close().unwrap();
    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    assert!(log.recovery_report().torn_tails.is_empty());
    assert_eq!(offsets(&log).unwrap(), (0..200).collect::<Vec<_>>());
}

#[test]
fn corruption_in_a_middle_record_is_reported_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    append(&mut log, 0, 10).unwrap();
    assert_eq!(log.segments().len(), 1);
    log.close().unwrap();
    let file = log_path(dir.path(), 0);
    flip_byte(&file, position(0, 4) + 30);

    let err = SegmentLog::open(OsFs, dir.path(), config()).unwrap_err();
    match err {
        Error::Corruption { file: f, position: p, offset, reason } => {
            assert_eq!(f, file);
            assert_eq!(p, position(0, 4));
            assert_eq!(offset, Some(4));
            assert_eq!(reason, Reason::RecordChecksum);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err_string(&file).contains(&format!("at byte {}", position(0, 4))));

    // The operator's repair cuts the log there, and says so.
    let mut log = SegmentLog::open(OsFs, dir.path(), repair()).unwrap();
    let cut = &log.recovery_report().repairs[0];
    assert_eq!((&cut.file, cut.position, cut.offset), (&file, position(0, 4), 4));
    assert_eq!(offsets(&log).unwrap(), (0..4).collect::<Vec<_>>());
    append(&mut log, 4, 8).unwrap();
    drop(log);
    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    assert_eq!(offsets(&log).unwrap(), (0..8).collect::<Vec<_>>());
}

fn err_string(file: &Path) -> String {
    SegmentLog::open(OsFs, file.parent().unwrap(), config()).unwrap_err().to_string()
}

#[test]
fn corruption_in_a_sealed_segment_is_reported_when_read_and_cut_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    append(&mut log, 0, 200).unwrap();
    let segments = log.segments();
    assert!(segments.len() >= 4);
    log.close().unwrap();
    let victim = &segments[1];
    let bad = victim.base_offset + 3;
    let file = log_path(dir.path(), victim.base_offset);
    flip_byte(&file, position(victim.base_offset, bad) + 29);

    // Sealed segments are trusted on open; the record checksum catches it on read.
    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    match offsets(&log).unwrap_err() {
        Error::Corruption { file: f, position: p, offset, reason } => {
            assert_eq!(
                (f, p, offset, reason),
                (file.clone(), position(victim.base_offset, bad), Some(bad), Reason::RecordChecksum)
            );
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(log.read_from(bad + 1, 10).unwrap()[0].offset, bad + 1, "the rest stays readable");
    drop(log);

    let log = SegmentLog::open(OsFs, dir.path(), repair()).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.repairs.len(), 1);
    assert_eq!(report.repairs[0].position, position(victim.base_offset, bad));
    assert!(report.files_removed.contains(&log_path(dir.path(), segments[2].base_offset)));
    assert_eq!(offsets(&log).unwrap(), (0..bad).collect::<Vec<_>>());
    assert_eq!(log.next_offset(), bad);
}

#[test]
fn a_damaged_sealed_index_is_reported_naming_the_index_and_rebuilt_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    append(&mut log, 0, 200).unwrap();
    let first = log.segments()[0].clone();
    log.close().unwrap();
    let idx = dir.path().join(format!("{:020}.idx", first.base_offset));
    flip_byte(&idx, 32 + 8 + 5);

    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    match log.read_from(first.next_offset - 1, 10).unwrap_err() {
        Error::Corruption { file, reason, .. } => {
            assert_eq!((file, reason), (idx.clone(), Reason::IndexChecksum))
        }
        other => panic!("expected corruption, got {other}"),
    }
    drop(log);
    let log = SegmentLog::open(OsFs, dir.path(), repair()).unwrap();
    assert!(log.recovery_report().repairs.is_empty());
    assert_eq!(offsets(&log).unwrap(), (0..200).collect::<Vec<_>>());
}

#[test]
fn a_damaged_log_header_or_a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    append(&mut log, 0, 200).unwrap();
    let segments = log.segments();
    log.close().unwrap();

    flip_byte(&log_path(dir.path(), segments[2].base_offset), 20);
    match SegmentLog::open(OsFs, dir.path(), config()).unwrap_err() {
        Error::Corruption { file, position: 0, reason: Reason::HeaderChecksum, .. } => {
            assert_eq!(file, log_path(dir.path(), segments[2].base_offset));
        }
        other => panic!("expected corruption, got {other}"),
    }
    flip_byte(&log_path(dir.path(), segments[2].base_offset), 20);

    std::fs::remove_file(log_path(dir.path(), segments[1].base_offset)).unwrap();
    match SegmentLog::open(OsFs, dir.path(), config()).unwrap_err() {
        Error::Corruption { reason: Reason::Gap { expected, found }, .. } => {
            assert_eq!((expected, found), (segments[1].base_offset, segments[2].base_offset));
        }
        other => panic!("expected a gap, got {other}"),
    }
    let log = SegmentLog::open(OsFs, dir.path(), repair()).unwrap();
    assert_eq!(offsets(&log).unwrap(), (0..segments[1].base_offset).collect::<Vec<_>>());
}

#[test]
fn repair_of_a_damaged_first_segment_header_restarts_the_log_at_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    append(&mut log, 0, 200).unwrap();
    assert!(log.segments().len() > 2);
    log.close().unwrap();
    flip_byte(&log_path(dir.path(), 0), 3);
    assert!(matches!(
        SegmentLog::open(OsFs, dir.path(), config()),
        Err(Error::Corruption { position: 0, .. })
    ));

    let mut log = SegmentLog::open(OsFs, dir.path(), repair()).unwrap();
    assert_eq!(log.recovery_report().repairs[0].file, log_path(dir.path(), 0));
    assert_eq!((log.start_offset(), log.next_offset()), (0, 0));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        4,
        "LOCK and one empty segment's .log, .idx, .tidx"
    );
    append(&mut log, 0, 30).unwrap();
    drop(log);
    let log = SegmentLog::open(OsFs, dir.path(), config()).unwrap();
    assert_eq!(offsets(&log).unwrap(), (0..30).collect::<Vec<_>>());
}

#[test]
fn the_log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SegmentLog>();
    check::<SegmentLog<FaultyFs>>();
}
