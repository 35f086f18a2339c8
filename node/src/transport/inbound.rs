//! The [`Inbound`] trait: where the transport hands what it receives (group messages,
//! placement-driver messages, requests and replies, forwarded publishes and their acks).

use super::forward::ForwardBatch;
use super::request::{Reply, Request};
use crate::group::{GroupId, GroupMessage, NodeId};

/// Where received messages go.
pub trait Inbound: Send + Sync {
    /// Hands a message to the local store; false if it was dropped.
    fn deliver(&self, msg: GroupMessage) -> bool;
    /// The connection to `node` was lost (wake groups that may have lost their leader).
    fn peer_down(&self, node: NodeId);
    /// A placement-driver message from `from` (undecoded); false if it was dropped.
    fn deliver_pd(&self, from: NodeId, body: Vec<u8>) -> bool {
        let _ = (from, body);
        false
    }
    /// Requests from `from`; each is answered with
    /// [`QuicTransport::send_reply`](crate::transport::QuicTransport::send_reply) (one that is
    /// not answered times out at its sender).
    fn deliver_requests(&self, from: NodeId, requests: Vec<Request>) {
        let _ = (from, requests);
    }
    /// Replies from `from` to requests this node sent.
    fn deliver_replies(&self, from: NodeId, replies: Vec<Reply>) {
        let _ = (from, replies);
    }
    /// Messages of `group` to `to` were dropped (a snapshot, if `snapshot`): raft should
    /// probe instead of assuming them delivered.
    fn unreachable(&self, group: GroupId, to: NodeId, snapshot: bool) {
        let _ = (group, to, snapshot);
    }
    /// Forwarded publishes from `from`, in the order they were sent on their stream. Must
    /// not block (it runs on the stream's reader); a batch with a non-zero id is
    /// acknowledged with
    /// [`QuicTransport::send_forward_acks`](crate::transport::QuicTransport::send_forward_acks)
    /// once queued.
    fn deliver_forwards(&self, from: NodeId, batch: ForwardBatch) {
        let _ = (from, batch);
    }
    /// `from` acknowledged the forward batches `ids` this node sent.
    fn forward_acks(&self, from: NodeId, ids: Vec<u64>) {
        let _ = (from, ids);
    }
    /// `from` answered a ping: it runs as `incarnation`.
    fn pong(&self, from: NodeId, incarnation: u64) {
        let _ = (from, incarnation);
    }
}
