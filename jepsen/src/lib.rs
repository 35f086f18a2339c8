//! Flotilla's Jepsen-style fault-injection harness.
//!
//! A run starts broker nodes as real processes (each in its own network namespace on a
//! bridge when it can, otherwise on its own 127.0.0.x address), drives many MQTT clients
//! (a thin client over `mqttbytes`) against them, records every invocation and completion in a JSONL history,
//! injects faults from a schedule fixed by the seed, heals, drains, and checks.
//!
//! - [`history`]: the JSONL history (header, events, writer, reader).
//! - [`cluster`]: network setup and node processes (spawn, kill, pause, restart, clock).
//! - [`nemesis`]: the seeded fault schedule and its executor; nftables partition rules.
//! - [`client`]: a thin MQTT 3.1.1 client that exposes every packet to the workloads.
//! - [`workload`]: `queue`, `retained`, `session` and `will`.
//! - [`check`]: pure checkers over a history and the pass criterion.
//! - [`report`]: the text summary and the self-contained HTML report.
//! - [`runner`]: one test run, end to end.
#![deny(missing_docs)]

pub mod check;
pub mod client;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod runner;
pub mod workload;
