//! Initial clusters: nodes spread round-robin over zones, ranges over an even key split,
//! replicas in distinct zones with per-zone node cycles so counts start exactly as intended.

use std::collections::BTreeMap;

use placement::{ClusterView, Config, Epoch, NodeId, NodeInfo, RangeId, RangeInfo, Replica};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::keys;

pub(crate) const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Registered nodes; node `i` is in zone `i % zones`.
    pub(crate) nodes: usize,
    pub(crate) zones: usize,
    pub(crate) ranges: usize,
    /// Only nodes `0..placement_nodes` hold replicas at the start.
    pub(crate) placement_nodes: usize,
    /// Range sizes are uniform in this range (MiB).
    pub(crate) size_mib: (u64, u64),
}

impl Layout {
    pub(crate) fn standard(ranges: usize) -> Self {
        Self { nodes: 100, zones: 5, ranges, placement_nodes: 100, size_mib: (20, 60) }
    }
}

/// The zone-isolated config every case starts from.
pub(crate) fn config() -> Config {
    Config { isolation_labels: vec!["zone".into()], ..Config::default() }
}

pub(crate) fn build(layout: &Layout, seed: u64) -> ClusterView {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x1a70_u64);
    let mut view = ClusterView::new();
    for i in 0..layout.nodes {
        let labels = BTreeMap::from([("zone".to_string(), format!("z{}", i % layout.zones))]);
        view.put_node(NodeInfo::new(NodeId(i as u64), labels, 4 << 40, 0));
    }
    // Per-zone cycles over the nodes that hold replicas at the start.
    let mut cycles: Vec<Vec<NodeId>> = vec![Vec::new(); layout.zones];
    for i in 0..layout.placement_nodes {
        cycles[i % layout.zones].push(NodeId(i as u64));
    }
    let mut cursors = vec![0usize; layout.zones];
    for cycle in &mut cycles {
        cycle.shuffle(&mut rng);
    }
    let zones: Vec<usize> = (0..layout.zones).filter(|z| !cycles[*z].is_empty()).collect();
    let bounds = keys::boundaries(layout.ranges);
    for i in 0..layout.ranges {
        let mut chosen = zones.clone();
        chosen.shuffle(&mut rng);
        chosen.truncate(3);
        let replicas: Vec<Replica> = chosen
            .iter()
            .map(|&z| {
                let node = cycles[z][cursors[z] % cycles[z].len()];
                cursors[z] += 1;
                Replica::voter(node)
            })
            .collect();
        let size_bytes = rng.random_range(layout.size_mib.0..=layout.size_mib.1) * MIB;
        let leader = replicas[rng.random_range(0..replicas.len())].node;
        let range = RangeInfo {
            id: RangeId(i as u64 + 1),
            start_key: bounds[i].clone(),
            end_key: bounds[i + 1].clone(),
            epoch: Epoch { version: 1, conf_ver: 1 },
            replicas,
            leader: Some(leader),
            pending: Vec::new(),
            size_bytes,
            keys: size_bytes / 1024,
            write_bytes_per_sec: rng.random_range(0..64 * 1024),
            write_keys_per_sec: rng.random_range(0..64),
            split_key_hint: None,
        };
        view.put_range(range).expect("valid initial range");
    }
    view
}
