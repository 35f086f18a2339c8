//! CORE. A log rate limit shared by threads: one event per interval is let through (logged
//! at warn level), the others are only counted. Time comes in as an argument, in
//! milliseconds on any monotonic clock whose zero is never passed (see [`RateLimit::allow`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets one event through per `every_ms`.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    /// When an event was last let through; 0 = never.
    last_ms: AtomicU64,
}

impl RateLimit {
    /// Whether the event at `now_ms` may be logged: the first always, then one at least
    /// `every_ms` after the last let through. Of threads racing for one slot, one wins.
    /// `now_ms` of 0 counts as 1 (0 means "never").
    pub(crate) fn allow(&self, now_ms: u64, every_ms: u64) -> bool {
        let now = now_ms.max(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= every_ms)
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    /// Handshake failures warn at most once per 10 s (`receiver::HANDSHAKE_WARN_EVERY_MS`):
    /// a scan or a misconfigured peer retrying every few milliseconds cannot flood the log.
    #[test]
    fn handshake_failures_warn_at_most_once_per_10_s() {
        let limit = RateLimit::default();
        let every = 10_000;
        // A failure every 5 ms for 35 s: one warning per 10 s, the first at once.
        let warned: Vec<u64> = (1..=7_000).map(|i| i * 5).filter(|&t| limit.allow(t, every)).collect();
        assert_eq!(warned, vec![5, 10_005, 20_005, 30_005]);
    }

    #[test]
    fn a_quiet_spell_lets_the_next_failure_through_at_once() {
        let limit = RateLimit::default();
        assert!(limit.allow(1_000, 10_000));
        assert!(!limit.allow(10_999, 10_000));
        assert!(limit.allow(60_000, 10_000), "the first failure after a long quiet spell is logged");
        assert!(!limit.allow(60_001, 10_000));
    }

    #[test]
    fn racing_threads_let_one_event_through_per_interval() {
        let limit = RateLimit::default();
        let allowed: usize = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..8).map(|_| s.spawn(|| (0..1_000).filter(|_| limit.allow(5, 10_000)).count())).collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(allowed, 1);
    }
}
