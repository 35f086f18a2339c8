//! SHELL. `POST /v1/kv/load` and `POST /v1/kv/verify`: a writer inside the node that goes
//! through [`KvClient`] to the leaders of the MQTT families' ranges, wherever they are, and
//! a check that every write it acknowledged reads back. Keys are a pure function of
//! `(tag, writer, index)`, spread over the S, R, M and L families, so `verify` recomputes
//! them. Used by the live cluster tests and to measure request latency.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::KvClient;
use crate::cluster::keys::{
    FAMILY_LOGS, FAMILY_RETAINED, FAMILY_ROUTES, FAMILY_SESSIONS, log_slot_key, prefix,
};
use crate::group::{Command, ReadPolicy};

/// What to write.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadRequest {
    /// Names this load's keys (e.g. the node id): loads with different tags never collide.
    pub tag: String,
    /// Concurrent writers.
    pub writers: u32,
    /// Writes per writer; each is read back at once.
    pub writes: u32,
    /// Bytes per value (at least what names the write).
    #[serde(default)]
    pub value_bytes: usize,
    /// Only read back the keys of an earlier load with the same tag (no writes).
    #[serde(default)]
    pub read_only: bool,
}

/// What happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Writes acknowledged.
    pub written: u64,
    /// Calls that failed (the error reached the caller).
    pub errors: u64,
    /// Reads that did not return the value just written.
    pub mismatches: u64,
    /// First few errors, for the log.
    pub error_samples: Vec<String>,
    /// Write round trips, microseconds: p50, p99, max.
    pub write_us: [u64; 3],
    /// Read round trips (lease reads), microseconds: p50, p99, max.
    pub read_us: [u64; 3],
    /// Reads whose range leader was on another node (a request over the transport).
    pub remote_reads: u64,
    /// Their round trips, microseconds: p50, p99, max.
    pub remote_read_us: [u64; 3],
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

/// Which writes to check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// The load's tag.
    pub tag: String,
    /// Its writers.
    pub writers: u32,
    /// Its writes per writer.
    pub writes: u32,
    /// Its value size.
    #[serde(default)]
    pub value_bytes: usize,
}

/// What the check found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyResult {
    /// Keys read back with the written value.
    pub ok: u64,
    /// Keys absent or holding another value.
    pub lost: u64,
    /// Reads that failed.
    pub errors: u64,
}

/// The key of write `i` of `writer` in load `tag`: the families take turns.
pub fn load_key(tag: &str, writer: u32, i: u32) -> Vec<u8> {
    let name = format!("kvload/{tag}/{writer}/{i:08}");
    let h =
        name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let family = [FAMILY_SESSIONS, FAMILY_ROUTES, FAMILY_RETAINED, FAMILY_LOGS][(i % 4) as usize];
    let mut key =
        if family == FAMILY_LOGS { log_slot_key(h) } else { prefix(family, b"").unwrap_or_default() };
    key.extend_from_slice(&h.to_be_bytes()[..2]);
    key.extend_from_slice(name.as_bytes());
    key
}

fn load_value(tag: &str, writer: u32, i: u32, bytes: usize) -> Vec<u8> {
    let mut v = format!("{tag}:{writer}:{i}").into_bytes();
    if v.len() < bytes {
        v.resize(bytes, b'.');
    }
    v
}

fn percentiles(mut us: Vec<u64>) -> [u64; 3] {
    if us.is_empty() {
        return [0; 3];
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), us[us.len() - 1]]
}

/// Runs the load (on the runtime behind `client`).
pub async fn run_load(client: &KvClient, req: &LoadRequest) -> LoadResult {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..req.writers {
        let (client, req) = (client.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = LoadResult::default();
            let (mut wr, mut rd, mut remote) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..req.writes {
                let key = load_key(&req.tag, w, i);
                let value = load_value(&req.tag, w, i, req.value_bytes);
                let t = Instant::now();
                let put = if req.read_only {
                    Ok(crate::group::Outcome::Written)
                } else {
                    client.propose(Command::Put { key: key.clone(), value: value.clone() }).await
                };
                match put {
                    Ok(_) => r.written += 1,
                    Err(e) => {
                        r.errors += 1;
                        if r.error_samples.len() < 5 {
                            r.error_samples.push(format!("put: {e}"));
                        }
                        continue;
                    }
                }
                if !req.read_only {
                    wr.push(t.elapsed().as_micros() as u64);
                }
                let before = client.leader_of(&key);
                let t = Instant::now();
                match client.get(&key, ReadPolicy::Lease).await {
                    Ok(Some(v)) if v == value => {}
                    Ok(_) => r.mismatches += 1,
                    Err(e) => {
                        r.errors += 1;
                        if r.error_samples.len() < 5 {
                            r.error_samples.push(format!("get: {e}"));
                        }
                    }
                }
                let us = t.elapsed().as_micros() as u64;
                rd.push(us);
                // Remote when the leader was another node before and after the call (no
                // redirect in between): one request over the transport.
                let after = client.leader_of(&key);
                if before == after && after.is_some_and(|l| l != client.node_id()) {
                    remote.push(us);
                }
            }
            (r, wr, rd, remote)
        }));
    }
    let mut out = LoadResult::default();
    let (mut wr, mut rd, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let Ok((r, w, d, m)) = t.await else {
            out.errors += 1;
            continue;
        };
        out.written += r.written;
        out.errors += r.errors;
        out.mismatches += r.mismatches;
        out.error_samples
            .extend(r.error_samples.into_iter().take(5usize.saturating_sub(out.error_samples.len())));
        wr.extend(w);
        rd.extend(d);
        remote.extend(m);
    }
    out.remote_reads = remote.len() as u64;
    out.remote_read_us = percentiles(remote);
    out.write_us = percentiles(wr);
    out.read_us = percentiles(rd);
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    out
}

/// Reads back every key of a load (ReadIndex reads).
pub async fn verify(client: &KvClient, req: &VerifyRequest) -> VerifyResult {
    let mut out = VerifyResult::default();
    for w in 0..req.writers {
        for i in 0..req.writes {
            let key = load_key(&req.tag, w, i);
            match client.get(&key, ReadPolicy::ReadIndex).await {
                Ok(Some(v)) if v == load_value(&req.tag, w, i, req.value_bytes) => out.ok += 1,
                Ok(_) => out.lost += 1,
                Err(_) => out.errors += 1,
            }
        }
    }
    out
}

/// Runs `fut` from a blocking admin thread on the node's runtime, within `limit`.
pub(crate) fn block_on<T>(
    handle: &tokio::runtime::Handle,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    handle.block_on(async { tokio::time::timeout(limit, fut).await.ok() })
}
