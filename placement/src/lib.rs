//! Placement driver (PD) for Flotilla's multi-raft keyspace.
//!
//! This crate will own the sans-IO scheduler core (a cluster view in, bounded operators out:
//! add learner, promote, remove peer, transfer leader, split, merge), the filters that keep
//! every operator safe (quorum, failure domains, drains), and the service shell that runs the
//! driver as its own raft group. Nothing is implemented yet; see the placement issue.
#![deny(missing_docs)]
