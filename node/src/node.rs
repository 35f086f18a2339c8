//! SHELL. The composition root of one Flotilla process: [`run`] starts the cluster half
//! ([`ClusterNode`]: a raftstore [`Store`] over raft-engine in `data-dir/raft`, the
//! [`QuicTransport`] carrying its messages, the placement driver service and, if configured,
//! the admin HTTP endpoint) and the MQTT [`Server`], and stops them in reverse order. A
//! single node (no `[cluster]`) still runs the admin endpoint when `[admin] listen` is set,
//! with the MQTT server's endpoints only (`/metrics`, `/healthz`, `/readyz`, ...).
//!
//! Lifecycle of the cluster half: `start` binds the transport, opens the store (which
//! recovers every group found on disk), attaches the store to the transport, introduces the
//! node to its `join` addresses and starts the admin endpoint. A node with no groups on disk
//! simply waits: groups are created through the admin API (or arrive as new learners).

use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use crate::admin::{AdminError, AdminServer};
use crate::cluster::{ClientConfig, KvClient, LocalStore, RangeTable};
use crate::config::{ClusterSectionError, NodeConfig};
use crate::group::Outcome;
use crate::group::{GroupId, GroupMessage, NodeId};
use crate::pd::{PdError, PdHandle, PdService};
use crate::raftstore::{Store, StoreError, StoreRouter};
use crate::server::{ClusterInbound, ClusterLink, Server, ShutdownHandle, StartError};
use crate::transport::forward::ForwardBatch;
use crate::transport::request::{Reply, ReplyError, Request, RequestBody};
use crate::transport::tls::{self, TlsError};
use crate::transport::{Inbound, QuicTransport, TransportError};

/// Requests (local and from other nodes) waiting for the local store at most.
const REQUESTS_IN_FLIGHT_MAX: usize = 65_536;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A cluster section of the configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(ClusterSectionError),
    /// A startup task or thread failed.
    #[error("node startup: {0}")]
    Startup(String),
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

/// Feeds the transport's messages into the store (PD messages to the PD service, requests
/// to the local store, replies to the client that waits for them).
struct StoreInbound {
    router: StoreRouter,
    store: Weak<Store>,
    pd: PdHandle,
    local: Arc<LocalStore>,
    client: KvClient,
    /// The MQTT server, once it runs clustered.
    mqtt: Arc<OnceLock<ClusterInbound>>,
    /// Answers kicks.
    transport: QuicTransport,
}

impl Inbound for StoreInbound {
    fn deliver_forwards(&self, from: NodeId, batch: ForwardBatch) {
        if let Some(m) = self.mqtt.get() {
            m.deliver_forwards(from, batch);
        }
    }

    fn forward_acks(&self, from: NodeId, ids: Vec<u64>) {
        if let Some(m) = self.mqtt.get() {
            m.forward_acks(from, ids);
        }
    }

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
        let (kicks, store): (Vec<Request>, Vec<Request>) =
            requests.into_iter().partition(|r| matches!(r.body, RequestBody::Kick { .. }));
        for r in kicks {
            let RequestBody::Kick { client_id, epoch } = r.body else { continue };
            let result = match (self.mqtt.get(), std::str::from_utf8(&client_id)) {
                (Some(m), Ok(id)) => {
                    m.kick(id, epoch);
                    Ok(Outcome::Written)
                }
                (None, _) => Err(ReplyError::Other("MQTT does not run through the cluster here".into())),
                (_, Err(_)) => Err(ReplyError::Other("client id is not UTF-8".into())),
            };
            self.transport.send_reply(from, Reply { id: r.id, result });
        }
        if !store.is_empty() {
            self.local.serve(from, store);
        }
    }

    fn pong(&self, from: NodeId, incarnation: u64) {
        if let Some(m) = self.mqtt.get() {
            m.pong(from, incarnation);
        }
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

/// The admin endpoint's bearer token (read, or generated on first start).
fn admin_token(cfg: &NodeConfig) -> Result<String, AdminError> {
    let path = cfg.admin.token_path(&cfg.data_dir);
    Ok(crate::admin::token::load_or_create(&path)?)
}

/// A running cluster node.
pub struct ClusterNode {
    store: Arc<Store>,
    local: Arc<LocalStore>,
    client: KvClient,
    transport: QuicTransport,
    admin: Option<AdminServer>,
    pd: Option<PdService>,
    mqtt: Arc<OnceLock<ClusterInbound>>,
}

impl ClusterNode {
    /// Starts node `cfg.cluster.node_id` (from the `[cluster]`, `[transport]`,
    /// `[raftstore]`, `[pd]` and `[admin]` sections) with its raft log in
    /// `cfg.data_dir/raft`. Must be called inside a tokio runtime.
    pub async fn start(cfg: &NodeConfig) -> Result<Self, ClusterError> {
        cfg.validate_cluster().map_err(ClusterError::Config)?;
        let cluster = &cfg.cluster;
        let tls = tls::configs(&cfg.transport)?;
        let transport =
            QuicTransport::bind(cluster.node_id, cluster.listen, cluster.advertise, &cfg.transport, tls)?;
        let store_cfg =
            cfg.raftstore.store_config(cluster.node_id, cfg.data_dir.join("raft"), cluster.node_id);
        let t: Arc<dyn crate::raftstore::Transport> = Arc::new(transport.clone());
        let store = tokio::task::spawn_blocking(move || Store::open(store_cfg, t))
            .await
            .map_err(|e| ClusterError::Startup(format!("store open task: {e}")))??;
        let store = Arc::new(store);
        tracing::info!(node = cluster.node_id, groups = store.group_count(), addr = %transport.addr(), "cluster node started");
        let table = Arc::new(RwLock::new(RangeTable::new()));
        let pd = {
            let pd_cfg = cfg.pd.service_config(cluster.mqtt_bootstrap, cluster.log_groups_per_node);
            let (store, transport) = (Arc::clone(&store), transport.clone());
            let table = Arc::clone(&table);
            tokio::task::spawn_blocking(move || PdService::start(pd_cfg, store, transport, table))
                .await
                .map_err(|e| ClusterError::Startup(format!("PD start task: {e}")))??
        };
        let handle = pd.handle();
        let local = Arc::new(
            LocalStore::start(Arc::clone(&store), transport.clone(), REQUESTS_IN_FLIGHT_MAX)
                .map_err(|e| ClusterError::Startup(format!("request thread: {e}")))?,
        );
        let client_cfg = ClientConfig {
            request_timeout: Duration::from_millis(cluster.request_timeout_ms),
            attempt_timeout: Duration::from_millis(cluster.request_timeout_ms.div_ceil(2)),
            ..ClientConfig::default()
        };
        let client = KvClient::new(Arc::clone(&local), transport.clone(), table, client_cfg);
        let mqtt = Arc::new(OnceLock::new());
        transport.attach(Arc::new(StoreInbound {
            router: store.router(),
            store: Arc::downgrade(&store),
            pd: handle.clone(),
            local: Arc::clone(&local),
            client: client.clone(),
            mqtt: Arc::clone(&mqtt),
            transport: transport.clone(),
        }));
        transport.allow_faults(cfg.admin.fault_injection);
        transport.join(&cluster.join);
        let admin = match cfg.admin.listen {
            Some(addr) => {
                let token = admin_token(cfg)?;
                let admin = AdminServer::bind(
                    addr,
                    token,
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
        Ok(Self { store, local, client, transport, admin, pd: Some(pd), mqtt })
    }

    /// Makes `server` this node's MQTT server: its subscriptions and publishes go through
    /// the cluster (see `server::ClusterLink`).
    pub fn attach_mqtt(&self, server: &Server, cfg: &NodeConfig) {
        let link = ClusterLink {
            client: self.client.clone(),
            transport: self.transport.clone(),
            tenant: Vec::new(),
            request_timeout: Duration::from_millis(cfg.cluster.request_timeout_ms),
            isolation_fence: Duration::from_millis(cfg.cluster.isolation_fence_ms),
            forward_linger: Duration::from_micros(cfg.transport.forward_linger_us),
            topic_limits: cfg.broker.topic_limits(),
        };
        let _ = self.mqtt.set(server.attach_cluster(link));
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

    /// The admin endpoint, if it runs.
    pub fn admin(&self) -> Option<&AdminServer> {
        self.admin.as_ref()
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
    /// The admin endpoint of a single node could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Runs one node until `stop` resolves: the cluster half first (when `[cluster]` is
/// enabled), then the MQTT server; on stop, the server drains and the cluster half stops.
pub async fn run(
    config: NodeConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let cluster = if config.cluster.enabled() {
        let node = ClusterNode::start(&config).await?;
        if let Some(addr) = node.admin_addr() {
            tracing::info!(%addr, "admin endpoint");
        }
        Some(node)
    } else {
        None
    };
    let mqtt_clustered = config.cluster.mqtt;
    let cluster_config = config.clone();
    let single_admin = match (&cluster, config.admin.listen) {
        (None, Some(addr)) => Some(AdminServer::bind_single(addr, admin_token(&config)?).await?),
        _ => None,
    };
    let server = Server::bind(config).await?;
    if let Some(node) = cluster.as_ref().filter(|_| mqtt_clustered) {
        node.attach_mqtt(&server, &cluster_config);
        tracing::info!("MQTT runs through the cluster");
    }
    if let Some(admin) = single_admin.as_ref().or_else(|| cluster.as_ref().and_then(ClusterNode::admin)) {
        admin.attach(server.ops_handle());
    }
    tracing::info!(addr = %server.local_addr()?, "flotilla MQTT listening");
    let handle: ShutdownHandle = server.shutdown_handle();
    tokio::spawn(async move {
        stop.await;
        handle.shutdown();
    });
    server.run().await;
    if let Some(admin) = single_admin {
        admin.shutdown();
    }
    if let Some(node) = cluster {
        node.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
