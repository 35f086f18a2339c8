//! SHELL. The isolation fence (CLUSTER.md section 4, step 3): this node pings every peer
//! twice a second; a peer is reachable while its last pong is fresh. When the node cannot
//! reach a majority of the nodes it knows (itself included) for `isolation-fence-ms`, the
//! core closes its clients (DISCONNECT 0x9C) and refuses CONNECT (0x88) until a majority
//! answers again. A node taking a client over from an unreachable owner waits out the same
//! fence (x 1.2), so by its CONNACK the old connection is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Shared;
use crate::group::NodeId;
use crate::transport::QuicTransport;

/// How often peers are pinged.
const PING_EVERY: Duration = Duration::from_millis(500);
/// A pong older than this no longer counts.
const PONG_FRESH: Duration = Duration::from_millis(1500);

/// Last pong per peer, and the incarnation it came from.
#[derive(Default)]
pub(crate) struct Liveness {
    pongs: Mutex<HashMap<NodeId, Instant>>,
    incarnations: Mutex<HashMap<NodeId, u64>>,
    /// When this node started watching (a peer never heard from is silent since then).
    started: std::sync::OnceLock<Instant>,
}

impl Liveness {
    /// `from` answered a ping as `incarnation`.
    pub(crate) fn pong(&self, from: NodeId, incarnation: u64) {
        self.pongs.lock().unwrap_or_else(|e| e.into_inner()).insert(from, Instant::now());
        self.incarnations.lock().unwrap_or_else(|e| e.into_inner()).insert(from, incarnation);
    }

    /// The incarnation `node` last answered from.
    pub(crate) fn incarnation(&self, node: NodeId) -> Option<u64> {
        self.incarnations.lock().unwrap_or_else(|e| e.into_inner()).get(&node).copied()
    }

    /// How long `node` has not answered a ping, at `now`.
    pub(crate) fn silent_for(&self, node: NodeId, now: Instant) -> Duration {
        let since = self.pongs.lock().unwrap_or_else(|e| e.into_inner()).get(&node).copied();
        let since = since.unwrap_or_else(|| *self.started.get_or_init(Instant::now));
        now.saturating_duration_since(since)
    }

    /// Whether `node`'s last pong is fresh at `now`.
    pub(crate) fn fresh(&self, node: NodeId, now: Instant) -> bool {
        let pongs = self.pongs.lock().unwrap_or_else(|e| e.into_inner());
        pongs.get(&node).is_some_and(|t| now.saturating_duration_since(*t) < PONG_FRESH)
    }
}

/// Pings peers and tells the core when the node is isolated (or no longer).
pub(crate) async fn run(
    shared: Weak<Shared>,
    transport: QuicTransport,
    liveness: Arc<Liveness>,
    fence: Duration,
) {
    let mut short_since: Option<Instant> = None;
    let mut nonce = 0u64;
    let mut silent: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let peers: Vec<NodeId> = transport.peers().into_iter().map(|p| p.node_id).collect();
        for &p in &peers {
            nonce += 1;
            transport.ping(p, nonce);
        }
        let now = Instant::now();
        let mut reachable = 1;
        for &p in &peers {
            if liveness.fresh(p, now) {
                reachable += 1;
                silent.remove(&p);
            } else if liveness.incarnation(p).is_some() && silent.insert(p) {
                // A peer that stopped answering while its connection stays open (a partition
                // QUIC has not timed out yet): hibernating groups must not wait for the drop.
                transport.report_silent(p);
            }
        }
        let majority = reachable * 2 > peers.len() + 1;
        let isolated = if majority {
            short_since = None;
            false
        } else {
            let since = *short_since.get_or_insert(now);
            now.duration_since(since) >= fence
        };
        let Some(shared) = shared.upgrade() else { return };
        let mut core = shared.lock();
        if core.broker.isolated() != isolated {
            tracing::warn!(isolated, reachable, nodes = peers.len() + 1, "isolation fence");
            core.broker.set_isolated(crate::clock::now(), isolated);
            core.notify_woken(None);
        }
    }
}
