//! SHELL. [`KvClient`]: reads and writes keys of the cluster's ranges from any node. It finds
//! the range holding a key in the node's [`RangeTable`], sends the request to the range's
//! leader (this node's own store, or another node over the transport, where requests to one
//! node share frames), and hides routing changes from the caller: `NotLeader` moves the
//! leader hint, `EpochNotMatch` brings the ranges after a split, `KeyNotInRange` and missing
//! replicas refresh the table, and refused proposals are retried. An error reaches the
//! caller only when the deadline passes, or when a non-idempotent command's outcome is
//! unknown (its first attempt may have applied).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use super::local::LocalStore;
use super::ranges::{RangeEntry, RangeTable};
use super::route_keys;
use crate::group::{Command, GroupId, MATCH_TOPICS_MAX, NodeId, Outcome, Query, ReadPolicy, RequestError};
use crate::pd::PD_GROUP;
use crate::transport::QuicTransport;
use crate::transport::request::{Reply, ReplyError, Request, RequestBody};

/// Settings of a [`KvClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long a call may take, retries included (`request-timeout-ms`).
    pub request_timeout: Duration,
    /// How long one attempt waits for its answer before trying again.
    pub attempt_timeout: Duration,
    /// Requests in flight to one node at most; more wait for a slot.
    pub inflight_per_node: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_millis(2000),
            inflight_per_node: 4096,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// No attempt succeeded before the deadline; the last error is given.
    #[error("request timed out (last error: {0})")]
    Timeout(String),
    /// A non-idempotent command may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The request cannot succeed (malformed, refused by the range).
    #[error("request refused: {0}")]
    Refused(String),
}

/// Most rows one range may return for one topic of [`KvClient::match_topics`]; more fail
/// the call rather than drop routes silently.
pub const MATCH_ROWS_MAX: usize = 4096;

/// Rows per topic, in the order of the topics asked.
type RowLists = Vec<Vec<(Vec<u8>, Vec<u8>)>>;

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Redirects followed at once before the next one waits a backoff.
const HOPS_WITHOUT_BACKOFF: u32 = 2;

struct Inner {
    node: NodeId,
    local: Arc<LocalStore>,
    transport: QuicTransport,
    table: Arc<RwLock<RangeTable>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Outcome, ReplyError>>>>,
    next_id: AtomicU64,
    slots: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
    cfg: ClientConfig,
}

/// A client of the cluster's ranges; cheap to clone.
#[derive(Clone)]
pub struct KvClient {
    inner: Arc<Inner>,
}

/// An attempt that never left this node.
struct NotSent(&'static str);

/// What the retry loop does after an attempt failed.
enum Next {
    Retry,
    Backoff,
    Fail(KvError),
}

impl KvClient {
    /// A client on node `transport.node_id()`.
    pub fn new(
        local: Arc<LocalStore>,
        transport: QuicTransport,
        table: Arc<RwLock<RangeTable>>,
        cfg: ClientConfig,
    ) -> Self {
        let node = transport.node_id();
        Self {
            inner: Arc::new(Inner {
                node,
                local,
                transport,
                table,
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                slots: Mutex::new(HashMap::new()),
                cfg,
            }),
        }
    }

    /// This client's node.
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// The node the table believes leads the range holding `key`.
    pub fn leader_of(&self, key: &[u8]) -> Option<NodeId> {
        self.read_table().lookup(key).and_then(|e| e.leader)
    }

    /// The ranges whose leader is this node (as this node's replicas see it now).
    pub fn led_here(&self) -> Vec<crate::group::RangeDescriptor> {
        let node = self.inner.node;
        let statuses = self.inner.local.store().statuses();
        statuses
            .into_iter()
            .filter(|s| s.group_id != PD_GROUP && s.leader == Some(node))
            .map(|s| s.desc)
            .collect()
    }

    /// The range table this client routes by.
    pub fn table(&self) -> &Arc<RwLock<RangeTable>> {
        &self.inner.table
    }

    /// Replies from `from` (called by the transport's inbound side).
    pub fn complete(&self, replies: Vec<Reply>) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in replies {
            if let Some(tx) = pending.remove(&r.id) {
                let _ = tx.send(r.result);
            }
        }
    }

    /// Proposes `command` to the range holding its key and returns its outcome.
    pub async fn propose(&self, command: Command) -> Result<Outcome, KvError> {
        let key = command.key().to_vec();
        let idempotent = command.is_idempotent();
        self.call(&key, idempotent, |e| RequestBody::propose(e.desc.id, e.desc.epoch, &command)).await
    }

    /// Reads `key` (linearizable: `policy` says how).
    pub async fn get(&self, key: &[u8], policy: ReadPolicy) -> Result<Option<Vec<u8>>, KvError> {
        let query = Query::Get { key: key.to_vec() };
        match self.read(key, query, policy).await? {
            Outcome::Value(v) => Ok(v),
            other => Err(KvError::Refused(format!("unexpected answer {other:?}"))),
        }
    }

    /// Up to `limit` pairs in `[start, end)` (empty `end` = unbounded), across ranges.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        policy: ReadPolicy,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        let mut out = Vec::new();
        let mut from = start.to_vec();
        while out.len() < limit && (end.is_empty() || from.as_slice() < end) {
            let range_end = self.locate(&from).await?.desc.end;
            let stop = match (range_end.is_empty(), end.is_empty()) {
                (true, _) => end.to_vec(),
                (false, true) => range_end.clone(),
                (false, false) => range_end.as_slice().min(end).to_vec(),
            };
            let query = Query::Scan { start: from.clone(), end: stop.clone(), limit: limit - out.len() };
            match self.read(&from, query, policy).await? {
                Outcome::Rows(rows) => out.extend(rows),
                other => return Err(KvError::Refused(format!("unexpected answer {other:?}"))),
            }
            if stop.is_empty() || stop.as_slice() == end {
                break;
            }
            from = stop;
        }
        Ok(out)
    }

    /// The route rows of `tenant` whose filters match each topic (one list per topic, in
    /// order, keys sorted), read linearizably (lease) from every range of the tenant's route
    /// family at once. Fails if a range holds more than [`MATCH_ROWS_MAX`] rows for a topic.
    pub async fn match_topics(&self, tenant: &[u8], topics: &[String]) -> Result<RowLists, KvError> {
        let (start, end) = route_keys::family_span(tenant).map_err(|e| KvError::Refused(e.to_string()))?;
        let mut out: RowLists = vec![Vec::new(); topics.len()];
        if topics.is_empty() {
            return Ok(out);
        }
        let mut spans = Vec::new();
        let mut from = start.clone();
        while from < end {
            let range_end = self.locate(&from).await?.desc.end;
            let stop = if range_end.is_empty() || range_end >= end { end.clone() } else { range_end };
            if stop <= from {
                return Err(KvError::Refused(format!("range table makes no progress at {from:?}")));
            }
            spans.push((from, stop.clone()));
            from = stop;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (chunk_at, chunk) in topics.chunks(MATCH_TOPICS_MAX).enumerate() {
            for (from, stop) in &spans {
                let (client, prefix, chunk) = (self.clone(), start.clone(), chunk.to_vec());
                let (from, stop) = (from.clone(), stop.clone());
                tasks.spawn(async move {
                    (chunk_at * MATCH_TOPICS_MAX, client.match_span(prefix, chunk, from, stop).await)
                });
            }
        }
        // Dropping the set on an error aborts the other tasks.
        while let Some(joined) = tasks.join_next().await {
            let (first, lists) = joined.map_err(|e| KvError::Refused(format!("match task: {e}")))?;
            for (list, rows) in out[first..].iter_mut().zip(lists?) {
                list.extend(rows);
            }
        }
        for list in &mut out {
            list.sort_unstable();
        }
        Ok(out)
    }

    /// Matches `topics` against the rows in `[from, stop)`, range after range.
    async fn match_span(
        &self,
        prefix: Vec<u8>,
        topics: Vec<String>,
        mut from: Vec<u8>,
        stop: Vec<u8>,
    ) -> Result<RowLists, KvError> {
        let mut lists: RowLists = vec![Vec::new(); topics.len()];
        let query = Query::Match { prefix, topics, limit: MATCH_ROWS_MAX + 1 };
        loop {
            let (outcome, entry) = self
                .call_entry(&from, true, |e| RequestBody::Read {
                    group: e.desc.id,
                    epoch: e.desc.epoch,
                    policy: ReadPolicy::Lease,
                    query: query.clone(),
                })
                .await?;
            let Outcome::Matched(got) = outcome else {
                return Err(KvError::Refused(format!("unexpected answer {outcome:?}")));
            };
            if got.len() != lists.len() {
                return Err(KvError::Refused(format!("{} row lists for {} topics", got.len(), lists.len())));
            }
            for (list, rows) in lists.iter_mut().zip(got) {
                if rows.len() > MATCH_ROWS_MAX {
                    return Err(KvError::Refused(format!("more than {MATCH_ROWS_MAX} routes match a topic")));
                }
                // The range may have moved since the span was planned: keep only the span.
                list.extend(rows.into_iter().filter(|(k, _)| *k >= from && *k < stop));
            }
            // The range that answered may end before the span does (it split meanwhile).
            let range_end = entry.desc.end;
            if range_end.is_empty() || range_end >= stop {
                return Ok(lists);
            }
            if range_end <= from {
                return Err(KvError::Refused(format!("range {} ends before {from:?}", entry.desc.id)));
            }
            from = range_end;
        }
    }

    /// A read routed by `key`.
    pub async fn read(&self, key: &[u8], query: Query, policy: ReadPolicy) -> Result<Outcome, KvError> {
        self.call(key, true, |e| RequestBody::Read {
            group: e.desc.id,
            epoch: e.desc.epoch,
            policy,
            query: query.clone(),
        })
        .await
    }

    /// The range holding `key`, waiting (until the deadline) for the table to learn one.
    pub async fn locate(&self, key: &[u8]) -> Result<RangeEntry, KvError> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some(e) = self.lookup(key) {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                return Err(KvError::Timeout("no range known for the key".into()));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn lookup(&self, key: &[u8]) -> Option<RangeEntry> {
        if let Some(e) = self.read_table().lookup(key).cloned() {
            return Some(e);
        }
        self.learn_local();
        self.read_table().lookup(key).cloned()
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, RangeTable> {
        self.inner.table.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, RangeTable> {
        self.inner.table.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Learns the ranges this node hosts replicas of (descriptor and leader as applied here).
    fn learn_local(&self) {
        let statuses = self.inner.local.store().statuses();
        let mut table = self.write_table();
        for s in statuses.into_iter().filter(|s| s.group_id != PD_GROUP && s.desc.epoch.version > 0) {
            table.learn(s.desc, s.leader);
        }
    }

    async fn call(
        &self,
        key: &[u8],
        idempotent: bool,
        body: impl Fn(&RangeEntry) -> RequestBody,
    ) -> Result<Outcome, KvError> {
        self.call_entry(key, idempotent, body).await.map(|(outcome, _)| outcome)
    }

    /// As [`call`](Self::call), also returning the range (as routed) that answered.
    async fn call_entry(
        &self,
        key: &[u8],
        idempotent: bool,
        body: impl Fn(&RangeEntry) -> RequestBody,
    ) -> Result<(Outcome, RangeEntry), KvError> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        let mut backoff = BACKOFF_MIN;
        let mut rotate = 0usize;
        let mut hops = 0u32;
        let mut last = String::from("no attempt");
        let mut trail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut silent: Vec<NodeId> = Vec::new();
        let started = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                let trail: Vec<String> = trail.into_iter().collect();
                return Err(KvError::Timeout(format!("{last}; last attempts: {}", trail.join(", "))));
            }
            let Some(entry) = self.lookup(key) else {
                last = "no range known for the key".into();
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            };
            let mut candidates = entry.candidates();
            // Replicas that timed out in this call go last: one cut off behind a connection
            // that still looks open must not take every attempt.
            candidates.sort_by_key(|c| silent.contains(c));
            let target = candidates[rotate % candidates.len().max(1)];
            let wait = self.inner.cfg.attempt_timeout.min(deadline - now);
            let result = self.send(target, body(&entry), wait).await;
            let next = match result {
                Ok(Ok(outcome)) => {
                    // Only a range's leader serves proposals and reads: remember who did.
                    if entry.leader != Some(target) {
                        self.write_table().set_leader(entry.desc.id, Some(target));
                    }
                    return Ok((outcome, entry));
                }
                Ok(Err(e)) => {
                    last = format!("node {target}, range {}: {e}", entry.desc.id);
                    if trail.len() == 8 {
                        trail.pop_front();
                    }
                    trail.push_back(format!("{}ms n{target}: {e}", started.elapsed().as_millis()));
                    match &e {
                        ReplyError::Timeout if !silent.contains(&target) => silent.push(target),
                        // A replica names the leader: it gets its turn again.
                        ReplyError::Group(RequestError::NotLeader { leader_hint: Some(l) }) => {
                            silent.retain(|n| n != l)
                        }
                        _ => {}
                    }
                    self.on_error(&entry, target, e, idempotent, &mut rotate)
                }
                Err(NotSent(why)) => {
                    // Certainly not applied: try the next candidate.
                    last = format!("node {target}, range {}: {why}", entry.desc.id);
                    rotate += 1;
                    Next::Backoff
                }
            };
            match next {
                // Two replicas that each name the other (a transfer or an election under
                // way) must not turn into a busy loop: after a few hops, wait.
                Next::Retry if hops < HOPS_WITHOUT_BACKOFF => hops += 1,
                Next::Retry | Next::Backoff => {
                    hops = 0;
                    let now = Instant::now();
                    tokio::time::sleep(backoff.min(deadline.saturating_duration_since(now))).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Next::Fail(e) => return Err(e),
            }
        }
    }

    /// Corrects the table from a failed attempt and says what to do next.
    fn on_error(
        &self,
        entry: &RangeEntry,
        target: NodeId,
        e: ReplyError,
        idempotent: bool,
        rotate: &mut usize,
    ) -> Next {
        let group: GroupId = entry.desc.id;
        match e {
            ReplyError::Group(RequestError::NotLeader { leader_hint: Some(l) }) if l != target => {
                self.write_table().set_leader(group, Some(l));
                // The hint goes first among the candidates: no rotation past it.
                *rotate = 0;
                Next::Retry
            }
            ReplyError::Group(RequestError::NotLeader { .. }) => {
                self.write_table().set_leader(group, None);
                *rotate += 1;
                Next::Backoff
            }
            ReplyError::Group(RequestError::EpochNotMatch { current }) => {
                let mut table = self.write_table();
                let mut learned = false;
                for d in current {
                    // The replica that answered checked the epoch as the leader of its range.
                    let leader = (d.id == group).then_some(target);
                    learned |= table.learn(d, leader);
                }
                *rotate = 0;
                if learned { Next::Retry } else { Next::Backoff }
            }
            ReplyError::Group(RequestError::KeyNotInRange { .. } | RequestError::Removed)
            | ReplyError::NoReplica => {
                // The table is stale for this node: forget the range and learn it again.
                self.write_table().forget(group);
                *rotate += 1;
                Next::Backoff
            }
            ReplyError::Group(
                RequestError::StaleCommand | RequestError::ProposalDropped | RequestError::Busy { .. },
            ) => Next::Backoff,
            ReplyError::Group(RequestError::OutcomeUnknown) | ReplyError::Timeout | ReplyError::Other(_)
                if !idempotent =>
            {
                // A silent leader may be cut off (its connection can look open for a while):
                // the next call tries the other replicas instead of the same hint.
                if matches!(e, ReplyError::Timeout) {
                    self.write_table().set_leader(group, None);
                }
                Next::Fail(KvError::Unknown(e.to_string()))
            }
            // A leader that did not answer in time may be cut off behind a connection that
            // still looks open: forget the hint; the other replicas go first from now on
            // (they elect, or send us back to it with a hint).
            ReplyError::Timeout
                if entry.leader == Some(target) && self.inner.transport.is_connected(target) =>
            {
                self.write_table().set_leader(group, None);
                *rotate = 0;
                Next::Retry
            }
            ReplyError::Group(RequestError::Malformed(m)) => Next::Fail(KvError::Refused(m.to_string())),
            ReplyError::Group(RequestError::AdminRejected(m)) => Next::Fail(KvError::Refused(m.to_string())),
            _ => {
                *rotate += 1;
                Next::Backoff
            }
        }
    }

    /// Sends `body` to node `target` (not routed by key: a request for that node itself,
    /// such as an MQTT kick) and waits up to `wait` for its answer.
    pub async fn request_node(
        &self,
        target: NodeId,
        body: RequestBody,
        wait: Duration,
    ) -> Result<Outcome, KvError> {
        match self.send(target, body, wait).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(KvError::Refused(e.to_string())),
            Err(NotSent(why)) => Err(KvError::Timeout(why.into())),
        }
    }

    /// One attempt at `target`, answered within `wait`; `Err` if it was never sent.
    async fn send(
        &self,
        target: NodeId,
        body: RequestBody,
        wait: Duration,
    ) -> Result<Result<Outcome, ReplyError>, NotSent> {
        if target == self.inner.node {
            let rx = self.inner.local.submit_local(body, wait);
            return Ok(rx.await.unwrap_or(Err(ReplyError::Timeout)));
        }
        let slots = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                slots
                    .entry(target)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.inner.cfg.inflight_per_node))),
            )
        };
        let Ok(Ok(_permit)) = tokio::time::timeout(wait, slots.acquire_owned()).await else {
            return Err(NotSent("too many requests in flight to the node"));
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, tx);
        let req = Request { id, timeout_ms: wait.as_millis() as u64, body };
        let result = if self.inner.transport.send_request(target, req) {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(result)) => Ok(result),
                _ => Ok(Err(ReplyError::Timeout)),
            }
        } else {
            Err(NotSent("no connection to the node"))
        };
        self.inner.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        result
    }
}
