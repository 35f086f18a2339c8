//! SHELL. The [`Transport`] between stores, and [`LocalTransport`], an in-process one.
//!
//! A poller hands the transport all of a round's messages for one destination node in one
//! call, in order (the unit a QUIC transport will frame and coalesce). Delivery is best
//! effort: raft tolerates loss, duplication and reordering.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::StoreRouter;
use crate::group::{GroupMessage, NodeId};

/// Carries group messages to other nodes.
pub trait Transport: Send + Sync {
    /// Sends `msgs` (all addressed to node `to`) in order.
    fn send(&self, to: NodeId, msgs: Vec<GroupMessage>);
}

/// In-process transport: delivers straight into the destination store's per-group mailboxes
/// (bounded crossbeam channels). Links can be cut to simulate partitions; a node that is not
/// registered (stopped) loses its messages.
#[derive(Default)]
pub struct LocalTransport {
    routes: RwLock<HashMap<NodeId, StoreRouter>>,
    blocked: RwLock<BTreeSet<(NodeId, NodeId)>>,
    dropped: AtomicU64,
}

impl LocalTransport {
    /// An empty transport.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes messages for `node` to `router` (replacing a previous store of that node).
    pub fn register(&self, node: NodeId, router: StoreRouter) {
        if let Ok(mut r) = self.routes.write() {
            r.insert(node, router);
        }
    }

    /// Stops delivering to `node`.
    pub fn unregister(&self, node: NodeId) {
        if let Ok(mut r) = self.routes.write() {
            r.remove(&node);
        }
    }

    /// Cuts the link from `from` to `to`.
    pub fn block(&self, from: NodeId, to: NodeId) {
        if let Ok(mut b) = self.blocked.write() {
            b.insert((from, to));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Ok(mut b) = self.blocked.write() {
            b.clear();
        }
    }

    /// Messages lost to cut links or stopped nodes.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Transport for LocalTransport {
    fn send(&self, to: NodeId, msgs: Vec<GroupMessage>) {
        let router = self.routes.read().ok().and_then(|r| r.get(&to).cloned());
        let Some(router) = router else {
            self.dropped.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            return;
        };
        let Ok(blocked) = self.blocked.read() else { return };
        for m in msgs {
            if blocked.contains(&(m.from, to)) || !router.deliver(m) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
