//! SHELL. Samples a broker process's CPU time and memory from `/proc`, so results can be
//! expressed per broker CPU-second and per connection/subscription: figures that stay
//! comparable when the broker shares the machine with the load generator.
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (all threads, including exited ones, in
//! clock ticks of 1/100 s, the fixed `USER_HZ` of the Linux `/proc` interface). For short
//! phases ticks are too coarse, so each sample also sums the nanosecond run times of the live
//! threads (`/proc/PID/task/*/schedstat`); [`cpu_between`] uses that sum when the thread set
//! did not change between two samples. Memory is `VmRSS` and `VmHWM` of `/proc/PID/status`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `USER_HZ`: clock ticks per second in `/proc/PID/stat`.
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process's resource use.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time consumed so far, seconds.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size, bytes.
    pub hwm_bytes: u64,
    /// Run time of the live threads, nanoseconds, and a fingerprint of their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<ThreadCpu>,
}

/// Summed run time of a process's live threads.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Nanoseconds on CPU, summed over the threads.
    pub ns: u64,
    /// FNV-1a hash of the sorted thread ids.
    pub tids: u64,
}

/// CPU seconds between two samples of one process, as precisely as the samples allow.
pub fn cpu_between(a: &ProcSample, b: &ProcSample) -> f64 {
    match (a.threads, b.threads) {
        (Some(x), Some(y)) if x.tids == y.tids && y.ns >= x.ns => (y.ns - x.ns) as f64 / 1e9,
        _ => (b.cpu_secs - a.cpu_secs).max(0.0),
    }
}

fn thread_cpu(pid: u32) -> Option<ThreadCpu> {
    let mut tids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let mut ns = 0u64;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for tid in &tids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        for b in tid.to_le_bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    Some(ThreadCpu { ns, tids: hash })
}

/// Why a process could not be sampled.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The `/proc` file could not be read (the process is gone, or not ours to read).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file does not have the expected format.
    #[error("unexpected format of {0}")]
    Format(PathBuf),
}

fn read(path: PathBuf) -> Result<(String, PathBuf), ProcError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((text, path)),
        Err(source) => Err(ProcError::Read { path, source }),
    }
}

/// Reads every process of `pids` and sums them (a cluster's nodes): CPU seconds, RSS and
/// peak RSS add up; the thread run times add up under a fingerprint of every process's
/// thread set, so [`cpu_between`] uses them only when no process's threads changed.
/// `None` if `pids` is empty or any process cannot be read.
pub fn sample_sum(pids: &[u32]) -> Option<ProcSample> {
    let mut total = ProcSample::default();
    let mut threads = Some(ThreadCpu { ns: 0, tids: 0xcbf2_9ce4_8422_2325 });
    for &pid in pids {
        let s = sample(pid).ok()?;
        total.cpu_secs += s.cpu_secs;
        total.rss_bytes += s.rss_bytes;
        total.hwm_bytes += s.hwm_bytes;
        threads = match (threads, s.threads) {
            (Some(t), Some(x)) => Some(ThreadCpu {
                ns: t.ns + x.ns,
                tids: (t.tids ^ x.tids ^ u64::from(pid)).wrapping_mul(0x100_0000_01b3),
            }),
            _ => None,
        };
    }
    total.threads = threads;
    (!pids.is_empty()).then_some(total)
}

/// Reads the CPU time and memory of process `pid`.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let (stat, path) = read(PathBuf::from(format!("/proc/{pid}/stat")))?;
    let cpu_secs = parse_stat_cpu_ticks(&stat).ok_or(ProcError::Format(path))? as f64 / TICKS_PER_SEC;
    let (status, path) = read(PathBuf::from(format!("/proc/{pid}/status")))?;
    let rss_bytes = status_kb(&status, "VmRSS:").ok_or_else(|| ProcError::Format(path.clone()))? * 1024;
    let hwm_bytes = status_kb(&status, "VmHWM:").unwrap_or(0) * 1024;
    Ok(ProcSample { cpu_secs, rss_bytes, hwm_bytes, threads: thread_cpu(pid) })
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether a process with this id exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 5 \
                    1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn sums_over_processes() {
        let me = std::process::id();
        let one = sample_sum(&[me]).expect("own entry");
        let two = sample_sum(&[me, me]).expect("own entry twice");
        assert!(two.rss_bytes >= one.rss_bytes * 2 - 4 * 1024 * 1024);
        assert!(two.cpu_secs >= one.cpu_secs * 2.0);
        assert!(sample_sum(&[]).is_none());
        assert!(sample_sum(&[me, u32::MAX]).is_none());
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0);
        assert!(s.hwm_bytes >= s.rss_bytes);
        assert!(sample(u32::MAX).is_err());
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let later = sample(std::process::id()).expect("own /proc entry");
        assert!(cpu_between(&s, &later) > 0.0);
    }
}
