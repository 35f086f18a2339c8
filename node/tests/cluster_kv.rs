//! The cluster plane, live: three real `flotilla` processes with `--pd-voters 1,2,3`.
//!
//! 1. The MQTT key families are bootstrapped by the placement driver with no command from
//!    the user (51 ranges: S, R, M and 48 message-log slices); then a writer inside every
//!    node does 10,000 writes, each read back at once, through its `KvClient` to range
//!    leaders on any node, while the PD splits ranges (`--pd-split-keys 200`) and the test
//!    moves leaders: no error reaches a caller, and every acknowledged write reads back
//!    from another node afterwards.
//! 2. The bootstrap survives a PD leader kill and a full restart of every node and never
//!    runs twice: the PD still reports it done and every node hosts the same ranges.

mod common_cluster;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common_cluster::{
    BOOTSTRAP_RANGES, CALL, ProcNode, TempDir, WAIT, bootstrap_done, report, three_nodes,
    until_keyspace_known,
};
use hyper::Method;
use node::admin::client::call;
use node::admin::kv::{LoadRequest, LoadResult, VerifyRequest, VerifyResult};
use node::admin::types::GroupInfo;
use node::group::{GroupId, NodeId};
use node::pd::PD_GROUP;

/// Writes per node (writers x writes).
const WRITERS: u32 = 4;
const WRITES: u32 = 2_500;

/// The ranges (not the PD group) hosted by `n`.
async fn hosted(n: &ProcNode) -> BTreeSet<GroupId> {
    let groups = n.groups().await.expect("groups");
    groups.iter().map(|g| g.range.id).filter(|&g| g != PD_GROUP).collect()
}

/// Moves the leader of a random led range on `nodes` every 700 ms until `stop`; returns
/// the transfers that raft accepted.
async fn move_leaders(admins: Vec<(NodeId, SocketAddr)>, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut moved = 0;
    let mut turn = 0usize;
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        turn += 1;
        let (id, admin) = admins[turn % admins.len()];
        let Ok(list) =
            call::<(), node::admin::types::GroupList>(admin, Method::GET, "/v1/groups", None, CALL).await
        else {
            continue;
        };
        let led: Vec<&GroupInfo> =
            list.groups.iter().filter(|g| g.range.id != PD_GROUP && g.leader == Some(id)).collect();
        let Some(g) = led.get(turn % led.len().max(1)) else { continue };
        let Some(&to) = g.range.voters.iter().find(|&&v| v != id) else { continue };
        let path = format!("/v1/groups/{}/transfer-leader", g.range.id);
        let body = serde_json::json!({ "to": to });
        if call::<_, serde_json::Value>(admin, Method::POST, &path, Some(&body), CALL).await.is_ok() {
            moved += 1;
        }
    }
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_from_every_node_reach_leaders_through_splits_and_leader_moves_with_no_error() {
    let tmp = TempDir::new("cluster-kv");
    let [mut n1, mut n2, mut n3] = three_nodes(&tmp, &["--pd-split-keys", "200"]);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    until_keyspace_known([&n1, &n2, &n3]).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mover = tokio::spawn(move_leaders(vec![(1, n1.admin), (2, n2.admin), (3, n3.admin)], stop_rx));
    let mut loads = Vec::new();
    for n in [&n1, &n2, &n3] {
        let req = LoadRequest {
            tag: format!("n{}", n.id),
            writers: WRITERS,
            writes: WRITES,
            value_bytes: 32,
            read_only: false,
        };
        let admin = n.admin;
        loads.push(tokio::spawn(async move {
            call::<_, LoadResult>(admin, Method::POST, "/v1/kv/load", Some(&req), Duration::from_secs(900))
                .await
                .expect("load")
        }));
    }
    let mut results = Vec::new();
    for l in loads {
        results.push(l.await.expect("load task"));
    }
    stop_tx.send_replace(true);
    let moved = mover.await.expect("mover");
    for (i, r) in results.iter().enumerate() {
        println!(
            "node {}: {} writes in {} ms; write p50/p99/max {:?} us, read {:?} us; errors {} {:?}",
            i + 1,
            r.written,
            r.elapsed_ms,
            r.write_us,
            r.read_us,
            r.errors,
            r.error_samples
        );
        assert_eq!((r.errors, r.mismatches), (0, 0), "node {}: {:?}", i + 1, r.error_samples);
        assert_eq!(r.written, u64::from(WRITERS * WRITES));
    }
    // Every acknowledged write reads back, through another node.
    for (from, tag) in [(&n2, "n1"), (&n3, "n2"), (&n1, "n3")] {
        let req = VerifyRequest { tag: tag.into(), writers: WRITERS, writes: WRITES, value_bytes: 32 };
        let v: VerifyResult =
            call(from.admin, Method::POST, "/v1/kv/verify", Some(&req), Duration::from_secs(900))
                .await
                .expect("verify");
        assert_eq!(
            (v.ok, v.lost, v.errors),
            (u64::from(WRITERS * WRITES), 0, 0),
            "{tag} read from node {}",
            from.id
        );
    }
    let r = report(n1.admin).await.expect("report");
    let splits = r.finished.iter().filter(|o| o.kind == "split").count();
    println!("{} ranges after the load; {splits} splits finished; {moved} leader transfers", r.ranges);
    assert!(r.ranges > BOOTSTRAP_RANGES, "nothing split: {} ranges", r.ranges);
    assert!(moved >= 5, "too few leader moves: {moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_survives_a_pd_leader_kill_and_a_full_restart_and_never_runs_twice() {
    let tmp = TempDir::new("cluster-bootstrap");
    let [mut n1, mut n2, mut n3] = three_nodes(&tmp, &[]);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    let first = bootstrap_done(n1.admin).await;
    let mut before = Vec::new();
    for n in [&n1, &n2, &n3] {
        let start = tokio::time::Instant::now();
        while hosted(n).await.len() < BOOTSTRAP_RANGES {
            assert!(start.elapsed() < WAIT, "node {} misses bootstrap replicas", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        before.push(hosted(n).await);
    }

    // Kill the PD leader: another takes over, finds the record done, creates nothing.
    let leader = first.leader;
    let mut nodes = [n1, n2, n3];
    let victim = nodes.iter().position(|n| n.id == leader).expect("leader is a node");
    nodes[victim].kill9();
    let other = &nodes[(victim + 1) % 3];
    let start = tokio::time::Instant::now();
    let second = loop {
        if let Some(r) = report(other.admin).await
            && r.leader != leader
            && r.mqtt_bootstrap == "done"
        {
            break r;
        }
        assert!(start.elapsed() < WAIT, "no new PD leader took over the bootstrap record");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("PD leader {} -> {}; bootstrap {}", leader, second.leader, second.mqtt_bootstrap);
    nodes[victim].spawn();

    // A full restart: every node killed, then started again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &mut nodes {
        n.kill9();
    }
    for n in &mut nodes {
        n.spawn();
    }
    for n in &nodes {
        n.wait_ready(2).await;
    }
    let after = bootstrap_done(nodes[0].admin).await;
    assert_eq!(after.ranges, BOOTSTRAP_RANGES, "the bootstrap ran again or lost ranges");
    for (n, was) in nodes.iter().zip(&before) {
        assert_eq!(&hosted(n).await, was, "node {} hosts other ranges after the restart", n.id);
    }
    // And the plane works after it.
    let req =
        LoadRequest { tag: "after-restart".into(), writers: 2, writes: 50, value_bytes: 0, read_only: false };
    let r: LoadResult =
        call(nodes[1].admin, Method::POST, "/v1/kv/load", Some(&req), Duration::from_secs(300))
            .await
            .expect("load");
    assert_eq!((r.written, r.errors, r.mismatches), (100, 0, 0), "{:?}", r.error_samples);
}
