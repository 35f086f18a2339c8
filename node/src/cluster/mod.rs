//! The cluster layer: node-to-node transport over QUIC, node identity and lifecycle.
//!
//! - `frame` CORE: the length-prefixed frames on the wire (hello, address book, raft batches);
//! - `config`: the `[cluster]` section;
//! - `tls` SHELL: rustls (ring) mutual TLS from a cluster CA, or a loopback dev mode;
//! - `certgen` SHELL: `flotilla cert` (a development CA and node certificates);
//! - `transport` SHELL: [`QuicTransport`], the raftstore `Transport` over quinn;
//!   `sender` and `receiver` are its outgoing and incoming halves;
//! - `metrics`: transport counters;
//! - `node` SHELL: [`ClusterNode`], a store plus its transport and admin endpoint.

pub mod certgen;
pub mod config;
pub mod frame;
pub mod metrics;
pub mod node;
mod receiver;
mod sender;
pub mod tls;
pub mod transport;

pub use config::{ClusterConfig, TlsMode};
pub use metrics::{TransportMetrics, TransportSnapshot};
pub use node::{ClusterError, ClusterNode};
pub use transport::{Inbound, PeerInfo, QuicTransport, TransportError};
