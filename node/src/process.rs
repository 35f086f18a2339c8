//! SHELL. Process-wide policy for the `flotilla` binary: a panic on any thread stops the
//! whole process.
//!
//! A thread that panics while it holds durable state (raft-engine panics when an `fsync`
//! fails; a journal or raft poller thread dies) must not leave the other threads writing
//! and acknowledging as if nothing happened: the process aborts, and the next start
//! recovers from what is on disk. The release profile also sets `panic = "abort"`; this hook
//! makes every build of the binary behave the same. Library users (tests that run the
//! broker in-process) keep Rust's default unwinding.

use std::sync::Once;

/// Installs a panic hook that prints the panic as usual, then aborts the process. Idempotent.
pub fn abort_on_panic() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            eprintln!("flotilla: a thread panicked; aborting the process so that recovery starts from disk");
            std::process::abort();
        }));
    });
}
