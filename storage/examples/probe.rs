//! Throwaway probe (deleted after use).
#![allow(missing_docs)]
use std::io::Write;
use std::time::Instant;
use storage::{LogConfig, OsFs, Record, SegmentLog, SyncPolicy};

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/probe");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let payload = vec![0xA5u8; 64];
    let records = vec![Record { timestamp_ms: 0, topic: b"fleet/v000042/gps/1a", payload: &payload }; 1024];
    let batch_bytes = 1024 * 112;
    let n = 2000;
    for (name, sync) in [
        ("log nosync", SyncPolicy::Interval { interval_ms: u64::MAX / 4 }),
        ("log sync", SyncPolicy::EveryBatch),
    ] {
        let dir = root.join(name.replace(' ', "-"));
        let mut log = SegmentLog::open(
            OsFs,
            &dir,
            LogConfig { sync, segment_age_ms_max: None, ..LogConfig::default() },
        )
        .unwrap();
        let t = Instant::now();
        for i in 0..n {
            log.append(i, &records).unwrap();
        }
        let e = t.elapsed();
        println!(
            "{name}: {:.1} us/batch, {:.0} MiB/s",
            e.as_secs_f64() * 1e6 / n as f64,
            (n * batch_bytes) as f64 / e.as_secs_f64() / 1048576.0
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // CPU only: encode like the log does, no IO.
    let mut buf = Vec::with_capacity(batch_bytes as usize);
    let t = Instant::now();
    for _ in 0..n {
        buf.clear();
        for (i, r) in records.iter().enumerate() {
            let start = buf.len();
            buf.extend_from_slice(&(112u32).to_le_bytes());
            buf.extend_from_slice(&[0; 4]);
            buf.push(0xF1);
            buf.push(0);
            buf.extend_from_slice(&(r.topic.len() as u16).to_le_bytes());
            buf.extend_from_slice(&(i as u64).to_le_bytes());
            buf.extend_from_slice(&r.timestamp_ms.to_le_bytes());
            buf.extend_from_slice(r.topic);
            buf.extend_from_slice(r.payload);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[start..start + 4]), &buf[start + 8..]);
            buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        std::hint::black_box(&buf);
    }
    let e = t.elapsed();
    println!("encode only: {:.1} us/batch", e.as_secs_f64() * 1e6 / n as f64);
    let bytes = vec![0xA5u8; batch_bytes as usize];
    for (name, sync, prealloc) in [
        ("raw nosync", false, false),
        ("raw prealloc nosync", false, true),
        ("raw sync", true, false),
        ("raw prealloc sync", true, true),
    ] {
        let path = root.join(name.replace(' ', "-"));
        let mut f = std::fs::File::create(&path).unwrap();
        if prealloc {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 256 << 20).unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            f.write_all(&bytes).unwrap();
            if sync {
                f.sync_data().unwrap();
            }
        }
        let e = t.elapsed();
        println!(
            "{name}: {:.1} us/batch, {:.0} MiB/s",
            e.as_secs_f64() * 1e6 / n as f64,
            (n * batch_bytes) as f64 / e.as_secs_f64() / 1048576.0
        );
        let _ = std::fs::remove_file(&path);
    }
}

#[allow(dead_code)]
fn prealloc_nosync() {}
