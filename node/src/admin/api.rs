//! SHELL. The admin API's routes, as blocking handlers over the [`Store`] (the server runs
//! them on tokio's blocking pool): each request goes into a group's mailbox and waits, at
//! most `timeout`, for the group's answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::bench::{self, BenchRequest};
use super::kv;
use super::types::{
    ApiError, ChangePeer, CreateGroups, Created, Done, GetRequest, GetResponse, GroupInfo, GroupList,
    PdStatus, PeerOp, PutRequest, RangeInfo, TransferLeader,
};
use crate::cluster::KvClient;
use crate::group::{
    Command, Epoch, GroupId, NodeId, Outcome, PeerChange, Query, RangeDescriptor, ReadPolicy, ReadRequest,
    Response, WriteRequest,
};
use crate::pd::{NodeAdminState, PdError, PdHandle, PdReport};
use crate::raftstore::{MetricsSnapshot, Store, StoreError};
use crate::transport::{PeerInfo, QuicTransport, TransportSnapshot};

/// Longest a `/v1/kv` load or verify may run.
const KV_LOAD_LIMIT: Duration = Duration::from_secs(600);

/// `GET /v1/nodes`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// This node.
    pub node_id: NodeId,
    /// Its cluster address.
    pub addr: std::net::SocketAddr,
    /// Hosted replicas.
    pub groups: usize,
    /// Known peers.
    pub peers: Vec<PeerInfo>,
    /// Transport counters.
    pub transport: TransportSnapshot,
    /// Selected store counters.
    pub store: StoreCounters,
}

/// Store counters shown by `GET /v1/nodes`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct StoreCounters {
    /// Proposals accepted by leaders here.
    pub proposals: u64,
    /// Entries appended.
    pub entries_appended: u64,
    /// fsyncs.
    pub fsyncs: u64,
    /// Poll rounds.
    pub rounds: u64,
    /// Raft messages handed to the transport.
    pub messages_sent: u64,
    /// Transport calls (one per destination per round).
    pub message_batches_sent: u64,
    /// Ticks delivered.
    pub ticks: u64,
}

impl From<MetricsSnapshot> for StoreCounters {
    fn from(m: MetricsSnapshot) -> Self {
        Self {
            proposals: m.proposals,
            entries_appended: m.entries_appended,
            fsyncs: m.fsyncs,
            rounds: m.rounds,
            messages_sent: m.messages_sent,
            message_batches_sent: m.message_batches_sent,
            ticks: m.ticks,
        }
    }
}

/// The handlers' state.
pub(crate) struct Api {
    store: Arc<Store>,
    transport: QuicTransport,
    pd: Option<PdHandle>,
    client: Option<KvClient>,
    runtime: tokio::runtime::Handle,
    next_id: AtomicU64,
    timeout: Duration,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest { message: format!("invalid JSON body: {e}") })
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Unavailable { message: format!("cannot encode: {e}") })
}

fn store_error(group: GroupId, e: StoreError) -> ApiError {
    match e {
        StoreError::GroupNotFound(_) => ApiError::GroupNotFound { group },
        e => ApiError::Unavailable { message: e.to_string() },
    }
}

impl Api {
    pub(crate) fn new(
        store: Arc<Store>,
        transport: QuicTransport,
        pd: Option<PdHandle>,
        client: Option<KvClient>,
        timeout: Duration,
    ) -> Self {
        let runtime = tokio::runtime::Handle::current();
        Self { store, transport, pd, client, runtime, next_id: AtomicU64::new(1), timeout }
    }

    fn client(&self) -> Result<&KvClient, ApiError> {
        self.client.as_ref().ok_or(ApiError::NotFound)
    }

    fn kv_load(&self, req: &kv::LoadRequest) -> Result<kv::LoadResult, ApiError> {
        if req.writers == 0 || req.writers > 256 || req.writes > 1_000_000 || req.value_bytes > 1 << 20 {
            return Err(ApiError::BadRequest {
                message: "writers 1..=256, writes <= 1e6, value <= 1 MiB".into(),
            });
        }
        let client = self.client()?;
        kv::block_on(&self.runtime, KV_LOAD_LIMIT, kv::run_load(client, req))
            .ok_or(ApiError::Unavailable { message: "load did not finish in time".into() })
    }

    fn kv_verify(&self, req: &kv::VerifyRequest) -> Result<kv::VerifyResult, ApiError> {
        let client = self.client()?;
        kv::block_on(&self.runtime, KV_LOAD_LIMIT, kv::verify(client, req))
            .ok_or(ApiError::Unavailable { message: "verify did not finish in time".into() })
    }

    fn kv_ranges(&self) -> Result<serde_json::Value, ApiError> {
        let table = self.client()?.table().read().map_err(|_| ApiError::NotFound)?.clone();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let ranges: Vec<serde_json::Value> = table
            .entries()
            .map(|e| {
                serde_json::json!({
                    "id": e.desc.id, "start": hex(&e.desc.start), "end": hex(&e.desc.end),
                    "version": e.desc.epoch.version, "conf_ver": e.desc.epoch.conf_ver,
                    "voters": e.desc.voters, "leader": e.leader,
                })
            })
            .collect();
        Ok(serde_json::json!({ "pd_version": table.pd_version(), "ranges": ranges }))
    }

    /// Serves one request; the body of a success is JSON.
    pub(crate) fn handle(&self, method: &Method, path: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            (&Method::GET, ["v1", "groups"]) => json(&self.groups()),
            (&Method::POST, ["v1", "groups"]) => json(&self.create(parse(body)?)?),
            (&Method::GET, ["v1", "nodes"]) => json(&self.node()),
            (&Method::GET, ["v1", "groups", id]) => {
                let group = group_id(id)?;
                let status = self.store.status(group).ok_or(ApiError::GroupNotFound { group })?;
                json(&GroupInfo::from(&status))
            }
            (&Method::POST, ["v1", "groups", id, op]) => self.group_op(group_id(id)?, op, body),
            (&Method::POST, ["v1", "bench", "propose"]) => {
                let req: BenchRequest = parse(body)?;
                let result = bench::run(&self.store, &req, crate::clock::now)
                    .map_err(|message| ApiError::BadRequest { message })?;
                json(&result)
            }
            (&Method::POST, ["v1", "kv", "load"]) => json(&self.kv_load(&parse(body)?)?),
            (&Method::POST, ["v1", "kv", "verify"]) => json(&self.kv_verify(&parse(body)?)?),
            (&Method::GET, ["v1", "kv", "ranges"]) => json(&self.kv_ranges()?),
            (&Method::POST, ["v1", "debug", "isolate"]) => {
                let req: serde_json::Value = parse(body)?;
                let isolated = req["isolated"].as_bool().ok_or_else(|| ApiError::BadRequest {
                    message: "expected {\"isolated\": true|false}".into(),
                })?;
                if !self.transport.set_blocked(isolated) {
                    return Err(ApiError::NotFound);
                }
                json(&serde_json::json!({ "isolated": isolated }))
            }
            (&Method::GET, ["v1", "pd"]) => json(&self.pd_status()),
            (&Method::GET, ["v1", "pd", "report"]) => json(&self.pd_report()?),
            (&Method::POST, ["v1", "pd", "nodes", id, op]) => json(&self.pd_node(id, op)?),
            (_, ["v1", "pd"] | ["v1", "pd", "report"] | ["v1", "pd", "nodes", _, _]) => {
                Err(ApiError::MethodNotAllowed)
            }
            (_, ["v1", "groups"] | ["v1", "nodes"] | ["v1", "groups", _] | ["v1", "groups", _, _]) => {
                Err(ApiError::MethodNotAllowed)
            }
            _ => Err(ApiError::NotFound),
        }
    }

    fn pd(&self) -> Result<&PdHandle, ApiError> {
        self.pd
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable { message: "no placement driver service".into() })
    }

    fn pd_status(&self) -> PdStatus {
        let node = self.store.node_id();
        let (leader, leader_admin) = self.pd.as_ref().map(PdHandle::leader).unwrap_or((None, None));
        let leading = self.pd.as_ref().is_some_and(|p| p.report().is_some());
        PdStatus { node, leading, leader, leader_admin }
    }

    fn not_pd_leader(&self) -> ApiError {
        let (leader, admin) = self.pd.as_ref().map(PdHandle::leader).unwrap_or((None, None));
        let me = self.store.node_id();
        ApiError::NotPdLeader {
            leader: leader.filter(|&l| l != me),
            admin: admin.filter(|_| leader != Some(me)),
        }
    }

    fn pd_report(&self) -> Result<PdReport, ApiError> {
        self.pd()?.report().ok_or_else(|| self.not_pd_leader())
    }

    fn pd_node(&self, id: &str, op: &str) -> Result<PdStatus, ApiError> {
        let node: NodeId = id
            .parse()
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| ApiError::BadRequest { message: format!("bad node id {id:?}") })?;
        let state = match op {
            "drain" => NodeAdminState::Draining,
            "remove" => NodeAdminState::Removing,
            "resume" => NodeAdminState::Serving,
            _ => return Err(ApiError::NotFound),
        };
        match self.pd()?.set_node_state(node, state, self.timeout) {
            Ok(()) => Ok(self.pd_status()),
            Err(PdError::NotLeader) => Err(self.not_pd_leader()),
            Err(PdError::Refused(message)) => Err(ApiError::Rejected { message }),
            Err(PdError::Unavailable(message)) => Err(ApiError::Unavailable { message }),
        }
    }

    fn group_op(&self, group: GroupId, op: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        match op {
            "put" => json(&self.put(group, parse(body)?)?),
            "get" => json(&self.get(group, parse(body)?)?),
            "transfer-leader" => json(&self.transfer_leader(group, parse(body)?)?),
            "peers" => json(&self.change_peer(group, parse(body)?)?),
            "campaign" => {
                self.store.campaign(group).map_err(|e| store_error(group, e))?;
                json(&Done { range: None })
            }
            _ => Err(ApiError::NotFound),
        }
    }

    fn groups(&self) -> GroupList {
        let groups = self
            .store
            .group_ids()
            .into_iter()
            .filter_map(|g| self.store.status(g))
            .map(|s| GroupInfo::from(&s))
            .collect();
        GroupList { node_id: self.store.node_id(), groups }
    }

    fn node(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.store.node_id(),
            addr: self.transport.addr(),
            groups: self.store.group_count(),
            peers: self.transport.peers(),
            transport: self.transport.metrics(),
            store: self.store.metrics().snapshot().into(),
        }
    }

    fn create(&self, req: CreateGroups) -> Result<Created, ApiError> {
        let descs: Vec<RangeDescriptor> = req
            .groups
            .iter()
            .map(|g| {
                RangeDescriptor::new(
                    g.id,
                    g.start.clone().into_bytes(),
                    g.end.clone().into_bytes(),
                    &g.voters,
                )
            })
            .collect();
        if let Some(bad) = descs.iter().find(|d| d.id == 0 || (!d.end.is_empty() && d.start >= d.end)) {
            return Err(ApiError::BadRequest {
                message: format!("group {}: id 0 or an empty range", bad.id),
            });
        }
        if let Some(bad) = descs.iter().find(|d| d.id >= crate::pd::PD_GROUP) {
            return Err(ApiError::BadRequest {
                message: format!("group id {} is reserved (placement driver and store metadata)", bad.id),
            });
        }
        let created = self.store.bootstrap_groups(&descs).map_err(|e| match e {
            StoreError::Config(message) => ApiError::BadRequest { message },
            e => ApiError::Unavailable { message: e.to_string() },
        })?;
        Ok(Created { created })
    }

    fn epoch(&self, group: GroupId) -> Result<Epoch, ApiError> {
        Ok(self.store.status(group).ok_or(ApiError::GroupNotFound { group })?.desc.epoch)
    }

    fn request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn wait(&self, rx: &Receiver<Response>) -> Result<Outcome, ApiError> {
        match rx.recv_timeout(self.timeout) {
            Ok(resp) => resp.result.map_err(ApiError::from),
            Err(_) => Err(ApiError::Unavailable { message: "timed out waiting for the group".into() }),
        }
    }

    fn put(&self, group: GroupId, req: PutRequest) -> Result<Done, ApiError> {
        let mut epoch = self.epoch(group)?;
        if let Some(version) = req.version {
            epoch.version = version;
        }
        let command = Command::Put { key: req.key.into_bytes(), value: req.value.into_bytes() };
        let (tx, rx) = channel();
        let write = WriteRequest { request_id: self.request_id(), epoch, command };
        self.store.propose(group, write, &tx).map_err(|e| store_error(group, e))?;
        self.wait(&rx)?;
        Ok(Done { range: None })
    }

    fn get(&self, group: GroupId, req: GetRequest) -> Result<GetResponse, ApiError> {
        let epoch = self.epoch(group)?;
        let (tx, rx) = channel();
        let read = ReadRequest {
            request_id: self.request_id(),
            epoch,
            query: Query::Get { key: req.key.into_bytes() },
            policy: ReadPolicy::Lease,
        };
        self.store.read(group, read, &tx).map_err(|e| store_error(group, e))?;
        match self.wait(&rx)? {
            Outcome::Value(v) => {
                Ok(GetResponse { value: v.map(|v| String::from_utf8_lossy(&v).into_owned()) })
            }
            other => Err(ApiError::Unavailable { message: format!("unexpected outcome {other:?}") }),
        }
    }

    fn transfer_leader(&self, group: GroupId, req: TransferLeader) -> Result<Done, ApiError> {
        let epoch = self.epoch(group)?;
        let (tx, rx) = channel();
        self.store
            .transfer_leader(group, self.request_id(), epoch, req.to, &tx)
            .map_err(|e| store_error(group, e))?;
        self.wait(&rx)?;
        Ok(Done { range: None })
    }

    fn change_peer(&self, group: GroupId, req: ChangePeer) -> Result<Done, ApiError> {
        let mut epoch = self.epoch(group)?;
        if let Some(conf_ver) = req.conf_ver {
            epoch.conf_ver = conf_ver;
        }
        let change = match req.op {
            PeerOp::AddLearner => PeerChange::AddLearner(req.node),
            PeerOp::AddVoter => PeerChange::AddVoter(req.node),
            PeerOp::Remove => PeerChange::Remove(req.node),
        };
        let (tx, rx) = channel();
        self.store
            .change_peers(group, self.request_id(), epoch, vec![change], &tx)
            .map_err(|e| store_error(group, e))?;
        match self.wait(&rx)? {
            Outcome::ConfChanged(desc) => Ok(Done { range: Some(RangeInfo::from(&desc)) }),
            _ => Ok(Done { range: None }),
        }
    }
}

fn channel() -> (Sender<Response>, Receiver<Response>) {
    // One answer per request; room for more so a poller never blocks on a slow reader.
    crossbeam::channel::bounded(4)
}

fn group_id(s: &str) -> Result<GroupId, ApiError> {
    s.parse().map_err(|_| ApiError::BadRequest { message: format!("group id {s:?} is not a number") })
}
