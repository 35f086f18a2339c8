//! Known bugs for the jepsen harness to find (cargo feature `test-bugs`, never on by
//! default; without the feature every hook is a constant `false` or a no-op). Each is
//! switched on at run time by `FLOTILLA_TEST_BUG`, so a `test-bugs` build without it
//! behaves normally:
//! - `ack-before-durable`: acknowledgements are not parked, and journal records are handed
//!   to the writer only in batches of 512 (a crash loses acknowledged writes);
//! - `drop-retained:N`: 1 in N retained updates is acknowledged but not applied;
//! - `two-sessions`: a new connection does not take over the old one's session: both stay
//!   live;
//! - `reorder-batch`: the publishes delivered to one session in one transmit round are
//!   sent in reverse order (there is no cluster forwarding yet: this is the batch that
//!   stands in for a forwarded one).

#[cfg(feature = "test-bugs")]
mod on {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::mqtt::packet::Packet;

    fn bug() -> &'static str {
        static BUG: OnceLock<String> = OnceLock::new();
        BUG.get_or_init(|| std::env::var("FLOTILLA_TEST_BUG").unwrap_or_default())
    }

    pub(crate) fn ack_before_durable() -> bool {
        bug() == "ack-before-durable"
    }

    pub(crate) fn hold_journal(pending: usize) -> bool {
        ack_before_durable() && pending < 512
    }

    pub(crate) fn drop_retained() -> bool {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let Some(n) = bug().strip_prefix("drop-retained:").and_then(|n| n.parse::<u64>().ok()) else {
            return false;
        };
        COUNT.fetch_add(1, Ordering::Relaxed) % n.max(1) == n.max(1) - 1
    }

    pub(crate) fn two_sessions() -> bool {
        bug() == "two-sessions"
    }

    pub(crate) fn reorder_batch(batch: &mut [Packet]) {
        if bug() != "reorder-batch" {
            return;
        }
        let idx: Vec<usize> = (0..batch.len()).filter(|&i| matches!(batch[i], Packet::Publish(_))).collect();
        for k in 0..idx.len() / 2 {
            batch.swap(idx[k], idx[idx.len() - 1 - k]);
        }
    }
}

#[cfg(feature = "test-bugs")]
pub(crate) use on::*;

#[cfg(not(feature = "test-bugs"))]
mod off {
    use crate::mqtt::packet::Packet;

    pub(crate) const fn ack_before_durable() -> bool {
        false
    }
    pub(crate) const fn hold_journal(_pending: usize) -> bool {
        false
    }
    pub(crate) const fn drop_retained() -> bool {
        false
    }
    pub(crate) const fn two_sessions() -> bool {
        false
    }
    pub(crate) fn reorder_batch(_batch: &mut [Packet]) {}
}

#[cfg(not(feature = "test-bugs"))]
pub(crate) use off::*;
