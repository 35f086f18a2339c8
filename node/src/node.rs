//! SHELL. The composition root of one Flotilla process: [`run`] starts the cluster half
//! ([`ClusterNode`]: a raftstore [`Store`] over raft-engine in `data-dir/raft`, the
//! [`QuicTransport`] carrying its messages, the placement driver service and, if configured,
//! the admin HTTP endpoint) and the MQTT [`Server`], and stops them in reverse order.
//!
//! Lifecycle of the cluster half: `start` binds the transport, opens the store (which
//! recovers every group found on disk), attaches the store to the transport, introduces the
//! node to its `join` addresses and starts the admin endpoint. A node with no groups on disk
//! simply waits: groups are created through the admin API (or arrive as new learners).

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::admin::{AdminError, AdminServer};
use crate::cluster::{ClientConfig, KvClient, LocalStore, RangeTable};
use crate::config::NodeConfig;
use crate::group::{GroupId, GroupMessage, NodeId};
use crate::pd::service::BootstrapConfig;
use crate::pd::{DriverConfig, PdConfig, PdError, PdHandle, PdService};
use crate::raftstore::{Store, StoreConfig, StoreError, StoreRouter};
use crate::server::{Server, ShutdownHandle, StartError};
use crate::transport::config::ClusterConfig;
use crate::transport::request::{Reply, Request};
use crate::transport::tls::{self, TlsError};
use crate::transport::{Inbound, QuicTransport, TransportError};

/// Requests (local and from other nodes) waiting for the local store at most.
const REQUESTS_IN_FLIGHT_MAX: usize = 65_536;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `[cluster]` section is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The store could not open.
    #[error("raft store: {0}")]
    Store(#[from] StoreError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The placement driver service could not start.
    #[error(transparent)]
    Pd(#[from] PdError),
}

/// The PD service's settings from the `[cluster]` section.
fn pd_config(cfg: &ClusterConfig) -> PdConfig {
    let defaults = placement::SizeLimits::default();
    let size_limits = placement::SizeLimits {
        split_size_bytes: cfg.pd_split_size_bytes,
        split_keys: cfg.pd_split_keys,
        merge_size_bytes_max: defaults.merge_size_bytes_max.min(cfg.pd_split_size_bytes / 4),
        merge_keys_max: defaults.merge_keys_max.min(cfg.pd_split_keys / 4),
        ..defaults
    };
    // Message-log ranges are fixed hash slices (CLUSTER.md 2.4): never split or merged.
    let fixed = placement::SizeLimits {
        split_size_bytes: u64::MAX,
        split_keys: u64::MAX,
        load_split_write_bytes_per_sec: u64::MAX,
        load_split_write_keys_per_sec: u64::MAX,
        merge_size_bytes_max: 0,
        merge_keys_max: 0,
        merge_write_bytes_per_sec_max: 0,
    };
    let placement = placement::Config {
        keyspace_limits: [(crate::cluster::keys::FAMILY_LOGS, fixed)].into_iter().collect(),
        size_limits,
        node_down_after_ms: cfg.pd_node_down_after_ms,
        node_repair_after_ms: cfg.pd_node_repair_after_ms,
        isolation_labels: cfg.pd_isolation_labels.clone(),
        ..placement::Config::default()
    };
    PdConfig {
        voters: cfg.pd_voters.clone(),
        heartbeat: Duration::from_millis(cfg.pd_heartbeat_ms),
        schedule: Duration::from_millis(cfg.pd_schedule_ms),
        refresh_beats: cfg.pd_refresh_beats,
        capacity_bytes: cfg.pd_capacity_bytes,
        labels: cfg.pd_labels.clone(),
        driver: DriverConfig {
            placement,
            // Every node re-sends all its ranges within a heartbeat or two of a new leader.
            warmup_ms: cfg.pd_heartbeat_ms.saturating_mul(3),
            default_capacity_bytes: cfg.pd_capacity_bytes,
        },
        bootstrap: cfg.mqtt_bootstrap.then(|| BootstrapConfig {
            replicas: 3,
            log_groups: cfg.log_groups_per_node.saturating_mul(cfg.pd_voters.len().max(1) as u32),
        }),
    }
}

/// Feeds the transport's messages into the store (PD messages to the PD service, requests
/// to the local store, replies to the client that waits for them).
struct StoreInbound {
    router: StoreRouter,
    store: Weak<Store>,
    pd: PdHandle,
    local: Arc<LocalStore>,
    client: KvClient,
}

impl Inbound for StoreInbound {
    fn deliver(&self, msg: GroupMessage) -> bool {
        self.router.deliver(msg)
    }

    fn deliver_pd(&self, from: NodeId, body: Vec<u8>) -> bool {
        self.pd.deliver(from, body)
    }

    fn unreachable(&self, group: GroupId, to: NodeId, snapshot: bool) {
        self.router.unreachable(group, to, snapshot);
    }

    fn deliver_requests(&self, from: NodeId, requests: Vec<Request>) {
        self.local.serve(from, requests);
    }

    fn deliver_replies(&self, _from: NodeId, replies: Vec<Reply>) {
        self.client.complete(replies);
    }

    fn peer_down(&self, node: NodeId) {
        let Some(store) = self.store.upgrade() else { return };
        // Locks every group's state in turn: off the async threads.
        tokio::task::spawn_blocking(move || store.wake_groups_with(node));
    }
}

/// A running cluster node.
pub struct ClusterNode {
    store: Arc<Store>,
    local: Arc<LocalStore>,
    client: KvClient,
    transport: QuicTransport,
    admin: Option<AdminServer>,
    pd: Option<PdService>,
}

impl ClusterNode {
    /// Starts node `cfg.node_id` with its raft log in `data_dir/raft`. Must be called inside
    /// a tokio runtime.
    pub async fn start(cfg: &ClusterConfig, data_dir: &std::path::Path) -> Result<Self, ClusterError> {
        cfg.validate().map_err(ClusterError::Config)?;
        let tls = tls::configs(cfg)?;
        let transport = QuicTransport::bind(cfg, tls)?;
        let mut store_cfg = StoreConfig::new(cfg.node_id, data_dir.join("raft"), cfg.node_id);
        store_cfg.poller_threads = cfg.poller_threads;
        store_cfg.batch_groups_max = cfg.raft_batch_groups_max;
        store_cfg.sync_writes = cfg.sync_writes;
        let t: Arc<dyn crate::raftstore::Transport> = Arc::new(transport.clone());
        let store = tokio::task::spawn_blocking(move || Store::open(store_cfg, t))
            .await
            .map_err(|e| ClusterError::Config(format!("store open task: {e}")))??;
        let store = Arc::new(store);
        tracing::info!(node = cfg.node_id, groups = store.group_count(), addr = %transport.addr(), "cluster node started");
        let table = Arc::new(RwLock::new(RangeTable::new()));
        let pd = {
            let (cfg, store, transport) = (pd_config(cfg), Arc::clone(&store), transport.clone());
            let table = Arc::clone(&table);
            tokio::task::spawn_blocking(move || PdService::start(cfg, store, transport, table))
                .await
                .map_err(|e| ClusterError::Config(format!("PD start task: {e}")))??
        };
        let handle = pd.handle();
        let local = Arc::new(
            LocalStore::start(Arc::clone(&store), transport.clone(), REQUESTS_IN_FLIGHT_MAX)
                .map_err(|e| ClusterError::Config(format!("request thread: {e}")))?,
        );
        let client_cfg = ClientConfig {
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            attempt_timeout: Duration::from_millis(cfg.request_timeout_ms.div_ceil(2)),
            ..ClientConfig::default()
        };
        let client = KvClient::new(Arc::clone(&local), transport.clone(), table, client_cfg);
        transport.attach(Arc::new(StoreInbound {
            router: store.router(),
            store: Arc::downgrade(&store),
            pd: handle.clone(),
            local: Arc::clone(&local),
            client: client.clone(),
        }));
        transport.join(&cfg.join);
        let admin = match cfg.admin_listen {
            Some(addr) => {
                let admin = AdminServer::bind(
                    addr,
                    Arc::clone(&store),
                    transport.clone(),
                    Some(handle.clone()),
                    Some(client.clone()),
                )
                .await?;
                handle.set_admin(admin.local_addr());
                Some(admin)
            }
            None => None,
        };
        Ok(Self { store, local, client, transport, admin, pd: Some(pd) })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A client of the cluster's ranges, routed from this node.
    pub fn client(&self) -> &KvClient {
        &self.client
    }

    /// The transport.
    pub fn transport(&self) -> &QuicTransport {
        &self.transport
    }

    /// The admin endpoint's address, if it runs.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// The placement driver service.
    pub fn pd(&self) -> Option<PdHandle> {
        self.pd.as_ref().map(PdService::handle)
    }

    /// Stops the admin endpoint, the PD thread and the transport, then the store's threads.
    pub async fn shutdown(mut self) {
        if let Some(admin) = &self.admin {
            admin.shutdown();
        }
        if let Some(pd) = self.pd.take() {
            let _ = tokio::task::spawn_blocking(move || drop(pd)).await;
        }
        self.transport.shutdown();
        self.transport.closed(Duration::from_secs(2)).await;
        let local = self.local;
        let _ = tokio::task::spawn_blocking(move || drop(local)).await;
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    }
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cluster half could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The MQTT server could not start.
    #[error(transparent)]
    Server(#[from] StartError),
    /// The MQTT listener's address could not be read.
    #[error("MQTT listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// Runs one node until `stop` resolves: the cluster half first (when `[cluster]` is
/// enabled), then the MQTT server; on stop, the server drains and the cluster half stops.
pub async fn run(
    config: NodeConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let cluster = if config.cluster.enabled() {
        let node = ClusterNode::start(&config.cluster, &config.data_dir).await?;
        if let Some(addr) = node.admin_addr() {
            tracing::info!(%addr, "admin endpoint");
        }
        Some(node)
    } else {
        None
    };
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr()?, "flotilla MQTT listening");
    let handle: ShutdownHandle = server.shutdown_handle();
    tokio::spawn(async move {
        stop.await;
        handle.shutdown();
    });
    server.run().await;
    if let Some(node) = cluster {
        node.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_log_ranges_are_never_split_or_merged() {
        let cfg = pd_config(&ClusterConfig::default());
        let placement = &cfg.driver.placement;
        placement.validate().expect("valid placement config");
        let logs = placement.limits_for(&[crate::cluster::keys::FAMILY_LOGS, 0x80, 1]);
        assert_eq!((logs.split_keys, logs.split_size_bytes, logs.merge_keys_max), (u64::MAX, u64::MAX, 0));
        let sessions = placement.limits_for(b"S\x00\x01");
        assert!(sessions.split_keys < u64::MAX, "other families split as configured");
    }
}
