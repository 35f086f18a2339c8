//! SHELL. [`GroupFsm`]: a thin wrapper that feeds a group's mailbox into its
//! [`GroupPeer`] and routes the peer's output (messages per node, answers to the callers'
//! reply channels, events into counters).
//!
//! The core answers by request id; the fsm hands the core its own ids (unique per group)
//! and maps them back to the caller's id and channel, so callers may reuse ids freely.

use std::collections::BTreeMap;
use std::time::Instant;

use crossbeam::channel::Sender;
use rustc_hash::FxHashMap;

use super::engine::EngineLog;
use super::mailbox::PeerMsg;
use super::metrics::StoreMetrics;
use crate::group::{GroupMessage, GroupPeer, NodeId, Outcome, PeerEvent, RequestError, Response, Role};

/// Messages of one round, per destination node.
pub(crate) type Outbox = BTreeMap<NodeId, Vec<GroupMessage>>;

/// One hosted group's state machine.
pub(crate) struct GroupFsm {
    pub(crate) peer: GroupPeer<EngineLog>,
    replies: FxHashMap<u64, (u64, Sender<Response>)>,
    next_request_id: u64,
}

impl GroupFsm {
    pub(crate) fn new(peer: GroupPeer<EngineLog>) -> Self {
        Self { peer, replies: FxHashMap::default(), next_request_id: 1 }
    }

    /// Feeds one mailbox message to the peer.
    pub(crate) fn handle(&mut self, msg: PeerMsg, now: Instant, metrics: &StoreMetrics) {
        match msg {
            PeerMsg::Raft(m) => match self.peer.step(*m) {
                Ok(()) => {}
                Err(e @ crate::group::GroupError::Codec(_)) => {
                    tracing::warn!(group = self.peer.group_id(), error = %e, "dropped an undecodable snapshot");
                }
                Err(e) => tracing::debug!(group = self.peer.group_id(), error = %e, "raft refused a message"),
            },
            PeerMsg::Propose { mut req, reply } => {
                let caller = req.request_id;
                req.request_id = self.track(caller, reply.clone());
                let id = req.request_id;
                let result = self.peer.propose(now, req);
                self.settle_refusal(id, result, metrics, &metrics.proposals);
            }
            PeerMsg::Read { mut req, reply } => {
                let caller = req.request_id;
                req.request_id = self.track(caller, reply.clone());
                let id = req.request_id;
                let result = self.peer.read(now, req);
                self.settle_refusal(id, result, metrics, &metrics.reads);
            }
            PeerMsg::ConfChange { request_id, epoch, changes, reply } => {
                let id = self.track(request_id, reply);
                let result = self.peer.propose_conf_change(now, id, epoch, &changes);
                self.settle_refusal(id, result, metrics, &metrics.proposals);
            }
            PeerMsg::TransferLeader { request_id, epoch, to, reply } => {
                let result = self.peer.transfer_leader(epoch, to).map(|()| Outcome::Noop);
                let _ = reply.send(Response { request_id, result });
            }
            PeerMsg::Split { request_id, epoch, key, new_group, reply } => {
                let id = self.track(request_id, reply);
                let result = self.peer.propose_split(now, id, epoch, key, new_group);
                self.settle_refusal(id, result, metrics, &metrics.proposals);
            }
            PeerMsg::Campaign => {
                if let Err(e) = self.peer.campaign() {
                    tracing::debug!(group = self.peer.group_id(), error = %e, "campaign refused");
                }
            }
            PeerMsg::Wake => self.peer.wake(),
            PeerMsg::Checkpoint => self.peer.request_checkpoint(),
            PeerMsg::Unreachable { to, snapshot } => {
                if snapshot {
                    self.peer.report_snapshot_failure(to);
                }
                self.peer.report_unreachable(to);
            }
        }
    }

    fn track(&mut self, caller: u64, reply: Sender<Response>) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.replies.insert(id, (caller, reply));
        id
    }

    fn settle_refusal(
        &mut self,
        id: u64,
        result: Result<(), RequestError>,
        metrics: &StoreMetrics,
        accepted: &std::sync::atomic::AtomicU64,
    ) {
        match result {
            Ok(()) => StoreMetrics::add(accepted, 1),
            Err(e) => {
                StoreMetrics::add(&metrics.requests_refused, 1);
                self.answer(Response { request_id: id, result: Err(e) });
            }
        }
    }

    fn answer(&mut self, r: Response) {
        if let Some((caller, reply)) = self.replies.remove(&r.request_id) {
            let _ = reply.send(Response { request_id: caller, result: r.result });
        }
    }

    /// Moves the peer's output out: messages into `outbox`, answers to their callers,
    /// events into counters.
    pub(crate) fn flush(&mut self, outbox: &mut Outbox, metrics: &StoreMetrics) {
        for m in self.peer.take_messages() {
            outbox.entry(m.to).or_default().push(m);
        }
        for r in self.peer.take_responses() {
            self.answer(r);
        }
        for e in self.peer.take_events() {
            if let PeerEvent::RoleChanged { role: Role::Leader, .. } = e {
                StoreMetrics::add(&metrics.elections, 1);
            }
        }
    }
}
