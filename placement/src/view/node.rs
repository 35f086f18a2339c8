//! CORE. What the view knows about one node: its registration (labels, capacity, admin state) and
//! its latest store heartbeat. Liveness is derived from the heartbeat time and the `now_ms`
//! the caller passes in; the core never reads a clock.

use std::collections::BTreeMap;
use std::fmt;

/// A node (a TiKV "store"): one broker process holding replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The operator-set state of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeState {
    /// Normal: may hold and receive replicas and leaders.
    #[default]
    Serving,
    /// Being drained: receives nothing; its leaders and then its replicas are moved off.
    Draining,
}

/// Registration and latest heartbeat of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Location labels, e.g. `zone = "z1"`, `rack = "r7"`. Keys named in
    /// [`crate::config::Config::isolation_labels`] are failure domains.
    pub labels: BTreeMap<String, String>,
    /// Disk capacity; balance targets are proportional to it.
    pub capacity_bytes: u64,
    /// Free disk, as last reported.
    pub available_bytes: u64,
    /// Time of the last heartbeat, on the caller's clock.
    pub last_heartbeat_ms: u64,
    /// The node reported itself overloaded (too many snapshots, slow disk): no new work.
    pub busy: bool,
    /// Admin state.
    pub state: NodeState,
}

impl NodeInfo {
    /// A serving node with the given labels and capacity, last heard from at `now_ms`.
    pub fn new(id: NodeId, labels: BTreeMap<String, String>, capacity_bytes: u64, now_ms: u64) -> Self {
        Self {
            id,
            labels,
            capacity_bytes,
            available_bytes: capacity_bytes,
            last_heartbeat_ms: now_ms,
            busy: false,
            state: NodeState::Serving,
        }
    }

    /// How long since the last heartbeat.
    pub fn silent_for_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_heartbeat_ms)
    }

    /// True while the liveness lease (`down_after_ms`) has not expired.
    pub fn is_up(&self, now_ms: u64, down_after_ms: u64) -> bool {
        self.silent_for_ms(now_ms) < down_after_ms
    }

    /// The value of label `key`, or `""` if the node lacks it.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A store heartbeat: the node's own report about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHeartbeat {
    /// The reporting node.
    pub id: NodeId,
    /// Disk capacity.
    pub capacity_bytes: u64,
    /// Free disk.
    pub available_bytes: u64,
    /// Whether the node asks for no new work.
    pub busy: bool,
}
