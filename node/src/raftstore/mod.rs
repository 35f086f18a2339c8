//! SHELL. The multi-raft runtime: a [`Store`] hosts many groups ([`crate::group::GroupPeer`])
//! of one node.
//!
//! - `store`: opening, recovery, bootstrap, the request API;
//! - `poller`: poll rounds — a batch of groups, ONE raft-engine write and ONE fsync;
//! - `mailbox`: per-group bounded mailboxes and the group router;
//! - `fsm`: the thin wrapper feeding a mailbox into a peer;
//! - `ticker`: the store-wide tick, skipping hibernated groups;
//! - `engine`: raft-engine as the shared log, and each group's `LogStore` over it;
//! - `transport`: the [`Transport`] trait and the in-process [`LocalTransport`];
//! - `metrics`: counters;
//! - `config`: [`StoreConfig`] and the `[raftstore]` section of the node configuration.
//!
//! Threads: `poller_threads` pollers plus one ticker (none in manual mode, where the
//! caller drives [`Store::tick`] and [`Store::poll`] — deterministic tests do).
//! Apply runs inside the poll round for now (the KV state machine is cheap); a separate
//! apply pool is a later slice.

pub mod config;
pub mod engine;
pub mod error;
pub(crate) mod fsm;
pub(crate) mod mailbox;
pub mod metrics;
pub(crate) mod poller;
pub mod store;
pub(crate) mod ticker;
pub mod transport;

pub use config::{RaftstoreConfig, RaftstoreConfigError, StoreConfig};
pub use error::StoreError;
pub use metrics::{MetricsSnapshot, StoreMetrics};
pub use store::{Store, StoreRouter};
pub use transport::{LocalTransport, Transport};
