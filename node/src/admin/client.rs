//! SHELL. A client of the admin API: [`call`] for one request to one node, and
//! [`ClusterClient`], which routes group requests to leaders through a range cache.
//!
//! The cache holds, per group, the leader last seen and the range descriptor. It is fixed
//! from errors, as TiKV's region cache is: `NotLeader` brings a leader hint,
//! `EpochNotMatch` brings the current descriptor; an unreachable node or one without the
//! group clears the leader and the next node is tried. Retries stop at a deadline.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::types::{
    ApiError, ChangePeer, Done, ErrorBody, GetRequest, GetResponse, PeerOp, PutRequest, RangeInfo,
    TransferLeader,
};
use crate::group::{GroupId, NodeId};

/// The bearer token sent with every request of this process (see [`set_token`]).
static TOKEN: RwLock<Option<String>> = RwLock::new(None);

/// Sends `token` as `Authorization: Bearer` with every request from now on.
pub fn set_token(token: String) {
    *TOKEN.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
}

fn token() -> Option<String> {
    TOKEN.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Largest response body read, bytes.
const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// The node could not be reached or the exchange broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer did not decode.
    #[error("bad response: {0}")]
    Decode(String),
    /// Retries ran out.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
}

/// A placement-driver request (`/v1/pd/...`) sent to `addr` and, when that node does not
/// lead the PD, to the leader's admin endpoint it names; retried while the PD has no
/// leader, until `deadline` has passed.
pub async fn pd_call<T: DeserializeOwned>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    deadline: Duration,
) -> Result<T, ClientError> {
    let start = tokio::time::Instant::now();
    let mut target = addr;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_sub(start.elapsed()).max(Duration::from_millis(100));
        let err = match call::<(), T>(target, method.clone(), path, None, left).await {
            Ok(v) => return Ok(v),
            Err(ClientError::Api(ApiError::NotPdLeader { admin: Some(leader), .. })) if leader != target => {
                target = leader;
                continue;
            }
            Err(
                e @ (ClientError::Api(ApiError::NotPdLeader { .. } | ApiError::Unavailable { .. })
                | ClientError::Transport(_)),
            ) => e,
            Err(e) => return Err(e),
        };
        if start.elapsed() >= deadline {
            return Err(ClientError::GaveUp { attempts, last: err.to_string() });
        }
        // Back to the node first asked: it learns the PD leader from heartbeat answers.
        target = addr;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One request to the admin endpoint at `addr`.
pub async fn call<B: Serialize, T: DeserializeOwned>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&B>,
    timeout: Duration,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, exchange(addr, method, path, body)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Transport(format!("{addr}{path}: timed out"))),
    }
}

async fn exchange<B: Serialize, T: DeserializeOwned>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&B>,
) -> Result<T, ClientError> {
    let transport = |e: &dyn std::fmt::Display| ClientError::Transport(format!("{addr}{path}: {e}"));
    let stream = TcpStream::connect(addr).await.map_err(|e| transport(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| transport(&e))?;
    tokio::spawn(conn);
    let bytes = match body {
        Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
        None => Vec::new(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json");
    if let Some(token) = token() {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(bytes))).map_err(|e| transport(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| transport(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), RESPONSE_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| transport(&*e))?
        .to_bytes();
    if status.is_success() {
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    } else {
        let err: ErrorBody = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Decode(format!("status {status}: {e}")))?;
        Err(ClientError::Api(err.error))
    }
}

#[derive(Clone, Debug, Default)]
struct CachedRange {
    leader: Option<NodeId>,
    range: Option<RangeInfo>,
}

/// Routes group requests to leaders through a range cache.
pub struct ClusterClient {
    nodes: Mutex<BTreeMap<NodeId, SocketAddr>>,
    cache: Mutex<HashMap<GroupId, CachedRange>>,
    /// Per-call timeout.
    call_timeout: Duration,
    /// Retries of one request stop after this.
    deadline: Duration,
}

/// What to do after an error.
enum Next {
    Retry,
    Fail,
}

impl ClusterClient {
    /// A client of the nodes whose admin endpoints are `nodes`.
    pub fn new(nodes: BTreeMap<NodeId, SocketAddr>, deadline: Duration) -> Self {
        Self {
            nodes: Mutex::new(nodes),
            cache: Mutex::new(HashMap::new()),
            call_timeout: Duration::from_secs(15),
            deadline,
        }
    }

    /// Adds or moves a node's admin endpoint.
    pub fn set_node(&self, node: NodeId, addr: SocketAddr) {
        if let Ok(mut n) = self.nodes.lock() {
            n.insert(node, addr);
        }
    }

    /// The cached leader of `group`.
    pub fn cached_leader(&self, group: GroupId) -> Option<NodeId> {
        self.cache.lock().ok()?.get(&group)?.leader
    }

    fn cached(&self, group: GroupId) -> CachedRange {
        self.cache.lock().ok().and_then(|c| c.get(&group).cloned()).unwrap_or_default()
    }

    fn update(&self, group: GroupId, f: impl FnOnce(&mut CachedRange)) {
        if let Ok(mut c) = self.cache.lock() {
            f(c.entry(group).or_default());
        }
    }

    /// The node to ask on attempt `attempt`: the cached leader, else round robin.
    fn target(&self, group: GroupId, attempt: u32) -> Option<(NodeId, SocketAddr)> {
        let nodes = self.nodes.lock().ok()?;
        if let Some(leader) = self.cached(group).leader
            && let Some(addr) = nodes.get(&leader)
        {
            return Some((leader, *addr));
        }
        let i = attempt as usize % nodes.len().max(1);
        nodes.iter().nth(i).map(|(n, a)| (*n, *a))
    }

    /// Fixes the cache from an error; says whether to retry.
    fn learn(&self, group: GroupId, node: NodeId, err: &ClientError) -> Next {
        match err {
            ClientError::Api(ApiError::NotLeader { leader_hint }) => {
                let hint = leader_hint.filter(|h| *h != node);
                self.update(group, |c| c.leader = hint);
                Next::Retry
            }
            ClientError::Api(ApiError::EpochNotMatch { current }) => {
                let range = current.iter().find(|r| r.id == group).cloned();
                self.update(group, |c| c.range = range);
                Next::Retry
            }
            ClientError::Api(ApiError::GroupNotFound { .. }) | ClientError::Transport(_) => {
                self.update(group, |c| c.leader = None);
                Next::Retry
            }
            ClientError::Api(ApiError::Unavailable { .. }) => Next::Retry,
            _ => Next::Fail,
        }
    }

    /// Posts `body(cached range)` to `/v1/groups/{group}/{op}` on the leader, retrying.
    async fn on_leader<B: Serialize, T: DeserializeOwned>(
        &self,
        group: GroupId,
        op: &str,
        body: impl Fn(Option<&RangeInfo>) -> B,
    ) -> Result<T, ClientError> {
        let start = tokio::time::Instant::now();
        let path = format!("/v1/groups/{group}/{op}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some((node, addr)) = self.target(group, attempt) else {
                return Err(ClientError::Transport("no nodes".into()));
            };
            let b = body(self.cached(group).range.as_ref());
            let err = match call::<B, T>(addr, Method::POST, &path, Some(&b), self.call_timeout).await {
                Ok(v) => {
                    self.update(group, |c| c.leader = Some(node));
                    return Ok(v);
                }
                Err(e) => e,
            };
            if matches!(self.learn(group, node, &err), Next::Fail) {
                return Err(err);
            }
            if start.elapsed() > self.deadline {
                return Err(ClientError::GaveUp { attempts: attempt, last: err.to_string() });
            }
            let pause = if matches!(err, ClientError::Api(ApiError::NotLeader { leader_hint: Some(_) })) {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(50)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Writes `key = value` in `group`; `Ok` means the write was applied by the leader.
    pub async fn put(&self, group: GroupId, key: &str, value: &str) -> Result<(), ClientError> {
        let _: Done = self
            .on_leader(group, "put", |range| PutRequest {
                key: key.to_string(),
                value: value.to_string(),
                version: range.map(|r| r.version),
            })
            .await?;
        Ok(())
    }

    /// Reads `key` in `group` on its leader.
    pub async fn get(&self, group: GroupId, key: &str) -> Result<Option<String>, ClientError> {
        let r: GetResponse = self.on_leader(group, "get", |_| GetRequest { key: key.to_string() }).await?;
        Ok(r.value)
    }

    /// Asks `group`'s leader to hand over to `to`.
    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), ClientError> {
        let _: Done = self.on_leader(group, "transfer-leader", |_| TransferLeader { to }).await?;
        self.update(group, |c| c.leader = None);
        Ok(())
    }

    /// Changes `group`'s membership; returns the range after the change.
    pub async fn change_peer(
        &self,
        group: GroupId,
        op: PeerOp,
        node: NodeId,
    ) -> Result<Option<RangeInfo>, ClientError> {
        let done: Done = self
            .on_leader(group, "peers", |range| ChangePeer { op, node, conf_ver: range.map(|r| r.conf_ver) })
            .await?;
        if let Some(range) = &done.range {
            let range = range.clone();
            self.update(group, |c| c.range = Some(range));
        }
        Ok(done.range)
    }
}
