//! Append and replay throughput of the segment log, against a raw-device reference measured in
//! the same run: plain sequential `write` + `fdatasync` of the same bytes to a file in the same
//! directory (`raw`). The goal is batched appends at >= 80% of the reference; the ratios are
//! printed at the end, measured with the three writers taking turns (see [`ratios`]) because
//! `fdatasync` latency on a shared machine drifts more than the differences measured. A
//! second reference, `raw_fallocated`, does the same into a file preallocated with
//! `fallocate` as the log's segments are: on ext4 every `fdatasync` into such a file also
//! converts unwritten extents, which the log avoids by zeroing 1 MiB ahead of small batches
//! (FORMAT.md section 3), so `raw_fallocated / raw` is the cost of naive preallocation.
//! `log_steady` appends to a segment that reuses a deleted segment's file (steady state of a
//! broker whose retention deletes segments), whose blocks are all written already.
//! `examples/append_cpu.rs` measures the log's CPU cost per record without `fdatasync`.
//!
//! `cargo bench -p storage -- --warm-up-time 1 --measurement-time 3`
//!
//! Records carry a 20-byte topic and a 64 B or 1 KiB payload (112 B and 1072 B encoded);
//! every batch is one `append` with `SyncPolicy::EveryBatch`, so one `fdatasync` per batch,
//! and the reference syncs once per batch of the same bytes. Files live under Cargo's
//! target tmp dir and are deleted afterwards.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use storage::{LogConfig, OsFs, Record, Retention, SegmentLog};

const TOPIC: &[u8] = b"fleet/v000042/gps/1a";
const SEGMENT_BYTES: u64 = 256 << 20;

fn bench_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("storage-bench").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_age_ms_max: None,
        // Bounds the disk the bench uses; applied between measurements.
        retention: Retention { bytes_max: Some(3 * SEGMENT_BYTES), age_ms_max: None },
        ..LogConfig::default()
    }
}

/// Plain sequential appends to a file, starting a new file every segment's worth of bytes
/// like the log does; with `preallocate`, each file is first `fallocate`d to a segment's size
/// as the log does, which isolates the cost of the log's own work from ext4's
/// unwritten-extent conversion on `fdatasync`.
struct Raw {
    dir: PathBuf,
    preallocate: bool,
    file: fs::File,
    written: u64,
    files: u64,
}

impl Raw {
    fn new(dir: PathBuf, preallocate: bool) -> Self {
        let file = Self::create(&dir, 0, preallocate);
        Self { dir, preallocate, file, written: 0, files: 0 }
    }

    fn create(dir: &Path, n: u64, preallocate: bool) -> fs::File {
        let file = fs::File::create(dir.join(format!("raw-{n}"))).unwrap();
        if preallocate {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, SEGMENT_BYTES).unwrap();
        }
        file
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.written + bytes.len() as u64 > SEGMENT_BYTES {
            self.files += 1;
            let _ = fs::remove_file(self.dir.join(format!("raw-{}", self.files - 1)));
            self.file = Self::create(&self.dir, self.files, self.preallocate);
            self.written = 0;
        }
        self.file.write_all(bytes).unwrap();
        self.file.sync_data().unwrap();
        self.written += bytes.len() as u64;
    }
}

fn append(c: &mut Criterion) {
    for payload_bytes in [64usize, 1024] {
        let payload = vec![0xA5u8; payload_bytes];
        let mut group = c.benchmark_group(format!("append_{payload_bytes}B"));
        group.sample_size(10);
        for batch in [1usize, 64, 1024] {
            let records = vec![Record { timestamp_ms: 0, topic: TOPIC, payload: &payload }; batch];
            let batch_bytes =
                records.iter().map(|r| (28 + r.topic.len() + r.payload.len()) as u64).sum::<u64>();
            group.throughput(Throughput::Bytes(batch_bytes));

            let dir = bench_dir(&format!("log-{payload_bytes}-{batch}"));
            let mut log = SegmentLog::open(OsFs, &dir, log_config()).unwrap();
            let mut now_ms = 0;
            group.bench_function(BenchmarkId::new("log", batch), |b| {
                b.iter_custom(|iters| {
                    log.retain(now_ms, u64::MAX).unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        now_ms += 1;
                        log.append(now_ms, &records).unwrap();
                    }
                    start.elapsed()
                })
            });
            drop(log);
            let _ = fs::remove_dir_all(&dir);

            for (kind, preallocate) in [("raw", false), ("raw_fallocated", true)] {
                let dir = bench_dir(&format!("{kind}-{payload_bytes}-{batch}"));
                let bytes = vec![0xA5u8; batch_bytes as usize];
                let mut raw = Raw::new(dir.clone(), preallocate);
                group.bench_function(BenchmarkId::new(kind, batch), |b| {
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            raw.append(&bytes);
                        }
                        start.elapsed()
                    })
                });
                drop(raw);
                let _ = fs::remove_dir_all(&dir);
            }
        }
        group.finish();
    }
}

fn replay(c: &mut Criterion) {
    const LOG_BYTES: u64 = 64 << 20;
    const READ_BYTES: u64 = 1 << 20;
    const TOPICS: usize = 16;
    let dir = bench_dir("replay");
    let mut log =
        SegmentLog::open(OsFs, &dir, LogConfig { segment_bytes_max: 16 << 20, ..log_config() }).unwrap();
    let payload = vec![0x5Au8; 1024];
    let topics: Vec<Vec<u8>> = (0..TOPICS).map(|k| format!("fleet/v{k:06}/gps/1a").into_bytes()).collect();
    while log.bytes() < LOG_BYTES {
        let records: Vec<_> = (0..1024)
            .map(|i| Record { timestamp_ms: 0, topic: &topics[i % TOPICS], payload: &payload })
            .collect();
        log.append(0, &records).unwrap();
    }
    let (start, end) = (log.start_offset(), log.next_offset());

    let mut group = c.benchmark_group("replay_1KiB");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(READ_BYTES));
    let mut at = start;
    group.bench_function("read_from_1MiB", |b| {
        b.iter(|| {
            let records = log.read_from(at, READ_BYTES).unwrap();
            at = records.last().map_or(start, |r| r.offset + 1);
            if at >= end {
                at = start;
            }
            records.len()
        })
    });
    // One topic in 16: the topic index skips the other fifteen without reading them.
    let mut at = start;
    group.bench_function("read_topics_1_of_16_1MiB", |b| {
        b.iter(|| {
            let records = log.read_topics(&[&topics[3]], at, READ_BYTES).unwrap();
            at = records.last().map_or(start, |r| r.offset + 1);
            if records.is_empty() || at >= end {
                at = start;
            }
            records.len()
        })
    });
    group.finish();
    drop(log);
    let _ = fs::remove_dir_all(&dir);
}

/// A log in steady state: retention has deleted a full segment and the active segment reuses
/// its file (see `LogConfig::recycle_segments_max`), as in a broker that has run for a while.
fn steady_log(dir: &Path) -> SegmentLog {
    let config = LogConfig { retention: Retention { bytes_max: None, age_ms_max: Some(0) }, ..log_config() };
    let mut log = SegmentLog::open(OsFs, dir, config).unwrap();
    let payload = vec![0u8; 1024];
    let fill = vec![Record { timestamp_ms: 0, topic: TOPIC, payload: &payload }; 1024];
    while log.segments().len() < 2 {
        log.append(0, &fill).unwrap();
    }
    log.retain(1, u64::MAX).unwrap(); // the full segment becomes a spare
    log.roll().unwrap(); // the next segment reuses it
    log.retain(1, u64::MAX).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert!(fs::read_dir(dir).unwrap().all(|e| e.unwrap().path().extension().is_none_or(|x| x != "spare")));
    log
}

/// The ratios, measured robustly on a shared machine: the writers take turns in short rounds
/// (so they see the same disk and CPU conditions), and each ratio is the median over rounds of
/// the paired per-round ratio. `log` appends to a fresh (`fallocate`d) segment, `log_steady`
/// to a recycled one.
fn ratios(_: &mut Criterion) {
    // More rounds (`STORAGE_BENCH_ROUNDS=60`) narrow the spread on a noisy machine.
    let rounds: usize = std::env::var("STORAGE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    const ROUND_TIME: Duration = Duration::from_millis(60);
    const KINDS: usize = 4;
    println!(
        "\nappend throughput, interleaved rounds (median MiB/s; ratios = median of paired per-round ratios):"
    );
    println!(
        "{:>8} {:>6} {:>8} {:>11} {:>8} {:>11} {:>8} {:>15} {:>15}",
        "payload",
        "batch",
        "log",
        "log_steady",
        "raw",
        "raw_falloc",
        "log/raw",
        "log_steady/raw",
        "log/raw_falloc"
    );
    for payload_bytes in [64usize, 1024] {
        let payload = vec![0xA5u8; payload_bytes];
        for batch in [1usize, 64, 1024] {
            let records = vec![Record { timestamp_ms: 0, topic: TOPIC, payload: &payload }; batch];
            let batch_bytes = (batch * (28 + TOPIC.len() + payload_bytes)) as u64;
            let bytes = vec![0xA5u8; batch_bytes as usize];
            let dir = bench_dir(&format!("ratio-{payload_bytes}-{batch}"));
            let mut log = SegmentLog::open(OsFs, dir.join("log"), log_config()).unwrap();
            let mut steady = steady_log(&dir.join("steady"));
            fs::create_dir_all(dir.join("raw")).unwrap();
            fs::create_dir_all(dir.join("falloc")).unwrap();
            let mut raw = Raw::new(dir.join("raw"), false);
            let mut falloc = Raw::new(dir.join("falloc"), true);
            let mut mib_s: [Vec<f64>; KINDS] = Default::default();
            let mut now_ms = 0;
            for round in 0..rounds {
                log.retain(now_ms, u64::MAX).unwrap();
                for k in 0..KINDS {
                    let kind = (round + k) % KINDS; // rotate who goes first
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < ROUND_TIME {
                        now_ms += 1;
                        match kind {
                            0 => drop(log.append(now_ms, &records).unwrap()),
                            1 => drop(steady.append(now_ms, &records).unwrap()),
                            2 => raw.append(&bytes),
                            _ => falloc.append(&bytes),
                        }
                        n += 1;
                    }
                    mib_s[kind]
                        .push((n * batch_bytes) as f64 / start.elapsed().as_secs_f64() / f64::from(1 << 20));
                }
            }
            let paired =
                |a: usize, b: usize| 100.0 * median((0..rounds).map(|i| mib_s[a][i] / mib_s[b][i]).collect());
            let [l, st, r, f] = mib_s.clone().map(median);
            println!(
                "{payload_bytes:>7}B {batch:>6} {l:>8.2} {st:>11.2} {r:>8.2} {f:>11.2} {:>7.0}% {:>14.0}% {:>14.0}%",
                paired(0, 2),
                paired(1, 2),
                paired(0, 3)
            );
            drop((log, steady, raw, falloc));
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

criterion_group!(benches, append, replay, ratios);
criterion_main!(benches);
