//! Flotilla broker node.
//!
//! Crate map (CORE = sans-IO and deterministic, time passed in; SHELL = does IO):
//! - [`mqtt`] CORE: packets, properties, reason codes, the zero-copy codec, topics.
//! - [`broker`] CORE: the single-node broker state machine (sessions, subscription trie,
//!   shared groups, retained messages, wills, expiry, `$SYS`), driven by `handle_*`/`poll_*`.
//! - [`route`] CORE: the routing indexes (subscription trie, retained messages, the message
//!   they hold), shared by the broker and the route/retained ranges.
//! - [`config`] the node's TOML configuration.
//! - [`server`] SHELL: the tokio listener, a task per connection, graceful shutdown.
//! - [`clock`] SHELL: the only place that reads the system clock.
//! - [`group`] CORE: one replica of a range-partitioned raft group (raft-rs `RawNode`, KV
//!   state machine, epochs, conf changes, leader transfer, lease reads, hibernation).
//! - [`raftstore`] SHELL: hosts many groups on poller threads over one raft-engine log,
//!   one fsync per round; store-wide ticks; recovery; the `Transport` trait.
//! - [`transport`]: the QUIC transport between nodes (frames CORE; quinn and TLS SHELL) and
//!   its `[transport]` configuration section.
//! - [`cluster`]: the cluster plane: range table, [`cluster::KvClient`] (requests to range
//!   leaders on any node), the MQTT key families and their bootstrap.
//! - [`node`] SHELL: the composition root: store, transport, placement driver, admin
//!   endpoint and MQTT server of one process.
//! - `codec` CORE: the binary codec primitives shared by frames, commands and PD messages.
//! - [`pd`]: the placement driver service (heartbeats, the PD raft group, operator steps)
//!   over the `placement` crate's scheduler core.
//! - [`admin`] SHELL: the admin HTTP endpoint and its client (with a range cache).
//! - [`process`] SHELL: process-wide policy of the binary (a panic on any thread aborts).
#![deny(missing_docs)]

pub mod admin;
pub mod broker;
pub mod clock;
pub mod cluster;
pub(crate) mod codec;
pub mod config;
pub mod group;
pub mod mqtt;
pub mod node;
pub mod pd;
pub mod process;
pub mod raftstore;
pub mod route;
pub mod server;
pub mod transport;
