//! CORE. Linearizable reads on the leader: ReadIndex, and lease reads served locally.
//!
//! ReadIndex: raft confirms leadership with a heartbeat round (raft-rs `ReadOnlyOption::Safe`)
//! and returns the commit index at the request; the read is served once that index is
//! applied.
//!
//! Lease: when a quorum acknowledged this leader after instant `t` — a ReadIndex round
//! issued at `t`, or the commit of a proposal made at `t` — no other leader can be elected
//! before `t + election timeout` (followers refuse votes while they hear from a leader, with
//! check-quorum), so reads are served locally until `t + lease`, `lease` being shorter than
//! the minimum election timeout. The lease is also void:
//! - until the leader applied an entry of its own term (it may lag the previous leader);
//! - for the rest of the term once a leader transfer was requested, because the transferee
//!   campaigns without waiting for the election timeout.
//!
//! An expired or void lease falls back to ReadIndex, which renews it.

use std::time::Instant;

use crate::group::error::RequestError;
use crate::group::peer::GroupPeer;
use crate::group::range::{Epoch, EpochCheck};
use crate::group::response::{Outcome, Response};
use crate::group::sm::StateMachine;
use crate::group::storage::LogStore;

/// What to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// One key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Keys in `[start, end)` (empty `end` = to the range's end), at most `limit`.
    Scan {
        /// First key.
        start: Vec<u8>,
        /// First key not read; empty = the range's end.
        end: Vec<u8>,
        /// Most pairs returned.
        limit: usize,
    },
    /// The route rows under `prefix` (one tenant's route family prefix) whose filters match
    /// each topic, within the range (`cluster::route_match`). A topic's list holding
    /// `limit` rows may have been cut.
    Match {
        /// `keys::prefix(FAMILY_ROUTES, tenant)`.
        prefix: Vec<u8>,
        /// Topic names, at most [`MATCH_TOPICS_MAX`].
        topics: Vec<String>,
        /// Most rows returned per topic.
        limit: usize,
    },
}

/// Most topics one [`Query::Match`] may carry.
pub const MATCH_TOPICS_MAX: usize = 1024;

/// How a read proves it is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// A heartbeat round per read (batched by raft).
    ReadIndex,
    /// Served locally while the leader lease holds, else as `ReadIndex`.
    Lease,
}

/// A read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Echoed in the [`Response`].
    pub request_id: u64,
    /// The epoch the client routed by.
    pub epoch: Epoch,
    /// What to read.
    pub query: Query,
    /// How.
    pub policy: ReadPolicy,
}

/// A read waiting for its read index, then for apply.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    req: ReadRequest,
    issued_at: Instant,
    index: Option<u64>,
}

/// The leader lease.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lease {
    /// Reads may be served locally before this instant.
    until: Option<Instant>,
    /// A transfer was requested this term: no lease until the term ends.
    suspended: bool,
}

impl Lease {
    /// A quorum acknowledged us after `acked_after`.
    pub(crate) fn renew(&mut self, acked_after: Instant, lease: std::time::Duration) {
        let until = acked_after + lease;
        if self.until.is_none_or(|u| u < until) {
            self.until = Some(until);
        }
    }

    pub(crate) fn suspend(&mut self) {
        self.suspended = true;
        self.until = None;
    }

    pub(crate) fn on_new_term(&mut self) {
        *self = Self::default();
    }
}

impl<L: LogStore, S: StateMachine> GroupPeer<L, S> {
    /// Reads linearizably on the leader; the result comes as a [`Response`].
    pub fn read(&mut self, now: Instant, req: ReadRequest) -> Result<(), RequestError> {
        self.admit_request()?;
        check_read(self.desc(), &req)?;
        if req.policy == ReadPolicy::Lease && self.lease_valid(now) {
            let result = self.execute(&req);
            self.responses.push(Response { request_id: req.request_id, result });
            return Ok(());
        }
        let seq = self.next_read_seq;
        self.next_read_seq += 1;
        self.raw.read_index(seq.to_be_bytes().to_vec());
        self.after_raft();
        self.reads.insert(seq, PendingRead { req, issued_at: now, index: None });
        Ok(())
    }

    /// Whether a lease read at `now` is safe.
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.is_leader()
            && !self.lease.suspended
            && self.raw.raft.lead_transferee.is_none()
            && self.storage().applied().1 == self.raw.raft.term
            && self.lease.until.is_some_and(|u| now < u)
    }

    /// raft confirmed leadership for read `ctx` at commit `index`.
    pub(crate) fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else { return };
        let lease = self.cfg.lease;
        if let Some(read) = self.reads.get_mut(&u64::from_be_bytes(bytes)) {
            read.index = Some(index);
            let issued_at = read.issued_at;
            if !self.lease.suspended {
                self.lease.renew(issued_at, lease);
            }
        }
    }

    /// Serves every read whose read index is applied.
    pub(crate) fn serve_reads(&mut self) {
        let applied = self.storage().applied().0;
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(s, _)| *s)
            .collect();
        for seq in ready {
            let Some(read) = self.reads.remove(&seq) else { continue };
            let result = check_read(self.desc(), &read.req).and_then(|()| self.execute(&read.req));
            self.responses.push(Response { request_id: read.req.request_id, result });
        }
    }

    fn execute(&self, req: &ReadRequest) -> Result<Outcome, RequestError> {
        let desc = self.desc();
        Ok(self.kv().query(&req.query, &desc.start, &desc.end))
    }

    /// Leadership is gone: reads in flight will never get a read index.
    pub(crate) fn on_lost_leadership(&mut self) {
        self.lease = Lease::default();
        let hint = self.leader();
        for (_, read) in std::mem::take(&mut self.reads) {
            let result = Err(RequestError::NotLeader { leader_hint: hint });
            self.responses.push(Response { request_id: read.req.request_id, result });
        }
    }

    /// Answers every pending request with `err` (the replica was removed).
    pub(crate) fn fail_all_pending(&mut self, err: RequestError) {
        for (_, read) in std::mem::take(&mut self.reads) {
            self.responses.push(Response { request_id: read.req.request_id, result: Err(err.clone()) });
        }
        for (_, p) in std::mem::take(&mut self.proposals) {
            self.responses.push(Response { request_id: p.request_id, result: Err(err.clone()) });
        }
    }
}

fn check_read(desc: &crate::group::RangeDescriptor, req: &ReadRequest) -> Result<(), RequestError> {
    desc.check_epoch(req.epoch, EpochCheck::Version)?;
    match &req.query {
        Query::Get { key } => desc.check_key(key),
        Query::Scan { start, end, .. } => {
            if desc.contains_span(start, if end.is_empty() { &desc.end } else { end }) {
                Ok(())
            } else {
                Err(RequestError::KeyNotInRange {
                    key: start.clone(),
                    group: desc.id,
                    start: desc.start.clone(),
                    end: desc.end.clone(),
                })
            }
        }
        // Answered within the range, whatever the prefix; only the size is checked.
        Query::Match { topics, .. } if topics.len() > MATCH_TOPICS_MAX => {
            Err(RequestError::Malformed(crate::codec::CodecError::LengthTooLarge(topics.len() as u64)))
        }
        Query::Match { .. } => Ok(()),
    }
}
