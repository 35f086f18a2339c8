//! The node-to-node transport over QUIC.
//!
//! - `frame` CORE: the length-prefixed frames on the wire (hello, address book, raft batches,
//!   placement-driver messages);
//! - `config`: the `[transport]` section;
//! - `tls` SHELL: rustls (ring) mutual TLS from a cluster CA, or a loopback dev mode;
//! - `certgen` SHELL: `flotilla cert` (a development CA and node certificates);
//! - `quic` SHELL: [`QuicTransport`], the raftstore `Transport` over quinn;
//!   `sender` and `receiver` are its outgoing and incoming halves;
//! - `forward` CORE: forwarded MQTT publishes and their acks; `data` SHELL: the per-peer
//!   data streams that carry them;
//! - `request` CORE: requests between nodes (propose, read) and their replies;
//! - `inbound`: [`Inbound`], where received messages go;
//! - `metrics`: transport counters.
//!
//! The node that owns a transport (store, PD, admin, MQTT) is composed in [`crate::node`].

pub mod certgen;
pub mod config;
mod data;
pub mod forward;
pub mod frame;
mod inbound;
pub mod metrics;
pub mod quic;
mod rate_limit;
mod receiver;
pub mod request;
mod sender;
pub mod tls;

pub use config::{TlsMode, TransportConfig, TransportConfigError};
pub use forward::{ForwardBatch, ForwardMsg};
pub use metrics::{TransportMetrics, TransportSnapshot};
pub use quic::{Inbound, PeerInfo, QuicTransport, TransportError};
