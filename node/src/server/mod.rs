//! SHELL. The tokio server around the broker core: a listener, a task per connection, a
//! timer task, and graceful shutdown.
//!
//! The core lives behind one `std::sync::Mutex` (short critical sections, never held
//! across an `.await`). After every call into it, the connections the core woke are
//! signalled through their `Signal`, and each connection task pulls its own packets with
//! `poll_transmit` once its socket has room, so TCP back-pressure reaches the core's
//! bounded queues.

mod connection;
pub mod journal;
mod listener;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::broker::auth::{Authenticator, StaticUsers};
use crate::broker::session::ConnId;
use crate::clock;
use crate::config::NodeConfig;

/// The core plus the shell's per-connection wakers.
pub(crate) struct Core {
    pub(crate) broker: Broker,
    wakers: FxHashMap<ConnId, Arc<connection::Signal>>,
    /// Wakes the journal writer; `None` without persistence.
    kick: Option<Arc<journal::Kick>>,
}

impl Core {
    /// Notifies every connection the core woke, except `me` (the caller handles itself).
    /// Also wakes the journal writer if the core emitted records.
    pub(crate) fn notify_woken(&mut self, me: Option<ConnId>) -> bool {
        if let Some(k) = &self.kick
            && self.broker.journal_lag() > 0
        {
            k.kick();
        }
        let mut me_woken = false;
        while let Some(id) = self.broker.poll_woken() {
            if Some(id) == me {
                me_woken = true;
            } else if let Some(w) = self.wakers.get(&id) {
                w.raise();
            }
        }
        me_woken
    }
}

/// State shared by all tasks of one server.
pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) config: NodeConfig,
    /// Changes to `true` once shutdown starts.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
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
}

/// A bound, not yet running broker server.
pub struct Server {
    listener: TcpListener,
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
        let mut broker = Broker::new(config.broker.clone(), auth, now, clock::seed());
        let journal = if config.storage.persistence {
            let (open, report) = journal::open(&config.data_dir, &config.storage, &mut broker, now)?;
            tracing::info!(?report, dir = %config.data_dir.display(), "journal replayed");
            Some((open, Arc::new(journal::Kick::default())))
        } else {
            None
        };
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let kick = journal.as_ref().map(|(_, k)| k.clone());
        let core = Mutex::new(Core { broker, wakers: FxHashMap::default(), kick });
        let shared = Arc::new(Shared { core, config, shutdown });
        Ok(Self { listener, shared, shutdown_tx, journal })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::new(self.shutdown_tx.clone()))
    }

    /// Serves until shutdown is requested, then tells clients (DISCONNECT 0x8B to v5),
    /// waits up to `shutdown-grace-secs` for them to flush, writes the rest of the journal,
    /// and returns.
    pub async fn run(self) {
        let Self { listener, shared, shutdown_tx, journal } = self;
        let writer = journal.map(|(open, kick)| {
            let handle = journal::spawn_writer(shared.clone(), open, kick.clone());
            (handle, kick)
        });
        {
            // Records emitted during replay (wills published, for example) go out now.
            let mut core = shared.lock();
            core.notify_woken(None);
        }
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let timer = tokio::spawn(timer_task(shared.clone()));
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            _ = listener::accept_loop(listener, shared.clone(), done_tx) => {}
            _ = shutdown.wait_for(|v| *v) => {}
        }
        tracing::info!("shutting down");
        {
            let mut core = shared.lock();
            core.broker.shutdown(clock::now());
            core.notify_woken(None);
            for w in core.wakers.values() {
                w.raise();
            }
        }
        let grace = Duration::from_secs(u64::from(shared.config.shutdown_grace_secs));
        // Every connection task holds a clone of `done_tx`; recv() ends when all are gone.
        let _ = tokio::time::timeout(grace, done_rx.recv()).await;
        timer.abort();
        if let Some((handle, kick)) = writer {
            kick.stop();
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        drop(shutdown_tx);
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
