//! SHELL. The only place in the crate that reads the clock; cores get `now` as an argument.

use std::time::Instant;

/// The current monotonic time.
pub fn now() -> Instant {
    Instant::now()
}

/// A seed for the cores' deterministic randomness, different on every start.
pub fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    RandomState::new().hash_one(nanos) ^ u64::from(std::process::id())
}

/// Wall-clock milliseconds since the Unix epoch, for timestamps written to disk.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
