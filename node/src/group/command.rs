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
//! ```
//!
//! Invariants: `decode(encode(c)) == c`; decoding is total (errors, never panics), so a bad
//! entry is rejected identically on every replica. The epoch travels with the command so
//! apply can refuse a command proposed against a range that has since changed.

use super::range::{Epoch, GroupId};
use crate::codec::{CodecError, Reader, put_bytes, put_opt_bytes, put_uvarint};

const FORMAT_V1: u8 = 1;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CAS: u8 = 3;
const TAG_SPLIT: u8 = 4;

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
}

impl Command {
    /// The key the command touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. }
            | Self::Delete { key }
            | Self::CompareAndSet { key, .. }
            | Self::Split { key, .. } => key,
        }
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
            t => return Err(CodecError::UnknownTag(t)),
        };
        r.finish()?;
        Ok((epoch, cmd))
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
