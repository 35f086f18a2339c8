//! SHELL. The admin API's MQTT routes (every node, single ones included), answered from
//! the server's [`OpsHandle`]:
//! - `GET /v1/clients`: connected clients; `GET /v1/clients/{id}`: one (404 if not here);
//! - `POST /v1/clients/{id}/kick`: DISCONNECT 0x98 (5.0) and close;
//! - `POST /v1/bans` `{"target":{"kind":"client_id"|"user"|"address","value":...},"secs":N}`;
//! - `GET /v1/retained?filter=F` (percent-encoded; default `#`): retained messages;
//!   `DELETE /v1/retained/{topic}`: removes one (404 if none);
//! - `POST /v1/publish` `{"topic","payload","qos","retain"}`: publishes as the broker.
//!
//! Path segments are percent-decoded (a client id may hold `/`).

use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::types::ApiError;
use crate::broker::OperatorError;
use crate::mqtt::packet::QoS;
use crate::server::{BanTarget, ClientView, OpsHandle, RetainedView};

/// The OpenAPI description of the node's admin API (`GET /openapi.json`, no token).
pub const OPENAPI: &str = include_str!("../../api/openapi.json");

/// Longest ban, seconds (a year).
pub const BAN_SECS_MAX: u64 = 365 * 24 * 3600;

/// `POST /v1/bans`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BanRequest {
    /// What to ban.
    pub target: BanTarget,
    /// For how long, seconds.
    pub secs: u64,
}

/// `GET /v1/clients`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientList {
    /// The clients.
    pub clients: Vec<ClientView>,
}

/// `GET /v1/retained`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetainedList {
    /// The messages, by topic.
    pub retained: Vec<RetainedView>,
}

/// `POST /v1/publish`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Topic name (no wildcards, not `$SYS/`).
    pub topic: String,
    /// Payload, UTF-8.
    #[serde(default)]
    pub payload: String,
    /// 0, 1 or 2.
    #[serde(default)]
    pub qos: u8,
    /// Keep it as the topic's retained message.
    #[serde(default)]
    pub retain: bool,
}

/// `POST /v1/publish`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    /// Sessions on this node that got the message.
    pub delivered: usize,
}

/// The answer of a kick or a ban.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Applied {
    /// What was done.
    pub done: String,
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Unavailable { message: format!("cannot encode: {e}") })
}

/// `%XX` escapes decoded; `None` if they are malformed or not UTF-8.
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn client_id(segment: &str) -> Result<String, ApiError> {
    decode(segment).ok_or(ApiError::BadRequest { message: "bad percent-encoding in the client id".into() })
}

/// Answers `method path` if it is one of these routes; `None` otherwise.
pub(crate) fn handle(
    ops: Option<&OpsHandle>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Option<Result<Vec<u8>, ApiError>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["v1", "clients"]
        | ["v1", "clients", _]
        | ["v1", "clients", _, "kick"]
        | ["v1", "bans"]
        | ["v1", "retained"]
        | ["v1", "retained", _]
        | ["v1", "publish"] => segments,
        _ => return None,
    };
    let Some(ops) = ops else {
        return Some(Err(ApiError::Unavailable { message: "the MQTT server is not running yet".into() }));
    };
    Some(match (method, route.as_slice()) {
        (&Method::GET, ["v1", "clients"]) => json(&ClientList { clients: ops.clients() }),
        (&Method::GET, ["v1", "clients", id]) => {
            client_id(id).and_then(|id| ops.client(&id).ok_or(ApiError::NotFound)).and_then(|c| json(&c))
        }
        (&Method::POST, ["v1", "clients", id, "kick"]) => client_id(id).and_then(|id| {
            if ops.kick(&id) {
                json(&Applied { done: format!("kicked {id}") })
            } else {
                Err(ApiError::NotFound)
            }
        }),
        (&Method::POST, ["v1", "bans"]) => ban(ops, body),
        (&Method::GET, ["v1", "retained"]) => retained(ops, query),
        (&Method::DELETE, ["v1", "retained", topic]) => {
            client_id(topic).and_then(|topic| match ops.delete_retained(&topic).map_err(operator_error)? {
                true => json(&Applied { done: format!("deleted the retained message of {topic}") }),
                false => Err(ApiError::NotFound),
            })
        }
        (&Method::POST, ["v1", "publish"]) => publish(ops, body),
        _ => Err(ApiError::MethodNotAllowed),
    })
}

fn operator_error(e: OperatorError) -> ApiError {
    match e {
        OperatorError::Clustered => ApiError::Unavailable { message: e.to_string() },
        e => ApiError::BadRequest { message: e.to_string() },
    }
}

fn retained(ops: &OpsHandle, query: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let filter = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("filter="))
        .map_or(Some("#".to_owned()), decode)
        .ok_or(ApiError::BadRequest { message: "bad percent-encoding in filter".into() })?;
    json(&RetainedList { retained: ops.retained(&filter).map_err(operator_error)? })
}

fn publish(ops: &OpsHandle, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: PublishRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest { message: format!("invalid JSON body: {e}") })?;
    let qos = match req.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return Err(ApiError::BadRequest { message: "qos must be 0, 1 or 2".into() }),
    };
    let payload = bytes::Bytes::from(req.payload.into_bytes());
    let delivered = ops.publish(&req.topic, payload, qos, req.retain).map_err(operator_error)?;
    json(&Published { delivered })
}

fn ban(ops: &OpsHandle, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: BanRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest { message: format!("invalid JSON body: {e}") })?;
    if req.secs == 0 || req.secs > BAN_SECS_MAX {
        return Err(ApiError::BadRequest { message: format!("secs must be 1..={BAN_SECS_MAX}") });
    }
    ops.ban(&req.target, Duration::from_secs(req.secs))
        .map_err(|e| ApiError::Rejected { message: e.to_string() })?;
    json(&Applied { done: format!("banned {:?} for {} s", req.target, req.secs) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_description_parses_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for p in [
            "/metrics",
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/v1/clients",
            "/v1/clients/{id}",
            "/v1/clients/{id}/kick",
            "/v1/bans",
            "/v1/retained",
            "/v1/retained/{topic}",
            "/v1/publish",
        ] {
            assert!(paths.contains_key(p), "{p} missing from api/openapi.json");
        }
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(super::decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(super::decode("plain").as_deref(), Some("plain"));
        assert_eq!(super::decode("bad%2"), None);
        assert_eq!(super::decode("%zz"), None);
    }
}
