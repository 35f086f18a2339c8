//! SHELL. [`LocalStore`]: hands requests to this node's raft store and routes each answer
//! back to whoever waits for it: a task of this node (a [`KvClient`](super::KvClient) call
//! whose range leads here) or another node (a request received over the transport, answered
//! with a `Reply` frame).
//!
//! One thread receives the store's answers and expires waiters past their deadline; waiters
//! are bounded (`waiters_max`): past it, a request is refused at once with `Busy`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use tokio::sync::oneshot;

use crate::group::{Outcome, ReadRequest, RequestError, Response, WriteRequest};
use crate::raftstore::{Store, StoreError};
use crate::transport::QuicTransport;
use crate::transport::request::{Reply, ReplyError, Request, RequestBody};

/// Longest deadline a remote request may ask for.
const REMOTE_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// How often expired waiters are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Where an answer goes.
enum Waiter {
    Local(oneshot::Sender<Result<Outcome, ReplyError>>),
    Remote { to: u64, id: u64 },
}

struct Shared {
    store: Arc<Store>,
    transport: QuicTransport,
    waiters: Mutex<HashMap<u64, (Instant, Waiter)>>,
    next_id: AtomicU64,
    waiters_max: usize,
    stop: AtomicBool,
}

/// The bridge between requests (local or remote) and the local raft store.
pub struct LocalStore {
    shared: Arc<Shared>,
    tx: Sender<Response>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn store_error(e: StoreError) -> ReplyError {
    match e {
        StoreError::GroupNotFound(_) => ReplyError::NoReplica,
        StoreError::MailboxFull(_) => ReplyError::Group(RequestError::Busy { pending: 0 }),
        other => ReplyError::Other(other.to_string()),
    }
}

impl LocalStore {
    /// Starts the answer thread.
    pub fn start(store: Arc<Store>, transport: QuicTransport, waiters_max: usize) -> std::io::Result<Self> {
        let (tx, rx) = unbounded();
        let shared = Arc::new(Shared {
            store,
            transport,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            waiters_max,
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread =
            std::thread::Builder::new().name("kv-answers".into()).spawn(move || answer_loop(&s, &rx))?;
        Ok(Self { shared, tx, thread: Some(thread) })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Submits `body` for a task of this node; the answer arrives on the returned channel
    /// (`Timeout` once `timeout` passed).
    pub(crate) fn submit_local(
        &self,
        body: RequestBody,
        timeout: Duration,
    ) -> oneshot::Receiver<Result<Outcome, ReplyError>> {
        let (tx, rx) = oneshot::channel();
        if let Err((Waiter::Local(tx), e)) = self.submit(body, timeout, Waiter::Local(tx)) {
            let _ = tx.send(Err(e));
        }
        rx
    }

    /// Serves requests from node `from`; every one is answered with a `Reply` frame.
    pub fn serve(&self, from: u64, requests: Vec<Request>) {
        for req in requests {
            let timeout = Duration::from_millis(req.timeout_ms).min(REMOTE_TIMEOUT_MAX);
            let id = req.id;
            if let Err((_, e)) = self.submit(req.body, timeout, Waiter::Remote { to: from, id }) {
                self.shared.transport.send_reply(from, Reply { id, result: Err(e) });
            }
        }
    }

    fn submit(
        &self,
        body: RequestBody,
        timeout: Duration,
        waiter: Waiter,
    ) -> Result<(), (Waiter, ReplyError)> {
        let shared = &self.shared;
        let request_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiters = shared.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if waiters.len() >= shared.waiters_max {
                let pending = waiters.len();
                return Err((waiter, ReplyError::Group(RequestError::Busy { pending })));
            }
            waiters.insert(request_id, (Instant::now() + timeout, waiter));
        }
        let sent = match body {
            RequestBody::Propose { group, command } => match crate::group::Command::decode(&command) {
                Ok((epoch, command)) => {
                    shared.store.propose(group, WriteRequest { request_id, epoch, command }, &self.tx)
                }
                Err(e) => Err(StoreError::Config(format!("malformed command: {e}"))),
            },
            RequestBody::Read { group, epoch, policy, query } => {
                shared.store.read(group, ReadRequest { request_id, epoch, query, policy }, &self.tx)
            }
            // The node's MQTT server answers kicks before requests reach the store.
            RequestBody::Kick { .. } => Err(StoreError::Config("a kick is not a store request".into())),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut waiters = shared.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match waiters.remove(&request_id) {
                    Some((_, w)) => Err((w, store_error(e))),
                    // Answered already (cannot happen for a refused send); nothing to do.
                    None => Ok(()),
                }
            }
        }
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(shared: &Shared, waiter: Waiter, result: Result<Outcome, ReplyError>) {
    match waiter {
        Waiter::Local(tx) => {
            let _ = tx.send(result);
        }
        Waiter::Remote { to, id } => {
            shared.transport.send_reply(to, Reply { id, result });
        }
    }
}

fn answer_loop(shared: &Shared, rx: &Receiver<Response>) {
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    while !shared.stop.load(Ordering::Acquire) {
        match rx.recv_timeout(SWEEP_EVERY) {
            Ok(resp) => {
                let w = shared
                    .waiters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&resp.request_id);
                if let Some((_, w)) = w {
                    answer(shared, w, resp.result.map_err(ReplyError::Group));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            let expired: Vec<Waiter> = {
                let mut waiters = shared.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let ids: Vec<u64> =
                    waiters.iter().filter(|(_, (d, _))| *d <= now).map(|(id, _)| *id).collect();
                ids.into_iter().filter_map(|id| waiters.remove(&id).map(|(_, w)| w)).collect()
            };
            for w in expired {
                answer(shared, w, Err(ReplyError::Timeout));
            }
        }
    }
}
