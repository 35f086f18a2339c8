//! Simulated key space: one keyspace tag (`R`, routes) followed by a big-endian `u64`, from
//! `R` (the first start key) to `S` (the last end key), so middles are exact.

const TAG: u8 = b'R';

pub(crate) fn first() -> Vec<u8> {
    vec![TAG]
}

pub(crate) fn last() -> Vec<u8> {
    vec![TAG + 1]
}

pub(crate) fn key(v: u64) -> Vec<u8> {
    let mut k = vec![TAG];
    k.extend_from_slice(&v.to_be_bytes());
    k
}

fn value(k: &[u8]) -> Option<u128> {
    match k {
        [TAG] => Some(0),
        [t] if *t == TAG + 1 => Some(1u128 << 64),
        [TAG, rest @ ..] if rest.len() == 8 => Some(u128::from(u64::from_be_bytes(rest.try_into().ok()?))),
        _ => None,
    }
}

/// The key halfway between `start` and `end`, if there is one strictly inside.
pub(crate) fn middle(start: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    let (lo, hi) = (value(start)?, value(end)?);
    if hi <= lo + 1 {
        return None;
    }
    Some(key(u64::try_from(lo + (hi - lo) / 2).ok()?))
}

/// `n + 1` boundaries splitting the space into `n` equal ranges.
pub(crate) fn boundaries(n: usize) -> Vec<Vec<u8>> {
    let step = (1u128 << 64) / n as u128;
    let mut out: Vec<Vec<u8>> =
        (0..n).map(|i| if i == 0 { first() } else { key((i as u128 * step) as u64) }).collect();
    out.push(last());
    out
}
