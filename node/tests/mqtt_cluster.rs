//! MQTT across nodes, live: three real `flotilla` processes (`--pd-voters 1,2,3`, the MQTT
//! keyspace bootstrapped by the placement driver), clients from rumqttc v4 (3.1.1) and v5.
//! Client placement comes from a seed printed at the start (`FLOTILLA_TEST_SEED` replays
//! one). CLUSTER.md section 6.

#[path = "mqtt_cluster/client.rs"]
mod client;
mod common_cluster;

use std::collections::HashMap;
use std::time::Duration;

use client::{Client, Ev, Got, Opts, Proto, connect, connect_opts};

use common_cluster::{ProcNode, TempDir, three_nodes, until_keyspace_known};

/// One cluster at a time: 21 processes of parallel tests would race for the free ports they
/// pick and starve each other on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three nodes with the MQTT keyspace bootstrapped and known to every node; the guard keeps
/// other tests' clusters away while it lives.
async fn cluster(tmp: &TempDir) -> (tokio::sync::MutexGuard<'static, ()>, [ProcNode; 3]) {
    cluster_with(tmp, &[]).await
}

/// [`cluster`] with extra arguments for every node.
async fn cluster_with(tmp: &TempDir, args: &[&str]) -> (tokio::sync::MutexGuard<'static, ()>, [ProcNode; 3]) {
    let guard = ONE_AT_A_TIME.lock().await;
    let [mut n1, mut n2, mut n3] = three_nodes(tmp, args);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    until_keyspace_known([&n1, &n2, &n3]).await;
    (guard, [n1, n2, n3])
}

/// The run's seed: `FLOTILLA_TEST_SEED`, or the clock; printed so a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("FLOTILLA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed} (replay with FLOTILLA_TEST_SEED={seed})");
    seed
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Waits for `n` acknowledgements (PUBACK/PUBCOMP) on `c`; returns their reason codes.
async fn acks(c: &mut Client, n: usize) -> Vec<u8> {
    let mut codes = Vec::new();
    while codes.len() < n {
        match c.next(Duration::from_secs(60)).await {
            Some(Ev::Acked { code, .. }) => codes.push(code),
            Some(Ev::Closed(e)) => panic!("{}: closed while publishing: {e}", c.name),
            Some(_) => {}
            None => panic!("{}: {} of {n} acknowledgements", c.name, codes.len()),
        }
    }
    codes
}

/// Collects publishes on `c` until `done` says enough or `quiet` passes without one.
async fn collect(c: &mut Client, got: &mut Vec<Got>, quiet: Duration, done: impl Fn(&[Got]) -> bool) {
    while !done(got) {
        match c.next(quiet).await {
            Some(Ev::Publish(g)) => got.push(g),
            Some(Ev::Closed(e)) => panic!("{}: closed: {e}", c.name),
            Some(_) => {}
            None => return,
        }
    }
}

/// Payload `publisher:seq:qos`.
fn parse(g: &Got) -> (usize, u32, u8) {
    let s = String::from_utf8_lossy(&g.payload);
    let mut it = s.split(':').map(|x| x.parse::<u64>().expect("payload field"));
    let (p, seq, q) = (it.next().expect("publisher"), it.next().expect("seq"), it.next().expect("qos"));
    (p as usize, seq as u32, q as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_on_any_node_reaches_subscribers_on_every_node() {
    const PER_PUBLISHER: u32 = 150;
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-fanout");
    let (_one, nodes) = cluster(&tmp).await;
    let protos = [Proto::V4, Proto::V5];

    // Subscribers: on every node a literal, a `+` and a `#` subscriber, each drawn v4 or v5.
    // Publisher p publishes on `fleet/p{p}/t`; the literal subscriber of node i listens to
    // publisher (i + 1) % 3, so every literal route crosses nodes.
    let mut subs: Vec<(Client, Vec<usize>, Vec<Got>)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let lit = format!("fleet/p{}/t", (i + 1) % 3);
        for (kind, filter, wants) in [
            ("lit", lit.as_str(), vec![(i + 1) % 3]),
            ("plus", "fleet/+/t", vec![0, 1, 2]),
            ("hash", "fleet/#", vec![0, 1, 2]),
        ] {
            let proto = protos[rng.below(2)];
            let name = format!("sub-{kind}-n{}-{proto:?}", n.id);
            let mut c = connect(n.mqtt, &name, proto, true).await;
            let mut stash = Vec::new();
            let codes = c.subscribe(filter, 2, &mut stash).await;
            assert_eq!(codes, vec![2], "{name}: SUBACK for {filter}");
            subs.push((c, wants, stash));
        }
    }
    // Publishers: one per node, placed by the seed; QoS cycles 0, 1, 2.
    let mut pubs = Vec::new();
    for p in 0..3 {
        let n = &nodes[rng.below(3)];
        let proto = protos[rng.below(2)];
        let c = connect(n.mqtt, &format!("pub-{p}-n{}-{proto:?}", n.id), proto, true).await;
        pubs.push(c);
    }
    for seq in 0..PER_PUBLISHER {
        for (p, c) in pubs.iter().enumerate() {
            let qos = (seq % 3) as u8;
            c.publish(&format!("fleet/p{p}/t"), qos, format!("{p}:{seq}:{qos}").into_bytes()).await;
        }
    }
    let acked = PER_PUBLISHER as usize * 2 / 3;
    for c in &mut pubs {
        let codes = acks(c, acked).await;
        assert!(codes.iter().all(|&c| c == 0), "{}: acks {codes:?}", c.name);
    }
    for (c, wants, got) in &mut subs {
        let expect = wants.len() * PER_PUBLISHER as usize;
        collect(c, got, Duration::from_secs(10), |g| g.len() >= expect).await;
        let mut per: HashMap<usize, Vec<(u32, u8)>> = HashMap::new();
        for g in got.iter() {
            let (p, seq, q) = parse(g);
            per.entry(p).or_default().push((seq, q));
        }
        for &p in wants.iter() {
            let seen = per.remove(&p).unwrap_or_default();
            // Per-publisher order (MQTT 5 section 4.6); QoS 1 may repeat (DUP), QoS 2 never.
            let mut last: Option<u32> = None;
            let mut qos2 = HashMap::new();
            for &(seq, q) in &seen {
                if q == 2 {
                    *qos2.entry(seq).or_insert(0) += 1;
                }
                if let Some(l) = last {
                    assert!(seq > l || (q == 1 && seq == l), "{}: publisher {p}: {seq} after {l}", c.name);
                }
                last = Some(seq);
            }
            assert!(qos2.values().all(|&n| n == 1), "{}: a QoS 2 message twice", c.name);
            let mut distinct: Vec<u32> = seen.iter().map(|s| s.0).collect();
            distinct.dedup();
            assert_eq!(distinct.len(), PER_PUBLISHER as usize, "{}: from publisher {p}", c.name);
        }
        assert!(per.is_empty(), "{}: messages it did not subscribe to: {:?}", c.name, per.keys());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suback_then_publish_on_another_node_is_delivered() {
    const ROUNDS: u32 = 1000;
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-suback");
    let (_one, nodes) = cluster(&tmp).await;
    let mut misses = 0;
    let mut clients: Vec<Client> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        clients.push(connect(n.mqtt, &format!("sub-n{}", n.id), Proto::V5, true).await);
        clients.push(connect(n.mqtt, &format!("pub-n{}", n.id), Proto::V4, true).await);
        let _ = i;
    }
    for round in 0..ROUNDS {
        // A fresh filter each round: the route row is new, so the SUBACK must wait for it.
        let s = rng.below(3);
        let p = (s + 1 + rng.below(2)) % 3;
        let topic = format!("round/{round}/x");
        let filter = if round % 2 == 0 { topic.clone() } else { format!("round/{round}/+") };
        let mut stash = Vec::new();
        let codes = clients[2 * s].subscribe(&filter, 1, &mut stash).await;
        assert_eq!(codes, vec![1], "round {round}: SUBACK");
        clients[2 * p + 1].publish(&topic, 1, round.to_string().into_bytes()).await;
        let mut got = stash;
        collect(&mut clients[2 * s], &mut got, Duration::from_secs(10), |g| {
            g.iter().any(|g| g.topic == topic)
        })
        .await;
        if !got.iter().any(|g| g.topic == topic) {
            misses += 1;
            println!("round {round}: subscribed on node {}, published on node {}: missed", s + 1, p + 1);
        }
    }
    assert_eq!(misses, 0, "publishes after SUBACK that never arrived");
}

/// Waits for the next publish on `c` within `wait`.
async fn next_publish(c: &mut Client, wait: Duration) -> Option<Got> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next(left).await {
            Some(Ev::Publish(g)) => return Some(g),
            Some(Ev::Closed(e)) => panic!("{}: closed: {e}", c.name),
            Some(_) => {}
            None => return None,
        }
    }
}

/// Three distinct nodes drawn from the seed: (first, second, third).
fn three(rng: &mut Rng) -> (usize, usize, usize) {
    let a = rng.below(3);
    let b = (a + 1 + rng.below(2)) % 3;
    (a, b, 3 - a - b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeover_across_nodes() {
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-takeover");
    let (_one, nodes) = cluster(&tmp).await;
    let (a, b, c) = three(&mut rng);
    let persistent = Opts { clean: false, expiry: Some(300), will: None };
    let (mut old, present) = connect_opts(nodes[a].mqtt, "car-7", Proto::V5, persistent.clone()).await;
    assert!(!present, "a new session");
    let mut stash = Vec::new();
    assert_eq!(old.subscribe("cmd/car-7", 1, &mut stash).await, vec![1]);
    let (mut new, present) = connect_opts(nodes[b].mqtt, "car-7", Proto::V5, persistent).await;
    let connack_at = new.last_at;
    assert!(present, "the session continues on node {}: Session Present", nodes[b].id);
    // The old connection was told before the new CONNACK was sent (it waited for the kick).
    let mut told = None;
    while let Some(ev) = old.next(Duration::from_secs(10)).await {
        match ev {
            Ev::Disconnect(code) => told = Some((code, old.last_at)),
            Ev::Closed(_) => break,
            _ => {}
        }
    }
    let (code, at) = told.expect("the old connection got a DISCONNECT");
    assert_eq!(code, 0x8E, "DISCONNECT Session taken over");
    assert!(at <= connack_at, "0x8E reached the old client after the new CONNACK");
    // The subscription moved with the session: a publish on a third node reaches it.
    let publisher = connect(nodes[c].mqtt, "ops-7", Proto::V4, true).await;
    publisher.publish("cmd/car-7", 1, b"unlock".to_vec()).await;
    let got = next_publish(&mut new, Duration::from_secs(10))
        .await
        .expect("the command reached the new connection");
    assert_eq!(got.payload, b"unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_start_across_nodes_clears_routes() {
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-clean");
    let (_one, nodes) = cluster(&tmp).await;
    let (a, b, c) = three(&mut rng);
    let (mut old, _) =
        connect_opts(nodes[a].mqtt, "car-8", Proto::V5, Opts { clean: false, expiry: Some(300), will: None })
            .await;
    let mut stash = Vec::new();
    assert_eq!(old.subscribe("cmd/car-8", 1, &mut stash).await, vec![1]);
    let (mut new, present) =
        connect_opts(nodes[b].mqtt, "car-8", Proto::V5, Opts { clean: true, expiry: None, will: None }).await;
    assert!(!present, "clean start: no session");
    let publisher = connect(nodes[c].mqtt, "ops-8", Proto::V5, true).await;
    publisher.publish("cmd/car-8", 1, b"x".to_vec()).await;
    assert!(
        next_publish(&mut new, Duration::from_secs(2)).await.is_none(),
        "the old subscription survived clean start"
    );
    drop(old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_expiry_cluster_wide() {
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-expiry");
    let (_one, nodes) = cluster(&tmp).await;
    let (a, b, c) = three(&mut rng);
    // Within its expiry a session continues on another node, subscriptions included.
    let keep = Opts { clean: false, expiry: Some(300), will: None };
    let (mut s, _) = connect_opts(nodes[a].mqtt, "car-9", Proto::V5, keep.clone()).await;
    let mut stash = Vec::new();
    assert_eq!(s.subscribe("cmd/car-9", 1, &mut stash).await, vec![1]);
    s.disconnect().await;
    let _ = s.next(Duration::from_secs(2)).await;
    let (mut s, present) = connect_opts(nodes[b].mqtt, "car-9", Proto::V5, keep).await;
    assert!(present, "offline within its expiry: present on another node");
    let mut publisher = connect(nodes[c].mqtt, "ops-9", Proto::V5, true).await;
    publisher.publish("cmd/car-9", 1, b"a".to_vec()).await;
    assert!(next_publish(&mut s, Duration::from_secs(10)).await.is_some(), "its subscription came along");
    // After its expiry it is gone everywhere: not present, and a publish has no subscriber.
    let short = Opts { clean: false, expiry: Some(1), will: None };
    drop(s);
    let (s, _) = connect_opts(nodes[a].mqtt, "car-9", Proto::V5, short.clone()).await;
    s.disconnect().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut s, present) = connect_opts(nodes[b].mqtt, "car-9", Proto::V5, short).await;
    assert!(!present, "expired: no session on any node");
    let _ = acks(&mut publisher, 1).await;
    publisher.publish("cmd/car-9", 1, b"b".to_vec()).await;
    assert_eq!(acks(&mut publisher, 1).await, vec![0x10], "no subscriber anywhere: 0x10");
    assert!(next_publish(&mut s, Duration::from_secs(1)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retained_set_on_one_node_is_seen_on_every_node_and_its_clear_too() {
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-retained");
    let (_one, nodes) = cluster(&tmp).await;
    let (a, _, c) = three(&mut rng);
    let mut publisher = connect(nodes[a].mqtt, "status-pub", Proto::V5, true).await;
    publisher.publish_retain("fleet/v42/status", 1, true, b"online".to_vec()).await;
    assert_eq!(acks(&mut publisher, 1).await, vec![0x10], "stored, though no subscriber yet");
    for n in &nodes {
        for proto in [Proto::V4, Proto::V5] {
            let mut s = connect(n.mqtt, &format!("status-sub-{}-{proto:?}", n.id), proto, true).await;
            let mut stash = Vec::new();
            s.subscribe("fleet/+/status", 1, &mut stash).await;
            let got = match stash.pop() {
                Some(g) => Some(g),
                None => next_publish(&mut s, Duration::from_secs(10)).await,
            };
            let got = got.unwrap_or_else(|| panic!("no retained message on node {}", n.id));
            assert!(got.retain && got.payload == b"online", "node {}: {got:?}", n.id);
        }
    }
    // An empty retained payload on another node clears it everywhere.
    let mut clearer = connect(nodes[c].mqtt, "status-clear", Proto::V5, true).await;
    clearer.publish_retain("fleet/v42/status", 1, true, Vec::new()).await;
    let _ = acks(&mut clearer, 1).await;
    for n in &nodes {
        let mut s = connect(n.mqtt, &format!("status-after-{}", n.id), Proto::V5, true).await;
        let mut stash = Vec::new();
        s.subscribe("fleet/#", 1, &mut stash).await;
        assert!(
            stash.is_empty() && next_publish(&mut s, Duration::from_secs(1)).await.is_none(),
            "node {}",
            n.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wills_reach_other_nodes_and_no_will_after_clean_disconnect() {
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-will");
    let (_one, nodes) = cluster(&tmp).await;
    let (a, b, _) = three(&mut rng);
    let mut watcher = connect(nodes[b].mqtt, "watcher", Proto::V5, true).await;
    let mut stash = Vec::new();
    watcher.subscribe("will/#", 1, &mut stash).await;
    let will =
        |id: &str| Opts { clean: true, expiry: None, will: Some((format!("will/{id}"), b"gone".to_vec())) };
    // A clean DISCONNECT: no will anywhere.
    let (polite, _) = connect_opts(nodes[a].mqtt, "polite", Proto::V4, will("polite")).await;
    polite.disconnect().await;
    assert!(
        next_publish(&mut watcher, Duration::from_secs(2)).await.is_none(),
        "a will after a clean DISCONNECT"
    );
    // A dropped connection: its will reaches the other node, once.
    let (rude, _) = connect_opts(nodes[a].mqtt, "rude", Proto::V5, will("rude")).await;
    drop(rude);
    let got =
        next_publish(&mut watcher, Duration::from_secs(10)).await.expect("the will of a dropped connection");
    assert_eq!(got.topic, "will/rude");
    assert!(next_publish(&mut watcher, Duration::from_secs(2)).await.is_none(), "a will twice");
}

/// Isolates (or heals) node `admin` through its fault-injection switch.
async fn isolate(admin: std::net::SocketAddr, isolated: bool) {
    let body = serde_json::json!({ "isolated": isolated });
    let _: serde_json::Value = node::admin::client::call(
        admin,
        hyper::Method::POST,
        "/v1/debug/isolate",
        Some(&body),
        common_cluster::CALL,
    )
    .await
    .expect("the fault-injection switch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_node_refuses_with_reason_codes() {
    const FENCE: Duration = Duration::from_secs(3);
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-isolated");
    let config = tmp.0.join("faults.toml");
    std::fs::write(
        &config,
        "[admin]\nfault-injection = true\n[cluster]\nrequest-timeout-ms = 1000\nisolation-fence-ms = 3000\n",
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let (_one, nodes) = cluster_with(&tmp, &["--config", &config]).await;
    let (v, a, c) = three(&mut rng);
    println!("isolating node {}", nodes[v].id);
    let mut v5 = connect(nodes[v].mqtt, "iso-v5", Proto::V5, true).await;
    let mut v3 = connect(nodes[v].mqtt, "iso-v3", Proto::V4, true).await;
    let mut sub = connect(nodes[a].mqtt, "maj-sub", Proto::V5, true).await;
    let mut stash = Vec::new();
    assert_eq!(sub.subscribe("maj/#", 1, &mut stash).await, vec![1]);
    isolate(nodes[v].admin, true).await;
    let isolated_at = tokio::time::Instant::now();
    // Inside the fence the node still serves its clients, but nothing reaches the ranges:
    // SUBSCRIBE gets 0x80 for the filter, a QoS 1 PUBLISH gets PUBACK 0x80 (v5).
    let mut stash = Vec::new();
    assert_eq!(v5.subscribe("iso/x", 1, &mut stash).await, vec![0x80], "SUBACK on the minority side");
    v5.publish("maj/from-minority", 1, b"x".to_vec()).await;
    assert_eq!(acks(&mut v5, 1).await, vec![0x80], "PUBACK on the minority side");
    // At the fence the node closes its clients: 0x9C to 5.0, a closed socket to 3.1.1.
    let mut told = None;
    while let Some(ev) = v5.next(FENCE * 3).await {
        match ev {
            Ev::Disconnect(code) => told = Some(code),
            Ev::Closed(_) => break,
            _ => {}
        }
    }
    assert_eq!(told, Some(0x9C), "DISCONNECT Use another server");
    let closed_after = isolated_at.elapsed();
    assert!(closed_after <= FENCE + Duration::from_secs(2), "closed {closed_after:?} after the isolation");
    loop {
        match v3.next(Duration::from_secs(5)).await {
            Some(Ev::Closed(_)) => break,
            Some(_) => {}
            None => panic!("the 3.1.1 client was not closed"),
        }
    }
    // New connections are refused: 0x88 (5.0), return code 3 (3.1.1).
    let no = Opts { clean: true, expiry: None, will: None };
    assert_eq!(client::try_connect(nodes[v].mqtt, "iso-new5", Proto::V5, no.clone()).await.err(), Some(0x88));
    assert_eq!(client::try_connect(nodes[v].mqtt, "iso-new3", Proto::V4, no.clone()).await.err(), Some(3));
    // The majority goes on: once ranges the victim led have failed over (an election, a
    // few seconds), connections and publishes succeed there.
    let start = tokio::time::Instant::now();
    let mut publisher = loop {
        match client::try_connect(nodes[c].mqtt, "maj-pub", Proto::V5, no.clone()).await {
            Ok((p, _)) => break p,
            Err(code) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "majority CONNECT refused ({code:#x}) for 20 s"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    println!("majority connect after {:?}", isolated_at.elapsed());
    for i in 0..10u8 {
        publisher.publish("maj/x", 1, vec![i]).await;
    }
    assert_eq!(acks(&mut publisher, 10).await, vec![0; 10], "majority publishes acknowledged");
    let mut got = Vec::new();
    collect(&mut sub, &mut got, Duration::from_secs(10), |g| g.len() >= 10).await;
    assert_eq!(got.iter().filter(|g| g.topic == "maj/x").count(), 10);
    // After the heal the node serves again.
    isolate(nodes[v].admin, false).await;
    let start = tokio::time::Instant::now();
    let mut back = loop {
        match client::try_connect(nodes[v].mqtt, "iso-back", Proto::V5, no.clone()).await {
            Ok((c, _)) => break c,
            Err(code) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "still refused ({code:#x}) 30 s after the heal"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    back.publish("maj/healed", 1, b"ok".to_vec()).await;
    assert_eq!(acks(&mut back, 1).await, vec![0]);
    let g = next_publish(&mut sub, Duration::from_secs(10)).await.expect("delivered from the healed node");
    assert_eq!(g.topic, "maj/healed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn will_fires_once_when_owner_node_is_killed() {
    let mut rng = Rng(seed());
    let tmp = TempDir::new("mqtt-cluster-will-kill");
    let config = tmp.0.join("fence.toml");
    std::fs::write(&config, "[cluster]\nisolation-fence-ms = 3000\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    let (_one, mut nodes) = cluster_with(&tmp, &["--config", &config]).await;
    let (v, a, c) = three(&mut rng);
    println!("killing node {}", nodes[v].id);
    let mut watchers = Vec::new();
    for (i, proto) in [(a, Proto::V5), (c, Proto::V4)] {
        let mut w = connect(nodes[i].mqtt, &format!("watch-{}", nodes[i].id), proto, true).await;
        let mut stash = Vec::new();
        assert_eq!(w.subscribe("will/#", 1, &mut stash).await, vec![1]);
        watchers.push(w);
    }
    let will = Opts { clean: true, expiry: None, will: Some(("will/car-w".into(), b"lost".to_vec())) };
    let (victim_client, _) = connect_opts(nodes[v].mqtt, "car-w", Proto::V5, will).await;
    // The record is written before the CONNACK; the node dies with the connection open.
    nodes[v].kill9();
    let killed_at = tokio::time::Instant::now();
    for w in &mut watchers {
        let got =
            next_publish(w, Duration::from_secs(60)).await.expect("the will of a client on the killed node");
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice()),
            ("will/car-w", b"lost".as_slice()),
            "{}",
            w.name
        );
        println!("{}: will after {:?}", w.name, killed_at.elapsed());
    }
    for w in &mut watchers {
        assert!(next_publish(w, Duration::from_secs(5)).await.is_none(), "{}: the will twice", w.name);
    }
    drop(victim_client);
}
