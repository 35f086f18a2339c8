//! SHELL. [`PdHandle`](super::PdHandle): what the transport and the admin API call on the
//! PD service (deliver messages, report, leader, node admin states).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam::channel::{TrySendError, bounded};

use super::super::driver::{NodeAdminState, PdReport};
use super::super::{PD_GROUP, PdError, registry};
use super::PdHandle;
use crate::group::{Command, NodeId, Response, Role, WriteRequest};

impl PdHandle {
    /// Queues a message from `from`; false if the inbox is full.
    pub fn deliver(&self, from: NodeId, body: Vec<u8>) -> bool {
        match self.shared.inbox.try_send((from, body)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Tells the PD service where this node's admin endpoint listens.
    pub fn set_admin(&self, addr: SocketAddr) {
        if let Ok(mut a) = self.shared.admin.lock() {
            *a = Some(addr);
        }
    }

    /// The PD report, if this node leads PD.
    pub fn report(&self) -> Option<PdReport> {
        self.shared.report.lock().ok().and_then(|r| r.clone())
    }

    /// The PD leader this node knows of, and its admin endpoint.
    pub fn leader(&self) -> (Option<NodeId>, Option<SocketAddr>) {
        self.shared.leader.lock().map(|l| *l).unwrap_or((None, None))
    }

    /// Stores `state` for `node` through the PD group; only on the PD leader.
    pub fn set_node_state(
        &self,
        node: NodeId,
        state: NodeAdminState,
        timeout: Duration,
    ) -> Result<(), PdError> {
        let s = &self.shared;
        let status = s.store.status(PD_GROUP).ok_or(PdError::NotLeader)?;
        if status.role != Role::Leader {
            return Err(PdError::NotLeader);
        }
        let current = s.report.lock().ok().and_then(|r| r.clone());
        let current = current
            .and_then(|r| r.nodes.iter().find(|n| n.node == node).map(|n| n.state))
            .unwrap_or_default();
        if current == NodeAdminState::Removed && state != NodeAdminState::Removed {
            return Err(PdError::Refused(format!(
                "node {node} is removed; it cannot come back under this id"
            )));
        }
        let command = match state {
            NodeAdminState::Serving => Command::Delete { key: registry::node_key(node) },
            _ => Command::Put { key: registry::node_key(node), value: vec![state.to_byte()] },
        };
        let (tx, rx) = bounded(1);
        let req = WriteRequest {
            request_id: s.next_request.fetch_add(1, Ordering::Relaxed),
            epoch: status.desc.epoch,
            command,
        };
        s.store.propose(PD_GROUP, req, &tx).map_err(|e| PdError::Unavailable(e.to_string()))?;
        match rx.recv_timeout(timeout) {
            Ok(Response { result: Ok(_), .. }) => Ok(()),
            Ok(Response { result: Err(e), .. }) => Err(PdError::Unavailable(e.to_string())),
            Err(_) => Err(PdError::Unavailable("timed out waiting for the PD group".into())),
        }
    }
}
