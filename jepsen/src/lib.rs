//! Flotilla's Jepsen-style fault-injection harness.
//!
//! This crate will own the workloads (queue, retained, session, will), the nemeses (kill,
//! pause, clock skew, disk full, network partitions in namespaces), the JSONL history and
//! the checkers that can fail. Nothing is implemented yet; see the jepsen issue.
#![deny(missing_docs)]
