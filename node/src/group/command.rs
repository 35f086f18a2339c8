//! CORE. The commands a group's log carries, and their compact binary codec.
//!
//! Layout of a normal entry's data (all integers LEB128 varints, byte strings length-prefixed):
//!
//! ```text
//! format:u8 = 1 | epoch.version | epoch.conf_ver | tag:u8 | fields...
//!   tag 1 Put    key value
//!   tag 2 Delete key
//!   tag 3 Cas    key expected:opt new:opt     (opt = 0 | 1 bytes)
//!   tag 4 Split  key new_group
//!   tag 5 Batch  count guard* count op*       guard := key epoch
//!                                             op := 1 key value | 2 key | 3 start end
//!   tag 6 Fence  key body new_generation:u8 clear:opt(start end)
//!   tag 8 DeleteRange start end
//! ```
//!
//! Fencing values (`Batch` guards, `Fence`): a fenced record's value starts with
//! `epoch:u64 | generation:u64` (big endian), then the caller's body. A guard holds iff the
//! key's value exists, is at least 8 bytes long and starts with the guard's epoch.
//!
//! Invariants: `decode(encode(c)) == c`; decoding is total (errors, never panics), so a bad
//! entry is rejected identically on every replica. The epoch travels with the command so
//! apply can refuse a command proposed against a range that has since changed.

use super::error::RequestError;
use super::range::{Epoch, GroupId, RangeDescriptor};
use crate::codec::{CodecError, Reader, put_bytes, put_opt_bytes, put_uvarint};

const FORMAT_V1: u8 = 1;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CAS: u8 = 3;
const TAG_SPLIT: u8 = 4;
const TAG_BATCH: u8 = 5;
const TAG_FENCE: u8 = 6;
const TAG_DELETE_RANGE: u8 = 8;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;
/// Bytes of the fencing header (`epoch | generation`) of a fenced record.
pub const FENCE_HEADER_BYTES: usize = 16;

/// The fencing epoch stored at the head of a fenced record's value, if it has one.
pub fn fence_epoch(value: &[u8]) -> Option<u64> {
    value.get(..8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// The generation stored after the epoch of a fenced record's value, if it has one.
pub fn fence_generation(value: &[u8]) -> Option<u64> {
    value.get(8..16).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// A condition of a [`Command::Batch`]: `key` holds a fenced record at exactly `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// The fenced record.
    pub key: Vec<u8>,
    /// The epoch it must hold.
    pub epoch: u64,
}

/// One write of a [`Command::Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key in `[start, end)`.
    DeleteRange {
        /// First key removed.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}

/// A state-machine command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (a no-op if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (or removes it if `None`) iff its value equals `expected`
    /// (`None` = must be absent).
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The value required before the swap; `None` requires absence.
        expected: Option<Vec<u8>>,
        /// The value after the swap; `None` deletes.
        new: Option<Vec<u8>>,
    },
    /// Splits the range at `key`: this group keeps `[start, key)`, group `new_group` gets
    /// `[key, end)` with the same members (an admin command, proposed by the leader).
    Split {
        /// The first key of the new group.
        key: Vec<u8>,
        /// The new group's id (minted by the placement driver).
        new_group: GroupId,
    },
    /// Applies every op, or none of them if a guard does not hold. All keys lie in the range.
    Batch {
        /// Conditions checked before any op.
        guards: Vec<Guard>,
        /// The writes, in order.
        ops: Vec<BatchOp>,
    },
    /// Bumps the fencing epoch of the record at `key` (absent = epoch 0, generation 0),
    /// replaces its body with `body`, bumps its generation if `new_generation`, and removes
    /// the keys in `clear`; returns the previous value.
    Fence {
        /// The fenced record.
        key: Vec<u8>,
        /// The record's new body (after the fencing header).
        body: Vec<u8>,
        /// Whether the generation is bumped too.
        new_generation: bool,
        /// A span `[start, end)` removed with the fence.
        clear: Option<(Vec<u8>, Vec<u8>)>,
    },
    /// Removes every key in `[start, end)` (empty `end` = to the range's end).
    DeleteRange {
        /// First key removed.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}

impl BatchOp {
    fn check_keys(&self, desc: &RangeDescriptor) -> Result<(), RequestError> {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => desc.check_key(key),
            Self::DeleteRange { start, end } => check_span(desc, start, end),
        }
    }

    fn first_key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
            Self::DeleteRange { start, .. } => start,
        }
    }
}

/// `KeyNotInRange` (naming `start`) unless `[start, end)` lies inside the range.
fn check_span(desc: &RangeDescriptor, start: &[u8], end: &[u8]) -> Result<(), RequestError> {
    let ordered = end.is_empty() || start <= end;
    if ordered && desc.contains_span(start, end) {
        return Ok(());
    }
    Err(RequestError::KeyNotInRange {
        key: start.to_vec(),
        group: desc.id,
        start: desc.start.clone(),
        end: desc.end.clone(),
    })
}

impl Command {
    /// The key the command is routed by (the first key it touches).
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. }
            | Self::Delete { key }
            | Self::CompareAndSet { key, .. }
            | Self::Split { key, .. }
            | Self::Fence { key, .. } => key,
            Self::DeleteRange { start, .. } => start,
            Self::Batch { guards, ops } => match (guards.first(), ops.first()) {
                (Some(g), _) => &g.key,
                (None, Some(op)) => op.first_key(),
                (None, None) => &[],
            },
        }
    }

    /// `KeyNotInRange` unless every key and span the command touches lies in `desc`'s range.
    pub fn check_keys(&self, desc: &RangeDescriptor) -> Result<(), RequestError> {
        match self {
            Self::Batch { guards, ops } => {
                guards.iter().try_for_each(|g| desc.check_key(&g.key))?;
                ops.iter().try_for_each(|op| op.check_keys(desc))
            }
            Self::Fence { key, clear, .. } => {
                desc.check_key(key)?;
                clear.as_ref().map_or(Ok(()), |(start, end)| check_span(desc, start, end))
            }
            Self::DeleteRange { start, end } => check_span(desc, start, end),
            _ => desc.check_key(self.key()),
        }
    }

    /// Whether applying the command twice leaves the same state as applying it once (a
    /// client may retry it when the first attempt's outcome is unknown).
    pub fn is_idempotent(&self) -> bool {
        matches!(self, Self::Put { .. } | Self::Delete { .. } | Self::DeleteRange { .. } | Self::Batch { .. })
    }

    /// Encodes the command proposed at `epoch`.
    pub fn encode(&self, epoch: Epoch) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 + self.key().len());
        buf.push(FORMAT_V1);
        put_uvarint(&mut buf, epoch.version);
        put_uvarint(&mut buf, epoch.conf_ver);
        match self {
            Self::Put { key, value } => {
                buf.push(TAG_PUT);
                put_bytes(&mut buf, key);
                put_bytes(&mut buf, value);
            }
            Self::Delete { key } => {
                buf.push(TAG_DELETE);
                put_bytes(&mut buf, key);
            }
            Self::CompareAndSet { key, expected, new } => {
                buf.push(TAG_CAS);
                put_bytes(&mut buf, key);
                put_opt_bytes(&mut buf, expected.as_deref());
                put_opt_bytes(&mut buf, new.as_deref());
            }
            Self::Split { key, new_group } => {
                buf.push(TAG_SPLIT);
                put_bytes(&mut buf, key);
                put_uvarint(&mut buf, *new_group);
            }
            Self::Batch { guards, ops } => {
                buf.push(TAG_BATCH);
                put_uvarint(&mut buf, guards.len() as u64);
                for g in guards {
                    put_bytes(&mut buf, &g.key);
                    put_uvarint(&mut buf, g.epoch);
                }
                put_uvarint(&mut buf, ops.len() as u64);
                for op in ops {
                    encode_op(&mut buf, op);
                }
            }
            Self::Fence { key, body, new_generation, clear } => {
                buf.push(TAG_FENCE);
                put_bytes(&mut buf, key);
                put_bytes(&mut buf, body);
                buf.push(u8::from(*new_generation));
                match clear {
                    None => buf.push(0),
                    Some((start, end)) => {
                        buf.push(1);
                        put_bytes(&mut buf, start);
                        put_bytes(&mut buf, end);
                    }
                }
            }
            Self::DeleteRange { start, end } => {
                buf.push(TAG_DELETE_RANGE);
                put_bytes(&mut buf, start);
                put_bytes(&mut buf, end);
            }
        }
        buf
    }

    /// Decodes an entry's data into the proposer's epoch and the command.
    pub fn decode(data: &[u8]) -> Result<(Epoch, Self), CodecError> {
        let mut r = Reader::new(data);
        let epoch = decode_epoch_header(&mut r)?;
        let cmd = match r.u8()? {
            TAG_PUT => Self::Put { key: r.bytes()?.to_vec(), value: r.bytes()?.to_vec() },
            TAG_DELETE => Self::Delete { key: r.bytes()?.to_vec() },
            TAG_CAS => Self::CompareAndSet {
                key: r.bytes()?.to_vec(),
                expected: r.opt_bytes()?.map(<[u8]>::to_vec),
                new: r.opt_bytes()?.map(<[u8]>::to_vec),
            },
            TAG_SPLIT => Self::Split { key: r.bytes()?.to_vec(), new_group: r.uvarint()? },
            TAG_BATCH => decode_batch(&mut r)?,
            TAG_FENCE => Self::Fence {
                key: r.bytes()?.to_vec(),
                body: r.bytes()?.to_vec(),
                new_generation: decode_flag(&mut r)?,
                clear: match decode_flag(&mut r)? {
                    false => None,
                    true => Some((r.bytes()?.to_vec(), r.bytes()?.to_vec())),
                },
            },
            TAG_DELETE_RANGE => Self::DeleteRange { start: r.bytes()?.to_vec(), end: r.bytes()?.to_vec() },
            t => return Err(CodecError::UnknownTag(t)),
        };
        r.finish()?;
        Ok((epoch, cmd))
    }
}

fn encode_op(buf: &mut Vec<u8>, op: &BatchOp) {
    match op {
        BatchOp::Put { key, value } => {
            buf.push(OP_PUT);
            put_bytes(buf, key);
            put_bytes(buf, value);
        }
        BatchOp::Delete { key } => {
            buf.push(OP_DELETE);
            put_bytes(buf, key);
        }
        BatchOp::DeleteRange { start, end } => {
            buf.push(OP_DELETE_RANGE);
            put_bytes(buf, start);
            put_bytes(buf, end);
        }
    }
}

fn decode_batch(r: &mut Reader<'_>) -> Result<Command, CodecError> {
    let n = r.count(2)?;
    let mut guards = Vec::with_capacity(n);
    for _ in 0..n {
        guards.push(Guard { key: r.bytes()?.to_vec(), epoch: r.uvarint()? });
    }
    let n = r.count(2)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        ops.push(match r.u8()? {
            OP_PUT => BatchOp::Put { key: r.bytes()?.to_vec(), value: r.bytes()?.to_vec() },
            OP_DELETE => BatchOp::Delete { key: r.bytes()?.to_vec() },
            OP_DELETE_RANGE => BatchOp::DeleteRange { start: r.bytes()?.to_vec(), end: r.bytes()?.to_vec() },
            t => return Err(CodecError::UnknownTag(t)),
        });
    }
    Ok(Command::Batch { guards, ops })
}

fn decode_flag(r: &mut Reader<'_>) -> Result<bool, CodecError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        t => Err(CodecError::UnknownTag(t)),
    }
}

/// Encodes just the epoch header; conf-change entries carry it as their context.
pub(crate) fn encode_epoch_header(epoch: Epoch) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8);
    buf.push(FORMAT_V1);
    put_uvarint(&mut buf, epoch.version);
    put_uvarint(&mut buf, epoch.conf_ver);
    buf
}

/// Reads the header written by [`encode_epoch_header`].
pub(crate) fn decode_epoch_header(r: &mut Reader<'_>) -> Result<Epoch, CodecError> {
    match r.u8()? {
        FORMAT_V1 => Ok(Epoch { version: r.uvarint()?, conf_ver: r.uvarint()? }),
        v => Err(CodecError::UnsupportedVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..40)
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (bytes(), bytes()).prop_map(|(key, value)| Command::Put { key, value }),
            bytes().prop_map(|key| Command::Delete { key }),
            (bytes(), proptest::option::of(bytes()), proptest::option::of(bytes()))
                .prop_map(|(key, expected, new)| Command::CompareAndSet { key, expected, new }),
            (bytes(), any::<u64>()).prop_map(|(key, new_group)| Command::Split { key, new_group }),
            (proptest::collection::vec((bytes(), any::<u64>()), 0..3), proptest::collection::vec(op(), 0..4))
                .prop_map(|(guards, ops)| Command::Batch {
                    guards: guards.into_iter().map(|(key, epoch)| Guard { key, epoch }).collect(),
                    ops,
                }),
            (bytes(), bytes(), any::<bool>(), proptest::option::of((bytes(), bytes()))).prop_map(
                |(key, body, new_generation, clear)| Command::Fence { key, body, new_generation, clear }
            ),
            (bytes(), bytes()).prop_map(|(start, end)| Command::DeleteRange { start, end }),
        ]
    }

    fn op() -> impl Strategy<Value = BatchOp> {
        prop_oneof![
            (bytes(), bytes()).prop_map(|(key, value)| BatchOp::Put { key, value }),
            bytes().prop_map(|key| BatchOp::Delete { key }),
            (bytes(), bytes()).prop_map(|(start, end)| BatchOp::DeleteRange { start, end }),
        ]
    }

    proptest! {
        #[test]
        fn command_round_trips(cmd in command(), version in any::<u64>(), conf_ver in any::<u64>()) {
            let epoch = Epoch { version, conf_ver };
            let data = cmd.encode(epoch);
            prop_assert_eq!(Command::decode(&data), Ok((epoch, cmd)));
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Command::decode(&data);
        }
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_unknown_tags() {
        let mut data = Command::Delete { key: b"k".to_vec() }.encode(Epoch::default());
        data.push(0);
        assert_eq!(Command::decode(&data), Err(CodecError::TrailingBytes(1)));
        assert_eq!(Command::decode(&[1, 0, 0, 9]), Err(CodecError::UnknownTag(9)));
        assert_eq!(Command::decode(&[2]), Err(CodecError::UnsupportedVersion(2)));
    }
}
