//! Flotilla broker node.
//!
//! Crate map (CORE = sans-IO and deterministic, time passed in; SHELL = does IO):
//! - [`mqtt`] CORE: packets, properties, reason codes, the zero-copy codec, topics.
//! - [`broker`] CORE: the single-node broker state machine (sessions, subscription trie,
//!   shared groups, retained messages, wills, expiry, `$SYS`), driven by `handle_*`/`poll_*`.
//! - [`config`] the node's TOML configuration.
//! - [`server`] SHELL: the tokio listener, a task per connection, graceful shutdown.
//! - [`clock`] SHELL: the only place that reads the system clock.
//! - [`group`] CORE: one replica of a range-partitioned raft group (raft-rs `RawNode`, KV
//!   state machine, epochs, conf changes, leader transfer, lease reads, hibernation).
//! - [`raftstore`] SHELL: hosts many groups on poller threads over one raft-engine log,
//!   one fsync per round; store-wide ticks; recovery; the `Transport` trait.
//! - [`cluster`]: the QUIC transport between nodes (frames CORE; quinn, TLS and the node
//!   lifecycle SHELL) and the `[cluster]` configuration.
//! - [`pd`]: the placement driver service (heartbeats, the PD raft group, operator steps)
//!   over the `placement` crate's scheduler core.
//! - [`admin`] SHELL: the admin HTTP endpoint and its client (with a range cache).
//! - [`process`] SHELL: process-wide policy of the binary (a panic on any thread aborts).
#![deny(missing_docs)]

pub mod admin;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod group;
pub mod mqtt;
pub mod pd;
pub mod process;
pub mod raftstore;
pub mod server;
