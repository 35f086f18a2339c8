//! `KvClient::match_topics` on a real one-node cluster (in process): route rows written with
//! puts are matched across the route ranges the placement driver splits them into, and
//! every answer equals the subscription trie's for the same filters.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use node::cluster::route_keys::{self, NodeRow, node_row_key};
use node::config::NodeConfig;
use node::group::{Command, NodeId};
use node::node::ClusterNode;
use node::route::trie::Trie;

const WAIT: Duration = Duration::from_secs(120);

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("udp port")
}

/// The route ranges holding some key of `tenant`.
fn route_ranges(node: &ClusterNode, tenant: &[u8]) -> usize {
    let (start, end) = route_keys::family_span(tenant).expect("span");
    let table = node.client().table().read().expect("table");
    table.entries().filter(|e| e.desc.start < end && (e.desc.end.is_empty() || e.desc.end > start)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_topics_equals_the_trie_across_split_route_ranges() {
    let dir = std::env::temp_dir().join(format!("flotilla-match-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = NodeConfig { data_dir: dir.clone(), ..NodeConfig::default() };
    cfg.cluster.node_id = 1;
    cfg.cluster.listen = free_udp();
    cfg.cluster.log_groups_per_node = 1;
    cfg.raftstore.sync_writes = false;
    cfg.pd.voters = vec![1];
    cfg.pd.heartbeat_ms = 200;
    cfg.pd.split_keys = 150;
    let node = ClusterNode::start(&cfg).await.expect("node starts");
    let client = node.client().clone();

    let mut filters: Vec<String> = (0..200).map(|i| format!("fleet/{i}/+/speed")).collect();
    filters
        .extend(["fleet/+/engine/#", "fleet/#", "#", "+/7/x/speed", "$SYS/#", "fleet//a"].map(String::from));
    let mut trie: Trie<(usize, NodeId), ()> = Trie::default();
    let deadline = Instant::now() + WAIT;
    for (i, f) in filters.iter().enumerate() {
        for node_id in [1, 2] {
            let key = node_row_key(b"t", f, node_id).expect("key");
            let value = NodeRow { incarnation: 9, max_qos: u8::from(i % 2 == 0) }.encode();
            // The route range is created by the bootstrap: retry until it exists.
            while let Err(e) = client.propose(Command::Put { key: key.clone(), value: value.clone() }).await {
                assert!(Instant::now() < deadline, "put {f}: {e}");
            }
            trie.insert(f, (i, node_id), ());
        }
        // Another tenant's rows never answer for "t".
        let other = node_row_key(b"tt", f, 3).expect("key");
        client
            .propose(Command::Put { key: other, value: NodeRow { incarnation: 1, max_qos: 2 }.encode() })
            .await
            .expect("put");
    }
    while route_ranges(&node, b"t") < 2 {
        assert!(Instant::now() < deadline, "the route range never split");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The table learns splits from answers: a read refreshes it.
        let _ = client.match_topics(b"t", &["x".to_string()]).await;
    }

    let topics: Vec<String> =
        ["fleet/42/engine/temp", "fleet/7/x/speed", "fleet/199/y/speed", "fleet", "$SYS/a", "fleet//a", "z"]
            .map(String::from)
            .to_vec();
    let got = client.match_topics(b"t", &topics).await.expect("match");
    assert_eq!(got.len(), topics.len());
    for (t, rows) in topics.iter().zip(&got) {
        let mut want = Vec::new();
        trie.matches(t, &mut want);
        let want: BTreeSet<(String, NodeId)> =
            want.into_iter().map(|((i, n), ())| (filters[i].clone(), n)).collect();
        let prefix_len = route_keys::tenant_prefix_len(&rows.first().map_or(Vec::new(), |r| r.0.clone()));
        let have: BTreeSet<(String, NodeId)> = rows
            .iter()
            .map(|(k, _)| {
                let row = route_keys::parse_row_key(prefix_len.expect("a route key"), k).expect("row");
                (row.filter, row.node.expect("node row"))
            })
            .collect();
        assert_eq!(have.len(), rows.len(), "{t}: no row twice");
        assert_eq!(have, want, "{t}");
        let nodes = route_keys::node_rows(rows);
        assert_eq!(nodes.len(), if want.is_empty() { 0 } else { 2 }, "{t}");
    }
    println!("{} route ranges for tenant t", route_ranges(&node, b"t"));
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
