//! The admin API's JSON bodies, shared by the server and [`super::client`].
//!
//! Keys, values and range bounds are UTF-8 strings in JSON (an empty `end` = unbounded).

use serde::{Deserialize, Serialize};

use crate::group::{Epoch, GroupId, NodeId, PeerStatus, RangeDescriptor, RequestError, Role};

/// A range descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeInfo {
    /// The group.
    pub id: GroupId,
    /// First key.
    pub start: String,
    /// First key not owned; empty = unbounded.
    pub end: String,
    /// `epoch.version`.
    pub version: u64,
    /// `epoch.conf_ver`.
    pub conf_ver: u64,
    /// Voters.
    pub voters: Vec<NodeId>,
    /// Learners.
    pub learners: Vec<NodeId>,
}

impl From<&RangeDescriptor> for RangeInfo {
    fn from(d: &RangeDescriptor) -> Self {
        Self {
            id: d.id,
            start: String::from_utf8_lossy(&d.start).into_owned(),
            end: String::from_utf8_lossy(&d.end).into_owned(),
            version: d.epoch.version,
            conf_ver: d.epoch.conf_ver,
            voters: d.voters.clone(),
            learners: d.learners.clone(),
        }
    }
}

impl RangeInfo {
    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        Epoch { version: self.version, conf_ver: self.conf_ver }
    }
}

/// One replica's state (`GET /v1/groups`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The range.
    pub range: RangeInfo,
    /// `follower`, `pre-candidate`, `candidate` or `leader`.
    pub role: String,
    /// The leader this replica knows.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Whether it stopped ticking.
    pub hibernated: bool,
    /// Content hash of the state machine (equal on replicas at the same applied index).
    pub digest: u64,
    /// Keys stored.
    #[serde(default)]
    pub keys: u64,
    /// Bytes of keys and values stored.
    #[serde(default)]
    pub size_bytes: u64,
}

impl From<&PeerStatus> for GroupInfo {
    fn from(s: &PeerStatus) -> Self {
        let role = match s.role {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        Self {
            range: RangeInfo::from(&s.desc),
            role: role.into(),
            leader: s.leader,
            term: s.term,
            commit: s.commit,
            applied: s.applied,
            hibernated: s.hibernated,
            digest: s.digest,
            keys: s.keys,
            size_bytes: s.size_bytes,
        }
    }
}

/// `GET /v1/groups`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupList {
    /// This node.
    pub node_id: NodeId,
    /// Every hosted replica, by group id.
    pub groups: Vec<GroupInfo>,
}

/// One group to create (`POST /v1/groups`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewGroup {
    /// The group.
    pub id: GroupId,
    /// First key (default: empty).
    #[serde(default)]
    pub start: String,
    /// First key not owned (default: empty = unbounded).
    #[serde(default)]
    pub end: String,
    /// The initial voters; this node must be one.
    pub voters: Vec<NodeId>,
}

/// `POST /v1/groups`: bootstraps this node's replicas of new groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateGroups {
    /// The groups.
    pub groups: Vec<NewGroup>,
}

/// Answer to [`CreateGroups`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Created {
    /// Replicas created (groups already present are skipped).
    pub created: usize,
}

/// `POST /v1/groups/{id}/put`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// `epoch.version` the client routed by; default: the replica's own.
    #[serde(default)]
    pub version: Option<u64>,
}

/// `POST /v1/groups/{id}/get` (a lease read on the leader).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetRequest {
    /// The key.
    pub key: String,
}

/// Answer to a get.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetResponse {
    /// The value, if present.
    pub value: Option<String>,
}

/// `POST /v1/groups/{id}/transfer-leader`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferLeader {
    /// The new leader.
    pub to: NodeId,
}

/// A membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerOp {
    /// Add a learner.
    AddLearner,
    /// Add a voter, or promote a learner.
    AddVoter,
    /// Remove a member.
    Remove,
}

/// `POST /v1/groups/{id}/peers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangePeer {
    /// What to do.
    pub op: PeerOp,
    /// To which node.
    pub node: NodeId,
    /// `epoch.conf_ver` the client saw; default: the replica's own.
    #[serde(default)]
    pub conf_ver: Option<u64>,
}

/// Answer to a write or admin command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    /// The range after the command (for membership changes), else `None`.
    pub range: Option<RangeInfo>,
}

/// An error, as `{"error": {...}}` with a matching HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApiError {
    /// 409: ask the leader instead.
    #[error("not leader (hint {leader_hint:?})")]
    NotLeader {
        /// The leader, if known.
        leader_hint: Option<NodeId>,
    },
    /// 409: the client's epoch is stale; here are the current ranges.
    #[error("epoch not match")]
    EpochNotMatch {
        /// The current descriptors.
        current: Vec<RangeInfo>,
    },
    /// 404: no replica of the group here.
    #[error("group {group} not found")]
    GroupNotFound {
        /// The group.
        group: GroupId,
    },
    /// 404: no such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 400: the request is malformed.
    #[error("bad request: {message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// 413: the body is over the limit.
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// 503: retry later (busy, overloaded, timed out, leader changing).
    #[error("unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// 422: the request was refused for good.
    #[error("rejected: {message}")]
    Rejected {
        /// Why.
        message: String,
    },
    /// 421: this node does not lead the placement driver; ask `admin` (the leader's admin
    /// endpoint) if known.
    #[error("not the placement driver leader (leader {leader:?}, admin {admin:?})")]
    NotPdLeader {
        /// The PD leader, if known.
        leader: Option<NodeId>,
        /// Its admin endpoint, if known.
        admin: Option<std::net::SocketAddr>,
    },
    /// 401: no bearer token, or the wrong one.
    #[error("unauthorized: send `Authorization: Bearer <token>` (the admin token file)")]
    Unauthorized,
    /// 403: refused (a `Host` that does not name this endpoint).
    #[error("forbidden: {message}")]
    Forbidden {
        /// Why.
        message: String,
    },
    /// 415: a request that changes something must be `Content-Type: application/json`.
    #[error("unsupported media type: send Content-Type: application/json")]
    UnsupportedMediaType,
}

/// `GET /v1/pd`: this node's view of the placement driver.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PdStatus {
    /// This node.
    pub node: NodeId,
    /// Whether this node leads the PD.
    pub leading: bool,
    /// The PD leader this node knows of.
    pub leader: Option<NodeId>,
    /// Its admin endpoint.
    pub leader_admin: Option<std::net::SocketAddr>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotLeader { .. } | Self::EpochNotMatch { .. } => 409,
            Self::GroupNotFound { .. } | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::BadRequest { .. } => 400,
            Self::TooLarge { .. } => 413,
            Self::Unavailable { .. } => 503,
            Self::Rejected { .. } => 422,
            Self::NotPdLeader { .. } => 421,
            Self::Unauthorized => 401,
            Self::Forbidden { .. } => 403,
            Self::UnsupportedMediaType => 415,
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { leader_hint } => Self::NotLeader { leader_hint },
            RequestError::EpochNotMatch { current } => {
                Self::EpochNotMatch { current: current.iter().map(RangeInfo::from).collect() }
            }
            RequestError::StaleCommand
            | RequestError::OutcomeUnknown
            | RequestError::ProposalDropped
            | RequestError::Busy { .. } => Self::Unavailable { message: e.to_string() },
            RequestError::KeyNotInRange { .. }
            | RequestError::AdminRejected(_)
            | RequestError::Malformed(_)
            | RequestError::Removed => Self::Rejected { message: e.to_string() },
        }
    }
}

/// The error envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}
