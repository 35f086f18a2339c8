//! SHELL. `POST /v1/bench/propose`: a load generator inside the node, for measuring raft
//! throughput without an HTTP round trip per proposal. It proposes to every group this
//! node leads (or the listed ones), keeping `window` proposals in flight per group, until
//! each group got `proposals_per_group` answers or `timeout_ms` passes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::group::{Command, GroupId, Response, Role, WriteRequest};
use crate::raftstore::Store;

/// The request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRequest {
    /// Groups to write; default: every group this node leads.
    #[serde(default)]
    pub groups: Option<Vec<GroupId>>,
    /// Proposals per group.
    pub proposals_per_group: u64,
    /// Proposals in flight per group.
    pub window: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Stop after this long, milliseconds.
    pub timeout_ms: u64,
}

/// The result.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BenchResult {
    /// Groups written.
    pub groups: usize,
    /// Proposals applied.
    pub succeeded: u64,
    /// Proposals refused or failed.
    pub failed: u64,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

/// Most groups, proposals per group and window one run accepts.
const GROUPS_MAX: usize = 100_000;
const PROPOSALS_PER_GROUP_MAX: u64 = 1_000_000;
const WINDOW_MAX: u64 = 256;
const VALUE_BYTES_MAX: usize = 1 << 20;

struct Run<'a> {
    store: &'a Store,
    tx: crossbeam::channel::Sender<Response>,
    value: Vec<u8>,
    next_id: u64,
    owner: HashMap<u64, GroupId>,
    sent: HashMap<GroupId, u64>,
    per_group: u64,
}

impl Run<'_> {
    fn propose(&mut self, g: GroupId) -> bool {
        let Some(status) = self.store.status(g) else { return false };
        let id = self.next_id;
        self.next_id += 1;
        let command = Command::Put { key: format!("bench-{id}").into_bytes(), value: self.value.clone() };
        let req = WriteRequest { request_id: id, epoch: status.desc.epoch, command };
        if self.store.propose(g, req, &self.tx).is_err() {
            return false;
        }
        self.owner.insert(id, g);
        *self.sent.entry(g).or_default() += 1;
        true
    }
}

/// Runs the load; the error is a message for a 400.
pub(crate) fn run(
    store: &Store,
    req: &BenchRequest,
    now: impl Fn() -> Instant,
) -> Result<BenchResult, String> {
    if req.window == 0 || req.window > WINDOW_MAX || req.proposals_per_group > PROPOSALS_PER_GROUP_MAX {
        return Err(format!(
            "window must be 1..={WINDOW_MAX}, proposals-per-group at most {PROPOSALS_PER_GROUP_MAX}"
        ));
    }
    if req.value_bytes > VALUE_BYTES_MAX {
        return Err(format!("value-bytes must be at most {VALUE_BYTES_MAX}"));
    }
    let groups: Vec<GroupId> = match &req.groups {
        Some(g) => g.clone(),
        None => store
            .group_ids()
            .into_iter()
            .filter(|g| store.status(*g).is_some_and(|s| s.role == Role::Leader))
            .collect(),
    };
    if groups.len() > GROUPS_MAX {
        return Err(format!("at most {GROUPS_MAX} groups"));
    }
    let in_flight = groups.len().saturating_mul(req.window as usize).max(1);
    let (tx, rx) = crossbeam::channel::bounded(in_flight + 16);
    let mut run = Run {
        store,
        tx,
        value: vec![b'x'; req.value_bytes],
        next_id: 1,
        owner: HashMap::new(),
        sent: HashMap::new(),
        per_group: req.proposals_per_group,
    };
    let start = now();
    let deadline = start + Duration::from_millis(req.timeout_ms);
    let mut result = BenchResult { groups: groups.len(), ..BenchResult::default() };
    for &g in &groups {
        for _ in 0..req.window.min(req.proposals_per_group) {
            if !run.propose(g) {
                result.failed += 1;
            }
        }
    }
    while !run.owner.is_empty() {
        let left = deadline.saturating_duration_since(now());
        let Ok(resp) = rx.recv_timeout(left) else { break };
        let Some(g) = run.owner.remove(&resp.request_id) else { continue };
        if resp.result.is_ok() {
            result.succeeded += 1;
        } else {
            result.failed += 1;
        }
        if run.sent.get(&g).copied().unwrap_or(0) < run.per_group && !run.propose(g) {
            result.failed += 1;
        }
    }
    result.elapsed_ms = now().duration_since(start).as_millis() as u64;
    Ok(result)
}
