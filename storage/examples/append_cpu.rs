//! The CPU cost of the append path, without `fdatasync`: what the log adds per record on
//! top of the kernel's copy into the page cache. Stable on a shared machine where the
//! `fdatasync` latency the `append` bench measures is not; use it under `perf record -g`.
//!
//! `cargo run --release -p storage --example append_cpu -- [payload_bytes] [batch] [seconds]`
//! (defaults: 64 1024 3).

use std::time::Instant;

use storage::{LogConfig, OsFs, Record, Retention, SegmentLog, SyncPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or_else(|| default.to_owned());
    let payload_bytes: usize = arg(1, "64").parse()?;
    let batch: usize = arg(2, "1024").parse()?;
    let seconds: f64 = arg(3, "3").parse()?;
    let dir = std::env::temp_dir().join(format!("storage-append-cpu-{}", std::process::id()));
    let config = LogConfig {
        segment_age_ms_max: None,
        // Never due: no fdatasync during the run.
        sync: SyncPolicy::Interval { interval_ms: u64::MAX / 4 },
        retention: Retention { bytes_max: Some(3 * (256 << 20)), age_ms_max: None },
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(OsFs, &dir, config)?;
    let payload = vec![0xA5u8; payload_bytes];
    let records = vec![Record { timestamp_ms: 0, topic: b"fleet/v000042/gps/1a", payload: &payload }; batch];
    let start = Instant::now();
    let (mut batches, mut now_ms) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        now_ms += 1;
        log.append(now_ms, &records)?;
        batches += 1;
        if batches.is_multiple_of(64) {
            log.retain(now_ms, u64::MAX)?;
        }
    }
    let elapsed = start.elapsed();
    let n = batches * batch as u64;
    let bytes = n * (28 + 20 + payload_bytes as u64);
    println!(
        "{payload_bytes} B x {batch}: {} ns/record, {:.0} MiB/s",
        elapsed.as_nanos() as u64 / n,
        bytes as f64 / elapsed.as_secs_f64() / f64::from(1 << 20)
    );
    drop(log);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
