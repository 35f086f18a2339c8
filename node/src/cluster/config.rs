//! The `[cluster]` section of the node configuration: who this node is in the cluster
//! (id, addresses, whom to join) and how the cluster plane serves it (request deadline,
//! MQTT keyspace bootstrap). Transport tuning, the raft store, the placement driver and the
//! admin endpoint have their own sections (`[transport]`, `[raftstore]`, `[pd]`,
//! `[admin]`). Every key is documented in `flotilla.example.toml`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::group::NodeId;

/// The `[cluster]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// This node's id; 0 runs a single node with no cluster (the default).
    pub node_id: NodeId,
    /// UDP address of the QUIC transport.
    pub listen: SocketAddr,
    /// Address other nodes dial; unset = `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<SocketAddr>,
    /// Cluster addresses of existing nodes to introduce this node to.
    pub join: Vec<SocketAddr>,
    /// How long a request to a range leader may take, retries included, before the caller
    /// gets an error (MQTT clients then get a reason code).
    pub request_timeout_ms: u64,
    /// Whether the placement driver's leader creates the MQTT key families' ranges once
    /// its voters are up (sessions, routes, retained, message logs).
    pub mqtt_bootstrap: bool,
    /// Message-log ranges the bootstrap creates per PD voter.
    pub log_groups_per_node: u32,
    /// Whether MQTT runs through the cluster: subscriptions are route rows in the route
    /// ranges and publishes are forwarded to every node subscribed to them. Off, the node's
    /// MQTT server is a broker of its own (the cluster plane still runs).
    pub mqtt: bool,
    /// How long a node may miss a majority of its peers before it is taken to have closed
    /// its clients (CLUSTER.md section 4): forwards stop waiting for a node unreachable
    /// for longer.
    pub isolation_fence_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise: None,
            join: Vec::new(),
            request_timeout_ms: 5000,
            mqtt_bootstrap: true,
            log_groups_per_node: 16,
            mqtt: true,
            isolation_fence_ms: 6000,
        }
    }
}

/// Why a `[cluster]` section is refused; each names its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// The request deadline is too short to reach any leader.
    #[error("cluster.request-timeout-ms = {0} must be at least 100")]
    RequestTimeout(u64),
    /// The isolation fence is outside 500 ms ..= 10 minutes.
    #[error("cluster.isolation-fence-ms = {0}: must be 500..=600000")]
    IsolationFence(u64),
    /// The message-log ranges per PD voter are none or too many.
    #[error("cluster.log-groups-per-node = {0} must be within 1..=256")]
    LogGroupsPerNode(u32),
}

impl ClusterConfig {
    /// Whether this node runs in a cluster.
    pub fn enabled(&self) -> bool {
        self.node_id != 0
    }

    /// The address peers dial.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Every cluster address this node uses, with the key it comes from: its own
    /// (`listen`, `advertise`) and each it joins (`join`).
    pub fn addresses(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> + '_ {
        let own = [("listen", self.listen), ("advertise", self.advertise_addr())];
        own.into_iter().chain(self.join.iter().map(|&a| ("join", a)))
    }

    /// Checks the section's own rules.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.request_timeout_ms < 100 {
            return Err(ClusterConfigError::RequestTimeout(self.request_timeout_ms));
        }
        if self.log_groups_per_node == 0 || self.log_groups_per_node > 256 {
            return Err(ClusterConfigError::LogGroupsPerNode(self.log_groups_per_node));
        }
        if !(500..=600_000).contains(&self.isolation_fence_ms) {
            return Err(ClusterConfigError::IsolationFence(self.isolation_fence_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_moved_keys_are_refused() {
        for text in
            ["node-idd = 1\n", "pd-voters = [1]\n", "admin-listen = \"127.0.0.1:1\"\n", "tls = \"mutual\"\n"]
        {
            let err = toml::from_str::<ClusterConfig>(text).expect_err(text);
            assert!(err.to_string().contains("unknown field"), "{text}: {err}");
        }
        let cfg: ClusterConfig =
            toml::from_str("node-id = 2\njoin = [\"127.0.0.1:7000\"]\n").expect("identity parses");
        assert!(cfg.enabled());
        assert_eq!(cfg.addresses().map(|(key, _)| key).collect::<Vec<_>>(), ["listen", "advertise", "join"]);
    }

    #[test]
    fn each_rule_gives_its_typed_error() {
        let base = ClusterConfig::default;
        ClusterConfig { node_id: 1, ..base() }.validate().expect("defaults");
        assert_eq!(
            ClusterConfig { request_timeout_ms: 99, ..base() }.validate(),
            Err(ClusterConfigError::RequestTimeout(99))
        );
        for ms in [499, 600_001] {
            assert_eq!(
                ClusterConfig { isolation_fence_ms: ms, ..base() }.validate(),
                Err(ClusterConfigError::IsolationFence(ms))
            );
        }
        for n in [0, 257] {
            assert_eq!(
                ClusterConfig { log_groups_per_node: n, ..base() }.validate(),
                Err(ClusterConfigError::LogGroupsPerNode(n))
            );
        }
    }
}
