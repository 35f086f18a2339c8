//! SHELL. The session records of the core's `Acquire`, `Release` and `SubRow` operations,
//! in the session ("S") ranges (CLUSTER.md section 4):
//!
//! - `Acquire` proposes a `Fence` on the record's header: the epoch +1 is the connection's
//!   fencing token and the linearization point of "one live connection per client id". If
//!   the previous owner is another node, it is told (`Kick`) to close the old connection;
//!   the CONNACK waits for its answer, or, if it does not answer within a second, for the
//!   isolation fence (x 1.2 for clock-rate drift), after which an isolated owner has closed
//!   its clients itself. A session that continues from another node brings its
//!   subscription rows.
//! - `Release` and `SubRow` are batches guarded by the epoch: once a newer connection
//!   fenced the record, an old owner's writes fail.

use std::time::Duration;

use bytestring::ByteString;

use super::dispatch::ClusterLink;
use crate::broker::{Acquired, OpOutcome};
use crate::cluster::session_keys::{self, SessionHeader, StoredWill};
use crate::group::command::{BatchOp, Guard};
use crate::group::{Command, Outcome, ReadPolicy};
use crate::route::trie::SubEntry;
use crate::transport::request::RequestBody;

/// How long a kicked node has to answer before the isolation fence is waited out.
const KICK_TIMEOUT: Duration = Duration::from_secs(1);
/// Subscription rows read for one session at most.
const SUBS_MAX: usize = 100_000;

/// Fences the record of `client_id` for a new connection on this node.
pub(crate) async fn acquire(
    link: &ClusterLink,
    client_id: &str,
    clean_start: bool,
    expiry_secs: u32,
    will: Option<StoredWill>,
) -> OpOutcome {
    match try_acquire(link, client_id, clean_start, expiry_secs, will).await {
        Ok(a) => OpOutcome::Acquired(Box::new(a)),
        Err(e) => {
            tracing::debug!(client_id, error = %e, "cannot acquire the session record");
            OpOutcome::Failed
        }
    }
}

async fn try_acquire(
    link: &ClusterLink,
    client_id: &str,
    clean_start: bool,
    expiry_secs: u32,
    will: Option<StoredWill>,
) -> Result<Acquired, String> {
    let me = link.transport.node_id();
    let inc = link.transport.incarnation();
    let sess = session_keys::session_prefix(&link.tenant, client_id).map_err(|e| e.to_string())?;
    let header = SessionHeader {
        owner_node: me,
        owner_inc: inc,
        online: true,
        expiry_secs,
        disconnected_at_ms: 0,
        will,
    };
    let fence = Command::Fence {
        key: session_keys::header_key(&sess),
        body: header.encode(),
        new_generation: clean_start,
        clear: clean_start.then(|| session_keys::subs_span(&sess)),
    };
    let outcome = link.client.propose(fence).await.map_err(|e| e.to_string())?;
    let Outcome::Fenced { epoch, generation, previous } = outcome else {
        return Err(format!("unexpected answer to a fence: {outcome:?}"));
    };
    let previous = previous.as_deref().and_then(SessionHeader::decode_record).map(|(_, _, h)| h);
    let Some(prev) = previous else {
        return Ok(Acquired { epoch, generation, present: false, remote: false, subs: Vec::new() });
    };
    // Held by another node: any copy here is stale. Held by an earlier incarnation of this
    // node: the copy restored from this node's journal (if any) continues.
    let remote = prev.owner_node != me;
    if remote {
        kick(link, prev.owner_node, client_id, epoch, prev.online).await;
    }
    let present = !clean_start && prev.alive_at(crate::clock::wall_ms());
    let mut subs = Vec::new();
    if present && (remote || prev.owner_inc != inc) {
        let (start, end) = session_keys::subs_span(&sess);
        let rows = link
            .client
            .scan(&start, &end, SUBS_MAX, ReadPolicy::ReadIndex)
            .await
            .map_err(|e| e.to_string())?;
        for (key, value) in rows {
            if let (Some(f), Some(e)) =
                (session_keys::sub_filter(&sess, &key), session_keys::decode_sub(&value))
            {
                subs.push((ByteString::from(f), e));
            }
        }
    }
    Ok(Acquired { epoch, generation, present, remote, subs })
}

/// Tells `node` that `client_id` is fenced at `epoch`. For an online session the CONNACK
/// waits for the answer, or for the isolation fence when there is none in time.
async fn kick(link: &ClusterLink, node: u64, client_id: &str, epoch: u64, online: bool) {
    let body = RequestBody::Kick { client_id: client_id.as_bytes().to_vec(), epoch };
    let answer = link.client.request_node(node, body, KICK_TIMEOUT).await;
    tracing::debug!(node, client_id, epoch, ?answer, "kicked the previous owner");
    let answered = answer.is_ok();
    if online && !answered {
        let wait = link.isolation_fence.mul_f64(1.2);
        tracing::info!(
            node,
            client_id,
            ?wait,
            "previous owner did not answer the kick: waiting out the isolation fence"
        );
        tokio::time::sleep(wait).await;
    }
}

/// Marks the record offline (or deletes it with its rows), guarded by `epoch`.
pub(crate) async fn release(
    link: &ClusterLink,
    client_id: &str,
    epoch: u64,
    generation: u64,
    expiry_secs: u32,
    delete: bool,
) -> OpOutcome {
    let Ok(sess) = session_keys::session_prefix(&link.tenant, client_id) else { return OpOutcome::Failed };
    let key = session_keys::header_key(&sess);
    let ops = if delete {
        let (start, end) = session_keys::subs_span(&sess);
        vec![BatchOp::Delete { key: key.clone() }, BatchOp::DeleteRange { start, end }]
    } else {
        let header = SessionHeader {
            owner_node: link.transport.node_id(),
            owner_inc: link.transport.incarnation(),
            online: false,
            expiry_secs,
            disconnected_at_ms: crate::clock::wall_ms(),
            will: None,
        };
        vec![BatchOp::Put { key: key.clone(), value: header.encode_record(epoch, generation) }]
    };
    guarded(link, key, epoch, ops).await
}

/// Writes (or deletes) a subscription row, guarded by `epoch`.
pub(crate) async fn sub_row(
    link: &ClusterLink,
    client_id: &str,
    epoch: u64,
    filter: &str,
    entry: Option<SubEntry>,
) -> OpOutcome {
    let Ok(sess) = session_keys::session_prefix(&link.tenant, client_id) else { return OpOutcome::Failed };
    let key = session_keys::sub_key(&sess, filter);
    let op = match entry {
        Some(e) => BatchOp::Put { key, value: session_keys::encode_sub(&e) },
        None => BatchOp::Delete { key },
    };
    match guarded(link, session_keys::header_key(&sess), epoch, vec![op]).await {
        OpOutcome::Done { .. } => OpOutcome::Done { nodes: 0 },
        other => other,
    }
}

async fn guarded(link: &ClusterLink, header: Vec<u8>, epoch: u64, ops: Vec<BatchOp>) -> OpOutcome {
    let batch = Command::Batch { guards: vec![Guard { key: header, epoch }], ops };
    match link.client.propose(batch).await {
        Ok(Outcome::GuardFailed { current, .. }) => {
            tracing::debug!(epoch, ?current, "session record fenced by a newer connection");
            OpOutcome::Failed
        }
        Ok(_) => OpOutcome::Done { nodes: 0 },
        Err(e) => {
            tracing::debug!(error = %e, "session record write failed");
            OpOutcome::Failed
        }
    }
}
