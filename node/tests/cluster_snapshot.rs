//! Snapshots larger than one transport frame, live: a range holding over 200 MiB on three
//! real processes gets a new replica on a fourth node. The snapshot (above the 64 MiB frame
//! limit, which it could not cross before) travels in paced chunks and the new replica ends
//! with the same content as the leader.

mod common_cluster;

use std::time::Duration;

use common_cluster::{CALL, ProcNode, TempDir, WAIT};
use hyper::Method;
use node::admin::client::call;
use node::admin::kv::{LoadRequest, LoadResult};
use node::admin::types::GroupInfo;
use node::group::NodeId;

const GROUP: u64 = 1;
/// 4 writers x 275 writes x 200,000 bytes: 220 MB (209.8 MiB) of values.
const WRITERS: u32 = 4;
const WRITES: u32 = 275;
const VALUE_BYTES: usize = 200_000;

async fn leader_of(nodes: &[&ProcNode]) -> NodeId {
    let start = tokio::time::Instant::now();
    loop {
        for n in nodes {
            if let Ok(g) = n.group(GROUP).await
                && g.leader == Some(n.id)
            {
                return n.id;
            }
        }
        assert!(start.elapsed() < WAIT, "group {GROUP} has no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_200_mib_transfers_to_a_new_replica_in_chunks() {
    let tmp = TempDir::new("cluster-snapshot");
    let mut n1 = ProcNode::new(1, &tmp.0, Vec::new(), Vec::new());
    let join = vec![n1.cluster];
    let mut n2 = ProcNode::new(2, &tmp.0, join.clone(), Vec::new());
    let mut n3 = ProcNode::new(3, &tmp.0, join.clone(), Vec::new());
    let mut n4 = ProcNode::new(4, &tmp.0, join, Vec::new());
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
        n.create_groups(&[GROUP], &[1, 2, 3]).await;
    }
    let leader = leader_of(&[&n1, &n2, &n3]).await;
    let nodes = [&n1, &n2, &n3];
    let leader_node = nodes.iter().find(|n| n.id == leader).expect("leader");

    let req = LoadRequest {
        tag: "snap".into(),
        writers: WRITERS,
        writes: WRITES,
        value_bytes: VALUE_BYTES,
        read_only: false,
    };
    let r: LoadResult =
        call(leader_node.admin, Method::POST, "/v1/kv/load", Some(&req), Duration::from_secs(900))
            .await
            .expect("load");
    // The load only fills the range; a checkpoint of a range this large stalls its group for
    // seconds (the whole state is rewritten), so a few calls may pass their deadline here.
    println!("load: {} written, {} errors {:?}", r.written, r.errors, r.error_samples);
    assert_eq!(r.mismatches, 0);
    assert!(r.written * 100 >= u64::from(WRITERS * WRITES) * 98, "the load barely progressed: {r:?}");
    let before: GroupInfo = leader_node.group(GROUP).await.expect("leader status");
    assert!(before.keys * VALUE_BYTES as u64 > 200 << 20, "the range holds less than 200 MiB");
    println!("leader {leader} holds {} keys in {} ms of writes", before.keys, r.elapsed_ms);

    n4.spawn();
    n4.wait_ready(1).await;
    let body = serde_json::json!({ "op": "add-learner", "node": 4 });
    let path = format!("/v1/groups/{GROUP}/peers");
    call::<_, serde_json::Value>(leader_node.admin, Method::POST, &path, Some(&body), CALL)
        .await
        .expect("add learner");
    let started = tokio::time::Instant::now();
    loop {
        let l = leader_node.group(GROUP).await.expect("leader status");
        if let Ok(g) = n4.group(GROUP).await
            && g.applied >= l.commit
            && g.keys == l.keys
            && g.digest == l.digest
            && g.keys >= before.keys
        {
            println!("the new replica caught up in {:.1} s", started.elapsed().as_secs_f64());
            break;
        }
        assert!(started.elapsed() < WAIT, "the new replica never caught up: {:?}", n4.group(GROUP).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let info = leader_node.info().await.expect("leader info");
    let chunks = info.transport.snapshot_chunks_sent;
    println!("{chunks} snapshot chunks sent by the leader");
    assert!(chunks >= 200, "the snapshot did not travel in chunks: {chunks}");
}
