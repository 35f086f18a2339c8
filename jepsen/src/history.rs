//! The JSONL history: a header line (`{"meta":{..}}`), then one event per line.
//!
//! Times (`t`) are nanoseconds since the run started, from one monotonic clock. Client
//! processes are numbered from 1; the nemesis and the harness itself use `"nemesis"`.
//! A process does one operation at a time: every `invoke` is followed by exactly one
//! completion (`ok`, `fail` or `info`) of the same process. After an `info` the process
//! is retired. Deliveries and other observations are single `ok` events.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nemesis::Fault;

/// Errors reading or writing a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("history io: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not valid JSON for its position.
    #[error("history line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The file has no header line.
    #[error("history has no header")]
    Empty,
}

/// What a run was: written as the first line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// Seed of the op streams and the nemesis schedule.
    pub seed: u64,
    /// Workload name.
    pub workload: String,
    /// Enabled fault kinds.
    pub nemesis: Vec<String>,
    /// Length of the main phase, seconds.
    pub time_limit_s: u64,
    /// Client processes at a time.
    pub concurrency: usize,
    /// Target operations per second, all processes together.
    pub rate: f64,
    /// Broker nodes.
    pub nodes: usize,
    /// "netns" or "loopback".
    pub net: String,
    /// The broker binary.
    pub broker: String,
    /// FLOTILLA_TEST_BUG given to the nodes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_bug: Option<String>,
    /// The fault schedule, fixed by the seed.
    pub schedule: Vec<Fault>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    meta: Meta,
}

/// Event type, as in Jepsen.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An operation begins.
    Invoke,
    /// It definitely happened (or an observation).
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Indeterminate: it may or may not have happened.
    Info,
}

/// The nemesis (and harness) process tag.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Nemesis {
    /// Serialized as `"nemesis"`.
    Nemesis,
}

/// Who did it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum Proc {
    /// A client process, from 1.
    Client(u64),
    /// The nemesis or the harness.
    Nemesis(Nemesis),
}

/// One history line after the header.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Index, in writing order.
    pub i: u64,
    /// Nanoseconds since the start of the run.
    pub t: u64,
    /// The process.
    pub p: Proc,
    /// invoke / ok / fail / info.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The operation: publish, deliver, connect, subscribe, read, start-kill, ...
    pub f: String,
    /// MQTT client id, when a client did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Connection number (unique in the run), when on a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// Node index (0-based), when it concerns one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    /// Operation-specific fields.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

impl Event {
    /// `value[key]` as a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(Value::as_str)
    }

    /// `value[key]` as an integer.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.value.get(key).and_then(Value::as_u64)
    }

    /// `value[key]` as a bool (false when absent).
    pub fn flag(&self, key: &str) -> bool {
        self.value.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// The client process number, if a client did it.
    pub fn client_proc(&self) -> Option<u64> {
        match self.p {
            Proc::Client(p) => Some(p),
            Proc::Nemesis(_) => None,
        }
    }
}

/// A whole history in memory.
#[derive(Clone, Debug)]
pub struct History {
    /// The header.
    pub meta: Meta,
    /// The events, in writing order.
    pub events: Vec<Event>,
}

impl History {
    /// Reads a JSONL history file.
    pub fn read(path: &Path) -> Result<Self, HistoryError> {
        let mut lines = BufReader::new(File::open(path)?).lines();
        let first = lines.next().ok_or(HistoryError::Empty)??;
        let header: Header =
            serde_json::from_str(&first).map_err(|source| HistoryError::Parse { line: 1, source })?;
        let mut events = Vec::new();
        for (n, line) in lines.enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            // A crash may leave a torn last line: stop there.
            match serde_json::from_str(&line) {
                Ok(e) => events.push(e),
                Err(source) => {
                    tracing::warn!(line = n + 2, %source, "history ends with a torn line");
                    break;
                }
            }
        }
        Ok(Self { meta: header.meta, events })
    }
}

/// Where an event happened: the process and its connection.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// Process number.
    pub p: u64,
    /// MQTT client id.
    pub client: String,
    /// Connection number, 0 before connecting.
    pub conn: u64,
    /// Node index.
    pub node: usize,
}

struct Inner {
    next_i: u64,
    out: BufWriter<File>,
    events: Vec<Event>,
}

/// Writes events as they happen (incrementally, so a crash leaves a usable history) and
/// keeps them for the checkers. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
    next_proc: Arc<AtomicU64>,
    next_conn: Arc<AtomicU64>,
}

impl Recorder {
    /// Creates the file and writes the header.
    pub fn create(path: &Path, meta: &Meta) -> Result<Self, HistoryError> {
        let mut out = BufWriter::new(File::create(path)?);
        let header = Header { meta: meta.clone() };
        serde_json::to_writer(&mut out, &header).map_err(|source| HistoryError::Parse { line: 1, source })?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { next_i: 0, out, events: Vec::new() })),
            start: Instant::now(),
            next_proc: Arc::new(AtomicU64::new(1)),
            next_conn: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A fresh process number.
    pub fn new_process(&self) -> u64 {
        self.next_proc.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh connection number.
    pub fn new_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a client event now.
    pub fn client(&self, ctx: &Ctx, kind: Kind, f: &str, value: Value) {
        self.client_at(self.now(), ctx, kind, f, value);
    }

    /// Records a client event that happened at `t`.
    pub fn client_at(&self, t: u64, ctx: &Ctx, kind: Kind, f: &str, value: Value) {
        self.push(Event {
            i: 0,
            t,
            p: Proc::Client(ctx.p),
            kind,
            f: f.to_string(),
            client: Some(ctx.client.clone()),
            conn: (ctx.conn > 0).then_some(ctx.conn),
            node: Some(ctx.node),
            value,
        });
    }

    /// Records a nemesis or harness event now.
    pub fn nemesis(&self, kind: Kind, f: &str, node: Option<usize>, value: Value) {
        self.push(Event {
            i: 0,
            t: self.now(),
            p: Proc::Nemesis(Nemesis::Nemesis),
            kind,
            f: f.to_string(),
            client: None,
            conn: None,
            node,
            value,
        });
    }

    fn push(&self, mut e: Event) {
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        e.i = g.next_i;
        g.next_i += 1;
        if serde_json::to_writer(&mut g.out, &e).is_ok() {
            let _ = g.out.write_all(b"\n");
        }
        if e.i.is_multiple_of(256) {
            let _ = g.out.flush();
        }
        g.events.push(e);
    }

    /// Flushes the file and returns a copy of every event so far.
    pub fn finish(&self) -> Vec<Event> {
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = g.out.flush();
        let _ = g.out.get_ref().sync_all();
        g.events.clone()
    }
}
