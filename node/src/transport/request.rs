//! CORE. Requests between nodes: a node asks the node holding a range's leader to propose a
//! command or serve a read, and gets a [`Reply`] back. Carried in `Requests` and `Replies`
//! frames on the control stream (see `frame`), many per frame.
//!
//! ```text
//! request := id timeout_ms body
//!   body 1 Propose group command:bytes          (`group::Command` encoding, epoch included)
//!   body 2 Read    group version conf_ver policy:u8 query
//!   body 3 Kick    client_id:bytes epoch             (an MQTT session fenced elsewhere:
//!                                                      close its older connection here)
//! query   := 1 Get key | 2 Scan start end limit | 3 Match prefix count topic:bytes* limit
//!            (at most MATCH_TOPICS_MAX topics)
//! reply   := id 0 outcome | id 1 error
//! outcome := 1 Written | 2 Cas ok:u8 previous:opt | 3 Value opt | 4 Rows count (k v)*
//!          | 5 ConfChanged desc | 6 Noop | 7 Split desc | 8 GuardFailed key current:opt_u64
//!          | 9 Fenced epoch generation previous:opt | 10 Matched count (count (k v)*)*
//! error   := 1 NotLeader hint:opt_u64 | 2 EpochNotMatch count desc* | 3 KeyNotInRange key group
//!            start end | 4 StaleCommand | 5 OutcomeUnknown | 6 ProposalDropped | 7 Busy pending
//!          | 8 Removed | 9 NoReplica | 10 Timeout | 11 Other text:bytes
//! ```
//!
//! Integers are LEB128 varints; `opt` is `0 | 1 bytes`, `opt_u64` is `0 | 1 u64`. Decoding is
//! total: hostile input gives a [`CodecError`], never a panic, and every count is checked
//! against the remaining input before anything is allocated. A match carries at most
//! [`MATCH_TOPICS_MAX`] topics, each UTF-8.

use crate::codec::{CodecError, Reader, put_bytes, put_opt_bytes, put_uvarint};
use crate::group::{
    Command, Epoch, GroupId, MATCH_TOPICS_MAX, NodeId, Outcome, Query, RangeDescriptor, ReadPolicy,
    RequestError,
};

/// Smallest encoded request (id, timeout, tag, group, an empty command).
pub(crate) const REQUEST_BYTES_MIN: usize = 5;
/// Smallest encoded reply (id, status, tag).
pub(crate) const REPLY_BYTES_MIN: usize = 3;

/// One request to another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the sender, echoed in the reply.
    pub id: u64,
    /// How long the sender waits; the receiver drops the request once it is older.
    pub timeout_ms: u64,
    /// What to do.
    pub body: RequestBody,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Propose `command` (encoded with the epoch the sender routed by) to `group`.
    Propose {
        /// The range.
        group: GroupId,
        /// `Command::encode(epoch)`.
        command: Vec<u8>,
    },
    /// Read from `group`.
    Read {
        /// The range.
        group: GroupId,
        /// The epoch the sender routed by.
        epoch: Epoch,
        /// How the read proves it is linearizable.
        policy: ReadPolicy,
        /// What to read.
        query: Query,
    },
    /// MQTT: `client_id`'s session record was fenced at `epoch` by another node; a
    /// connection here with an older epoch is closed (DISCONNECT 0x8E). Answered with
    /// `Written` once done (whether or not the client was here).
    Kick {
        /// The client id.
        client_id: Vec<u8>,
        /// The new connection's epoch.
        epoch: u64,
    },
}

impl RequestBody {
    /// A proposal of `command` at `epoch`.
    pub fn propose(group: GroupId, epoch: Epoch, command: &Command) -> Self {
        Self::Propose { group, command: command.encode(epoch) }
    }
}

/// Why a remote request was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The range's replica refused or failed the request (routing errors included).
    #[error(transparent)]
    Group(RequestError),
    /// The node hosts no replica of the range.
    #[error("no replica of the range on the node")]
    NoReplica,
    /// No answer before the deadline.
    #[error("timed out")]
    Timeout,
    /// Anything else (store stopped, reply too large, ...).
    #[error("{0}")]
    Other(String),
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// What happened.
    pub result: Result<Outcome, ReplyError>,
}

impl Request {
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_uvarint(buf, self.id);
        put_uvarint(buf, self.timeout_ms);
        match &self.body {
            RequestBody::Propose { group, command } => {
                buf.push(1);
                put_uvarint(buf, *group);
                put_bytes(buf, command);
            }
            RequestBody::Read { group, epoch, policy, query } => {
                buf.push(2);
                put_uvarint(buf, *group);
                put_uvarint(buf, epoch.version);
                put_uvarint(buf, epoch.conf_ver);
                buf.push(match policy {
                    ReadPolicy::ReadIndex => 1,
                    ReadPolicy::Lease => 2,
                });
                encode_query(buf, query);
            }
            RequestBody::Kick { client_id, epoch } => {
                buf.push(3);
                put_bytes(buf, client_id);
                put_uvarint(buf, *epoch);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let id = r.uvarint()?;
        let timeout_ms = r.uvarint()?;
        let body = match r.u8()? {
            1 => RequestBody::Propose { group: r.uvarint()?, command: r.bytes()?.to_vec() },
            2 => RequestBody::Read {
                group: r.uvarint()?,
                epoch: Epoch { version: r.uvarint()?, conf_ver: r.uvarint()? },
                policy: match r.u8()? {
                    1 => ReadPolicy::ReadIndex,
                    2 => ReadPolicy::Lease,
                    t => return Err(CodecError::UnknownTag(t)),
                },
                query: decode_query(r)?,
            },
            3 => RequestBody::Kick { client_id: r.bytes()?.to_vec(), epoch: r.uvarint()? },
            t => return Err(CodecError::UnknownTag(t)),
        };
        Ok(Self { id, timeout_ms, body })
    }
}

fn encode_query(buf: &mut Vec<u8>, query: &Query) {
    match query {
        Query::Get { key } => {
            buf.push(1);
            put_bytes(buf, key);
        }
        Query::Scan { start, end, limit } => {
            buf.push(2);
            put_bytes(buf, start);
            put_bytes(buf, end);
            put_uvarint(buf, *limit as u64);
        }
        Query::Match { prefix, topics, limit } => {
            buf.push(3);
            put_bytes(buf, prefix);
            put_uvarint(buf, topics.len() as u64);
            for t in topics {
                put_bytes(buf, t.as_bytes());
            }
            put_uvarint(buf, *limit as u64);
        }
    }
}

fn decode_query(r: &mut Reader<'_>) -> Result<Query, CodecError> {
    Ok(match r.u8()? {
        1 => Query::Get { key: r.bytes()?.to_vec() },
        2 => Query::Scan {
            start: r.bytes()?.to_vec(),
            end: r.bytes()?.to_vec(),
            limit: usize::try_from(r.uvarint()?).unwrap_or(usize::MAX),
        },
        3 => decode_match(r)?,
        t => return Err(CodecError::UnknownTag(t)),
    })
}

fn decode_match(r: &mut Reader<'_>) -> Result<Query, CodecError> {
    let prefix = r.bytes()?.to_vec();
    let n = r.count(1)?;
    if n > MATCH_TOPICS_MAX {
        return Err(CodecError::LengthTooLarge(n as u64));
    }
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        // Bad UTF-8 is refused like a bad tag (as the PD codec does).
        let topic = std::str::from_utf8(r.bytes()?).map_err(|_| CodecError::UnknownTag(0))?;
        topics.push(topic.to_owned());
    }
    let limit = usize::try_from(r.uvarint()?).unwrap_or(usize::MAX);
    Ok(Query::Match { prefix, topics, limit })
}

impl Reply {
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_uvarint(buf, self.id);
        match &self.result {
            Ok(outcome) => {
                buf.push(0);
                encode_outcome(buf, outcome);
            }
            Err(e) => {
                buf.push(1);
                encode_error(buf, e);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let id = r.uvarint()?;
        let result = match r.u8()? {
            0 => Ok(decode_outcome(r)?),
            1 => Err(decode_error(r)?),
            t => return Err(CodecError::UnknownTag(t)),
        };
        Ok(Self { id, result })
    }
}

fn put_opt_u64(buf: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            put_uvarint(buf, v);
        }
    }
}

fn opt_u64(r: &mut Reader<'_>) -> Result<Option<u64>, CodecError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.uvarint()?)),
        t => Err(CodecError::UnknownTag(t)),
    }
}

fn opt_vec(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, CodecError> {
    Ok(r.opt_bytes()?.map(<[u8]>::to_vec))
}

fn encode_outcome(buf: &mut Vec<u8>, outcome: &Outcome) {
    match outcome {
        Outcome::Written => buf.push(1),
        Outcome::Cas { succeeded, previous } => {
            buf.push(2);
            buf.push(u8::from(*succeeded));
            put_opt_bytes(buf, previous.as_deref());
        }
        Outcome::Value(v) => {
            buf.push(3);
            put_opt_bytes(buf, v.as_deref());
        }
        Outcome::Rows(rows) => {
            buf.push(4);
            put_uvarint(buf, rows.len() as u64);
            for (k, v) in rows {
                put_bytes(buf, k);
                put_bytes(buf, v);
            }
        }
        Outcome::Matched(lists) => {
            buf.push(10);
            put_uvarint(buf, lists.len() as u64);
            for rows in lists {
                put_uvarint(buf, rows.len() as u64);
                for (k, v) in rows {
                    put_bytes(buf, k);
                    put_bytes(buf, v);
                }
            }
        }
        Outcome::ConfChanged(desc) => {
            buf.push(5);
            desc.encode(buf);
        }
        Outcome::Noop => buf.push(6),
        Outcome::Split(desc) => {
            buf.push(7);
            desc.encode(buf);
        }
        Outcome::GuardFailed { key, current } => {
            buf.push(8);
            put_bytes(buf, key);
            put_opt_u64(buf, *current);
        }
        Outcome::Fenced { epoch, generation, previous } => {
            buf.push(9);
            put_uvarint(buf, *epoch);
            put_uvarint(buf, *generation);
            put_opt_bytes(buf, previous.as_deref());
        }
    }
}

fn decode_outcome(r: &mut Reader<'_>) -> Result<Outcome, CodecError> {
    Ok(match r.u8()? {
        1 => Outcome::Written,
        2 => Outcome::Cas {
            succeeded: match r.u8()? {
                0 => false,
                1 => true,
                t => return Err(CodecError::UnknownTag(t)),
            },
            previous: opt_vec(r)?,
        },
        3 => Outcome::Value(opt_vec(r)?),
        4 => {
            let n = r.count(2)?;
            let mut rows = Vec::with_capacity(n);
            for _ in 0..n {
                rows.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
            }
            Outcome::Rows(rows)
        }
        5 => Outcome::ConfChanged(RangeDescriptor::decode(r)?),
        6 => Outcome::Noop,
        7 => Outcome::Split(RangeDescriptor::decode(r)?),
        8 => Outcome::GuardFailed { key: r.bytes()?.to_vec(), current: opt_u64(r)? },
        9 => Outcome::Fenced { epoch: r.uvarint()?, generation: r.uvarint()?, previous: opt_vec(r)? },
        10 => {
            let n = r.count(1)?;
            let mut lists = Vec::with_capacity(n);
            for _ in 0..n {
                let m = r.count(2)?;
                let mut rows = Vec::with_capacity(m);
                for _ in 0..m {
                    rows.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
                }
                lists.push(rows);
            }
            Outcome::Matched(lists)
        }
        t => return Err(CodecError::UnknownTag(t)),
    })
}

fn encode_error(buf: &mut Vec<u8>, e: &ReplyError) {
    match e {
        ReplyError::Group(g) => match g {
            RequestError::NotLeader { leader_hint } => {
                buf.push(1);
                put_opt_u64(buf, *leader_hint);
            }
            RequestError::EpochNotMatch { current } => {
                buf.push(2);
                put_uvarint(buf, current.len() as u64);
                for d in current {
                    d.encode(buf);
                }
            }
            RequestError::KeyNotInRange { key, group, start, end } => {
                buf.push(3);
                put_bytes(buf, key);
                put_uvarint(buf, *group);
                put_bytes(buf, start);
                put_bytes(buf, end);
            }
            RequestError::StaleCommand => buf.push(4),
            RequestError::OutcomeUnknown => buf.push(5),
            RequestError::ProposalDropped => buf.push(6),
            RequestError::Busy { pending } => {
                buf.push(7);
                put_uvarint(buf, *pending as u64);
            }
            RequestError::Removed => buf.push(8),
            other @ (RequestError::AdminRejected(_) | RequestError::Malformed(_)) => {
                buf.push(11);
                put_bytes(buf, other.to_string().as_bytes());
            }
        },
        ReplyError::NoReplica => buf.push(9),
        ReplyError::Timeout => buf.push(10),
        ReplyError::Other(text) => {
            buf.push(11);
            put_bytes(buf, text.as_bytes());
        }
    }
}

fn decode_error(r: &mut Reader<'_>) -> Result<ReplyError, CodecError> {
    let group = |e| Ok(ReplyError::Group(e));
    match r.u8()? {
        1 => group(RequestError::NotLeader { leader_hint: opt_u64(r)?.map(|n: NodeId| n) }),
        2 => {
            // A descriptor takes at least 8 bytes (an id, two empty keys, epoch, three counts).
            let n = r.count(8)?;
            let mut current = Vec::with_capacity(n);
            for _ in 0..n {
                current.push(RangeDescriptor::decode(r)?);
            }
            group(RequestError::EpochNotMatch { current })
        }
        3 => group(RequestError::KeyNotInRange {
            key: r.bytes()?.to_vec(),
            group: r.uvarint()?,
            start: r.bytes()?.to_vec(),
            end: r.bytes()?.to_vec(),
        }),
        4 => group(RequestError::StaleCommand),
        5 => group(RequestError::OutcomeUnknown),
        6 => group(RequestError::ProposalDropped),
        7 => group(RequestError::Busy { pending: usize::try_from(r.uvarint()?).unwrap_or(usize::MAX) }),
        8 => group(RequestError::Removed),
        9 => Ok(ReplyError::NoReplica),
        10 => Ok(ReplyError::Timeout),
        11 => Ok(ReplyError::Other(String::from_utf8_lossy(r.bytes()?).into_owned())),
        t => Err(CodecError::UnknownTag(t)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..24)
    }

    fn desc() -> impl Strategy<Value = RangeDescriptor> {
        (any::<u64>(), bytes(), bytes(), any::<u64>(), proptest::collection::vec(1..9u64, 0..4)).prop_map(
            |(id, start, end, v, voters)| {
                let mut d = RangeDescriptor::new(id, start, end, &voters);
                d.epoch.version = v;
                d
            },
        )
    }

    fn query() -> impl Strategy<Value = Query> {
        prop_oneof![
            bytes().prop_map(|key| Query::Get { key }),
            (bytes(), bytes(), 0..10_000usize).prop_map(|(start, end, limit)| Query::Scan {
                start,
                end,
                limit
            }),
            (bytes(), proptest::collection::vec("[a-z/+#$\u{e9}]{0,8}", 0..4), any::<usize>())
                .prop_map(|(prefix, topics, limit)| Query::Match { prefix, topics, limit }),
        ]
    }

    pub(crate) fn request() -> impl Strategy<Value = Request> {
        let body = prop_oneof![
            (any::<u64>(), bytes()).prop_map(|(group, command)| RequestBody::Propose { group, command }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>(), query()).prop_map(
                |(group, version, conf_ver, lease, query)| RequestBody::Read {
                    group,
                    epoch: Epoch { version, conf_ver },
                    policy: if lease { ReadPolicy::Lease } else { ReadPolicy::ReadIndex },
                    query,
                }
            ),
            (bytes(), any::<u64>()).prop_map(|(client_id, epoch)| RequestBody::Kick { client_id, epoch }),
        ];
        (any::<u64>(), any::<u64>(), body).prop_map(|(id, timeout_ms, body)| Request { id, timeout_ms, body })
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Written),
            Just(Outcome::Noop),
            (any::<bool>(), proptest::option::of(bytes()))
                .prop_map(|(succeeded, previous)| Outcome::Cas { succeeded, previous }),
            proptest::option::of(bytes()).prop_map(Outcome::Value),
            proptest::collection::vec((bytes(), bytes()), 0..4).prop_map(Outcome::Rows),
            proptest::collection::vec(proptest::collection::vec((bytes(), bytes()), 0..3), 0..4)
                .prop_map(Outcome::Matched),
            desc().prop_map(Outcome::ConfChanged),
            desc().prop_map(Outcome::Split),
            (bytes(), proptest::option::of(any::<u64>()))
                .prop_map(|(key, current)| Outcome::GuardFailed { key, current }),
            (any::<u64>(), any::<u64>(), proptest::option::of(bytes()))
                .prop_map(|(epoch, generation, previous)| Outcome::Fenced { epoch, generation, previous }),
        ]
    }

    fn error() -> impl Strategy<Value = ReplyError> {
        prop_oneof![
            proptest::option::of(any::<u64>())
                .prop_map(|leader_hint| ReplyError::Group(RequestError::NotLeader { leader_hint })),
            proptest::collection::vec(desc(), 0..3)
                .prop_map(|current| ReplyError::Group(RequestError::EpochNotMatch { current })),
            (bytes(), any::<u64>(), bytes(), bytes()).prop_map(|(key, group, start, end)| ReplyError::Group(
                RequestError::KeyNotInRange { key, group, start, end }
            )),
            Just(ReplyError::Group(RequestError::StaleCommand)),
            Just(ReplyError::Group(RequestError::OutcomeUnknown)),
            Just(ReplyError::Group(RequestError::ProposalDropped)),
            (0..1000usize).prop_map(|pending| ReplyError::Group(RequestError::Busy { pending })),
            Just(ReplyError::Group(RequestError::Removed)),
            Just(ReplyError::NoReplica),
            Just(ReplyError::Timeout),
            "[a-z ]{0,12}".prop_map(ReplyError::Other),
        ]
    }

    pub(crate) fn reply() -> impl Strategy<Value = Reply> {
        let result = prop_oneof![outcome().prop_map(Ok), error().prop_map(Err)];
        (any::<u64>(), result).prop_map(|(id, result)| Reply { id, result })
    }

    fn match_request(topics: Vec<String>) -> Vec<u8> {
        let query = Query::Match { prefix: b"R\0\x01".to_vec(), topics, limit: 10 };
        let body = RequestBody::Read {
            group: 1,
            epoch: Epoch { version: 1, conf_ver: 1 },
            policy: ReadPolicy::Lease,
            query,
        };
        let mut buf = Vec::new();
        Request { id: 1, timeout_ms: 5, body }.encode(&mut buf);
        buf
    }

    #[test]
    fn a_match_of_too_many_topics_or_bad_utf8_is_refused() {
        let ok = match_request(vec!["a".into(); MATCH_TOPICS_MAX]);
        assert!(Request::decode(&mut Reader::new(&ok)).is_ok());
        let many = match_request(vec!["a".into(); MATCH_TOPICS_MAX + 1]);
        let refused = Request::decode(&mut Reader::new(&many));
        assert_eq!(refused, Err(CodecError::LengthTooLarge(MATCH_TOPICS_MAX as u64 + 1)));
        let mut bad = match_request(vec!["ab".into()]);
        let at = bad.windows(2).position(|w| w == b"ab").expect("topic bytes");
        bad[at] = 0xff;
        assert!(Request::decode(&mut Reader::new(&bad)).is_err());
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request()) {
            let mut buf = Vec::new();
            req.encode(&mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(Request::decode(&mut r), Ok(req));
            prop_assert_eq!(r.finish(), Ok(()));
        }

        #[test]
        fn replies_round_trip(reply in reply()) {
            let mut buf = Vec::new();
            reply.encode(&mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(Reply::decode(&mut r), Ok(reply));
            prop_assert_eq!(r.finish(), Ok(()));
        }

        #[test]
        fn truncated_requests_and_replies_are_errors(req in request(), reply in reply(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            req.encode(&mut buf);
            let at = cut.index(buf.len());
            prop_assert!(Request::decode(&mut Reader::new(&buf[..at])).is_err());
            buf.clear();
            reply.encode(&mut buf);
            let at = cut.index(buf.len());
            prop_assert!(Reply::decode(&mut Reader::new(&buf[..at])).is_err());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Request::decode(&mut Reader::new(&data));
            let _ = Reply::decode(&mut Reader::new(&data));
        }
    }
}
