//! CORE. The group's key-value state machine: an ordered map applied deterministically.
//!
//! Invariants:
//! - `apply` is a pure function of (state, command): every replica that applies the same
//!   committed prefix holds the same map.
//! - `digest` is an order-independent hash of the (key, value) multiset, maintained
//!   incrementally (wrapping sum of per-pair hashes), so replicas can be compared in O(1).
//! - `bytes` is the sum of key and value lengths.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::command::{BatchOp, Command, FENCE_HEADER_BYTES, fence_epoch, fence_generation};
use super::op::read::Query;
use super::response::Outcome;
use super::sm::StateMachine;
use crate::cluster::route_match::{Bounded, SortedView, match_topic};
use crate::codec::{CodecError, Reader, put_bytes, put_uvarint};

/// The ordered key-value map of one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
    digest: u64,
}

impl KvState {
    /// Applies one command and says what happened.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::Put { key, value } => {
                self.set(key, Some(value));
                Outcome::Written
            }
            Command::Delete { key } => {
                self.set(key, None);
                Outcome::Written
            }
            // Applied by the peer (it changes the descriptor too), never here.
            Command::Split { .. } => Outcome::Noop,
            Command::CompareAndSet { key, expected, new } => {
                let previous = self.map.get(key).cloned();
                let succeeded = previous.as_deref() == expected.as_deref();
                if succeeded {
                    self.set(key, new.as_deref());
                }
                Outcome::Cas { succeeded, previous }
            }
            Command::DeleteRange { start, end } => {
                self.delete_range(start, end);
                Outcome::Written
            }
            Command::Batch { guards, ops } => {
                for g in guards {
                    let current = self.map.get(&g.key).and_then(|v| fence_epoch(v));
                    if current != Some(g.epoch) {
                        return Outcome::GuardFailed { key: g.key.clone(), current };
                    }
                }
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => self.set(key, Some(value)),
                        BatchOp::Delete { key } => self.set(key, None),
                        BatchOp::DeleteRange { start, end } => self.delete_range(start, end),
                    }
                }
                Outcome::Written
            }
            Command::Fence { key, body, new_generation, clear } => {
                self.fence(key, body, *new_generation, clear)
            }
        }
    }

    fn fence(
        &mut self,
        key: &[u8],
        body: &[u8],
        new_generation: bool,
        clear: &Option<(Vec<u8>, Vec<u8>)>,
    ) -> Outcome {
        let previous = self.map.get(key).cloned();
        let old = previous.as_deref().unwrap_or_default();
        let epoch = fence_epoch(old).unwrap_or(0).saturating_add(1);
        let generation = fence_generation(old).unwrap_or(0).saturating_add(u64::from(new_generation));
        if let Some((start, end)) = clear {
            self.delete_range(start, end);
        }
        let mut value = Vec::with_capacity(FENCE_HEADER_BYTES + body.len());
        value.extend_from_slice(&epoch.to_be_bytes());
        value.extend_from_slice(&generation.to_be_bytes());
        value.extend_from_slice(body);
        self.set(key, Some(&value));
        Outcome::Fenced { epoch, generation, previous }
    }

    /// Removes every key in `[start, end)` (empty `end` = unbounded).
    fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        if !end.is_empty() && end <= start {
            return;
        }
        let doomed: Vec<Vec<u8>> =
            self.map.range::<[u8], _>((Bound::Included(start), upper)).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.set(&k, None);
        }
    }

    fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        if let Some(old) = self.map.remove(key) {
            self.digest = self.digest.wrapping_sub(pair_hash(key, &old));
            self.bytes -= key.len() + old.len();
        }
        if let Some(v) = value {
            self.digest = self.digest.wrapping_add(pair_hash(key, v));
            self.bytes += key.len() + v.len();
            self.map.insert(key.to_vec(), v.to_vec());
        }
    }

    /// Moves every pair at or after `key` into a new state (the right half of a split).
    pub(crate) fn split_off(&mut self, key: &[u8]) -> Self {
        let map = self.map.split_off(key);
        let mut right = Self { map, bytes: 0, digest: 0 };
        for (k, v) in &right.map {
            let h = pair_hash(k, v);
            right.digest = right.digest.wrapping_add(h);
            right.bytes += k.len() + v.len();
            self.digest = self.digest.wrapping_sub(h);
            self.bytes -= k.len() + v.len();
        }
        right
    }

    /// The key in the middle of the map (by count), for a split the leader places.
    pub fn middle_key(&self) -> Option<&[u8]> {
        self.map.keys().nth(self.map.len() / 2).map(Vec::as_slice)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Up to `limit` pairs with keys in `[start, end)` (empty `end` = unbounded), in order.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        self.map
            .range::<[u8], _>((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total key and value bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The order-independent content hash.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Appends the encoding: a count, then (key, value) pairs in key order.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        buf.reserve(self.bytes + 2 * self.map.len() + 10);
        put_uvarint(buf, self.map.len() as u64);
        for (k, v) in &self.map {
            put_bytes(buf, k);
            put_bytes(buf, v);
        }
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.count(2)?;
        let mut kv = Self::default();
        for _ in 0..n {
            let key = r.bytes()?;
            let value = r.bytes()?;
            kv.set(key, Some(value));
        }
        Ok(kv)
    }
}

impl SortedView for KvState {
    fn seek(&self, from: &[u8]) -> Option<(&[u8], &[u8])> {
        self.map
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

impl StateMachine for KvState {
    fn apply(&mut self, cmd: &Command) -> Outcome {
        Self::apply(self, cmd)
    }

    fn query(&self, query: &Query, range_start: &[u8], range_end: &[u8]) -> Outcome {
        match query {
            Query::Get { key } => Outcome::Value(self.get(key).map(<[u8]>::to_vec)),
            Query::Scan { start, end, limit } => {
                let end = if end.is_empty() { range_end } else { end.as_slice() };
                Outcome::Rows(self.scan(start, end, *limit))
            }
            Query::Match { prefix, topics, limit } => {
                let view = Bounded::new(self, range_start, range_end);
                let rows = topics.iter().map(|t| match_topic(&view, prefix, t, *limit).rows).collect();
                Outcome::Matched(rows)
            }
        }
    }

    fn split_off(&mut self, key: &[u8]) -> Self {
        Self::split_off(self, key)
    }

    fn split_key(&self) -> Option<Vec<u8>> {
        let middle = self.middle_key()?;
        // A session's records (`S` family) stay in one range: cut at a session's start.
        let key = session_prefix(middle).unwrap_or(middle);
        Some(key.to_vec())
    }

    fn snapshot(&self, buf: &mut Vec<u8>) {
        self.encode(buf);
    }

    fn restore(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(data);
        let kv = Self::decode(&mut r)?;
        r.finish()?;
        Ok(kv)
    }

    fn digest(&self) -> u64 {
        self.digest
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The session prefix of an `S` family key (`S | tlen | tenant | ver | bucket:u16 |
/// cid_len:u16 | client id`), if `key` is one.
fn session_prefix(key: &[u8]) -> Option<&[u8]> {
    if key.first() != Some(&crate::cluster::keys::FAMILY_SESSIONS) {
        return None;
    }
    let tlen = usize::from(*key.get(1)?);
    let at = 2 + tlen + 1 + 2;
    let cid_len = usize::from(u16::from_be_bytes([*key.get(at)?, *key.get(at + 1)?]));
    key.get(..at + 2 + cid_len)
}

/// A 64-bit hash of one pair (FNV-1a over length-prefixed parts, then a splitmix finalizer).
fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(key);
    eat(value);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command::Put { key: k.into(), value: v.into() }
    }

    #[test]
    fn session_keys_split_at_a_session_start() {
        let session = |cid: &str, rest: &str| {
            let mut k = crate::cluster::keys::prefix(b'S', b"t1").unwrap();
            k.extend_from_slice(&[0, 7]);
            k.extend_from_slice(&(cid.len() as u16).to_be_bytes());
            k.extend_from_slice(cid.as_bytes());
            k.extend_from_slice(rest.as_bytes());
            k
        };
        let mut kv = KvState::default();
        for rest in ["\0h", "\x01sub/a", "\x01sub/b", "\x02c"] {
            kv.apply(&Command::Put { key: session("car1", rest), value: b"v".to_vec() });
        }
        kv.apply(&Command::Put { key: session("car2", "\0h"), value: b"v".to_vec() });
        // The middle key is inside car1's records; the split moves all of car1 or none.
        assert_eq!(StateMachine::split_key(&kv), Some(session("car1", "")));
        let mut plain = KvState::default();
        for k in ["a", "b", "c"] {
            plain.apply(&put(k, k));
        }
        assert_eq!(StateMachine::split_key(&plain), Some(b"b".to_vec()));
    }

    #[test]
    fn cas_semantics() {
        let mut kv = KvState::default();
        let cas = |expected: Option<&str>, new: Option<&str>| Command::CompareAndSet {
            key: b"k".to_vec(),
            expected: expected.map(Into::into),
            new: new.map(Into::into),
        };
        assert_eq!(kv.apply(&cas(None, Some("a"))), Outcome::Cas { succeeded: true, previous: None });
        assert_eq!(
            kv.apply(&cas(None, Some("b"))),
            Outcome::Cas { succeeded: false, previous: Some(b"a".to_vec()) }
        );
        assert_eq!(
            kv.apply(&cas(Some("a"), None)),
            Outcome::Cas { succeeded: true, previous: Some(b"a".to_vec()) }
        );
        assert!(kv.is_empty());
        assert_eq!(kv.digest(), 0);
    }

    #[test]
    fn fence_bumps_epoch_and_batch_guards_on_it() {
        use crate::group::command::Guard;
        let mut kv = KvState::default();
        let fence = |new_generation| Command::Fence {
            key: b"s/h".to_vec(),
            body: b"owner".to_vec(),
            new_generation,
            clear: Some((b"s/x".to_vec(), b"s/y".to_vec())),
        };
        kv.apply(&put("s/x1", "sub"));
        let Outcome::Fenced { epoch: 1, generation: 0, previous: None } = kv.apply(&fence(false)) else {
            panic!("first fence")
        };
        assert_eq!(kv.get(b"s/x1"), None, "the clear span is removed with the fence");
        let Outcome::Fenced { epoch: 2, generation: 1, previous: Some(_) } = kv.apply(&fence(true)) else {
            panic!("second fence")
        };
        let batch = |epoch| Command::Batch {
            guards: vec![Guard { key: b"s/h".to_vec(), epoch }],
            ops: vec![BatchOp::Put { key: b"s/c".to_vec(), value: b"1".to_vec() }],
        };
        assert_eq!(kv.apply(&batch(1)), Outcome::GuardFailed { key: b"s/h".to_vec(), current: Some(2) });
        assert_eq!(kv.get(b"s/c"), None, "a failed guard applies nothing");
        assert_eq!(kv.apply(&batch(2)), Outcome::Written);
        assert_eq!(kv.get(b"s/c"), Some(&b"1"[..]));
        kv.apply(&Command::DeleteRange { start: b"s/".to_vec(), end: b"s0".to_vec() });
        assert!(kv.is_empty());
        assert_eq!(kv.digest(), 0);
        assert_eq!(kv.bytes(), 0);
    }

    #[test]
    fn digest_is_order_independent_and_tracks_deletes() {
        let mut a = KvState::default();
        let mut b = KvState::default();
        a.apply(&put("x", "1"));
        a.apply(&put("y", "2"));
        b.apply(&put("y", "2"));
        b.apply(&put("z", "9"));
        b.apply(&put("x", "1"));
        assert_ne!(a.digest(), b.digest());
        b.apply(&Command::Delete { key: b"z".to_vec() });
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.bytes(), 4);
    }

    #[test]
    fn scan_and_round_trip() {
        let mut kv = KvState::default();
        for k in ["a", "b", "c", "d"] {
            kv.apply(&put(k, k));
        }
        let keys: Vec<_> = kv.scan(b"b", b"d", 10).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(kv.scan(b"b", b"", 1).len(), 1);
        let mut buf = Vec::new();
        kv.encode(&mut buf);
        let mut r = Reader::new(&buf);
        assert_eq!(KvState::decode(&mut r).unwrap(), kv);
        r.finish().unwrap();
    }
}
