//! The placement driver (PD): the service that moves replicas and leaders between nodes,
//! over the scheduler core in the `placement` crate.
//!
//! - [`config`]: the `[pd]` section of the node configuration;
//! - [`message`] CORE: heartbeats, acks and operator steps, and their binary codec (carried
//!   in the cluster transport's `Pd` frames);
//! - `range_view` CORE: range reports into the scheduler core's view, and its ranges back
//!   out as descriptors for the range table;
//! - [`report`] CORE: which led ranges go into a node's next heartbeat, with write rates;
//! - [`driver`] CORE: the PD leader's state: heartbeats in, `placement::Coordinator`
//!   rounds, steps and node-state changes out, the admin report;
//! - [`registry`] CORE: node admin states as keys of the PD group;
//! - [`bootstrap`] CORE: the MQTT keyspace bootstrap (plan recorded in the PD group,
//!   ranges created on their voters, record marked done);
//! - [`executor`] SHELL: carries out steps on the ranges this node leads;
//! - [`service`] SHELL: the PD thread on every node (heartbeats, leadership of the PD
//!   group, scheduling rounds) and the [`PdHandle`] for the transport and admin API.
//!
//! The PD group is an ordinary raft group with id [`PD_GROUP`] on the `[pd] voters` nodes.
//! It is off the data path: with no PD leader, reads and writes go on and only
//! rebalancing stops.

pub mod bootstrap;
pub mod config;
pub mod driver;
pub mod executor;
pub mod message;
mod range_view;
pub mod registry;
pub mod report;
pub mod service;

pub use config::{PdConfigError, PlacementDriverConfig};
pub use driver::{Driver, DriverConfig, NodeAdminState, NodeView, OperatorInfo, PdReport};
pub use service::{PdConfig, PdHandle, PdService};

use crate::group::GroupId;

/// The PD group's id (reserved: the admin API refuses to create a range group with it;
/// `u64::MAX` is the store's own metadata).
pub const PD_GROUP: GroupId = u64::MAX - 1;

/// Why a PD request failed.
#[derive(Debug, thiserror::Error)]
pub enum PdError {
    /// This node does not lead the PD group.
    #[error("this node does not lead the placement driver")]
    NotLeader,
    /// The request is not allowed.
    #[error("refused: {0}")]
    Refused(String),
    /// The PD group did not answer (no quorum, timed out, store stopped).
    #[error("placement driver unavailable: {0}")]
    Unavailable(String),
}

/// The schedulers the PD runs. Merge is left out: this build's nodes do not carry out
/// merge steps yet (the scheduler core and simulator have it).
pub fn schedulers() -> Vec<Box<dyn placement::scheduler::Scheduler>> {
    use placement::scheduler::{balance_leader, balance_replica, evict, repair, split};
    vec![
        Box::new(repair::Repair::default()),
        Box::new(evict::Evict::default()),
        Box::new(split::Split),
        Box::new(balance_replica::BalanceReplica),
        Box::new(balance_leader::BalanceLeader),
    ]
}
