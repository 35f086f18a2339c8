//! CORE. The MQTT key families in the cluster's one ordered key space, and the ranges the
//! placement driver's bootstrap creates for them (CLUSTER.md section 2).
//!
//! ```text
//! key    := fam:u8 | tlen:u8 | tenant | ver:u8 = 1 | family-specific rest
//! fam    := 'S' sessions | 'R' routes | 'M' retained | 'L' message logs
//! L keys := 'L' | slot:u64 (big endian, xxh3 of tenant 0 topic), then the log's own keys
//! ```
//!
//! Bootstrap: one range `[fam, fam+1)` each for S, R and M, and `log_groups` ranges that cut
//! L's 64-bit slot space into equal slices. The empty tenant means single-tenant. Ranges
//! never span two families: the bootstrap cuts at family bounds, splits stay inside a range,
//! and merges never cross a family bound.

use crate::group::{GroupId, NodeId, RangeDescriptor};

/// Sessions.
pub const FAMILY_SESSIONS: u8 = b'S';
/// Routes (subscriptions).
pub const FAMILY_ROUTES: u8 = b'R';
/// Retained messages.
pub const FAMILY_RETAINED: u8 = b'M';
/// Message logs.
pub const FAMILY_LOGS: u8 = b'L';
/// Every family, in key order.
pub const FAMILIES: [u8; 4] = [FAMILY_LOGS, FAMILY_RETAINED, FAMILY_ROUTES, FAMILY_SESSIONS];
/// Version byte of the common key prefix.
pub const KEY_VERSION: u8 = 1;
/// Bootstrap group ids: `2^63 | index`, clear of admin-created ids and of the placement
/// driver's split ids (`2^62 | term << 24 | n`, below `2^63`).
pub const BOOTSTRAP_ID_BASE: GroupId = 1 << 63;
/// Most message-log groups a bootstrap creates.
pub const LOG_GROUPS_MAX: u32 = 4096;

/// Why a key could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Tenant ids are at most 255 bytes.
    #[error("tenant id of {0} bytes exceeds 255")]
    TenantTooLong(usize),
    /// Client ids are at most 65,535 bytes.
    #[error("client id of {0} bytes exceeds 65535")]
    ClientIdTooLong(usize),
    /// MQTT forbids U+0000 in topic filters, and the route keys use it as the level end.
    #[error("topic filter contains U+0000")]
    NulInFilter,
    /// Shared subscription group names are at most 65,535 bytes.
    #[error("shared subscription group name of {0} bytes exceeds 65535")]
    GroupTooLong(usize),
}

/// The common prefix of every key of `family` for `tenant`.
pub fn prefix(family: u8, tenant: &[u8]) -> Result<Vec<u8>, KeyError> {
    let tlen = u8::try_from(tenant.len()).map_err(|_| KeyError::TenantTooLong(tenant.len()))?;
    let mut k = Vec::with_capacity(3 + tenant.len());
    k.push(family);
    k.push(tlen);
    k.extend_from_slice(tenant);
    k.push(KEY_VERSION);
    Ok(k)
}

/// The family a key belongs to, if it is an MQTT key.
pub fn family_of(key: &[u8]) -> Option<u8> {
    key.first().copied().filter(|f| FAMILIES.contains(f))
}

/// The message-log slot key: `L | slot`.
pub fn log_slot_key(slot: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(FAMILY_LOGS);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

/// What the bootstrap creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapPlan {
    /// The ranges, in key order, each with its initial voters.
    pub ranges: Vec<RangeDescriptor>,
}

/// The bootstrap ranges: S, R and M as one range each, L cut into `log_groups` slices;
/// voters rotate over `nodes` (up to `replicas` per range) so leaders and load spread.
pub fn bootstrap_plan(nodes: &[NodeId], replicas: usize, log_groups: u32) -> BootstrapPlan {
    let mut nodes = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let per_range = replicas.clamp(1, nodes.len().max(1));
    let log_groups = log_groups.clamp(1, LOG_GROUPS_MAX);
    let mut spans: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..u64::from(log_groups) {
        let cut = |i: u64| (u128::from(i) << 64) / u128::from(log_groups);
        let start = if i == 0 { vec![FAMILY_LOGS] } else { log_slot_key(cut(i) as u64) };
        let end = if i + 1 == u64::from(log_groups) {
            vec![FAMILY_LOGS + 1]
        } else {
            log_slot_key(cut(i + 1) as u64)
        };
        spans.push((start, end));
    }
    for fam in [FAMILY_RETAINED, FAMILY_ROUTES, FAMILY_SESSIONS] {
        spans.push((vec![fam], vec![fam + 1]));
    }
    let ranges = spans
        .into_iter()
        .enumerate()
        .map(|(i, (start, end))| {
            let voters: Vec<NodeId> = (0..per_range).map(|k| nodes[(i + k) % nodes.len()]).collect();
            RangeDescriptor::new(BOOTSTRAP_ID_BASE | i as u64, start, end, &voters)
        })
        .collect();
    BootstrapPlan { ranges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_ranges_tile_each_family_without_overlap() {
        let plan = bootstrap_plan(&[3, 1, 2], 3, 16);
        assert_eq!(plan.ranges.len(), 19);
        for w in plan.ranges.windows(2) {
            assert!(w[0].end <= w[1].start, "{:?} then {:?}", w[0], w[1]);
        }
        let logs: Vec<_> = plan.ranges.iter().filter(|d| d.start[0] == FAMILY_LOGS).collect();
        assert_eq!(logs.len(), 16);
        for w in logs.windows(2) {
            assert_eq!(w[0].end, w[1].start, "log slices are contiguous");
        }
        assert_eq!(logs[0].start, vec![FAMILY_LOGS]);
        assert_eq!(logs[15].end, vec![FAMILY_LOGS + 1]);
        for d in &plan.ranges {
            assert_eq!(d.voters.len(), 3);
            assert!(d.id & BOOTSTRAP_ID_BASE != 0);
            let k = prefix(d.start[0], b"tenant").unwrap();
            assert_eq!(family_of(&k), Some(d.start[0]));
        }
        // Leaders spread: the first voter rotates.
        let firsts: std::collections::BTreeSet<_> = plan.ranges.iter().map(|d| d.voters[0]).collect();
        assert_eq!(firsts.len(), 1, "voters are sorted, so every range has all three");
        let small = bootstrap_plan(&[1], 3, 2);
        assert!(small.ranges.iter().all(|d| d.voters == vec![1]));
    }

    #[test]
    fn slot_keys_fall_in_exactly_one_log_range() {
        let plan = bootstrap_plan(&[1, 2, 3], 3, 48);
        for slot in [0, 1, u64::MAX / 3, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            let key = log_slot_key(slot);
            assert_eq!(plan.ranges.iter().filter(|d| d.contains_key(&key)).count(), 1, "slot {slot}");
        }
        assert!(prefix(b'S', &[0; 256]).is_err());
    }
}
