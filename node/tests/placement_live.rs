//! The placement driver on a live loopback cluster of real `flotilla` processes.
//!
//! 1. Three nodes host the PD group (`--pd-voters 1,2,3`) and 48 ranges with three replicas
//!    each, all on nodes 1-3. A writer runs throughout.
//! 2. Nodes 4 and 5 join (without `--pd-voters`: they find the PD leader through their
//!    peers). The PD moves replicas and leaders to them until every node holds its share.
//! 3. `flotilla node drain 5` (the CLI, through node 1's admin endpoint) empties node 5.
//! 4. Every acknowledged write reads back.
//!
//! Further tests: a PD without quorum (traffic goes on, rebalancing stops), the PD leader
//! killed mid-rebalance, repair of a node down past the repair time, and a split.
//!
//! `FLOTILLA_PLACEMENT_RANGES` overrides the number of ranges.

mod common_cluster;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_cluster::{ProcNode, TempDir, WAIT, admin_map};
use hyper::Method;
use node::admin::client::{ClusterClient, pd_call};
use node::group::{GroupId, NodeId};
use node::pd::{NodeAdminState, PD_GROUP, PdReport};
use tokio::task::JoinSet;

type Acked = Arc<Mutex<Vec<(GroupId, String, String)>>>;

fn range_count() -> u64 {
    std::env::var("FLOTILLA_PLACEMENT_RANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

/// Range `g` owns keys `r/{g:05}/...`.
fn span(g: GroupId) -> (GroupId, String, String) {
    (g, format!("r/{g:05}/"), format!("r/{g:05}0"))
}

/// Nodes `1..=N` (node 1 the seed), not started; `args(id)` are each one's extra flags.
fn cluster<const N: usize>(tmp: &TempDir, args: impl Fn(NodeId) -> Vec<String>) -> [ProcNode; N] {
    let first = ProcNode::new(1, &tmp.0, Vec::new(), args(1));
    let seed = vec![first.cluster];
    let mut nodes = vec![first];
    for id in 2..=N as NodeId {
        nodes.push(ProcNode::new(id, &tmp.0, seed.clone(), args(id)));
    }
    nodes.try_into().unwrap_or_else(|_| unreachable!("N nodes made"))
}

/// These tests place groups created through the admin API: the MQTT keyspace bootstrap
/// (tested in `cluster_kv.rs`) stays off so that only those groups move.
fn no_bootstrap() -> Vec<String> {
    vec!["--mqtt-bootstrap".into(), "false".into()]
}

/// `--pd-voters 1,2,3` for nodes 1-3, nothing for the others (they find the PD).
fn pd_on_first_three(id: NodeId) -> Vec<String> {
    let mut args = no_bootstrap();
    if id <= 3 {
        args.extend(["--pd-voters".into(), "1,2,3".into()]);
    }
    args
}

async fn report(admin: SocketAddr) -> Option<PdReport> {
    pd_call(admin, Method::GET, "/v1/pd/report", Duration::from_secs(5)).await.ok()
}

/// Per node, (data replicas hosted, data leaders), as the nodes themselves report.
async fn placement(nodes: &[&ProcNode]) -> BTreeMap<NodeId, (usize, usize)> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let groups = n.groups().await.unwrap_or_default();
        let data: Vec<_> = groups.iter().filter(|g| g.range.id != PD_GROUP).collect();
        let leaders = data.iter().filter(|g| g.role == "leader").count();
        out.insert(n.id, (data.len(), leaders));
    }
    out
}

/// Whether every count is within `slack` of the mean of `counts`.
fn balanced(counts: &[usize], slack: f64) -> bool {
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    counts.iter().all(|&c| (c as f64 - mean).abs() <= slack.max(mean * 0.05))
}

/// Three writers putting unique keys round robin over `groups`, recording what was acked.
struct Writer {
    client: Arc<ClusterClient>,
    tasks: JoinSet<()>,
    stop: Arc<AtomicBool>,
    acked: Acked,
}

impl Writer {
    fn spawn(client: &Arc<ClusterClient>, groups: &[GroupId]) -> Self {
        let (stop, acked): (Arc<AtomicBool>, Acked) = (Arc::default(), Arc::default());
        let mut tasks = JoinSet::new();
        for w in 0..3u64 {
            let (client, groups, stop, acked) =
                (Arc::clone(client), groups.to_vec(), Arc::clone(&stop), Arc::clone(&acked));
            tasks.spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = groups[((seq * 3 + w) as usize) % groups.len()];
                    let (key, value) = (format!("r/{g:05}/w{w}-{seq}"), format!("v{seq}"));
                    match client.put(g, &key, &value).await {
                        Ok(()) => acked.lock().expect("lock").push((g, key, value)),
                        Err(e) => panic!("writer: group {g}: {e}"),
                    }
                    seq += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        Self { client: Arc::clone(client), tasks, stop, acked }
    }

    /// Stops the writers and reads every acknowledged write back; returns how many.
    async fn stop_and_verify(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(res) = self.tasks.join_next().await {
            res.expect("writer task");
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("lock"));
        for (g, key, value) in &acked {
            let got =
                self.client.get(*g, key).await.unwrap_or_else(|e| panic!("read {key} from group {g}: {e}"));
            assert_eq!(got.as_deref(), Some(value.as_str()), "group {g} key {key}");
        }
        acked.len()
    }
}

/// Waits until `check` holds for the placement over `nodes`; panics with the last one.
async fn wait_placement(
    nodes: &[&ProcNode],
    what: &str,
    check: impl Fn(&BTreeMap<NodeId, (usize, usize)>) -> bool,
) -> BTreeMap<NodeId, (usize, usize)> {
    let start = tokio::time::Instant::now();
    loop {
        let p = placement(nodes).await;
        if check(&p) {
            println!("{what}: after {:.1} s: {p:?}", start.elapsed().as_secs_f64());
            return p;
        }
        if start.elapsed() > WAIT / 2 {
            let pd = report(nodes[0].admin).await;
            let pd_nodes = pd.as_ref().map(|r| &r.nodes);
            let pending = pd.as_ref().map(|r| &r.pending);
            let finished = pd.as_ref().map(|r| &r.finished[r.finished.len().saturating_sub(30)..]);
            panic!(
                "{what}: not reached; placement (replicas, leaders) {p:?}\nPD nodes {pd_nodes:#?}\n\
                 pending {pending:#?}\nlast finished {finished:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_get_their_share_and_a_drained_node_empties() {
    let n_ranges = range_count();
    let groups: Vec<GroupId> = (1..=n_ranges).collect();
    let tmp = TempDir::new("placement");
    let [mut n1, mut n2, mut n3, mut n4, mut n5] = cluster(&tmp, pd_on_first_three);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    let ranges: Vec<_> = groups.iter().map(|&g| span(g)).collect();
    for n in [&n1, &n2, &n3] {
        n.create_ranges(&ranges, &[1, 2, 3]).await;
    }

    // The PD leader sees all three nodes and every range.
    let start = tokio::time::Instant::now();
    loop {
        if let Some(r) = report(n1.admin).await
            && r.nodes.len() == 3
            && r.ranges == n_ranges as usize
            && r.scheduling
        {
            println!(
                "PD leader {} sees {} ranges after {:.1} s",
                r.leader,
                r.ranges,
                start.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(start.elapsed() < WAIT, "the PD never saw the cluster: {:?}", report(n1.admin).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let all = [&n1, &n2, &n3, &n4, &n5];
    let client = Arc::new(ClusterClient::new(admin_map(all), Duration::from_secs(60)));
    let writer = Writer::spawn(&client, &groups);

    // Two nodes join; replicas and leaders spread to them.
    n4.spawn();
    n5.spawn();
    let all = [&n1, &n2, &n3, &n4, &n5];
    let spread = wait_placement(&all, "spread to 5 nodes", |p| {
        let replicas: Vec<usize> = p.values().map(|v| v.0).collect();
        let leaders: Vec<usize> = p.values().map(|v| v.1).collect();
        replicas.iter().sum::<usize>() == 3 * n_ranges as usize
            && leaders.iter().sum::<usize>() == n_ranges as usize
            && balanced(&replicas, 2.0)
            && balanced(&leaders, 2.0)
    })
    .await;
    assert!(spread[&4].0 > 0 && spread[&5].0 > 0 && spread[&4].1 > 0 && spread[&5].1 > 0);

    // Drain node 5 through the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("FLOTILLA_ADMIN_TOKEN", common_cluster::TOKEN)
        .args(["node", "drain", "5", "--admin", &n1.admin.to_string()])
        .output()
        .expect("run flotilla node drain");
    assert!(out.status.success(), "drain failed: {}", String::from_utf8_lossy(&out.stderr));
    wait_placement(&all, "node 5 drained", |p| {
        let rest: Vec<usize> = p.iter().filter(|(n, _)| **n != 5).map(|(_, v)| v.0).collect();
        p[&5] == (0, 0) && rest.iter().sum::<usize>() == 3 * n_ranges as usize
    })
    .await;
    // The PD's view catches up with the last removal's heartbeat.
    let start = tokio::time::Instant::now();
    let r = loop {
        let r = report(n1.admin).await;
        let five = r.as_ref().and_then(|r| r.nodes.iter().find(|n| n.node == 5).cloned());
        if let Some(five) = &five
            && five.replicas == 0
            && five.reported_replicas == 0
        {
            assert_eq!(five.state, NodeAdminState::Draining);
            break r.expect("report");
        }
        assert!(start.elapsed() < WAIT, "the PD still places replicas on node 5: {five:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let kinds: BTreeMap<&str, usize> = r.finished.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o.kind.as_str()).or_default() += 1;
        m
    });
    println!("finished operators by kind: {kinds:?}; admitted {}", r.admitted);
    assert!(kinds.contains_key("evict-replica") || kinds.contains_key("evict-leader"), "{kinds:?}");

    // Remove the empty node for good: the PD records it as removed and refuses to resume it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("FLOTILLA_ADMIN_TOKEN", common_cluster::TOKEN)
        .args(["node", "remove", "5", "--admin", &n2.admin.to_string()])
        .output()
        .expect("run flotilla node remove");
    assert!(out.status.success(), "remove failed: {}", String::from_utf8_lossy(&out.stderr));
    let start = tokio::time::Instant::now();
    loop {
        let state =
            report(n1.admin).await.and_then(|r| r.nodes.iter().find(|n| n.node == 5).map(|n| n.state));
        if state == Some(NodeAdminState::Removed) {
            break;
        }
        assert!(start.elapsed() < WAIT, "node 5 never became removed: {state:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let resume = pd_call::<serde_json::Value>(
        n1.admin,
        Method::POST,
        "/v1/pd/nodes/5/resume",
        Duration::from_secs(10),
    )
    .await;
    assert!(resume.is_err(), "a removed node was resumed: {resume:?}");

    // Nothing acknowledged is lost.
    let acked = writer.stop_and_verify().await;
    assert!(acked > 100, "the writer made little progress: {acked}");
    println!("{acked} acknowledged writes read back");
}

/// Writes one key to every group; panics on a failure.
async fn write_all(client: &ClusterClient, groups: &[GroupId], round: u64) {
    for &g in groups {
        let key = format!("r/{g:05}/round{round}");
        client.put(g, &key, "x").await.unwrap_or_else(|e| panic!("round {round}: group {g}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pd_quorum_traffic_goes_on_and_only_rebalancing_stops() {
    let groups: Vec<GroupId> = (1..=12).collect();
    let tmp = TempDir::new("placement-pd-down");
    let [mut n1, mut n2, mut n3, mut n4, mut n5] = cluster(&tmp, pd_on_first_three);
    for n in [&mut n1, &mut n2, &mut n3, &mut n4, &mut n5] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3, &n4, &n5] {
        n.wait_ready(4).await;
    }
    // Data on nodes 1, 4 and 5 only: losing nodes 2 and 3 costs the PD its quorum, not the
    // data. Nodes 2 and 3 are drained first so that the PD has nothing to move to them.
    for id in [2, 3] {
        let path = format!("/v1/pd/nodes/{id}/drain");
        let _: serde_json::Value = pd_call(n1.admin, Method::POST, &path, WAIT).await.expect("drain");
    }
    let ranges: Vec<_> = groups.iter().map(|&g| span(g)).collect();
    for n in [&n1, &n4, &n5] {
        n.create_ranges(&ranges, &[1, 4, 5]).await;
    }
    let client = ClusterClient::new(admin_map([&n1, &n2, &n3, &n4, &n5]), Duration::from_secs(60));
    write_all(&client, &groups, 0).await;
    // The PD sees every range and has nothing to do.
    let start = tokio::time::Instant::now();
    loop {
        let r = report(n1.admin).await;
        if r.as_ref().is_some_and(|r| r.ranges == groups.len() && r.pending.is_empty() && r.scheduling) {
            break;
        }
        assert!(start.elapsed() < WAIT, "the PD never settled: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    n2.kill9();
    n3.kill9();
    let before = placement(&[&n1, &n4, &n5]).await;
    write_all(&client, &groups, 1).await;
    let drain =
        pd_call::<serde_json::Value>(n1.admin, Method::POST, "/v1/pd/nodes/5/drain", Duration::from_secs(10))
            .await;
    assert!(drain.is_err(), "a drain was recorded without a PD quorum: {drain:?}");
    write_all(&client, &groups, 2).await;
    let after = placement(&[&n1, &n4, &n5]).await;
    assert_eq!(
        before.values().map(|v| v.0).collect::<Vec<_>>(),
        after.values().map(|v| v.0).collect::<Vec<_>>()
    );
    println!(
        "PD down: writes to all {} groups went on; the drain was refused: {}",
        groups.len(),
        drain.unwrap_err()
    );

    // The PD comes back; nodes 2 and 3 serve again, and the drain is recorded and carried out.
    n2.spawn();
    n3.spawn();
    for path in ["/v1/pd/nodes/2/resume", "/v1/pd/nodes/3/resume", "/v1/pd/nodes/5/drain"] {
        let _: serde_json::Value = pd_call(n1.admin, Method::POST, path, WAIT).await.expect("after recovery");
    }
    let all = [&n1, &n2, &n3, &n4, &n5];
    wait_placement(&all, "node 5 drained after the PD recovered", |p| {
        p[&5] == (0, 0) && p.values().map(|v| v.0).sum::<usize>() == 3 * groups.len()
    })
    .await;
    write_all(&client, &groups, 3).await;
    for round in 0..4 {
        for &g in &groups {
            let key = format!("r/{g:05}/round{round}");
            assert_eq!(client.get(g, &key).await.expect("read").as_deref(), Some("x"), "{key}");
        }
    }
}

/// The range owning `key`, from `node`'s replicas (refreshed by the caller on a miss).
fn owner(ranges: &[node::admin::types::RangeInfo], key: &str) -> Option<GroupId> {
    ranges
        .iter()
        .find(|r| key >= r.start.as_str() && (r.end.is_empty() || key < r.end.as_str()))
        .map(|r| r.id)
}

async fn ranges_of(n: &ProcNode) -> Vec<node::admin::types::RangeInfo> {
    n.groups()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.range.id != PD_GROUP)
        .map(|g| g.range)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_over_the_key_threshold_splits_and_nothing_acknowledged_is_lost() {
    let tmp = TempDir::new("placement-split");
    let mut args = ["--pd-voters", "1,2,3", "--pd-split-keys", "100"].map(String::from).to_vec();
    args.extend(no_bootstrap());
    let [mut n1, mut n2, mut n3] = cluster(&tmp, |_| args.clone());
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    for n in [&n1, &n2, &n3] {
        n.create_ranges(&[(1, "r/".into(), "r0".into())], &[1, 2, 3]).await;
    }
    let client = ClusterClient::new(admin_map([&n1, &n2, &n3]), Duration::from_secs(30));
    let mut ranges = ranges_of(&n1).await;
    let mut acked = Vec::new();
    for i in 0..450u64 {
        let (key, value) = (format!("r/k{i:05}"), format!("v{i}"));
        let start = tokio::time::Instant::now();
        loop {
            let g = owner(&ranges, &key).unwrap_or(1);
            match client.put(g, &key, &value).await {
                Ok(()) => break,
                // The range split under the write: find the key's range again.
                Err(e) => {
                    assert!(start.elapsed() < WAIT, "write {key}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ranges = ranges_of(&n1).await;
                }
            }
        }
        acked.push((key, value));
    }
    // The PD splits until every range is under the threshold.
    let start = tokio::time::Instant::now();
    loop {
        ranges = ranges_of(&n1).await;
        let keys: Vec<u64> = {
            let groups = n1.groups().await.unwrap_or_default();
            groups.iter().filter(|g| g.range.id != PD_GROUP).map(|g| g.keys).collect()
        };
        if ranges.len() >= 5 && keys.iter().all(|&k| k <= 100) && keys.iter().sum::<u64>() == 450 {
            println!(
                "{} ranges after {:.1} s, keys per range {keys:?}",
                ranges.len(),
                start.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(start.elapsed() < WAIT, "ranges did not split: {} ranges, keys {keys:?}", ranges.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = report(n1.admin).await.expect("PD report");
    assert!(r.finished.iter().any(|o| o.kind == "split-size" && o.outcome == "finished"), "{:?}", r.finished);
    // The ranges tile the old span, and every acknowledged key reads back from its range.
    let mut spans: Vec<(String, String)> = ranges.iter().map(|r| (r.start.clone(), r.end.clone())).collect();
    spans.sort();
    assert_eq!(spans.first().map(|s| s.0.as_str()), Some("r/"));
    assert_eq!(spans.last().map(|s| s.1.as_str()), Some("r0"));
    assert!(spans.windows(2).all(|w| w[0].1 == w[1].0), "gaps or overlaps: {spans:?}");
    for (key, value) in &acked {
        let g = owner(&ranges, key).expect("an owner");
        assert_eq!(client.get(g, key).await.expect("read").as_deref(), Some(value.as_str()), "{key} in {g}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_node_down_past_the_repair_time_are_recreated_elsewhere() {
    let groups: Vec<GroupId> = (1..=12).collect();
    let tmp = TempDir::new("placement-repair");
    let config = tmp.0.join("pd.toml");
    std::fs::write(&config, "[pd]\nnode-down-after-ms = 3000\nnode-repair-after-ms = 5000\n")
        .expect("config");
    let mut args =
        vec!["--pd-voters".into(), "1,2,3".into(), "--config".into(), config.display().to_string()];
    args.extend(no_bootstrap());
    let [mut n1, mut n2, mut n3, mut n4] = cluster(&tmp, |_| args.clone());
    for n in [&mut n1, &mut n2, &mut n3, &mut n4] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3, &n4] {
        n.wait_ready(3).await;
    }
    // Every range on nodes 1, 2 and 4; node 3 holds nothing yet.
    let ranges: Vec<_> = groups.iter().map(|&g| span(g)).collect();
    for n in [&n1, &n2, &n4] {
        n.create_ranges(&ranges, &[1, 2, 4]).await;
    }
    let client = Arc::new(ClusterClient::new(admin_map([&n1, &n2, &n3, &n4]), Duration::from_secs(60)));
    let writer = Writer::spawn(&client, &groups);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut on_four = 0;
    for g in &groups {
        on_four += usize::from(n1.group(*g).await.is_ok_and(|i| i.range.voters.contains(&4)));
    }
    n4.kill9();
    let live = [&n1, &n2, &n3];
    wait_placement(&live, "node 4's replicas re-created on node 3", |p| {
        p[&3].0 == groups.len() && p[&1].0 == groups.len() && p[&2].0 == groups.len()
    })
    .await;
    // Every range has exactly three voters again, none of them node 4 (its removal is the
    // operator's last step).
    let start = tokio::time::Instant::now();
    loop {
        let mut wrong = Vec::new();
        for g in &groups {
            let voters = n1.group(*g).await.map(|i| i.range.voters).unwrap_or_default();
            if voters != [1, 2, 3] {
                wrong.push((*g, voters));
            }
        }
        if wrong.is_empty() {
            println!("every range on nodes 1-3 after {:.1} s more", start.elapsed().as_secs_f64());
            break;
        }
        if start.elapsed() > WAIT / 3 {
            let r = report(n1.admin).await;
            let ops: Vec<_> = r
                .iter()
                .flat_map(|r| r.pending.iter().chain(&r.finished))
                .filter(|o| wrong.iter().any(|(g, _)| *g == o.group))
                .collect();
            panic!("ranges still not repaired: {wrong:?}; their operators {ops:#?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = report(n1.admin).await.expect("PD report");
    let repairs = r.finished.iter().filter(|o| o.kind == "repair-down" && o.outcome == "finished").count();
    // (The PD may already have moved some of node 4's replicas to the empty node 3 by balance.)
    println!(
        "repair-down operators finished: {repairs}; ranges with a replica on node 4 when it died: {on_four}"
    );
    assert!(repairs >= 1 && repairs <= on_four, "{:?}", r.finished);

    println!("{} acknowledged writes read back after the repair", writer.stop_and_verify().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pd_leader_killed_mid_rebalance_hands_over_and_the_rebalance_completes() {
    let groups: Vec<GroupId> = (1..=24).collect();
    let tmp = TempDir::new("placement-failover");
    let [mut n1, mut n2, mut n3, mut n4] = cluster(&tmp, pd_on_first_three);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    let ranges: Vec<_> = groups.iter().map(|&g| span(g)).collect();
    for n in [&n1, &n2, &n3] {
        n.create_ranges(&ranges, &[1, 2, 3]).await;
    }
    let client = Arc::new(ClusterClient::new(admin_map([&n1, &n2, &n3, &n4]), Duration::from_secs(60)));
    let writer = Writer::spawn(&client, &groups);

    n4.spawn();
    wait_placement(&[&n1, &n2, &n3, &n4], "node 4 receiving replicas", |p| {
        p.get(&4).is_some_and(|v| v.0 >= 2)
    })
    .await;
    let leader = report(n1.admin).await.map(|r| r.leader).expect("a PD leader");
    let victim = [&mut n1, &mut n2, &mut n3]
        .into_iter()
        .find(|n| n.id == leader)
        .expect("the PD leader is a PD voter");
    victim.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    victim.spawn();
    let all = [&n1, &n2, &n3, &n4];
    wait_placement(&all, "rebalanced after the PD leader was killed", |p| {
        let replicas: Vec<usize> = p.values().map(|v| v.0).collect();
        let leaders: Vec<usize> = p.values().map(|v| v.1).collect();
        replicas.iter().sum::<usize>() == 3 * groups.len()
            && leaders.iter().sum::<usize>() == groups.len()
            && balanced(&replicas, 2.0)
            && balanced(&leaders, 2.0)
    })
    .await;
    let new_leader = report(n1.admin).await.map(|r| r.leader);
    println!("PD leader {leader} killed; PD leader now {new_leader:?}");

    println!("{} acknowledged writes read back", writer.stop_and_verify().await);
}
