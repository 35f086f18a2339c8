//! SHELL. The harness clock: nanoseconds since the Unix epoch, monotonic within a process and
//! comparable across the worker processes of one run.
//!
//! Latency is the difference between a timestamp written into a payload by one process and
//! the time another process reads it, so both must share a clock. The wall clock is read once
//! per process (the anchor); after that time advances with the monotonic clock, so a wall-clock
//! step during a run (NTP) cannot produce negative or inflated latencies. Processes started on
//! the same machine agree to within the precision of their two anchor reads (microseconds).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    unix_ns: u64,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| {
        let unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Anchor { instant: Instant::now(), unix_ns }
    })
}

/// Nanoseconds since the Unix epoch on the harness clock.
pub fn now_ns() -> u64 {
    let a = anchor();
    a.unix_ns + a.instant.elapsed().as_nanos() as u64
}

/// The local `Instant` at which the harness clock reads `unix_ns` (now, if that is past).
pub fn instant_at(unix_ns: u64) -> Instant {
    let a = anchor();
    let now = Instant::now();
    let now_ns = a.unix_ns + now.duration_since(a.instant).as_nanos() as u64;
    now + Duration::from_nanos(unix_ns.saturating_sub(now_ns))
}

/// Milliseconds to nanoseconds.
pub fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_at_round_trips_future_deadlines() {
        let target = now_ns() + 50_000_000;
        let at = instant_at(target);
        let delta = at.saturating_duration_since(Instant::now());
        assert!(delta <= Duration::from_millis(50));
        assert!(delta >= Duration::from_millis(40));
        assert!(instant_at(0) <= Instant::now());
    }
}
