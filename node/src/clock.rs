//! SHELL. The only place in the crate that reads the clock; cores get `now` as an argument.

use std::time::Instant;

/// The current monotonic time.
pub fn now() -> Instant {
    Instant::now()
}
