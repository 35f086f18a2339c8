//! Flotilla broker node.
//!
//! Crate map (CORE = sans-IO and deterministic, time passed in; SHELL = does IO):
//! - [`mqtt`] CORE: packets, properties, reason codes, the zero-copy codec, topics.
//! - [`broker`] CORE: the single-node broker state machine (sessions, subscription trie,
//!   shared groups, retained messages, wills, expiry, `$SYS`), driven by `handle_*`/`poll_*`.
//! - [`config`] the node's TOML configuration.
//! - [`server`] SHELL: the tokio listener, a task per connection, graceful shutdown.
//! - [`clock`] SHELL: the only place that reads the system clock.
//!
//! Later issues add the multi-raft runtime, QUIC transport and durable storage here.
#![deny(missing_docs)]

pub mod broker;
pub mod clock;
pub mod config;
pub mod mqtt;
pub mod server;
