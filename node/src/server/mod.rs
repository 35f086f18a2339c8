//! SHELL. The server around the broker core: reactor threads that own the client sockets
//! (see [`reactor`]), a timer task, the journal writer, and graceful shutdown.
//!
//! The core lives behind one `std::sync::Mutex` (short critical sections, never held
//! across an `.await` or a socket write). After every call into it, the connections the
//! core woke are routed to the reactor that owns their socket, which pulls their packets
//! with `poll_transmit` once the socket has room, so TCP back-pressure reaches the core's
//! bounded queues.

mod client;
mod dispatch;
mod forwarder;
pub mod journal;
mod liveness;
mod ops;
mod pending;
mod reactor;
mod retained;
mod sessions;
mod sweeper;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::broker::auth::{Authenticator, StaticUsers};
use crate::broker::session::ConnId;
use crate::clock;
use crate::config::NodeConfig;
pub use dispatch::ClusterLink;
pub use ops::{
    BanTarget, CLIENT_LIST_MAX, ClientView, OpsHandle, OpsSnapshot, RETAINED_LIST_MAX, RetainedView,
};
use reactor::{FlushItem, Reactor, StopOnDrop};

/// Where a connection's socket lives.
pub(crate) struct Route {
    /// Index of the owning reactor.
    reactor: u16,
    /// Slot in the reactor's slab.
    token: u32,
    /// Already handed to the reactor and not yet pulled: not handed again.
    pending: bool,
}

/// The core plus the shell's routing of woken connections to reactors.
pub(crate) struct Core {
    pub(crate) broker: Broker,
    routes: FxHashMap<ConnId, Route>,
    reactors: Vec<Arc<reactor::Handle>>,
    /// Per reactor, the flushes gathered by one `notify_woken`.
    outgoing: Vec<Vec<FlushItem>>,
    /// Wakes the journal writer; `None` without persistence.
    kick: Option<Arc<journal::Kick>>,
    /// The core's journal lag in bytes as of its last `notify_woken`, read by the reactors
    /// without the lock (see `Shared::journal_lagging`).
    lag_bytes: Arc<AtomicU64>,
    /// Performs the core's cluster operations; `None` on a single node.
    dispatch: Option<dispatch::Dispatch>,
}

impl Core {
    /// Hands every connection the core woke to its reactor. `local` is the calling
    /// reactor's index and flush list: its own connections go there without a wake-up.
    /// Also wakes the journal writer if the core emitted records.
    pub(crate) fn notify_woken(&mut self, mut local: Option<(usize, &mut Vec<FlushItem>)>) {
        if let Some(k) = &self.kick
            && self.broker.journal_lag() > 0
        {
            k.kick();
        }
        self.lag_bytes.store(self.broker.journal_lag_bytes(), Ordering::Relaxed);
        if let Some(d) = &self.dispatch {
            let ops: Vec<_> = std::iter::from_fn(|| self.broker.poll_op()).collect();
            if !ops.is_empty() {
                d.submit(ops);
            }
        }
        while let Some(id) = self.broker.poll_woken() {
            let Some(r) = self.routes.get_mut(&id) else {
                continue;
            };
            if r.pending {
                continue;
            }
            r.pending = true;
            let item = (r.token, id);
            match &mut local {
                Some((me, list)) if *me == usize::from(r.reactor) => list.push(item),
                _ => {
                    if let Some(out) = self.outgoing.get_mut(usize::from(r.reactor)) {
                        out.push(item);
                    }
                }
            }
        }
        for (i, out) in self.outgoing.iter_mut().enumerate() {
            if !out.is_empty() {
                self.reactors[i].flush(out);
                out.clear();
            }
        }
    }

    /// Wakes every connection (at shutdown, so each writes its last packets and closes).
    fn wake_all(&mut self) {
        for (&id, r) in &mut self.routes {
            if !r.pending {
                r.pending = true;
                if let Some(out) = self.outgoing.get_mut(usize::from(r.reactor)) {
                    out.push((r.token, id));
                }
            }
        }
        self.notify_woken(None);
    }
}

/// State shared by all threads and tasks of one server.
pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) config: NodeConfig,
    /// Changes to `true` once shutdown starts.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The same counter as `Core::lag_bytes`.
    lag_bytes: Arc<AtomicU64>,
    /// Sockets waiting for CONNECT, per source address.
    pending: pending::PendingConnects,
    /// The cluster side, once attached.
    cluster: OnceLock<ClusterShell>,
    /// The shell's own counters, read by the admin endpoint.
    pub(crate) counters: ops::ShellCounters,
    /// Addresses banned by an operator, until a deadline: their sockets close at accept.
    pub(crate) addr_bans: ops::AddrBans,
}

/// What the shell keeps of the cluster outside the core's lock.
struct ClusterShell {
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    forwarder: Arc<forwarder::Forwarder>,
    transport: crate::transport::QuicTransport,
    liveness: Arc<liveness::Liveness>,
}

impl Shared {
    /// True while more than `storage.max-journal-lag-bytes` of journal records wait for the
    /// disk: the reactors hold every PUBLISH, SUBSCRIBE, UNSUBSCRIBE and CONNECT (and stop
    /// reading its sender) until the journal catches up, so publishers cannot queue unbounded
    /// records behind a slow or retrying disk, while clients that only acknowledge and ping
    /// are still read. In a cluster also while too many operations are in flight or a peer's
    /// forward queue is more than half full.
    pub(crate) fn journal_lagging(&self) -> bool {
        self.lag_bytes.load(Ordering::Relaxed) > self.config.storage.max_journal_lag_bytes
            || self.cluster.get().is_some_and(|c| {
                c.in_flight.load(Ordering::Relaxed) > dispatch::OPS_IN_FLIGHT_MAX
                    || c.transport.forwards_backlogged()
            })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug; keep serving the other clients.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The journal could not be opened or replayed.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The reactors' epoll instances could not be created.
    #[error("cannot create the network reactors: {0}")]
    Reactor(std::io::Error),
}

/// A bound, not yet running broker server.
pub struct Server {
    local_addr: SocketAddr,
    reactors: Vec<Reactor>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    journal: Option<(journal::OpenJournal, Arc<journal::Kick>)>,
}

/// Handle to stop a running server.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

/// `max-connections`, or when it is 0 the soft `RLIMIT_NOFILE` (from `/proc/self/limits`)
/// minus `reserved-descriptors`; 1,000,000 where the limit cannot be read.
fn max_connections(broker: &crate::broker::config::BrokerConfig) -> usize {
    if broker.max_connections > 0 {
        return broker.max_connections;
    }
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| soft_nofile(&l));
    let max =
        soft.map_or(1_000_000, |n| n.saturating_sub(broker.reserved_descriptors as u64).max(1) as usize);
    tracing::info!(max_connections = max, rlimit_nofile = ?soft, "max-connections derived from the descriptor limit");
    max
}

/// The soft "Max open files" limit in the text of `/proc/self/limits`.
fn soft_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Server {
    /// Binds the listener with the built-in authenticator.
    pub async fn bind(config: NodeConfig) -> Result<Self, StartError> {
        let auth = StaticUsers::new(config.broker.allow_anonymous, config.broker.users.clone());
        Self::bind_with_auth(config, Box::new(auth)).await
    }

    /// Binds the listener with a custom authenticator. With persistence on, the journal in
    /// `data-dir` is replayed first (nothing is served until it has been).
    pub async fn bind_with_auth(
        config: NodeConfig,
        auth: Box<dyn Authenticator>,
    ) -> Result<Self, StartError> {
        let addr = config.listen;
        let now = clock::now();
        let mut broker_config = config.broker.clone();
        broker_config.max_connections = max_connections(&config.broker);
        let mut broker = Broker::new(broker_config, auth, now, clock::seed());
        if config.cluster.enabled() && config.cluster.mqtt {
            broker.defer_wills_to_cluster();
        }
        let journal = if config.storage.persistence {
            let (open, report) = journal::open(&config.data_dir, &config.storage, &mut broker, now)?;
            tracing::info!(?report, dir = %config.data_dir.display(), "journal replayed");
            Some((open, Arc::new(journal::Kick::default())))
        } else {
            None
        };
        let listener =
            mio::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let kick = journal.as_ref().map(|(_, k)| k.clone());
        let n = config.reactor_threads();
        let lag_bytes = Arc::new(AtomicU64::new(0));
        let core = Mutex::new(Core {
            broker,
            routes: FxHashMap::default(),
            reactors: Vec::new(),
            outgoing: vec![Vec::new(); n],
            kick,
            lag_bytes: lag_bytes.clone(),
            dispatch: None,
        });
        let pending = pending::PendingConnects::new(config.broker.max_pending_connects_per_address);
        let cluster = OnceLock::new();
        let counters = ops::ShellCounters::new();
        let addr_bans = ops::AddrBans::default();
        let shared =
            Arc::new(Shared { core, config, shutdown, lag_bytes, pending, cluster, counters, addr_bans });
        let mut reactors = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (r, h) = Reactor::new(i, shared.clone()).map_err(StartError::Reactor)?;
            reactors.push(r);
            handles.push(h);
        }
        reactors[0].listen(listener).map_err(StartError::Reactor)?;
        for r in &mut reactors {
            r.set_peers(handles.clone());
        }
        shared.lock().reactors = handles;
        Ok(Self { local_addr, reactors, shared, shutdown_tx, journal })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// Makes this server one node of an MQTT cluster: subscriptions write route rows,
    /// publishes are forwarded to the nodes subscribed to them. Call once, before `run`,
    /// inside a tokio runtime.
    pub fn attach_cluster(&self, link: ClusterLink) -> ClusterInbound {
        let transport = link.transport.clone();
        let fence = link.isolation_fence;
        let live = Arc::new(liveness::Liveness::default());
        tokio::spawn(sweeper::run(Arc::downgrade(&self.shared), link.clone(), live.clone()));
        let d = dispatch::Dispatch::start(Arc::downgrade(&self.shared), link, live.clone());
        tokio::spawn(liveness::run(Arc::downgrade(&self.shared), transport.clone(), live.clone(), fence));
        let shell = ClusterShell {
            in_flight: d.in_flight.clone(),
            forwarder: d.forwarder.clone(),
            transport,
            liveness: live,
        };
        let _ = self.shared.cluster.set(shell);
        let mut core = self.shared.lock();
        core.broker.enable_cluster();
        core.dispatch = Some(d);
        core.notify_woken(None);
        ClusterInbound { shared: Arc::downgrade(&self.shared) }
    }

    /// The admin endpoint's view of this server.
    pub fn ops_handle(&self) -> OpsHandle {
        OpsHandle { shared: Arc::downgrade(&self.shared) }
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::new(self.shutdown_tx.clone()))
    }

    /// Serves until shutdown is requested, then tells clients (DISCONNECT 0x8B to v5),
    /// waits up to `shutdown-grace-secs` for them to flush, writes the rest of the journal,
    /// and returns. Dropping the future stops the reactors too.
    pub async fn run(self) {
        let Self { local_addr: _, reactors, shared, shutdown_tx, journal } = self;
        let handles = shared.lock().reactors.clone();
        let _stop = StopOnDrop(handles.clone());
        let writer = journal.map(|(open, kick)| {
            let handle = journal::spawn_writer(shared.clone(), open, kick.clone());
            (handle, kick)
        });
        let mut threads = Vec::with_capacity(reactors.len());
        for (i, r) in reactors.into_iter().enumerate() {
            match std::thread::Builder::new().name(format!("flotilla-io-{i}")).spawn(move || r.run()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a reactor thread; shutting down");
                    let _ = shutdown_tx.send(true);
                }
            }
        }
        {
            // Records emitted during replay (wills published, for example) go out now.
            let mut core = shared.lock();
            core.notify_woken(None);
        }
        let timer = tokio::spawn(timer_task(shared.clone()));
        shared.counters.running.store(true, Ordering::Relaxed);
        let mut shutdown = shared.shutdown.clone();
        let _ = shutdown.wait_for(|v| *v).await;
        shared.counters.running.store(false, Ordering::Relaxed);
        tracing::info!("shutting down");
        handles[0].stop_accepting();
        {
            let mut core = shared.lock();
            core.broker.shutdown(clock::now());
            core.wake_all();
        }
        let grace = Duration::from_secs(u64::from(shared.config.shutdown_grace_secs));
        let deadline = tokio::time::Instant::now() + grace;
        while !shared.lock().routes.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for h in &handles {
            h.stop();
        }
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        timer.abort();
        if let Some((handle, kick)) = writer {
            kick.stop();
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        drop(shutdown_tx);
    }
}

/// Where the transport hands what other nodes send to this node's MQTT server.
#[derive(Clone)]
pub struct ClusterInbound {
    shared: Weak<Shared>,
}

impl ClusterInbound {
    /// Messages forwarded by `from`: delivered to the local sessions, then acknowledged.
    pub fn deliver_forwards(
        &self,
        from: crate::group::NodeId,
        batch: crate::transport::forward::ForwardBatch,
    ) {
        let Some(shared) = self.shared.upgrade() else { return };
        let id = batch.id;
        forwarder::deliver(&shared, from, batch);
        if id != 0
            && let Some(c) = shared.cluster.get()
        {
            c.transport.send_forward_acks(from, vec![id]);
        }
    }

    /// `from` answered a ping as `incarnation`.
    pub fn pong(&self, from: crate::group::NodeId, incarnation: u64) {
        if let Some(shared) = self.shared.upgrade()
            && let Some(c) = shared.cluster.get()
        {
            c.liveness.pong(from, incarnation);
        }
    }

    /// Another node fenced `client_id` at `epoch`: close an older connection of it here.
    /// Returns whether the client was here.
    pub fn kick(&self, client_id: &str, epoch: u64) -> bool {
        let Some(shared) = self.shared.upgrade() else { return false };
        let mut core = shared.lock();
        let here = core.broker.kick(clock::now(), client_id, epoch);
        core.notify_woken(None);
        here
    }

    /// Acknowledgements of forwards this node sent to `from`.
    pub fn forward_acks(&self, from: crate::group::NodeId, ids: Vec<u64>) {
        if let Some(shared) = self.shared.upgrade()
            && let Some(c) = shared.cluster.get()
        {
            c.forwarder.acked(from, &ids);
        }
    }
}

/// Runs the core's timers (wills, session expiry, `$SYS`).
async fn timer_task(shared: Arc<Shared>) {
    loop {
        let next = shared.lock().broker.poll_timeout();
        let now = clock::now();
        // Timers are second-granular; waking five times a second bounds their lateness
        // when a call into the core schedules an earlier one.
        let cap = now + Duration::from_millis(200);
        let at = next.map_or(cap, |t| t.min(cap));
        tokio::time::sleep_until(at.into()).await;
        let mut core = shared.lock();
        core.broker.handle_timeout(clock::now());
        core.notify_woken(None);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_descriptor_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(super::soft_nofile(limits), Some(1024));
        assert_eq!(super::soft_nofile("Max open files unlimited unlimited files"), None);
        let broker = crate::broker::config::BrokerConfig { max_connections: 7, ..Default::default() };
        assert_eq!(super::max_connections(&broker), 7);
    }
}
