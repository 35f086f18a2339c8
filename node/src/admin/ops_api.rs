//! SHELL. The admin API's MQTT routes (every node, single ones included), answered from
//! the server's [`OpsHandle`]:
//! - `GET /v1/clients`: connected clients; `GET /v1/clients/{id}`: one (404 if not here);
//! - `POST /v1/clients/{id}/kick`: DISCONNECT 0x98 (5.0) and close;
//! - `POST /v1/bans` `{"target":{"kind":"client_id"|"user"|"address","value":...},"secs":N}`.
//!
//! Path segments are percent-decoded (a client id may hold `/`).

use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::types::ApiError;
use crate::server::{BanTarget, ClientView, OpsHandle};

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
    body: &[u8],
) -> Option<Result<Vec<u8>, ApiError>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["v1", "clients"] | ["v1", "clients", _] | ["v1", "clients", _, "kick"] | ["v1", "bans"] => segments,
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
        _ => Err(ApiError::MethodNotAllowed),
    })
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
    fn percent_escapes_decode() {
        assert_eq!(super::decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(super::decode("plain").as_deref(), Some("plain"));
        assert_eq!(super::decode("bad%2"), None);
        assert_eq!(super::decode("%zz"), None);
    }
}
