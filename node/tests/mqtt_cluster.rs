//! MQTT across nodes, live: three real `flotilla` processes (`--pd-voters 1,2,3`, the MQTT
//! keyspace bootstrapped by the placement driver), clients from rumqttc v4 (3.1.1) and v5.
//! Client placement comes from a seed printed at the start (`FLOTILLA_TEST_SEED` replays
//! one). CLUSTER.md section 6.

#[path = "mqtt_cluster/client.rs"]
mod client;
mod common_cluster;

use std::collections::HashMap;
use std::time::Duration;

use client::{Client, Ev, Got, Proto, connect};
use common_cluster::{BOOTSTRAP_RANGES, ProcNode, TempDir, WAIT, bootstrap_done, table_len};

/// Three nodes with the MQTT keyspace bootstrapped and known to every node.
async fn cluster(tmp: &TempDir) -> [ProcNode; 3] {
    let extra: Vec<String> = ["--pd-voters", "1,2,3"].iter().map(|s| s.to_string()).collect();
    let mut n1 = ProcNode::new(1, &tmp.0, Vec::new(), extra.clone());
    let join = vec![n1.cluster];
    let mut n2 = ProcNode::new(2, &tmp.0, join.clone(), extra.clone());
    let mut n3 = ProcNode::new(3, &tmp.0, join, extra);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.spawn();
    }
    for n in [&n1, &n2, &n3] {
        n.wait_ready(2).await;
    }
    bootstrap_done(n1.admin).await;
    for n in [&n1, &n2, &n3] {
        let start = tokio::time::Instant::now();
        while table_len(n).await < BOOTSTRAP_RANGES {
            assert!(start.elapsed() < WAIT, "node {} never learned the ranges", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    [n1, n2, n3]
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
    let nodes = cluster(&tmp).await;
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
    let nodes = cluster(&tmp).await;
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
