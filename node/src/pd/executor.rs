//! SHELL. [`Executor`]: carries out the PD's operator steps on the ranges this node leads.
//!
//! A step goes to the group's mailbox as a membership change or leader transfer, with the
//! epoch the PD planned it against, so a step planned on an old view is refused by the
//! group. The executor does not report back: the PD sees the result in the next heartbeat
//! (a range whose shape changed is reported at once) and re-sends steps that made no
//! progress. Answers are matched by request id and only logged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

use super::message::{StepAction, StepCommand};
use crate::group::{NodeId, PeerChange, Response};
use crate::raftstore::Store;

/// A request with no answer after this long is forgotten (its group may be gone).
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(60);

/// Carries out steps; remembers which requests are its own.
pub struct Executor {
    node: NodeId,
    next_id: u64,
    in_flight: BTreeMap<u64, (Instant, StepCommand)>,
    unsupported_warned: bool,
}

impl Executor {
    /// An executor on `node`.
    pub fn new(node: NodeId) -> Self {
        Self { node, next_id: 1, in_flight: BTreeMap::new(), unsupported_warned: false }
    }

    /// Requests awaiting an answer.
    pub fn outstanding(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `step` to its group; the answer comes on `reply`.
    pub fn execute(&mut self, store: &Store, step: StepCommand, reply: &Sender<Response>) {
        let id = self.next_id;
        self.next_id += 1;
        let (group, epoch) = (step.group, step.epoch);
        let sent = match step.action {
            StepAction::AddLearner(n) => {
                store.change_peers(group, id, epoch, vec![PeerChange::AddLearner(n)], reply)
            }
            StepAction::Promote(n) => {
                store.change_peers(group, id, epoch, vec![PeerChange::AddVoter(n)], reply)
            }
            StepAction::Remove(n) => store.change_peers(group, id, epoch, vec![PeerChange::Remove(n)], reply),
            StepAction::TransferLeader(to) => store.transfer_leader(group, id, epoch, to, reply),
            StepAction::Split { ref key, new_group } => {
                store.split(group, id, epoch, key.clone(), new_group, reply)
            }
            StepAction::Merge(_) => {
                if !std::mem::replace(&mut self.unsupported_warned, true) {
                    tracing::warn!(
                        node = self.node,
                        op = step.operator,
                        "merge steps are not supported by this node"
                    );
                }
                return;
            }
        };
        match sent {
            Ok(()) => {
                self.in_flight.insert(id, (Instant::now(), step));
            }
            Err(e) => tracing::debug!(node = self.node, group, error = %e, "operator step not delivered"),
        }
    }

    /// Forgets requests unanswered for too long.
    pub fn expire(&mut self, now: Instant) {
        self.in_flight.retain(|_, (sent, _)| now.duration_since(*sent) < ANSWER_WAIT_MAX);
    }

    /// Takes `resp` if it answers one of this executor's requests: `Some(succeeded)`.
    pub fn on_response(&mut self, resp: &Response) -> Option<bool> {
        let (_, step) = self.in_flight.remove(&resp.request_id)?;
        match &resp.result {
            Ok(_) => {
                tracing::debug!(group = step.group, op = step.operator, action = ?step.action, "operator step accepted")
            }
            Err(e) => {
                tracing::debug!(group = step.group, op = step.operator, action = ?step.action, error = %e, "operator step refused")
            }
        }
        Some(resp.result.is_ok())
    }
}
