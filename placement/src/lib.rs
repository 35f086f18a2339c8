//! Placement driver (PD) for Flotilla's multi-raft keyspace: the sans-IO scheduler core.
//!
//! A [`ClusterView`] (nodes with capacity, labels and liveness; ranges with key span, epoch,
//! replicas, leader, size and load) goes in; bounded [`Operator`]s come out, each a list of
//! [`Step`]s (add learner, promote learner, remove peer, transfer leader, split, merge) that
//! the [`Controller`] sends one at a time to range leaders and follows through heartbeats.
//! See [`Coordinator`] for the call order.
//!
//! Everything in this crate is CORE: no IO, no clock, no threads, no ambient randomness. Time
//! is a `now_ms: u64` argument on the caller's clock; randomness is a caller-seeded
//! [`rand::rngs::SmallRng`]; maps are `BTreeMap` or rustc-hash. The raft-backed PD service,
//! heartbeat RPCs and admin commands (the SHELL) are not built yet.
//!
//! Module map:
//! * [`view`]: the cluster as heartbeats describe it, with per-node indexes.
//! * [`operator`]: operators, steps and their constructors.
//! * [`filter`]: node filters and the quorum / failure-domain safety checks.
//! * [`influence`]: pending per-node deltas of in-flight operators.
//! * [`controller`]: admission, limits, step dispatch, progress, timeouts.
//! * [`scheduler`]: repair, evict, split, merge, balance-replica, balance-leader.
//! * [`protection`]: split-merge protection.
//! * [`coordinator`]: ties them together; the entry point.
//! * [`config`], [`error`].
#![deny(missing_docs)]

pub mod config;
pub mod controller;
pub mod coordinator;
pub mod error;
pub mod filter;
pub mod influence;
pub mod operator;
pub mod protection;
pub mod scheduler;
pub mod view;

pub use config::{Config, SizeLimits};
pub use controller::{AdmitError, CancelReason, Command, Controller, OperatorEvent, Outcome, SlotKind};
pub use coordinator::{Coordinator, Stats};
pub use error::{ConfigError, ViewError};
pub use operator::{OpClass, OpKind, Operator, OperatorId, SplitPolicy, Step};
pub use view::{
    ClusterView, Epoch, NodeHeartbeat, NodeId, NodeInfo, NodeState, RangeId, RangeInfo, Replica, Role,
};
