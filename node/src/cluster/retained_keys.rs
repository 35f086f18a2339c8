//! CORE. The retained ("M") family (CLUSTER.md section 2.3): one row per retained topic,
//! keyed by its level count and the hash of each level, so a filter's candidates are a few
//! prefix scans.
//!
//! ```text
//! key   := prefix(M, tenant) | nlev:u16 | h32(level)* | topic
//! value := qos:u8 | expiry_at_ms:u64 (0 = never) | props:bytes | payload   (props and
//!          payload length-prefixed by a u32)
//! ```
//!
//! A filter without `#` is one scan: its level count and the hashes of the levels before
//! the first `+`. `a/#` scans the level counts from `len(a)` (it matches `a` itself) to the
//! limit. Every candidate is checked against the filter by its stored topic, so a hash
//! collision costs a row read, never a wrong answer. Decoding is total.

use super::keys::{FAMILY_RETAINED, KeyError, prefix};

/// A 32-bit hash of one level (FNV-1a: stable across versions and platforms).
fn h32(level: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in level.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn with_levels(tenant: &[u8], nlev: usize, levels: &[&str]) -> Result<Vec<u8>, KeyError> {
    let mut k = prefix(FAMILY_RETAINED, tenant)?;
    k.extend_from_slice(&(nlev.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for l in levels {
        k.extend_from_slice(&h32(l).to_be_bytes());
    }
    Ok(k)
}

/// The row key of retained topic `topic`.
pub fn topic_key(tenant: &[u8], topic: &str) -> Result<Vec<u8>, KeyError> {
    let levels: Vec<&str> = topic.split('/').collect();
    let mut k = with_levels(tenant, levels.len(), &levels)?;
    k.extend_from_slice(topic.as_bytes());
    Ok(k)
}

/// The stored topic of a row key (`prefix_len` = the tenant prefix's length).
pub fn topic_of(prefix_len: usize, key: &[u8]) -> Option<&str> {
    let rest = key.get(prefix_len..)?;
    let nlev = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    std::str::from_utf8(rest.get(2 + 4 * nlev..)?).ok()
}

/// A key span `[start, end)`.
pub type Span = (Vec<u8>, Vec<u8>);

/// The `[start, end)` spans whose rows may match `filter` (levels up to `levels_max`).
pub fn filter_spans(tenant: &[u8], filter: &str, levels_max: usize) -> Result<Vec<Span>, KeyError> {
    let levels: Vec<&str> = filter.split('/').collect();
    let multi = levels.last() == Some(&"#");
    let fixed: Vec<&str> = levels.iter().take_while(|l| **l != "+" && **l != "#").copied().collect();
    let counts: Vec<usize> =
        if multi { (levels.len() - 1).max(1)..=levels_max.max(1) } else { levels.len()..=levels.len() }
            .collect();
    let mut spans = Vec::with_capacity(counts.len());
    for n in counts {
        let used = fixed.len().min(n);
        let start = with_levels(tenant, n, &fixed[..used])?;
        spans.push((start.clone(), prefix_end(start)));
    }
    Ok(spans)
}

/// The first key after every key starting with `p`.
fn prefix_end(mut p: Vec<u8>) -> Vec<u8> {
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return p;
        }
    }
    Vec::new()
}

/// A retained message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRetained {
    /// QoS it was published with.
    pub qos: u8,
    /// Wall-clock expiry in ms; 0 = never.
    pub expiry_at_ms: u64,
    /// The v5 property block (length prefix included), or empty.
    pub properties: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl StoredRetained {
    /// The row value.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(17 + self.properties.len() + self.payload.len());
        b.push(self.qos);
        b.extend_from_slice(&self.expiry_at_ms.to_be_bytes());
        for part in [&self.properties, &self.payload] {
            b.extend_from_slice(&(part.len() as u32).to_be_bytes());
            b.extend_from_slice(part);
        }
        b
    }

    /// Decodes a row value.
    pub fn decode(v: &[u8]) -> Option<Self> {
        let (&qos, rest) = v.split_first()?;
        if qos > 2 {
            return None;
        }
        let (exp, mut rest) = rest.split_at_checked(8)?;
        let expiry_at_ms = u64::from_be_bytes(exp.try_into().ok()?);
        let mut part = || -> Option<Vec<u8>> {
            let (len, tail) = rest.split_at_checked(4)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            let (bytes, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(bytes.to_vec())
        };
        let properties = part()?;
        let payload = part()?;
        rest.is_empty().then_some(Self { qos, expiry_at_ms, properties, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::topic::matches;

    #[test]
    fn every_matching_topic_lies_in_one_of_the_filter_spans() {
        let topics = ["a", "a/b", "a/b/c", "a//c", "x/b/c", "$SYS/a", "a/b/c/d/e"];
        let filters = ["#", "a/#", "a/+/c", "+/b/+", "a", "a/b/c/#", "+", "+/+/+", "a//c", "$SYS/#"];
        for f in filters {
            let spans = filter_spans(b"t", f, 8).unwrap();
            for t in topics {
                let k = topic_key(b"t", t).unwrap();
                let inside = spans.iter().any(|(s, e)| k >= *s && k < *e);
                if matches(f, t) {
                    assert!(inside, "{t} matches {f} but is outside its spans");
                }
                let p = prefix(FAMILY_RETAINED, b"t").unwrap().len();
                assert_eq!(topic_of(p, &k), Some(t));
            }
        }
        // Tenants do not see each other's rows.
        let (s, e) = &filter_spans(b"t", "#", 8).unwrap()[0];
        let other = topic_key(b"u", "a").unwrap();
        assert!(!(other >= *s && other < *e));
    }

    #[test]
    fn stored_values_round_trip_and_bad_ones_are_refused() {
        let v = StoredRetained {
            qos: 1,
            expiry_at_ms: 99,
            properties: vec![3, 1, 2, 3],
            payload: b"on".to_vec(),
        };
        assert_eq!(StoredRetained::decode(&v.encode()), Some(v.clone()));
        let bytes = v.encode();
        for cut in 0..bytes.len() {
            assert_eq!(StoredRetained::decode(&bytes[..cut]), None);
        }
        assert_eq!(StoredRetained::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
