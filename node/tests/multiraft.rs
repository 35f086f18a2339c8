//! Multi-raft over real processes: three `flotilla` nodes on loopback (QUIC transport, dev
//! TLS, admin API), 1,000 groups with three replicas each.
//!
//! 1. Write to every group.
//! 2. `kill -9` the node holding the most leaders; writes to every group continue on the
//!    majority (the time until they all succeeded is printed).
//! 3. Restart it: it recovers every group from disk and catches up to identical state
//!    (same applied index and state digest on all replicas).
//! 4. With a writer running: transfer leaders, then add a 4th node as learner, promote it
//!    and remove node 1 in a subset of groups. Every acknowledged write is read back.
//!
//! `FLOTILLA_MULTIRAFT_GROUPS` overrides the number of groups (default 1,000).

mod common_cluster;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_cluster::{ProcNode, TempDir, WAIT, admin_map, replicas};
use node::admin::client::{ClientError, ClusterClient};
use node::admin::types::{ApiError, PeerOp};
use node::group::{GroupId, NodeId};
use tokio::task::JoinSet;

/// Groups whose membership changes (a subset: each change is a few round trips).
const MEMBERSHIP_GROUPS: u64 = 30;
/// Groups whose leader is transferred.
const TRANSFER_GROUPS: u64 = 100;
/// Concurrent requests of one write round.
const CONCURRENCY: usize = 32;

fn group_count() -> u64 {
    std::env::var("FLOTILLA_MULTIRAFT_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

/// Writes `k{round}` to every group in `groups`; panics if any write fails.
async fn write_round(client: &Arc<ClusterClient>, groups: &[GroupId], round: u64) {
    let mut set = JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    for &g in groups {
        let client = Arc::clone(client);
        let permit = Arc::clone(&sem).acquire_owned().await.expect("semaphore");
        set.spawn(async move {
            let r = client.put(g, &format!("k{round}"), &format!("v{g}-{round}")).await;
            drop(permit);
            (g, r)
        });
    }
    while let Some(res) = set.join_next().await {
        let (g, r) = res.expect("task");
        r.unwrap_or_else(|e| panic!("write round {round} to group {g}: {e}"));
    }
}

/// Leaders per node, as the replicas report them.
async fn leaders(nodes: &[&ProcNode]) -> BTreeMap<NodeId, Vec<GroupId>> {
    let mut out: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
    for n in nodes {
        if let Ok(groups) = n.groups().await {
            for g in groups.iter().filter(|g| g.role == "leader") {
                out.entry(n.id).or_default().push(g.range.id);
            }
        }
    }
    out
}

/// Waits until every group in `groups` has all of `members` (and only they) applied to the
/// same index with the same digest.
async fn wait_identical(nodes: &[&ProcNode], groups: &[GroupId], members: impl Fn(GroupId) -> Vec<NodeId>) {
    let start = tokio::time::Instant::now();
    loop {
        let all = replicas(nodes).await;
        let bad: Vec<GroupId> = groups
            .iter()
            .copied()
            .filter(|g| {
                let Some(reps) = all.get(g) else { return true };
                let want = members(*g);
                let mut have: Vec<NodeId> = reps.iter().map(|(n, _)| *n).collect();
                have.sort_unstable();
                let first = &reps[0].1;
                have != want
                    || reps.iter().any(|(_, r)| r.applied != first.applied || r.digest != first.digest)
            })
            .collect();
        if bad.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{} groups not identical, e.g. {:?}",
            bad.len(),
            all.get(&bad[0]).map(|r| r
                .iter()
                .map(|(n, g)| (*n, g.applied, g.digest, g.range.voters.clone()))
                .collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The background writer: unique keys round robin over `groups`; records what was acked.
fn spawn_writer(
    client: Arc<ClusterClient>,
    groups: Vec<GroupId>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(GroupId, String, String)>>>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for w in 0..4u64 {
        let (client, groups, stop, acked) =
            (Arc::clone(&client), groups.clone(), Arc::clone(&stop), Arc::clone(&acked));
        set.spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let g = groups[((seq * 4 + w) as usize) % groups.len()];
                let (key, value) = (format!("w{w}-{seq}"), format!("x{seq}"));
                match client.put(g, &key, &value).await {
                    Ok(()) => acked.lock().expect("lock").push((g, key, value)),
                    Err(e) => panic!("writer: group {g}: {e}"),
                }
                seq += 1;
            }
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_kill_restart_transfer_and_membership_changes() {
    let n_groups = group_count();
    let groups: Vec<GroupId> = (1..=n_groups).collect();
    let tmp = TempDir::new("multiraft");
    let mut n1 = ProcNode::new(1, &tmp.0, Vec::new(), Vec::new());
    let seed = vec![n1.cluster];
    let mut n2 = ProcNode::new(2, &tmp.0, seed.clone(), Vec::new());
    let mut n3 = ProcNode::new(3, &tmp.0, seed.clone(), Vec::new());
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    for n in [&n1, &n2, &n3] {
        assert_eq!(n.create_groups(&groups, &[1, 2, 3]).await, groups.len());
    }
    let client = Arc::new(ClusterClient::new(admin_map([&n1, &n2, &n3]), Duration::from_secs(120)));

    // 1. Every group takes a write.
    write_round(&client, &groups, 1).await;

    // 2. kill -9 the node with the most leaders; the majority keeps accepting writes.
    let by_node = leaders(&[&n1, &n2, &n3]).await;
    let (&victim, led) = by_node.iter().max_by_key(|(_, g)| g.len()).expect("some leader");
    eprintln!("leaders per node: {:?}", by_node.iter().map(|(n, g)| (*n, g.len())).collect::<Vec<_>>());
    let led = led.clone();
    let victim_node = [&mut n1, &mut n2, &mut n3].into_iter().find(|n| n.id == victim).expect("victim");
    let killed_at = tokio::time::Instant::now();
    victim_node.kill9();
    // The first write to a group the victim led waits for detection and a new election.
    client.put(led[0], "probe", "1").await.expect("write after the kill");
    eprintln!(
        "first write to a group led by the killed node succeeded {:?} after the kill",
        killed_at.elapsed()
    );
    write_round(&client, &groups, 2).await;
    eprintln!(
        "node {victim} (leader of {} groups) killed: writes to all {n_groups} groups succeeded {:?} later",
        led.len(),
        killed_at.elapsed()
    );

    // 3. Restart: recover from disk, catch up to identical state.
    victim_node.spawn();
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    wait_identical(&[&n1, &n2, &n3], &groups, |_| vec![1, 2, 3]).await;
    let restarted = [&n1, &n2, &n3].into_iter().find(|n| n.id == victim).expect("victim");
    for &g in led.iter().take(20) {
        let info = restarted.group(g).await.expect("recovered group");
        assert!(info.applied > 0);
    }

    // 4. Writes keep running through leader transfers and membership changes.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writer = spawn_writer(Arc::clone(&client), groups.clone(), Arc::clone(&stop), Arc::clone(&acked));

    let mut transferred = Vec::new();
    let before = leaders(&[&n1, &n2, &n3]).await;
    let leader_of = |g: GroupId| before.iter().find(|(_, l)| l.contains(&g)).map_or(1, |(n, _)| *n);
    for g in 1..=TRANSFER_GROUPS.min(n_groups) {
        let to = leader_of(g) % 3 + 1;
        match client.transfer_leader(g, to).await {
            Ok(()) => transferred.push((g, to)),
            Err(ClientError::Api(ApiError::Rejected { .. })) => {}
            Err(e) => panic!("transfer group {g} to {to}: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now_leading = leaders(&[&n1, &n2, &n3]).await;
    let moved =
        transferred.iter().filter(|(g, to)| now_leading.get(to).is_some_and(|l| l.contains(g))).count();
    eprintln!("leader transfers accepted: {}, took effect: {moved}", transferred.len());
    assert!(transferred.len() * 2 >= TRANSFER_GROUPS.min(n_groups) as usize, "most transfers were accepted");
    assert!(moved * 2 >= transferred.len(), "most transfers took effect: {moved}/{}", transferred.len());

    let mut n4 = ProcNode::new(4, &tmp.0, seed.clone(), Vec::new());
    n4.spawn();
    n4.wait_ready(3).await;
    client.set_node(4, n4.admin);
    let changed: Vec<GroupId> = (1..=MEMBERSHIP_GROUPS.min(n_groups)).collect();
    for &g in &changed {
        client.change_peer(g, PeerOp::AddLearner, 4).await.expect("add learner");
        let start = tokio::time::Instant::now();
        while n4.group(g).await.map_or(true, |i| i.applied == 0) {
            assert!(start.elapsed() < WAIT, "learner of group {g} never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.change_peer(g, PeerOp::AddVoter, 4).await.expect("promote");
        remove_node_1(&client, g).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = writer.join_next().await {
        r.expect("writer");
    }

    // Nothing acknowledged is lost, and the replicas agree.
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    eprintln!("writes acknowledged while transferring and changing members: {}", acked.len());
    assert!(!acked.is_empty());
    for (g, key, value) in &acked {
        let got = client.get(*g, key).await.unwrap_or_else(|e| panic!("read back {g}/{key}: {e}"));
        assert_eq!(got.as_deref(), Some(value.as_str()), "group {g} key {key}");
    }
    let all = [&n1, &n2, &n3, &n4];
    wait_identical(&all, &groups, |g| if g <= MEMBERSHIP_GROUPS { vec![2, 3, 4] } else { vec![1, 2, 3] })
        .await;
}

/// Removes node 1 from `g`; the leader never removes itself, so move leadership first.
async fn remove_node_1(client: &ClusterClient, g: GroupId) {
    let start = tokio::time::Instant::now();
    loop {
        match client.change_peer(g, PeerOp::Remove, 1).await {
            Ok(_) => return,
            Err(ClientError::Api(ApiError::Rejected { .. })) => {
                let _ = client.transfer_leader(g, 4).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("remove node 1 from group {g}: {e}"),
        }
        assert!(start.elapsed() < WAIT, "could not remove node 1 from group {g}");
    }
}
