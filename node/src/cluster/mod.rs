//! The cluster plane that MQTT runs on: the range table every node keeps, a client that
//! reaches the leader of the range holding any key from any node, and the keyspace layout
//! of the MQTT families.
//!
//! - [`config`]: the `[cluster]` section (node id, addresses, request deadline, bootstrap);
//! - [`ranges`] CORE: key -> range, leader hint, epoch;
//! - [`keys`] CORE: the MQTT key families (sessions `S`, routes `R`, retained `M`, message
//!   logs `L`) and the ranges the bootstrap creates;
//! - [`retained_keys`] CORE: the retained family's rows (level-hash layout);
//! - [`route_keys`] CORE: the route family's row keys (filter levels, kind, receiver);
//! - [`route_match`] CORE: wildcard matching over route rows by seeking;
//! - [`session_keys`] CORE: the session family's records (header fenced by epoch, subscriptions);
//! - [`local`] SHELL: requests (local or from other nodes) into this node's raft store;
//! - [`client`] SHELL: [`KvClient`], routed, retried reads and writes.

pub mod client;
pub mod config;
pub mod keys;
pub mod local;
pub mod ranges;
pub mod retained_keys;
pub mod route_keys;
pub mod route_match;
pub mod session_keys;

pub use client::{ClientConfig, KvClient, KvError};
pub use config::{ClusterConfig, ClusterConfigError};
pub use local::LocalStore;
pub use ranges::{RangeEntry, RangeTable};
