//! Flotilla's capacity-planning harness.
//!
//! This crate will own the load scenarios operators size a fleet deployment with (`conn`,
//! `p2p`, `fanin`, `fanout`, `subs`, `persist`, `storm`), run against any MQTT broker from
//! several worker processes, with latency histograms, loss and duplicate accounting, and
//! broker CPU/RSS sampling. Nothing is implemented yet; see the bench issue.
#![deny(missing_docs)]
