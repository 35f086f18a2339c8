//! SHELL. Wills of connections whose node died (CLUSTER.md section 4, wills): the leader of
//! each session range looks, when a node goes silent for longer than the isolation fence
//! (x 1.2) or answers pings as a new incarnation, for records still online at that node's
//! old incarnation. Each one is taken offline with a compare-and-set on its exact value
//! (so two sweepers, or a sweeper and a reconnect, cannot both win), and only the winner
//! publishes the will it held: never twice, and never after a clean DISCONNECT (which took
//! the will out of the record). A silent node has closed its clients by then (the fence).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Shared;
use super::dispatch::ClusterLink;
use super::liveness::Liveness;
use crate::cluster::keys::{FAMILY_SESSIONS, prefix};
use crate::cluster::session_keys::{self, SessionHeader, StoredWill};
use crate::group::{Command, NodeId, Outcome, ReadPolicy};

/// How often the sweeper looks at its peers.
const EVERY: Duration = Duration::from_secs(1);
/// While a node stays dead, its records are looked at again this often (ranges may have
/// changed leader meanwhile).
const AGAIN: Duration = Duration::from_secs(10);
/// Records read per sweep of one range at most.
const SCAN_MAX: usize = 1_000_000;

/// Which owners' online records are stale.
struct Dead {
    me: NodeId,
    my_inc: u64,
    /// Silent for longer than the fence: every incarnation.
    silent: Vec<NodeId>,
    /// Answering as this incarnation: older ones are dead.
    current: HashMap<NodeId, u64>,
}

impl Dead {
    fn owns_stale(&self, h: &SessionHeader) -> bool {
        if !h.online {
            return false;
        }
        if h.owner_node == self.me {
            return h.owner_inc != self.my_inc;
        }
        self.silent.contains(&h.owner_node)
            || self.current.get(&h.owner_node).is_some_and(|&i| i != h.owner_inc)
    }
}

/// Runs until the server goes.
pub(crate) async fn run(shared: Weak<Shared>, link: ClusterLink, liveness: Arc<Liveness>) {
    let fence = link.isolation_fence.mul_f64(1.2);
    let mut seen: HashMap<NodeId, u64> = HashMap::new();
    let mut last_sweep: Option<Instant> = None;
    // Records of an earlier incarnation of this node are looked at once the fence passed.
    let mut startup = Some(Instant::now() + fence);
    loop {
        tokio::time::sleep(EVERY).await;
        if shared.strong_count() == 0 {
            return;
        }
        let now = Instant::now();
        let peers: Vec<NodeId> = link.transport.peers().into_iter().map(|p| p.node_id).collect();
        let silent: Vec<NodeId> =
            peers.iter().copied().filter(|&p| liveness.silent_for(p, now) > fence).collect();
        let mut changed = false;
        let mut current = HashMap::new();
        for &p in &peers {
            if let Some(inc) = liveness.incarnation(p) {
                changed |= seen.insert(p, inc).is_some_and(|old| old != inc);
                current.insert(p, inc);
            }
        }
        let due_startup = startup.is_some_and(|at| now >= at);
        let due_silent = !silent.is_empty() && last_sweep.is_none_or(|t| now.duration_since(t) >= AGAIN);
        if !(changed || due_startup || due_silent) {
            continue;
        }
        startup = None;
        last_sweep = Some(now);
        let dead =
            Dead { me: link.transport.node_id(), my_inc: link.transport.incarnation(), silent, current };
        let fired = sweep(&shared, &link, &dead).await;
        if fired > 0 {
            tracing::info!(fired, "published the wills of connections on dead nodes");
        }
    }
}

/// Looks at every session range this node leads; returns the wills published.
async fn sweep(shared: &Weak<Shared>, link: &ClusterLink, dead: &Dead) -> usize {
    let Ok(family) = prefix(FAMILY_SESSIONS, &link.tenant) else { return 0 };
    let mut fired = 0;
    for desc in link.client.led_here() {
        if desc.start.first() != Some(&FAMILY_SESSIONS) {
            continue;
        }
        let start = desc.start.clone().max(family.clone());
        let rows = match link.client.scan(&start, &desc.end, SCAN_MAX, ReadPolicy::ReadIndex).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(range = desc.id, error = %e, "cannot sweep a session range");
                continue;
            }
        };
        for (key, value) in rows {
            if !key.starts_with(&family) || !session_keys::is_header_key(family.len(), &key) {
                continue;
            }
            let Some((epoch, generation, header)) = SessionHeader::decode_record(&value) else { continue };
            if !dead.owns_stale(&header) {
                continue;
            }
            if let Some(will) = take_offline(link, key, value, epoch, generation, header).await {
                fired += 1;
                if let Some(shared) = shared.upgrade() {
                    let mut core = shared.lock();
                    core.broker.publish_swept_will(crate::clock::now(), &will);
                    core.notify_woken(None);
                }
            }
        }
    }
    fired
}

/// Takes a stale record offline (or deletes it, for a session that ends with its
/// connection); returns its will if this sweeper won.
async fn take_offline(
    link: &ClusterLink,
    key: Vec<u8>,
    value: Vec<u8>,
    epoch: u64,
    generation: u64,
    header: SessionHeader,
) -> Option<StoredWill> {
    let new = (header.expiry_secs != 0).then(|| {
        let offline = SessionHeader {
            online: false,
            disconnected_at_ms: crate::clock::wall_ms(),
            will: None,
            ..header.clone()
        };
        offline.encode_record(epoch, generation)
    });
    let cas = Command::CompareAndSet { key, expected: Some(value), new };
    match link.client.propose(cas).await {
        Ok(Outcome::Cas { succeeded: true, .. }) => header.will,
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot take a stale session record offline");
            None
        }
    }
}
