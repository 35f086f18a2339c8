//! CORE. Error types of the placement core. Every error is a value a caller can act on: a rejected
//! heartbeat names the range and why, a bad configuration names the field.
//!
//! Expected outcomes that are not errors (an operator that timed out, a range with nothing to
//! do) are reported as events or `Option`s, not through these types.

use crate::view::{Epoch, NodeId, RangeId};

/// A configuration value is out of range or contradicts another one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid placement config: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field, as named in [`crate::config::Config`].
    pub field: &'static str,
    /// Why it is invalid.
    pub reason: &'static str,
}

/// A heartbeat or registration could not be applied to the [`crate::view::ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The range names a replica on a node the view has never registered.
    #[error("range {range} has a replica on unknown node {node}")]
    UnknownNode {
        /// The range reported.
        range: RangeId,
        /// The unregistered node.
        node: NodeId,
    },
    /// The report is older than what the view already holds (an epoch went backwards).
    #[error("range {range}: stale epoch {reported:?}, view has {current:?}")]
    StaleEpoch {
        /// The range reported.
        range: RangeId,
        /// The epoch the view holds.
        current: Epoch,
        /// The epoch reported.
        reported: Epoch,
    },
    /// The range overlaps another range with a newer version; the report is stale.
    #[error("range {range} overlaps range {other}, which has a newer version")]
    OverlapsNewer {
        /// The range reported.
        range: RangeId,
        /// The newer range it overlaps.
        other: RangeId,
    },
    /// The report is malformed.
    #[error("range {range} is malformed: {reason}")]
    Malformed {
        /// The range reported.
        range: RangeId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A node heartbeat or state change for a node that was never registered.
    #[error("unknown node {0}")]
    NodeNotRegistered(NodeId),
}
