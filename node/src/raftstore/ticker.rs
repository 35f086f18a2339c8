//! SHELL. The store-wide tick: every `tick_interval`, each awake group gets one tick.
//! The ticker visits only the router's awake set, so hibernated groups cost nothing.
//!
//! Ticks coalesce: a group's pending tick is a flag, not a queued message, so a slow round
//! loses ticks instead of piling them up; the ticker never catches up on missed intervals
//! (raft's timing then runs slow, which only delays elections, never speeds them up).
//!
//! The same thread runs raft-engine's purge (TiKV purges every 10 s): expired files are
//! dropped or rewritten, and groups still holding entries in them checkpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::mailbox::PeerMsg;
use super::metrics::StoreMetrics;
use super::store::StoreShared;

/// Longest sleep between shutdown checks.
const SLEEP_MAX: Duration = Duration::from_millis(50);

/// The ticker thread; also runs raft-engine's purge every `purge_interval`.
pub(crate) fn run(shared: &Arc<StoreShared>) {
    let interval = shared.cfg.peer.tick_interval;
    let mut next = crate::clock::now() + interval;
    let mut next_purge = crate::clock::now() + shared.cfg.purge_interval;
    while !shared.shutdown.load(Ordering::Acquire) {
        let now = crate::clock::now();
        if now >= next_purge {
            purge(shared);
            next_purge = now + shared.cfg.purge_interval;
        }
        if now < next {
            std::thread::sleep((next - now).min(SLEEP_MAX));
            continue;
        }
        tick_all(shared);
        next += interval;
        if next < now {
            next = now + interval;
        }
    }
}

/// Lets raft-engine drop or rewrite expired files; the groups it names still hold entries
/// in old files and are asked to checkpoint, which compacts their log.
pub(crate) fn purge(shared: &StoreShared) {
    match shared.engine.purge_expired_files() {
        Ok(groups) => {
            for g in groups.into_iter().filter(|g| *g != super::engine::STORE_META_GROUP) {
                let _ = shared.router.send(g, PeerMsg::Checkpoint);
            }
        }
        Err(e) => tracing::warn!(error = %e, "raft-engine purge failed"),
    }
}

/// Ticks every awake group once.
pub(crate) fn tick_all(shared: &StoreShared) {
    let awake = shared.router.awake_cells();
    for cell in &awake {
        shared.router.tick(cell);
    }
    let ticked = awake.len() as u64;
    StoreMetrics::add(&shared.metrics.ticks, ticked);
    StoreMetrics::add(&shared.metrics.ticks_skipped, (shared.router.len() as u64).saturating_sub(ticked));
}
