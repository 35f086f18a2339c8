//! CORE. What a group owns: the key range `[start, end)`, its epoch and its members.
//!
//! Invariants:
//! - `end` empty means "unbounded"; otherwise `start < end`.
//! - `epoch.version` changes only when the range's bounds change (split, merge; later
//!   slices), `epoch.conf_ver` only when an applied conf change alters the members. Both only
//!   grow. Normal reads and writes check `version`; membership changes check `conf_ver`;
//!   leader transfer checks both (TiKV's `admin_cmd_epoch_lookup`).
//! - A replica's raft id is its node id, so a node hosts at most one replica of a group.
//! - `voters`, `outgoing` and `learners` are sorted and mirror the applied raft `ConfState`
//!   (`outgoing` is non-empty only inside a joint configuration).

use raft::eraftpb::ConfState;

use super::error::RequestError;
use crate::codec::{CodecError, Reader, put_bytes, put_uvarint};

/// Identifies a raft group (one range) cluster-wide.
pub type GroupId = u64;
/// Identifies a node; also the raft id of the node's replica in every group.
pub type NodeId = u64;

/// A range's epoch: `{version, conf_ver}` as in TiKV; the same type the placement driver's
/// scheduler core uses (one vocabulary for both halves).
pub use placement::Epoch;

/// Which parts of the epoch a request must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochCheck {
    /// Reads and writes of keys: only `version`.
    Version,
    /// Membership changes: only `conf_ver`.
    ConfVer,
    /// Leader transfer: both.
    Both,
}

/// A group's descriptor as applied on this replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeDescriptor {
    /// The group.
    pub id: GroupId,
    /// First key owned (inclusive).
    pub start: Vec<u8>,
    /// First key not owned; empty = unbounded.
    pub end: Vec<u8>,
    /// The current epoch.
    pub epoch: Epoch,
    /// Voters of the (incoming) configuration, sorted.
    pub voters: Vec<NodeId>,
    /// Voters of the outgoing configuration while joint, sorted; empty otherwise.
    pub outgoing: Vec<NodeId>,
    /// Learners (including learners-to-be of a joint configuration), sorted.
    pub learners: Vec<NodeId>,
}

impl RangeDescriptor {
    /// Smallest [`encode`](Self::encode)d descriptor: an id, two empty keys, the two epoch
    /// parts and three empty node lists, one byte each. Decoders of lists of descriptors
    /// check their counts against it before allocating.
    pub(crate) const ENCODED_BYTES_MIN: usize = 8;

    /// A descriptor for a new group with `voters` and no learners, at epoch `{1, 1}`.
    pub fn new(id: GroupId, start: Vec<u8>, end: Vec<u8>, voters: &[NodeId]) -> Self {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        Self { id, start, end, epoch: Epoch { version: 1, conf_ver: 1 }, voters, ..Self::default() }
    }

    /// Whether `key` is inside `[start, end)`.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether the scan span `[start, end)` (empty `end` = to the range's end) is inside.
    pub fn contains_span(&self, start: &[u8], end: &[u8]) -> bool {
        if start < self.start.as_slice() {
            return false;
        }
        match (end.is_empty(), self.end.is_empty()) {
            (_, true) => true,
            (true, false) => false,
            (false, false) => end <= self.end.as_slice(),
        }
    }

    /// Every member: voters, outgoing voters and learners, sorted and deduplicated.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> =
            self.voters.iter().chain(&self.outgoing).chain(&self.learners).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether `node` is a member in any role.
    pub fn has_member(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.outgoing.contains(&node) || self.learners.contains(&node)
    }

    /// Whether the configuration is joint.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Fails with `EpochNotMatch` (carrying this descriptor) unless `epoch` matches.
    pub fn check_epoch(&self, epoch: Epoch, check: EpochCheck) -> Result<(), RequestError> {
        let version_ok = epoch.version == self.epoch.version;
        let conf_ok = epoch.conf_ver == self.epoch.conf_ver;
        let ok = match check {
            EpochCheck::Version => version_ok,
            EpochCheck::ConfVer => conf_ok,
            EpochCheck::Both => version_ok && conf_ok,
        };
        if ok { Ok(()) } else { Err(RequestError::EpochNotMatch { current: vec![self.clone()] }) }
    }

    /// Fails with `KeyNotInRange` unless `key` is owned.
    pub fn check_key(&self, key: &[u8]) -> Result<(), RequestError> {
        if self.contains_key(key) {
            Ok(())
        } else {
            Err(RequestError::KeyNotInRange {
                key: key.to_vec(),
                group: self.id,
                start: self.start.clone(),
                end: self.end.clone(),
            })
        }
    }

    /// Copies the membership of an applied raft `ConfState`.
    pub(crate) fn set_members(&mut self, cs: &ConfState) {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        self.voters = sorted(&cs.voters);
        self.outgoing = sorted(&cs.voters_outgoing);
        let mut learners = cs.learners.clone();
        learners.extend_from_slice(&cs.learners_next);
        self.learners = sorted(&learners);
    }

    /// The raft `ConfState` of a new group: voters only.
    pub(crate) fn initial_conf_state(&self) -> ConfState {
        ConfState { voters: self.voters.clone(), learners: self.learners.clone(), ..ConfState::default() }
    }

    /// Appends the compact encoding.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_uvarint(buf, self.id);
        put_bytes(buf, &self.start);
        put_bytes(buf, &self.end);
        put_uvarint(buf, self.epoch.version);
        put_uvarint(buf, self.epoch.conf_ver);
        for list in [&self.voters, &self.outgoing, &self.learners] {
            put_uvarint(buf, list.len() as u64);
            for &n in list {
                put_uvarint(buf, n);
            }
        }
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let id = r.uvarint()?;
        let start = r.bytes()?.to_vec();
        let end = r.bytes()?.to_vec();
        let epoch = Epoch { version: r.uvarint()?, conf_ver: r.uvarint()? };
        let mut lists = [Vec::new(), Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.count(1)?;
            for _ in 0..n {
                list.push(r.uvarint()?);
            }
        }
        let [voters, outgoing, learners] = lists;
        Ok(Self { id, start, end, epoch, voters, outgoing, learners })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(start: &[u8], end: &[u8]) -> RangeDescriptor {
        RangeDescriptor::new(7, start.to_vec(), end.to_vec(), &[3, 1, 2])
    }

    #[test]
    fn key_and_span_bounds() {
        let d = desc(b"b", b"d");
        assert!(!d.contains_key(b"a"));
        assert!(d.contains_key(b"b"));
        assert!(d.contains_key(b"c\xff"));
        assert!(!d.contains_key(b"d"));
        assert!(d.contains_span(b"b", b"d"));
        assert!(!d.contains_span(b"b", b""));
        assert!(!d.contains_span(b"a", b"c"));
        let open = desc(b"", b"");
        assert!(open.contains_key(b""));
        assert!(open.contains_span(b"", b""));
    }

    #[test]
    fn epoch_checks_only_named_fields() {
        let d = desc(b"", b"");
        let stale_conf = Epoch { version: 1, conf_ver: 0 };
        assert!(d.check_epoch(stale_conf, EpochCheck::Version).is_ok());
        assert!(d.check_epoch(stale_conf, EpochCheck::ConfVer).is_err());
        assert!(d.check_epoch(stale_conf, EpochCheck::Both).is_err());
    }

    #[test]
    fn descriptor_round_trips() {
        let mut d = desc(b"a", b"z");
        d.learners = vec![9];
        d.outgoing = vec![1, 4];
        let mut buf = Vec::new();
        d.encode(&mut buf);
        let mut r = Reader::new(&buf);
        assert_eq!(RangeDescriptor::decode(&mut r).unwrap(), d);
        r.finish().unwrap();
        assert_eq!(d.voters, vec![1, 2, 3]);
        assert_eq!(d.members(), vec![1, 2, 3, 4, 9]);
    }

    #[test]
    fn smallest_descriptor_has_the_documented_size() {
        let mut buf = Vec::new();
        RangeDescriptor::default().encode(&mut buf);
        assert_eq!(buf.len(), RangeDescriptor::ENCODED_BYTES_MIN);
    }
}
