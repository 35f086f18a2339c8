//! The cluster plane that MQTT runs on: the range table every node keeps, a client that
//! reaches the leader of the range holding any key from any node, and the keyspace layout
//! of the MQTT families.
//!
//! - [`config`]: the `[cluster]` section (node id, addresses, request deadline, bootstrap);
//! - [`ranges`] CORE: key -> range, leader hint, epoch;
//! - [`keys`] CORE: the MQTT key families (sessions `S`, routes `R`, retained `M`, message
//!   logs `L`) and the ranges the bootstrap creates;
//! - [`route_keys`] CORE: the route family's row keys (filter levels, kind, receiver);
//! - [`route_match`] CORE: the wildcard matcher over a range's sorted route rows;
//! - [`local`] SHELL: requests (local or from other nodes) into this node's raft store;
//! - [`client`] SHELL: [`KvClient`], routed, retried reads and writes.

pub mod client;
pub mod config;
pub mod keys;
pub mod local;
pub mod ranges;
pub mod route_keys;
pub mod route_match;

pub use client::{ClientConfig, KvClient, KvError};
pub use config::{ClusterConfig, ClusterConfigError};
pub use local::LocalStore;
pub use ranges::{RangeEntry, RangeTable};
