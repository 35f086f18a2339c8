//! CORE. The snapshot (and checkpoint) data format: the range descriptor and the whole
//! state machine, behind a format byte.
//!
//! ```text
//! format:u8 = 1 | descriptor | kv (count, then key value pairs in key order)
//! ```
//!
//! A snapshot's raft metadata (index, term, conf state) says which applied prefix it holds.
//! Checkpoints written locally and snapshots sent to followers share this format, so a
//! restarted replica and a new learner start the same way.

use raft::eraftpb::{ConfState, Snapshot};

use super::range::RangeDescriptor;
use super::sm::StateMachine;
use crate::codec::{CodecError, Reader};

const FORMAT_V1: u8 = 1;

/// Builds a snapshot of `kv` and `desc` at applied `index`/`term` with `conf_state`.
pub(crate) fn encode_snapshot<S: StateMachine>(
    desc: &RangeDescriptor,
    kv: &S,
    index: u64,
    term: u64,
    conf_state: ConfState,
) -> Snapshot {
    let mut data = Vec::with_capacity(64 + kv.bytes());
    data.push(FORMAT_V1);
    desc.encode(&mut data);
    kv.snapshot(&mut data);
    let mut snap = Snapshot { data: data.into(), ..Snapshot::default() };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    snap
}

/// Reads the descriptor and state machine out of a snapshot's data.
pub(crate) fn decode_snapshot_data<S: StateMachine>(data: &[u8]) -> Result<(RangeDescriptor, S), CodecError> {
    let mut r = Reader::new(data);
    match r.u8()? {
        FORMAT_V1 => {}
        v => return Err(CodecError::UnsupportedVersion(v)),
    }
    let desc = RangeDescriptor::decode(&mut r)?;
    let kv = S::restore(r.rest())?;
    Ok((desc, kv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::KvState;
    use crate::group::command::Command;

    #[test]
    fn snapshot_round_trips() {
        let desc = RangeDescriptor::new(3, b"a".to_vec(), b"m".to_vec(), &[1, 2, 3]);
        let mut kv = KvState::default();
        kv.apply(&Command::Put { key: b"b".to_vec(), value: b"1".to_vec() });
        let snap = encode_snapshot(&desc, &kv, 9, 2, desc.initial_conf_state());
        assert_eq!(snap.get_metadata().index, 9);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!(decode_snapshot_data::<KvState>(&snap.data).unwrap(), (desc, kv));
        assert!(decode_snapshot_data::<KvState>(&[7]).is_err());
    }
}
