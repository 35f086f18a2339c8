//! CORE. Node-to-node frames: what travels on the cluster transport's QUIC streams.
//!
//! Every stream carries a sequence of length-prefixed frames; the first frame of a stream
//! is always a `Hello` naming the sending node.
//!
//! ```text
//! frame   := len:u32 (big endian, bytes of payload) payload
//! payload := version:u8 = 1 | kind:u8 | body
//!   kind 1 Hello  node_id addr:bytes (UTF-8 "ip:port", the sender's cluster address)
//!   kind 2 Peers  count (node_id addr:bytes)*        (the sender's address book)
//!   kind 3 Raft   count message*                     (a batch of group messages)
//!   kind 4 Pd     body:bytes                         (a placement-driver message; see
//!                                                      `crate::pd::message`)
//!   kind 5 Requests count request*                   (see `request`)
//!   kind 6 Replies  count reply*
//!   kind 7 Forward  id count fmsg*                   (forwarded publishes, on a data
//!                                                      stream; id 0: no ack wanted)
//!   kind 8 ForwardAck count id*                      (ids of forward batches queued by
//!                                                      the sender; on the control stream)
//!   kind 9 Ping     incarnation nonce                (liveness; answered by Pong)
//!   kind 11 Chunk   total data:bytes                 (a piece of a frame payload larger
//!                                                      than one frame: a big snapshot;
//!                                                      pieces follow each other on one
//!                                                      stream until `total` bytes arrived)
//!   kind 10 Pong    incarnation nonce                (the answering node's incarnation)
//! message := group_id from to tag:u8 fields
//!   tag 1 raft       protobuf:bytes (raft-rs eraftpb::Message)
//!   tag 2/3/4        term index       (HibernateRequest / HibernateAck / HibernateConfirm)
//!   tag 5 destroy    conf_ver
//! fmsg    := topic:bytes payload:bytes flags:u8 properties:bytes publisher:bytes
//!   flags: qos in bits 0-1 (at most 2), retain in bit 2   (see `forward`)
//! ```
//!
//! Integers are LEB128 varints unless noted. Invariants: `decode(encode(f)) == f`; decoding
//! is total: hostile input gives a [`FrameError`], never a panic, and a length prefix above
//! the configured maximum is refused before any allocation. A raft message's protobuf is
//! scanned by [`crate::group::proto_scan`] before rust-protobuf parses it: a group wire
//! type anywhere the parser would reach is refused (RUSTSEC-2024-0437).

use std::net::SocketAddr;

use protobuf::Message as _;
use raft::eraftpb::Message;

use super::forward::{ForwardBatch, ForwardError, decode_acks, encode_acks};
use super::request::{REPLY_BYTES_MIN, REQUEST_BYTES_MIN, Reply, Request};
use crate::codec::{CodecError, Reader, put_bytes, put_uvarint};
use crate::group::proto_scan::{ScanError, scan_raft_message};
use crate::group::{GroupMessage, MessageBody, NodeId};

/// Bytes of the length prefix.
pub const LEN_PREFIX_BYTES: usize = 4;

const VERSION_V1: u8 = 1;
const KIND_HELLO: u8 = 1;
const KIND_PEERS: u8 = 2;
const KIND_RAFT: u8 = 3;
const KIND_PD: u8 = 4;
const KIND_REQUESTS: u8 = 5;
const KIND_REPLIES: u8 = 6;
const KIND_FORWARD: u8 = 7;
const KIND_FORWARD_ACK: u8 = 8;
const KIND_PING: u8 = 9;
const KIND_PONG: u8 = 10;
const KIND_CHUNK: u8 = 11;
const TAG_RAFT: u8 = 1;
const TAG_HIBERNATE_REQUEST: u8 = 2;
const TAG_HIBERNATE_ACK: u8 = 3;
const TAG_HIBERNATE_CONFIRM: u8 = 4;
const TAG_DESTROY: u8 = 5;
/// Smallest encoded message (four one-byte varints and a tag), for count checks.
const MESSAGE_BYTES_MIN: usize = 5;

/// One frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Opens every stream: who is sending, and where it listens.
    Hello {
        /// The sending node.
        node_id: NodeId,
        /// Its cluster (QUIC) address.
        addr: SocketAddr,
    },
    /// The sender's address book, so nodes learn of each other transitively.
    Peers(Vec<(NodeId, SocketAddr)>),
    /// Group messages, in order.
    Raft(Vec<GroupMessage>),
    /// A placement-driver message, opaque here (decoded by `crate::pd::message`).
    Pd(Vec<u8>),
    /// Requests to the receiving node.
    Requests(Vec<Request>),
    /// Answers to requests the receiving node sent.
    Replies(Vec<Reply>),
    /// Forwarded publishes (on a data stream).
    Forward(ForwardBatch),
    /// Ids of forward batches the sending node queued (on the control stream).
    ForwardAck(Vec<u64>),
    /// Liveness probe.
    Ping {
        /// The sender's incarnation (changes with every start of the process).
        incarnation: u64,
        /// Echoed in the `Pong`.
        nonce: u64,
    },
    /// A piece of a payload too large for one frame.
    Chunk {
        /// Bytes of the whole payload.
        total: u64,
        /// This piece.
        data: Vec<u8>,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The answering node's incarnation.
        incarnation: u64,
        /// The ping's nonce.
        nonce: u64,
    },
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// A version this build does not speak.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body did not decode.
    #[error("malformed frame: {0}")]
    Codec(#[from] CodecError),
    /// A forward batch did not decode.
    #[error("malformed forward: {0}")]
    Forward(#[from] ForwardError),
    /// An address is not a valid `ip:port`.
    #[error("malformed address in frame")]
    BadAddress,
    /// A raft message did not parse.
    #[error("malformed raft message: {0}")]
    Raft(String),
    /// A raft message was refused before parsing (a protobuf group wire type, which
    /// eraftpb never uses; see [`crate::group::proto_scan`]).
    #[error("refused raft message: {0}")]
    RaftWire(#[from] ScanError),
}

/// Checks a length prefix against `max` and returns the payload length.
pub fn payload_len(prefix: [u8; LEN_PREFIX_BYTES], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(FrameError::TooLarge { len: u64::from(len), max: u64::from(max) });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len as usize)
}

/// Reassembles a payload sent as `Chunk` frames, refusing one larger than `max` before
/// allocating for it.
#[derive(Debug, Default)]
pub struct Reassembly {
    buf: Vec<u8>,
    total: u64,
}

impl Reassembly {
    /// Adds a piece; `Some(payload)` once the last piece arrived.
    pub fn push(&mut self, total: u64, data: &[u8], max: u64) -> Result<Option<Vec<u8>>, FrameError> {
        if total > max {
            return Err(FrameError::TooLarge { len: total, max });
        }
        if self.buf.is_empty() {
            self.total = total;
            self.buf.reserve(total.min(8 << 20) as usize);
        }
        let len = self.buf.len() as u64 + data.len() as u64;
        if total != self.total || len > total || data.is_empty() {
            return Err(FrameError::Codec(CodecError::LengthTooLarge(len)));
        }
        self.buf.extend_from_slice(data);
        if len == total {
            self.total = 0;
            return Ok(Some(std::mem::take(&mut self.buf)));
        }
        Ok(None)
    }
}

/// Splits an encoded frame (length prefix included) into `Chunk` frames of at most
/// `chunk` payload bytes each.
pub fn chunked(frame: &[u8], chunk: usize) -> Vec<Frame> {
    let payload = &frame[LEN_PREFIX_BYTES.min(frame.len())..];
    let total = payload.len() as u64;
    payload.chunks(chunk.max(1)).map(|c| Frame::Chunk { total, data: c.to_vec() }).collect()
}

impl Frame {
    /// Appends the frame, length prefix included, to `buf`. Fails (leaving `buf` as it
    /// was) if the payload exceeds `max`, which the receiver would refuse, or a raft
    /// message does not serialize.
    pub fn encode(&self, buf: &mut Vec<u8>, max: u32) -> Result<(), FrameError> {
        let at = buf.len();
        buf.extend_from_slice(&[0; LEN_PREFIX_BYTES]);
        buf.push(VERSION_V1);
        match self {
            Self::Hello { node_id, addr } => {
                buf.push(KIND_HELLO);
                put_uvarint(buf, *node_id);
                put_bytes(buf, addr.to_string().as_bytes());
            }
            Self::Peers(peers) => {
                buf.push(KIND_PEERS);
                put_uvarint(buf, peers.len() as u64);
                for (id, addr) in peers {
                    put_uvarint(buf, *id);
                    put_bytes(buf, addr.to_string().as_bytes());
                }
            }
            Self::Raft(msgs) => {
                if let Err(e) = encode_raft(buf, msgs) {
                    buf.truncate(at);
                    return Err(e);
                }
            }
            Self::Pd(body) => {
                buf.push(KIND_PD);
                put_bytes(buf, body);
            }
            Self::Requests(reqs) => {
                buf.push(KIND_REQUESTS);
                put_uvarint(buf, reqs.len() as u64);
                for r in reqs {
                    r.encode(buf);
                }
            }
            Self::Replies(replies) => {
                buf.push(KIND_REPLIES);
                put_uvarint(buf, replies.len() as u64);
                for r in replies {
                    r.encode(buf);
                }
            }
            Self::Forward(batch) => {
                buf.push(KIND_FORWARD);
                batch.encode(buf);
            }
            Self::ForwardAck(ids) => {
                buf.push(KIND_FORWARD_ACK);
                encode_acks(buf, ids);
            }
            Self::Ping { incarnation, nonce } => put_pair(buf, KIND_PING, *incarnation, *nonce),
            Self::Pong { incarnation, nonce } => put_pair(buf, KIND_PONG, *incarnation, *nonce),
            Self::Chunk { total, data } => {
                buf.push(KIND_CHUNK);
                put_uvarint(buf, *total);
                put_bytes(buf, data);
            }
        }
        let len = buf.len() - at - LEN_PREFIX_BYTES;
        if len > max as usize {
            buf.truncate(at);
            return Err(FrameError::TooLarge { len: len as u64, max: u64::from(max) });
        }
        buf[at..at + LEN_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Decodes a payload (the bytes after the length prefix).
    pub fn decode(payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let version = r.u8()?;
        if version != VERSION_V1 {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let frame = match r.u8()? {
            KIND_HELLO => Self::Hello { node_id: r.uvarint()?, addr: decode_addr(&mut r)? },
            KIND_PEERS => {
                let n = r.count(2)?;
                let mut peers = Vec::with_capacity(n);
                for _ in 0..n {
                    peers.push((r.uvarint()?, decode_addr(&mut r)?));
                }
                Self::Peers(peers)
            }
            KIND_RAFT => {
                let n = r.count(MESSAGE_BYTES_MIN)?;
                let mut msgs = Vec::with_capacity(n);
                for _ in 0..n {
                    msgs.push(decode_message(&mut r)?);
                }
                Self::Raft(msgs)
            }
            KIND_PD => Self::Pd(r.bytes()?.to_vec()),
            KIND_REQUESTS => {
                let n = r.count(REQUEST_BYTES_MIN)?;
                let mut reqs = Vec::with_capacity(n);
                for _ in 0..n {
                    reqs.push(Request::decode(&mut r)?);
                }
                Self::Requests(reqs)
            }
            KIND_REPLIES => {
                let n = r.count(REPLY_BYTES_MIN)?;
                let mut replies = Vec::with_capacity(n);
                for _ in 0..n {
                    replies.push(Reply::decode(&mut r)?);
                }
                Self::Replies(replies)
            }
            KIND_FORWARD => Self::Forward(ForwardBatch::decode(&mut r)?),
            KIND_FORWARD_ACK => Self::ForwardAck(decode_acks(&mut r)?),
            KIND_PING => Self::Ping { incarnation: r.uvarint()?, nonce: r.uvarint()? },
            KIND_PONG => Self::Pong { incarnation: r.uvarint()?, nonce: r.uvarint()? },
            KIND_CHUNK => Self::Chunk { total: r.uvarint()?, data: r.bytes()?.to_vec() },
            k => return Err(FrameError::UnknownKind(k)),
        };
        r.finish()?;
        Ok(frame)
    }
}

/// Appends a Raft frame's kind and body.
fn encode_raft(buf: &mut Vec<u8>, msgs: &[GroupMessage]) -> Result<(), FrameError> {
    buf.push(KIND_RAFT);
    put_uvarint(buf, msgs.len() as u64);
    for m in msgs {
        put_uvarint(buf, m.group_id);
        put_uvarint(buf, m.from);
        put_uvarint(buf, m.to);
        match &m.body {
            MessageBody::Raft(msg) => {
                buf.push(TAG_RAFT);
                let bytes = msg.write_to_bytes().map_err(|e| FrameError::Raft(e.to_string()))?;
                put_bytes(buf, &bytes);
            }
            MessageBody::HibernateRequest { term, index } => {
                put_pair(buf, TAG_HIBERNATE_REQUEST, *term, *index)
            }
            MessageBody::HibernateAck { term, index } => put_pair(buf, TAG_HIBERNATE_ACK, *term, *index),
            MessageBody::HibernateConfirm { term, index } => {
                put_pair(buf, TAG_HIBERNATE_CONFIRM, *term, *index)
            }
            MessageBody::Destroy { conf_ver } => {
                buf.push(TAG_DESTROY);
                put_uvarint(buf, *conf_ver);
            }
        }
    }
    Ok(())
}

fn put_pair(buf: &mut Vec<u8>, tag: u8, a: u64, b: u64) {
    buf.push(tag);
    put_uvarint(buf, a);
    put_uvarint(buf, b);
}

fn decode_addr(r: &mut Reader<'_>) -> Result<SocketAddr, FrameError> {
    let bytes = r.bytes()?;
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or(FrameError::BadAddress)
}

fn decode_message(r: &mut Reader<'_>) -> Result<GroupMessage, FrameError> {
    let group_id = r.uvarint()?;
    let from = r.uvarint()?;
    let to = r.uvarint()?;
    let body = match r.u8()? {
        TAG_RAFT => {
            // An all-default message encodes to no bytes; it parses back as itself.
            let bytes = r.bytes()?;
            // Before the parser: rust-protobuf 2 must never see a group wire type.
            scan_raft_message(bytes)?;
            MessageBody::Raft(Message::parse_from_bytes(bytes).map_err(|e| FrameError::Raft(e.to_string()))?)
        }
        TAG_HIBERNATE_REQUEST => MessageBody::HibernateRequest { term: r.uvarint()?, index: r.uvarint()? },
        TAG_HIBERNATE_ACK => MessageBody::HibernateAck { term: r.uvarint()?, index: r.uvarint()? },
        TAG_HIBERNATE_CONFIRM => MessageBody::HibernateConfirm { term: r.uvarint()?, index: r.uvarint()? },
        TAG_DESTROY => MessageBody::Destroy { conf_ver: r.uvarint()? },
        t => return Err(CodecError::UnknownTag(t).into()),
    };
    Ok(GroupMessage { group_id, from, to, body })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use raft::eraftpb::{Entry, MessageType};

    use super::*;

    const MAX: u32 = 1 << 20;

    fn raft_msg(group_id: u64, commit: u64, data: Vec<u8>) -> GroupMessage {
        let mut m = Message { commit, term: 7, index: 3, log_term: 6, ..Message::default() };
        m.set_msg_type(MessageType::MsgAppend);
        m.entries = vec![Entry { data: data.into(), index: 4, term: 7, ..Entry::default() }].into();
        m.from = 1;
        m.to = 2;
        GroupMessage { group_id, from: 1, to: 2, body: MessageBody::Raft(m) }
    }

    fn round_trip(frame: &Frame) -> Frame {
        let mut buf = Vec::new();
        frame.encode(&mut buf, MAX).expect("encodes");
        let mut prefix = [0; LEN_PREFIX_BYTES];
        prefix.copy_from_slice(&buf[..LEN_PREFIX_BYTES]);
        let len = payload_len(prefix, MAX).expect("length");
        assert_eq!(len, buf.len() - LEN_PREFIX_BYTES);
        Frame::decode(&buf[LEN_PREFIX_BYTES..]).expect("decodes")
    }

    #[test]
    fn every_frame_kind_round_trips() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let v6: SocketAddr = "[::1]:7001".parse().expect("addr");
        let frames = [
            Frame::Hello { node_id: 3, addr },
            Frame::Peers(vec![(1, addr), (2, v6)]),
            Frame::Raft(vec![
                raft_msg(9, 5, b"payload".to_vec()),
                GroupMessage {
                    group_id: 1,
                    from: 2,
                    to: 1,
                    body: MessageBody::HibernateAck { term: 2, index: 9 },
                },
                GroupMessage {
                    group_id: 1,
                    from: 1,
                    to: 2,
                    body: MessageBody::HibernateRequest { term: 2, index: 9 },
                },
                GroupMessage {
                    group_id: 1,
                    from: 1,
                    to: 2,
                    body: MessageBody::HibernateConfirm { term: 2, index: 9 },
                },
                GroupMessage {
                    group_id: u64::MAX,
                    from: 1,
                    to: 4,
                    body: MessageBody::Destroy { conf_ver: 12 },
                },
            ]),
            Frame::Raft(Vec::new()),
            Frame::Pd(b"pd body".to_vec()),
            Frame::Pd(Vec::new()),
        ];
        for f in frames {
            assert_eq!(round_trip(&f), f);
        }
    }

    #[test]
    fn a_frame_sent_in_chunks_reassembles_and_oversized_totals_are_refused() {
        let big = Frame::Raft(vec![raft_msg(3, 1, vec![7; 100_000])]);
        let mut buf = Vec::new();
        big.encode(&mut buf, 1 << 30).expect("encodes");
        let pieces = chunked(&buf, 4096);
        assert_eq!(pieces.len(), (buf.len() - LEN_PREFIX_BYTES).div_ceil(4096));
        let mut r = Reassembly::default();
        let mut out = None;
        for p in pieces {
            let p = round_trip(&p);
            let Frame::Chunk { total, data } = p else { panic!("a chunk") };
            assert!(out.is_none(), "nothing after the last piece");
            out = r.push(total, &data, 1 << 20).expect("fits");
        }
        assert_eq!(Frame::decode(&out.expect("complete")).expect("decodes"), big);
        let mut r = Reassembly::default();
        assert!(matches!(r.push(2 << 20, &[1], 1 << 20), Err(FrameError::TooLarge { .. })));
        assert!(r.push(10, &[0; 11], 1 << 20).is_err(), "more than announced");
        let mut r = Reassembly::default();
        r.push(10, &[0; 4], 100).expect("first piece");
        assert!(r.push(12, &[0; 4], 100).is_err(), "the total changed mid-payload");
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_reading() {
        let err = payload_len((MAX + 1).to_be_bytes(), MAX).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        assert!(matches!(payload_len([0; 4], MAX), Err(FrameError::Empty)));
    }

    #[test]
    fn encoding_past_the_limit_fails_and_leaves_the_buffer() {
        let mut buf = vec![1, 2, 3];
        let big = Frame::Raft(vec![raft_msg(1, 0, vec![0; 2048])]);
        assert!(matches!(big.encode(&mut buf, 1024), Err(FrameError::TooLarge { .. })));
        assert_eq!(buf, vec![1, 2, 3]);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(matches!(Frame::decode(&[2, 1]), Err(FrameError::UnsupportedVersion(2))));
        assert!(matches!(Frame::decode(&[1, 99]), Err(FrameError::UnknownKind(99))));
        assert!(matches!(
            Frame::decode(&[1, KIND_HELLO, 1, 3, b'a', b'b', b'c']),
            Err(FrameError::BadAddress)
        ));
        // A count larger than the input could hold.
        assert!(matches!(Frame::decode(&[1, KIND_RAFT, 0x7f]), Err(FrameError::Codec(_))));
        // A request count far beyond the input: refused before allocating.
        assert!(matches!(
            Frame::decode(&[1, KIND_REQUESTS, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(FrameError::Codec(CodecError::LengthTooLarge(_)))
        ));
        // A raft message body that is not protobuf: refused by the wire scan (here a
        // truncated varint) or by the parser.
        let bad = [1, KIND_RAFT, 1, 1, 1, 2, TAG_RAFT, 2, 0xff, 0xff];
        assert!(matches!(Frame::decode(&bad), Err(FrameError::RaftWire(ScanError::Truncated))));
        let bad = [1, KIND_RAFT, 1, 1, 1, 2, TAG_RAFT, 2, 0x08, 0x7f];
        assert!(matches!(Frame::decode(&bad), Err(FrameError::Raft(_))), "message type 127");
    }

    /// A raft payload with a protobuf group (a well-formed one, which rust-protobuf 2 would
    /// skip and accept) is refused by the wire scan before the parser sees it, at the top
    /// level and inside a proposed conf change that raft-rs would parse on the leader.
    #[test]
    fn raft_payload_with_a_group_wire_type_is_refused_before_parsing() {
        use raft::eraftpb::{ConfChangeV2, EntryType};

        let empty_group = [0xa3, 0x06, 0xa4, 0x06]; // field 100: START_GROUP, END_GROUP
        let mut cc = ConfChangeV2::default().write_to_bytes().expect("cc");
        cc.extend(empty_group);
        let mut proposal = Message::default();
        proposal.set_msg_type(MessageType::MsgPropose);
        let mut entry = Entry { data: cc.into(), ..Entry::default() };
        entry.set_entry_type(EntryType::EntryConfChangeV2);
        proposal.entries = vec![entry].into();
        for body in [empty_group.to_vec(), proposal.write_to_bytes().expect("proposal")] {
            assert!(Message::parse_from_bytes(&body).is_ok(), "the parser alone accepts it");
            let mut frame = vec![VERSION_V1, KIND_RAFT, 1, 1, 1, 2, TAG_RAFT];
            put_bytes(&mut frame, &body);
            let refused = Frame::decode(&frame);
            assert!(matches!(refused, Err(FrameError::RaftWire(ScanError::Group { .. }))), "{refused:?}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Frame::decode(&data);
        }

        #[test]
        fn request_and_reply_frames_round_trip(
            reqs in proptest::collection::vec(super::super::request::tests::request(), 0..6),
            replies in proptest::collection::vec(super::super::request::tests::reply(), 0..6),
            incarnation in any::<u64>(),
            nonce in any::<u64>(),
        ) {
            for frame in [
                Frame::Requests(reqs.clone()),
                Frame::Replies(replies.clone()),
                Frame::Ping { incarnation, nonce },
                Frame::Pong { incarnation, nonce },
            ] {
                prop_assert_eq!(round_trip(&frame), frame);
            }
        }

        #[test]
        fn truncated_request_frames_are_errors(
            reqs in proptest::collection::vec(super::super::request::tests::request(), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            Frame::Requests(reqs).encode(&mut buf, MAX).expect("encodes");
            let payload = &buf[LEN_PREFIX_BYTES..];
            prop_assert!(Frame::decode(&payload[..cut.index(payload.len())]).is_err());
        }

        #[test]
        fn raft_batches_round_trip(groups in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20)) {
            let msgs: Vec<GroupMessage> = groups.iter().map(|&(g, c)| raft_msg(g, c, g.to_le_bytes().to_vec())).collect();
            let frame = Frame::Raft(msgs);
            prop_assert_eq!(round_trip(&frame), frame);
        }
    }
}
