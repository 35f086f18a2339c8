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
//!
//! Later issues add the QUIC transport and durable storage here.
#![deny(missing_docs)]

pub mod broker;
pub mod clock;
pub mod config;
pub mod group;
pub mod mqtt;
pub mod raftstore;
pub mod server;
