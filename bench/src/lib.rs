//! Flotilla's capacity-planning harness: MQTT load scenarios against any broker.
//!
//! Crate map (CORE = no IO, SHELL = does IO):
//! - [`client`] SHELL: a lean MQTT connection on node's zero-copy codec.
//! - [`engine`]: what one worker runs: a task per client (connect, subscribe, publish,
//!   account deliveries) driven step by step by the coordinator's [`engine::proto::Command`]s.
//! - [`worker`] SHELL: workers as threads or `bench worker` subprocesses (JSON lines over
//!   stdin/stdout), so a run can exceed one process's open-file limit.
//! - [`scenario`]: `conn`, `p2p`, `fanin`, `fanout`, `subs`, `persist`, `storm`, and the
//!   coordinator that runs them.
//! - [`stats`] CORE: latency histograms, loss/duplicate accounting by `(publisher, seq)`.
//! - [`stamp`] CORE: the payload header carrying publisher, sequence number and send time.
//! - [`proc`] SHELL: broker CPU time and RSS from `/proc`.
//! - [`result`] CORE: one run's figures; [`report`]: table, JSON and HTML output.
//! - [`compare`] SHELL: A B A B runs against two brokers; [`plan`]: fleet sizing;
//!   [`suite`]: the goal scenarios against Flotilla and Mosquitto, written to BENCHMARKS.md.
//! - [`cluster`] SHELL: `bench cluster-compare`, a single node against a local cluster.
//! - [`brokers`] SHELL: local Flotilla and Mosquitto processes for the suite.
//! - [`clock`] SHELL: the harness clock shared by worker processes.
//! - [`tls`]: TLS settings sent to workers and the rustls client configuration (ring).
#![deny(missing_docs)]

pub mod brokers;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod compare;
pub mod engine;
pub mod plan;
pub mod proc;
pub mod report;
pub mod result;
pub mod scenario;
pub mod stamp;
pub mod stats;
pub mod suite;
pub mod tls;
pub mod worker;
