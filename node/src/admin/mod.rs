//! SHELL. The admin HTTP endpoint (off by default; `[admin] listen`, see [`config`]).
//!
//! JSON over HTTP/1.1 (hyper 1):
//! - `GET /v1/groups`: every replica here (range, epoch, role, leader, term, applied
//!   index, hibernated); `GET /v1/groups/{id}`: one;
//! - `GET /v1/nodes`: this node, its known peers, transport and store counters;
//! - `POST /v1/groups` `{"groups":[{"id","start","end","voters"}]}`: bootstrap this node's
//!   replicas of new groups (call it on every initial voter);
//! - `POST /v1/groups/{id}/put` `{"key","value"}`, `.../get` `{"key"}` (lease read),
//!   `.../transfer-leader` `{"to"}`, `.../peers` `{"op":"add-learner"|"add-voter"|"remove",
//!   "node"}`, `.../campaign`: requests to this node's replica (the leader, for all but
//!   campaign).
//!
//! - `POST /v1/bench/propose`: a load generator inside the node (see [`bench`]).
//! - `POST /v1/kv/load`, `POST /v1/kv/verify`: writes through the node's `KvClient` to range
//!   leaders anywhere in the cluster, and their check (see [`kv`]); `GET /v1/kv/ranges`:
//!   the node's range table.
//!
//! On every node, single ones included (see [`metrics`]), without a token: `GET /openapi.json`
//! (the API description, kept in `node/api/openapi.json`), `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process answers), `GET /readyz` (200 once the journal is replayed,
//! the MQTT listener bound and, when clustered, a placement driver leader known; else 503).
//!
//! MQTT operations, on every node (see [`ops_api`]): `GET /v1/clients`, `GET
//! /v1/clients/{id}`, `POST /v1/clients/{id}/kick`, `POST /v1/bans`.
//!
//! Every other endpoint needs the bearer token, a `Host` naming this endpoint and, when it
//! changes something, `Content-Type: application/json` (see [`token`]): 401, 403, 415.
//!
//! Errors are `{"error":{"kind":...}}` with a status: 409 `not_leader` / `epoch_not_match`
//! (routing: retry elsewhere, see [`client::ClusterClient`]), 404, 405, 400, 413, 422, 503.

mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod kv;
mod metrics;
pub mod ops_api;
mod server;
pub mod token;
pub mod types;

pub use api::{NodeInfo, StoreCounters};
pub use config::{AdminConfig, AdminConfigError};
pub use server::{AdminError, AdminServer, BODY_BYTES_MAX};
