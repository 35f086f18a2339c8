//! A panic on any thread of a process that called `node::process::abort_on_panic` (the
//! `flotilla` binary does, first thing) stops the whole process, so a storage thread that
//! dies (raft-engine panics on a failed fsync) cannot leave the others writing.
//!
//! The test re-runs its own binary as a child that installs the hook, panics on a spawned
//! thread and would print a line if it survived.

use std::process::Command;

const CHILD: &str = "FLOTILLA_PANIC_ABORT_CHILD";

#[test]
fn a_panic_on_a_background_thread_aborts_the_process() {
    if std::env::var_os(CHILD).is_some() {
        node::process::abort_on_panic();
        let dead = std::thread::spawn(|| panic!("a storage thread failed its fsync"));
        let _ = dead.join();
        println!("survived the panic");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["a_panic_on_a_background_thread_aborts_the_process", "--exact", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("survived the panic"), "the process outlived a panicking thread: {stdout}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(6), "not killed by SIGABRT: {:?}", out.status);
}
