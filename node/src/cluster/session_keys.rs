//! CORE. The session ("S") family: one record per client id, fenced by its connection
//! epoch, and one row per subscription of a persistent session (CLUSTER.md section 2.1).
//!
//! ```text
//! sess   := prefix(S, tenant) | bucket:u16 = h16(client id) | cid_len:u16 | client id
//! header := sess | 0x00   -> epoch:u64 | generation:u64 | owner_node:u64 | owner_inc:u64
//!                            | online:u8 | expiry_secs:u32 | disconnected_at_ms:u64
//!                            [ will: qos:u8 retain:u8 delay_secs:u32 topic props payload ]
//!                            (topic u16-prefixed, props and payload u32-prefixed)
//! sub    := sess | 0x01 | filter -> flags:u8 | sub_id:opt_u32
//! ```
//!
//! The bucket spreads sequential client ids (vehicle numbers) over the family's ranges;
//! a split point rounded to a session prefix keeps one session in one range. Decoding is
//! total: a bad value gives `None`, never a panic.

use super::keys::{FAMILY_SESSIONS, KeyError, prefix};
use crate::group::NodeId;
use crate::mqtt::packet::{QoS, SubOptions};
use crate::route::trie::SubEntry;

const HEADER: u8 = 0x00;
const SUB: u8 = 0x01;
/// Bytes of the fencing header (epoch, generation) before a record's body.
pub const FENCE_BYTES: usize = 16;

/// A 16-bit bucket of a client id (FNV-1a, stable across versions and platforms).
fn h16(id: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

/// The key prefix of every record of session `client_id`.
pub fn session_prefix(tenant: &[u8], client_id: &str) -> Result<Vec<u8>, KeyError> {
    let id = client_id.as_bytes();
    let len = u16::try_from(id.len()).map_err(|_| KeyError::ClientIdTooLong(id.len()))?;
    let mut k = prefix(FAMILY_SESSIONS, tenant)?;
    k.extend_from_slice(&h16(id).to_be_bytes());
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(id);
    Ok(k)
}

/// Whether `key` (under a tenant prefix of `prefix_len` bytes) is a session header.
pub fn is_header_key(prefix_len: usize, key: &[u8]) -> bool {
    let Some(rest) = key.get(prefix_len..) else { return false };
    let Some(len) = rest.get(2..4).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
        return false;
    };
    rest.len() == 4 + len + 1 && rest[4 + len] == HEADER
}

/// The session's header key (the fenced record).
pub fn header_key(sess: &[u8]) -> Vec<u8> {
    let mut k = sess.to_vec();
    k.push(HEADER);
    k
}

/// The key of subscription `filter` of the session.
pub fn sub_key(sess: &[u8], filter: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sess.len() + 1 + filter.len());
    k.extend_from_slice(sess);
    k.push(SUB);
    k.extend_from_slice(filter.as_bytes());
    k
}

/// `[start, end)` of every subscription row of the session.
pub fn subs_span(sess: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = sess.to_vec();
    start.push(SUB);
    let mut end = sess.to_vec();
    end.push(SUB + 1);
    (start, end)
}

/// The filter of a subscription row's key.
pub fn sub_filter(sess: &[u8], key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(sess)?.strip_prefix(&[SUB])?;
    String::from_utf8(rest.to_vec()).ok()
}

/// A connection's will, kept in its session record so that the majority can publish it
/// when the owning node dies (CLUSTER.md section 4, wills).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWill {
    /// QoS.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Will Delay Interval, seconds.
    pub delay_secs: u32,
    /// Topic.
    pub topic: String,
    /// The will's v5 property block (length prefix included), or empty.
    pub properties: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A session record's body (after the fencing header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionHeader {
    /// The node that holds (or last held) the session's connection.
    pub owner_node: NodeId,
    /// That node's incarnation then.
    pub owner_inc: u64,
    /// Connected at the owner.
    pub online: bool,
    /// Session Expiry Interval, seconds (`u32::MAX` never).
    pub expiry_secs: u32,
    /// Wall-clock milliseconds of the disconnect, while offline.
    pub disconnected_at_ms: u64,
    /// The will of the connection, while online.
    pub will: Option<StoredWill>,
}

const HEADER_BODY_BYTES: usize = 8 + 8 + 1 + 4 + 8;

impl SessionHeader {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BODY_BYTES);
        b.extend_from_slice(&self.owner_node.to_be_bytes());
        b.extend_from_slice(&self.owner_inc.to_be_bytes());
        b.push(u8::from(self.online));
        b.extend_from_slice(&self.expiry_secs.to_be_bytes());
        b.extend_from_slice(&self.disconnected_at_ms.to_be_bytes());
        if let Some(w) = &self.will {
            b.push(w.qos);
            b.push(u8::from(w.retain));
            b.extend_from_slice(&w.delay_secs.to_be_bytes());
            b.extend_from_slice(&(w.topic.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
            b.extend_from_slice(&w.topic.as_bytes()[..w.topic.len().min(usize::from(u16::MAX))]);
            for part in [&w.properties, &w.payload] {
                b.extend_from_slice(&(part.len() as u32).to_be_bytes());
                b.extend_from_slice(part);
            }
        }
        b
    }

    /// A whole stored value: the fencing header (`epoch`, `generation`), then the body;
    /// what [`Self::decode_record`] reads.
    pub fn encode_record(&self, epoch: u64, generation: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(FENCE_BYTES + HEADER_BODY_BYTES);
        v.extend_from_slice(&epoch.to_be_bytes());
        v.extend_from_slice(&generation.to_be_bytes());
        v.extend(self.encode());
        v
    }

    /// Decodes a whole stored value (fencing header included): `(epoch, generation, body)`.
    pub fn decode_record(value: &[u8]) -> Option<(u64, u64, Self)> {
        let (fence, body) = value.split_at_checked(FENCE_BYTES)?;
        let epoch = u64::from_be_bytes(fence[..8].try_into().ok()?);
        let generation = u64::from_be_bytes(fence[8..].try_into().ok()?);
        if body.len() < HEADER_BODY_BYTES {
            return None;
        }
        let will = match body.len() {
            HEADER_BODY_BYTES => None,
            _ => Some(decode_will(&body[HEADER_BODY_BYTES..])?),
        };
        let u64_at = |i: usize| body[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        let header = Self {
            owner_node: u64_at(0)?,
            owner_inc: u64_at(8)?,
            online: match body[16] {
                0 => false,
                1 => true,
                _ => return None,
            },
            expiry_secs: u32::from_be_bytes(body[17..21].try_into().ok()?),
            disconnected_at_ms: u64_at(21)?,
            will,
        };
        Some((epoch, generation, header))
    }

    /// Whether the session still exists at wall-clock `now_ms` (online, or offline within
    /// its expiry).
    pub fn alive_at(&self, now_ms: u64) -> bool {
        self.online
            || self.expiry_secs == u32::MAX
            || now_ms < self.disconnected_at_ms.saturating_add(u64::from(self.expiry_secs) * 1000)
    }
}

fn decode_will(mut b: &[u8]) -> Option<StoredWill> {
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = b.split_at_checked(n)?;
        b = tail;
        Some(head)
    };
    let qos = take(1)?[0];
    let retain = take(1)?[0];
    if qos > 2 || retain > 1 {
        return None;
    }
    let delay_secs = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let tlen = usize::from(u16::from_be_bytes(take(2)?.try_into().ok()?));
    let topic = std::str::from_utf8(take(tlen)?).ok()?.to_string();
    let plen = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
    let properties = take(plen)?.to_vec();
    let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
    let payload = take(len)?.to_vec();
    b.is_empty().then_some(StoredWill { qos, retain: retain == 1, delay_secs, topic, properties, payload })
}

/// A subscription row's value.
pub fn encode_sub(entry: &SubEntry) -> Vec<u8> {
    let o = &entry.opts;
    let flags = (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | (o.retain_handling << 4);
    let mut b = vec![flags];
    if let Some(id) = entry.sub_id {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b
}

/// Decodes a subscription row's value.
pub fn decode_sub(value: &[u8]) -> Option<SubEntry> {
    let (&flags, rest) = value.split_first()?;
    let qos = QoS::from_u8(flags & 0x03)?;
    let retain_handling = (flags >> 4) & 0x03;
    if flags & 0xC0 != 0 || retain_handling > 2 {
        return None;
    }
    let sub_id = match rest.len() {
        0 => None,
        4 => Some(u32::from_be_bytes(rest.try_into().ok()?)),
        _ => return None,
    };
    let opts = SubOptions {
        qos,
        no_local: flags & 0x04 != 0,
        retain_as_published: flags & 0x08 != 0,
        retain_handling,
    };
    Some(SubEntry { opts, sub_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keys::{FAMILY_SESSIONS, prefix};

    #[test]
    fn session_records_sort_under_their_session_and_round_trip() {
        let s = session_prefix(b"", "car-1").unwrap();
        let other = session_prefix(b"", "car-10").unwrap();
        let (start, end) = subs_span(&s);
        let k = sub_key(&s, "a/+");
        assert!(header_key(&s) < start && start <= k && k < end);
        let p = prefix(FAMILY_SESSIONS, b"").unwrap().len();
        assert!(is_header_key(p, &header_key(&s)) && !is_header_key(p, &k) && !is_header_key(p, &s));
        assert!(!(start.as_slice() <= other.as_slice() && other.as_slice() < end.as_slice()));
        assert_eq!(sub_filter(&s, &k).as_deref(), Some("a/+"));
        let h = SessionHeader {
            owner_node: 3,
            owner_inc: 99,
            online: false,
            expiry_secs: 60,
            disconnected_at_ms: 1000,
            will: None,
        };
        let value = h.encode_record(7, 2);
        assert_eq!(&value[..16], &[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(SessionHeader::decode_record(&value), Some((7, 2, h.clone())));
        let will = StoredWill {
            qos: 1,
            retain: true,
            delay_secs: 5,
            topic: "will/car".into(),
            properties: vec![0],
            payload: b"gone".to_vec(),
        };
        let with = SessionHeader { will: Some(will), ..h.clone() };
        let mut value2 = vec![0; 16];
        value2.extend(with.encode());
        assert_eq!(SessionHeader::decode_record(&value2).map(|r| r.2), Some(with));
        for cut in 16 + 30..value2.len() {
            assert_eq!(SessionHeader::decode_record(&value2[..cut]), None, "cut at {cut}");
        }
        assert!(h.alive_at(60_999) && !h.alive_at(61_000));
        assert_eq!(SessionHeader::decode_record(&value[..20]), None);
        let e = SubEntry {
            opts: SubOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
            },
            sub_id: Some(12),
        };
        assert_eq!(decode_sub(&encode_sub(&e)), Some(e));
        assert_eq!(decode_sub(&[0xFF]), None);
        assert_eq!(decode_sub(&[]), None);
    }
}
