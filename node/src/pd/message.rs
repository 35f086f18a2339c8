//! CORE. The placement driver's messages between nodes, carried opaque in the cluster
//! transport's `Pd` frames, and their compact binary codec.
//!
//! ```text
//! message := version:u8 = 1 | tag:u8 | body
//!   tag 1 Heartbeat  node admin:opt_bytes capacity available busy:u8
//!                    count (label:bytes value:bytes)* replicas count range*
//!   tag 2 Ack        leader admin:opt_bytes
//!   tag 3 NotLeader  leader:uvarint (0 = unknown)
//!   tag 4 Step       operator group version conf_ver action
//!   tag 5 Create     desc                               (create an initial replica)
//!   tag 6 Ranges     version count (desc leader)*       (the PD's range table; leader 0 =
//!                                                       unknown)
//! heartbeats end with ranges_version (the PD table version the node holds)
//! desc   := id start:bytes end:bytes version conf_ver voters outgoing learners
//!           (node lists: count id*; `RangeDescriptor::encode`, shared with Create/Ranges)
//! range  := desc pending keys size write_keys_per_sec write_bytes_per_sec
//!           (a report is the descriptor plus the leader's load)
//! action := tag:u8 (1 add-learner node | 2 promote node | 3 remove node |
//!           4 transfer-leader to | 5 split opt_key new_group | 6 merge target)
//! ```
//!
//! Integers are LEB128 varints. Invariants: `decode(encode(m)) == m`; decoding is total
//! (hostile input gives a [`CodecError`], never a panic; counts are checked against the
//! remaining input before anything is allocated); trailing bytes are refused.

use std::net::SocketAddr;

use crate::codec::{CodecError, Reader, put_bytes, put_opt_bytes, put_uvarint};
use crate::group::{Epoch, GroupId, NodeId, RangeDescriptor};

const VERSION_V1: u8 = 1;
const TAG_HEARTBEAT: u8 = 1;
const TAG_ACK: u8 = 2;
const TAG_NOT_LEADER: u8 = 3;
const TAG_STEP: u8 = 4;
const TAG_CREATE: u8 = 5;
const TAG_RANGES: u8 = 6;
/// Smallest encoded range report: a descriptor, the pending count and four load varints.
const RANGE_REPORT_BYTES_MIN: usize = RangeDescriptor::ENCODED_BYTES_MIN + 5;
/// Smallest entry of a `Ranges` table: a descriptor and a leader varint.
const TABLE_ENTRY_BYTES_MIN: usize = RangeDescriptor::ENCODED_BYTES_MIN + 1;

/// One placement-driver message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PdMessage {
    /// A node's periodic report, to the PD leader.
    Heartbeat(NodeReport),
    /// The PD leader's answer to a heartbeat: who leads PD and where its admin API is.
    Ack {
        /// The PD leader.
        leader: NodeId,
        /// Its admin endpoint, if it runs one.
        admin: Option<SocketAddr>,
    },
    /// A heartbeat reached a node that does not lead PD.
    NotLeader {
        /// The PD leader, if this node knows it.
        leader: Option<NodeId>,
    },
    /// The PD leader asks a range leader to take one operator step.
    Step(StepCommand),
    /// The PD leader asks a voter of a new range to create its initial replica (the
    /// keyspace bootstrap); a replica that exists already is left as it is.
    Create(RangeDescriptor),
    /// The PD leader's range table, for a node whose version differs.
    Ranges {
        /// The table's version (a content hash; 0 is never used).
        version: u64,
        /// Every range the PD knows, with its leader if known.
        ranges: Vec<(RangeDescriptor, Option<NodeId>)>,
    },
}

/// A node's heartbeat: its capacity and the ranges it leads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The reporting node.
    pub node: NodeId,
    /// Its admin endpoint, if it runs one.
    pub admin: Option<SocketAddr>,
    /// Bytes of storage for replicas.
    pub capacity_bytes: u64,
    /// Bytes still free.
    pub available_bytes: u64,
    /// Overloaded: receive no new replicas for now.
    pub busy: bool,
    /// Failure-domain labels (e.g. `zone`).
    pub labels: Vec<(String, String)>,
    /// Replicas hosted (led or not).
    pub replicas: u64,
    /// Ranges this node leads whose report is due (changed, or its periodic turn).
    pub ranges: Vec<RangeReport>,
    /// The version of the PD range table this node holds (0: none).
    pub ranges_version: u64,
}

/// A range leader's report of its range: the applied descriptor plus the range's load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeReport {
    /// The range as the leader applied it (bounds, epoch, members).
    pub desc: RangeDescriptor,
    /// Replicas still catching up.
    pub pending: Vec<NodeId>,
    /// Keys stored.
    pub keys: u64,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Writes applied per second, recently.
    pub write_keys_per_sec: u64,
    /// Bytes written per second, recently.
    pub write_bytes_per_sec: u64,
}

/// One operator step for a range leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepCommand {
    /// The operator (for logs and the PD's bookkeeping).
    pub operator: u64,
    /// The range.
    pub group: GroupId,
    /// The epoch the step was planned against; the leader refuses it on mismatch.
    pub epoch: Epoch,
    /// What to do.
    pub action: StepAction,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepAction {
    /// Add a learner on the node.
    AddLearner(NodeId),
    /// Promote the learner on the node to voter.
    Promote(NodeId),
    /// Remove the node's replica.
    Remove(NodeId),
    /// Hand leadership to the node.
    TransferLeader(NodeId),
    /// Split at the key (or the leader's choice of middle) into a new group.
    Split {
        /// Where to cut; `None` = the middle of the leader's data.
        key: Option<Vec<u8>>,
        /// The new group's id, minted by the PD.
        new_group: GroupId,
    },
    /// Merge into the adjacent group.
    Merge(GroupId),
}

impl PdMessage {
    /// The encoded message.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![VERSION_V1];
        match self {
            Self::Heartbeat(r) => {
                buf.push(TAG_HEARTBEAT);
                encode_report(&mut buf, r);
            }
            Self::Ack { leader, admin } => {
                buf.push(TAG_ACK);
                put_uvarint(&mut buf, *leader);
                put_opt_bytes(&mut buf, admin.map(|a| a.to_string()).as_deref().map(str::as_bytes));
            }
            Self::NotLeader { leader } => {
                buf.push(TAG_NOT_LEADER);
                put_uvarint(&mut buf, leader.unwrap_or(0));
            }
            Self::Step(c) => {
                buf.push(TAG_STEP);
                put_uvarint(&mut buf, c.operator);
                put_uvarint(&mut buf, c.group);
                put_uvarint(&mut buf, c.epoch.version);
                put_uvarint(&mut buf, c.epoch.conf_ver);
                encode_action(&mut buf, &c.action);
            }
            Self::Create(desc) => {
                buf.push(TAG_CREATE);
                desc.encode(&mut buf);
            }
            Self::Ranges { version, ranges } => {
                buf.push(TAG_RANGES);
                put_uvarint(&mut buf, *version);
                put_uvarint(&mut buf, ranges.len() as u64);
                for (desc, leader) in ranges {
                    desc.encode(&mut buf);
                    put_uvarint(&mut buf, leader.unwrap_or(0));
                }
            }
        }
        buf
    }

    /// Decodes a message.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION_V1 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let msg = match r.u8()? {
            TAG_HEARTBEAT => Self::Heartbeat(decode_report(&mut r)?),
            TAG_ACK => Self::Ack { leader: r.uvarint()?, admin: decode_addr(&mut r)? },
            TAG_NOT_LEADER => Self::NotLeader { leader: Some(r.uvarint()?).filter(|&l| l != 0) },
            TAG_STEP => Self::Step(StepCommand {
                operator: r.uvarint()?,
                group: r.uvarint()?,
                epoch: Epoch { version: r.uvarint()?, conf_ver: r.uvarint()? },
                action: decode_action(&mut r)?,
            }),
            TAG_CREATE => Self::Create(RangeDescriptor::decode(&mut r)?),
            TAG_RANGES => {
                let version = r.uvarint()?;
                let n = r.count(TABLE_ENTRY_BYTES_MIN)?;
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    let desc = RangeDescriptor::decode(&mut r)?;
                    ranges.push((desc, Some(r.uvarint()?).filter(|&l| l != 0)));
                }
                Self::Ranges { version, ranges }
            }
            t => return Err(CodecError::UnknownTag(t)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn encode_report(buf: &mut Vec<u8>, r: &NodeReport) {
    put_uvarint(buf, r.node);
    put_opt_bytes(buf, r.admin.map(|a| a.to_string()).as_deref().map(str::as_bytes));
    put_uvarint(buf, r.capacity_bytes);
    put_uvarint(buf, r.available_bytes);
    buf.push(u8::from(r.busy));
    put_uvarint(buf, r.labels.len() as u64);
    for (k, v) in &r.labels {
        put_bytes(buf, k.as_bytes());
        put_bytes(buf, v.as_bytes());
    }
    put_uvarint(buf, r.replicas);
    put_uvarint(buf, r.ranges.len() as u64);
    for range in &r.ranges {
        encode_range(buf, range);
    }
    put_uvarint(buf, r.ranges_version);
}

fn decode_report(r: &mut Reader<'_>) -> Result<NodeReport, CodecError> {
    let node = r.uvarint()?;
    let admin = decode_addr(r)?;
    let capacity_bytes = r.uvarint()?;
    let available_bytes = r.uvarint()?;
    let busy = match r.u8()? {
        0 => false,
        1 => true,
        t => return Err(CodecError::UnknownTag(t)),
    };
    let n = r.count(2)?;
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        labels.push((utf8(r.bytes()?)?, utf8(r.bytes()?)?));
    }
    let replicas = r.uvarint()?;
    let n = r.count(RANGE_REPORT_BYTES_MIN)?;
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        ranges.push(decode_range(r)?);
    }
    let ranges_version = r.uvarint()?;
    Ok(NodeReport {
        node,
        admin,
        capacity_bytes,
        available_bytes,
        busy,
        labels,
        replicas,
        ranges,
        ranges_version,
    })
}

fn encode_range(buf: &mut Vec<u8>, r: &RangeReport) {
    r.desc.encode(buf);
    put_uvarint(buf, r.pending.len() as u64);
    for &n in &r.pending {
        put_uvarint(buf, n);
    }
    for v in [r.keys, r.size_bytes, r.write_keys_per_sec, r.write_bytes_per_sec] {
        put_uvarint(buf, v);
    }
}

fn decode_range(r: &mut Reader<'_>) -> Result<RangeReport, CodecError> {
    let desc = RangeDescriptor::decode(r)?;
    let n = r.count(1)?;
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        pending.push(r.uvarint()?);
    }
    Ok(RangeReport {
        desc,
        pending,
        keys: r.uvarint()?,
        size_bytes: r.uvarint()?,
        write_keys_per_sec: r.uvarint()?,
        write_bytes_per_sec: r.uvarint()?,
    })
}

fn encode_action(buf: &mut Vec<u8>, a: &StepAction) {
    match a {
        StepAction::AddLearner(n) => put_tagged(buf, 1, *n),
        StepAction::Promote(n) => put_tagged(buf, 2, *n),
        StepAction::Remove(n) => put_tagged(buf, 3, *n),
        StepAction::TransferLeader(n) => put_tagged(buf, 4, *n),
        StepAction::Split { key, new_group } => {
            buf.push(5);
            put_opt_bytes(buf, key.as_deref());
            put_uvarint(buf, *new_group);
        }
        StepAction::Merge(target) => put_tagged(buf, 6, *target),
    }
}

fn put_tagged(buf: &mut Vec<u8>, tag: u8, v: u64) {
    buf.push(tag);
    put_uvarint(buf, v);
}

fn decode_action(r: &mut Reader<'_>) -> Result<StepAction, CodecError> {
    Ok(match r.u8()? {
        1 => StepAction::AddLearner(r.uvarint()?),
        2 => StepAction::Promote(r.uvarint()?),
        3 => StepAction::Remove(r.uvarint()?),
        4 => StepAction::TransferLeader(r.uvarint()?),
        5 => StepAction::Split { key: r.opt_bytes()?.map(<[u8]>::to_vec), new_group: r.uvarint()? },
        6 => StepAction::Merge(r.uvarint()?),
        t => return Err(CodecError::UnknownTag(t)),
    })
}

fn utf8(bytes: &[u8]) -> Result<String, CodecError> {
    // A label that is not UTF-8 is as malformed as an unknown tag.
    String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::UnknownTag(0))
}

fn decode_addr(r: &mut Reader<'_>) -> Result<Option<SocketAddr>, CodecError> {
    match r.opt_bytes()? {
        None => Ok(None),
        Some(b) => {
            let addr = std::str::from_utf8(b).ok().and_then(|s| s.parse().ok());
            addr.map(Some).ok_or(CodecError::UnknownTag(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn report() -> NodeReport {
        NodeReport {
            node: 4,
            admin: Some("127.0.0.1:9004".parse().expect("addr")),
            capacity_bytes: 1 << 40,
            available_bytes: 1 << 39,
            busy: true,
            labels: vec![("zone".into(), "b".into())],
            replicas: 1200,
            ranges: vec![
                RangeReport {
                    desc: RangeDescriptor {
                        id: 7,
                        start: b"t1/a".to_vec(),
                        end: b"t1/m".to_vec(),
                        epoch: Epoch { version: 3, conf_ver: 9 },
                        voters: vec![1, 2, 4],
                        outgoing: vec![],
                        learners: vec![5],
                    },
                    pending: vec![5],
                    keys: 10,
                    size_bytes: 1000,
                    write_keys_per_sec: 5,
                    write_bytes_per_sec: 500,
                },
                RangeReport {
                    desc: RangeDescriptor { id: u64::MAX, ..RangeDescriptor::default() },
                    ..RangeReport::default()
                },
            ],
            ranges_version: 77,
        }
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            PdMessage::Heartbeat(report()),
            PdMessage::Heartbeat(NodeReport::default()),
            PdMessage::Ack { leader: 2, admin: Some("[::1]:80".parse().expect("addr")) },
            PdMessage::Ack { leader: 2, admin: None },
            PdMessage::NotLeader { leader: Some(3) },
            PdMessage::NotLeader { leader: None },
            PdMessage::Step(StepCommand {
                operator: 12,
                group: 7,
                epoch: Epoch { version: 1, conf_ver: 4 },
                action: StepAction::AddLearner(5),
            }),
            PdMessage::Step(StepCommand {
                operator: 1,
                group: 2,
                epoch: Epoch::default(),
                action: StepAction::Split { key: Some(b"k".to_vec()), new_group: 1 << 62 },
            }),
            PdMessage::Step(StepCommand {
                operator: 1,
                group: 2,
                epoch: Epoch::default(),
                action: StepAction::Split { key: None, new_group: 9 },
            }),
            PdMessage::Create(RangeDescriptor::new(1 << 63, b"S".to_vec(), b"T".to_vec(), &[1, 2, 3])),
            PdMessage::Ranges {
                version: 9,
                ranges: vec![
                    (RangeDescriptor::new(4, b"a".to_vec(), b"b".to_vec(), &[1]), Some(1)),
                    (RangeDescriptor::new(5, b"b".to_vec(), Vec::new(), &[2, 3]), None),
                ],
            },
            PdMessage::Ranges { version: 1, ranges: Vec::new() },
        ];
        for m in msgs {
            assert_eq!(PdMessage::decode(&m.encode()).expect("decodes"), m);
        }
        for a in [
            StepAction::Promote(1),
            StepAction::Remove(2),
            StepAction::TransferLeader(3),
            StepAction::Merge(9),
        ] {
            let m =
                PdMessage::Step(StepCommand { operator: 1, group: 1, epoch: Epoch::default(), action: a });
            assert_eq!(PdMessage::decode(&m.encode()).expect("decodes"), m);
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(matches!(PdMessage::decode(&[]), Err(CodecError::Truncated)));
        assert!(matches!(PdMessage::decode(&[2, 1]), Err(CodecError::UnsupportedVersion(2))));
        assert!(matches!(PdMessage::decode(&[1, 9]), Err(CodecError::UnknownTag(9))));
        let mut trailing = PdMessage::NotLeader { leader: None }.encode();
        trailing.push(0);
        assert!(matches!(PdMessage::decode(&trailing), Err(CodecError::TrailingBytes(1))));
        // A range count far beyond what the input holds.
        let huge = [1, TAG_HEARTBEAT, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x03];
        assert!(PdMessage::decode(&huge).is_err());
    }

    #[test]
    fn a_range_report_is_its_descriptor_then_its_load() {
        let range = report().ranges.swap_remove(0);
        let mut desc = Vec::new();
        range.desc.encode(&mut desc);
        let mut buf = Vec::new();
        encode_range(&mut buf, &range);
        assert!(buf.starts_with(&desc), "the descriptor's own encoding comes first");
        // pending [5], then keys, size, write keys/s, write bytes/s.
        assert_eq!(&buf[desc.len()..], &[1, 5, 10, 0xe8, 0x07, 5, 0xf4, 0x03]);
    }

    #[test]
    fn many_smallest_range_reports_round_trip() {
        let ranges = (0..50).map(|id| RangeReport {
            desc: RangeDescriptor { id, ..RangeDescriptor::default() },
            ..RangeReport::default()
        });
        let m = PdMessage::Heartbeat(NodeReport { ranges: ranges.collect(), ..NodeReport::default() });
        let bytes = m.encode();
        assert_eq!(PdMessage::decode(&bytes).expect("decodes"), m);
    }

    #[test]
    fn counts_beyond_the_input_are_refused_before_allocating() {
        // One range report whose descriptor claims 2^32 voters.
        let mut hb = vec![VERSION_V1, TAG_HEARTBEAT, 1, 0, 0, 0, 0, 0, 0, 1];
        hb.extend([7, 0, 0, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x10]);
        hb.extend([0; 16]);
        assert!(matches!(PdMessage::decode(&hb), Err(CodecError::LengthTooLarge(_))));
        // A valid descriptor, then a pending count far beyond the rest.
        let mut hb = vec![VERSION_V1, TAG_HEARTBEAT, 1, 0, 0, 0, 0, 0, 0, 1];
        RangeDescriptor::new(7, Vec::new(), Vec::new(), &[1]).encode(&mut hb);
        hb.extend([0xff, 0xff, 0x03, 0, 0, 0, 0, 0]);
        assert!(matches!(PdMessage::decode(&hb), Err(CodecError::LengthTooLarge(_))));
        // A range table claiming more entries than its bytes could hold.
        let table = [VERSION_V1, TAG_RANGES, 1, 3, 1, 0, 0, 1, 1, 0, 0, 0, 0];
        assert!(matches!(PdMessage::decode(&table), Err(CodecError::LengthTooLarge(3))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PdMessage::decode(&data);
        }

        #[test]
        fn flipped_bytes_of_a_valid_heartbeat_never_panic(at in 0usize..200, byte in any::<u8>()) {
            let mut bytes = PdMessage::Heartbeat(report()).encode();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(m) = PdMessage::decode(&bytes) {
                prop_assert_eq!(PdMessage::decode(&m.encode()).expect("re-decodes"), m);
            }
        }

        #[test]
        fn truncations_of_a_valid_message_are_errors(cut in 0usize..200) {
            let bytes = PdMessage::Heartbeat(report()).encode();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(PdMessage::decode(&bytes[..cut]).is_err());
        }
    }
}
