//! Append and replay throughput of the segment log, against a raw-device reference measured in
//! the same run: plain sequential `write` + `fdatasync` of the same bytes to a file in the same
//! directory. The goal is batched appends at >= 80% of the reference; the ratios are printed
//! at the end.
//!
//! `cargo bench -p storage -- --warm-up-time 1 --measurement-time 3`
//!
//! Records carry a 20-byte topic and a 64 B or 1 KiB payload (112 B and 1072 B encoded);
//! every batch is one `append` with `SyncPolicy::EveryBatch`, so one `fdatasync` per batch,
//! and the reference syncs once per batch of the same bytes. Files live under Cargo's
//! target tmp dir and are deleted afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use storage::{LogConfig, OsFs, Record, Retention, SegmentLog};

const TOPIC: &[u8] = b"fleet/v000042/gps/1a";
const SEGMENT_BYTES: u64 = 256 << 20;

/// (payload bytes, batch, "log" or "raw").
type Key = (usize, usize, &'static str);

/// Bytes and time measured per key, warm-up included.
static TALLY: Mutex<BTreeMap<Key, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn tally(key: Key, bytes: u64, elapsed: Duration) {
    let mut t = TALLY.lock().unwrap();
    let e = t.entry(key).or_default();
    e.0 += bytes;
    e.1 += elapsed;
}

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
/// like the log does.
struct Raw {
    dir: PathBuf,
    file: fs::File,
    written: u64,
    files: u64,
}

impl Raw {
    fn new(dir: PathBuf) -> Self {
        let file = fs::File::create(dir.join("raw-0")).unwrap();
        Self { dir, file, written: 0, files: 0 }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.written + bytes.len() as u64 > SEGMENT_BYTES {
            self.files += 1;
            let _ = fs::remove_file(self.dir.join(format!("raw-{}", self.files - 1)));
            self.file = fs::File::create(self.dir.join(format!("raw-{}", self.files))).unwrap();
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
                    let elapsed = start.elapsed();
                    tally((payload_bytes, batch, "log"), iters * batch_bytes, elapsed);
                    elapsed
                })
            });
            drop(log);
            let _ = fs::remove_dir_all(&dir);

            let dir = bench_dir(&format!("raw-{payload_bytes}-{batch}"));
            let bytes = vec![0xA5u8; batch_bytes as usize];
            let mut raw = Raw::new(dir.clone());
            group.bench_function(BenchmarkId::new("raw", batch), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        raw.append(&bytes);
                    }
                    let elapsed = start.elapsed();
                    tally((payload_bytes, batch, "raw"), iters * batch_bytes, elapsed);
                    elapsed
                })
            });
            drop(raw);
            let _ = fs::remove_dir_all(&dir);
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

fn report(_: &mut Criterion) {
    let t = TALLY.lock().unwrap();
    let mib_s = |(bytes, elapsed): (u64, Duration)| bytes as f64 / elapsed.as_secs_f64() / f64::from(1 << 20);
    println!("\nappend throughput vs raw write+fdatasync of the same bytes (same run):");
    println!("{:>8} {:>6} {:>12} {:>12} {:>7}", "payload", "batch", "log MiB/s", "raw MiB/s", "ratio");
    for (&(payload, batch, kind), &log) in t.iter() {
        if kind != "log" {
            continue;
        }
        let Some(&raw) = t.get(&(payload, batch, "raw")) else { continue };
        let (l, r) = (mib_s(log), mib_s(raw));
        println!("{payload:>7}B {batch:>6} {l:>12.1} {r:>12.1} {:>6.0}%", 100.0 * l / r);
    }
}

criterion_group!(benches, append, replay, report);
criterion_main!(benches);
