//! Forwarded publishes between two QUIC transports on loopback: batches on 8 data streams
//! arrive once each and in order per stream, non-zero batch ids are acknowledged back, and
//! a full per-peer queue refuses batches instead of growing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use node::group::{GroupMessage, NodeId};
use node::transport::tls;
use node::transport::{ForwardBatch, ForwardMsg, Inbound, QuicTransport, TransportConfig};

/// Generous: the machine is shared and loaded.
const WAIT: Duration = Duration::from_secs(60);
const STREAMS: usize = 8;
const BATCHES: u64 = 500;

/// Records forwards per stream (named in the topic) and acks; acknowledges non-zero ids
/// through its own transport, as the broker does once a batch is queued.
#[derive(Default)]
struct Node {
    transport: OnceLock<QuicTransport>,
    /// (stream, seq) of every batch, in arrival order, per sending node.
    batches: Mutex<Vec<(usize, u64)>>,
    acks: Mutex<Vec<u64>>,
}

impl Inbound for Node {
    fn deliver(&self, _msg: GroupMessage) -> bool {
        true
    }

    fn peer_down(&self, _node: NodeId) {}

    fn deliver_forwards(&self, from: NodeId, batch: ForwardBatch) {
        let Some(first) = batch.messages.first() else { return };
        let stream: usize = first.topic.trim_start_matches("s/").parse().expect("stream topic");
        let seq = u64::from_be_bytes(first.payload[..8].try_into().expect("seq"));
        self.batches.lock().expect("lock").push((stream, seq));
        if batch.id != 0 {
            let t = self.transport.get().expect("transport");
            assert!(t.send_forward_acks(from, vec![batch.id]), "ack queued");
        }
    }

    fn forward_acks(&self, _from: NodeId, ids: Vec<u64>) {
        self.acks.lock().expect("lock").extend(ids);
    }
}

fn config() -> TransportConfig {
    TransportConfig {
        reconnect_min_ms: 50,
        reconnect_max_ms: 300,
        idle_timeout_ms: 3000,
        keep_alive_ms: 500,
        forward_streams: STREAMS,
        ..TransportConfig::default()
    }
}

fn start(node_id: NodeId, cfg: &TransportConfig) -> (QuicTransport, Arc<Node>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let tls = tls::dev_self_signed().expect("tls");
    let t = QuicTransport::bind(node_id, addr, None, cfg, tls).expect("bind");
    let n = Arc::new(Node::default());
    n.transport.set(t.clone()).ok().expect("once");
    t.attach(n.clone());
    (t, n)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batch of `n` messages of `size` payload bytes for `stream`, the first payload
/// starting with `seq`.
fn batch(id: u64, stream: usize, seq: u64, n: usize, size: usize) -> ForwardBatch {
    let messages = (0..n)
        .map(|i| {
            let mut payload = vec![i as u8; size.max(8)];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            ForwardMsg {
                topic: format!("s/{stream}"),
                payload: payload.into(),
                qos: 1,
                retain: false,
                properties: Vec::new(),
                plain: true,
                shares: Vec::new(),
            }
        })
        .collect();
    ForwardBatch { id, messages }
}

/// Two connected transports (each dials the other).
async fn pair(cfg_a: &TransportConfig) -> ((QuicTransport, Arc<Node>), (QuicTransport, Arc<Node>)) {
    let (a, na) = start(1, cfg_a);
    let (b, nb) = start(2, &config());
    a.add_peer(2, b.addr());
    eventually("both directions connected", || a.is_connected(2) && b.is_connected(1)).await;
    ((a, na), (b, nb))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_eight_streams_arrive_once_in_order_and_are_acknowledged() {
    let ((a, na), (b, nb)) = pair(&config()).await;
    let mut want_acks = BTreeSet::new();
    for seq in 0..BATCHES {
        for stream in 0..STREAMS {
            // Every third batch wants no ack (id 0).
            let id = if seq % 3 == 0 { 0 } else { 1 + seq * STREAMS as u64 + stream as u64 };
            if id != 0 {
                want_acks.insert(id);
            }
            // Stream indexes past the count wrap: 8 + s is stream s.
            let index = if seq % 2 == 0 { stream } else { stream + STREAMS };
            assert!(a.send_forward(2, index, batch(id, stream, seq, 3, 64)), "queued");
        }
        if seq % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let total = BATCHES as usize * STREAMS;
    eventually("every batch at b", || nb.batches.lock().expect("lock").len() >= total).await;
    eventually("every ack at a", || na.acks.lock().expect("lock").len() >= want_acks.len()).await;
    // Nothing more trickles in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = nb.batches.lock().expect("lock").clone();
    assert_eq!(got.len(), total, "each batch once");
    let mut per_stream: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (stream, seq) in got {
        per_stream.entry(stream).or_default().push(seq);
    }
    for (stream, seqs) in &per_stream {
        assert_eq!(seqs, &(0..BATCHES).collect::<Vec<_>>(), "stream {stream} in order, nothing lost");
    }
    let acks: Vec<u64> = na.acks.lock().expect("lock").clone();
    assert_eq!(acks.len(), want_acks.len(), "each non-zero id acknowledged once");
    assert_eq!(acks.into_iter().collect::<BTreeSet<_>>(), want_acks);
    let (ma, mb) = (a.metrics(), b.metrics());
    assert_eq!(ma.forwards_sent, total as u64 * 3);
    assert_eq!(mb.forwards_received, total as u64 * 3);
    assert_eq!(ma.forward_payload_bytes_sent, total as u64 * 3 * 64);
    assert_eq!(ma.forwards_dropped, 0);
    assert_eq!(ma.forward_acks_received, want_acks.len() as u64);
    assert!(
        ma.forward_batches_sent == total as u64 && mb.forward_acks_sent == want_acks.len() as u64,
        "{ma:?}"
    );
    assert!(ma.forward_writes < ma.forward_batches_sent, "batches queued together went out in one write");
    println!(
        "forward: {} batches in {} writes, {} messages, {} payload bytes, {} frame bytes \
         ({:.3} frame bytes per payload byte), {} acks in {} control items",
        ma.forward_batches_sent,
        ma.forward_writes,
        ma.forwards_sent,
        ma.forward_payload_bytes_sent,
        ma.forward_bytes_sent,
        ma.forward_bytes_sent as f64 / ma.forward_payload_bytes_sent as f64,
        mb.forward_acks_sent,
        mb.control_sent,
    );
    // No route: refused and counted.
    assert!(!a.send_forward(9, 0, batch(1, 0, 0, 2, 8)));
    assert_eq!(a.metrics().forwards_dropped, 2);
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_forward_queue_refuses_batches_instead_of_growing() {
    let small = TransportConfig { forward_queue_bytes: 64 << 10, ..config() };
    let ((a, _na), (b, nb)) = pair(&small).await;
    // 16 KiB batches in a tight loop: the writer cannot drain 64 KiB that fast.
    let mut accepted = Vec::new();
    let mut refused = 0u64;
    for seq in 0..400u64 {
        if a.send_forward(2, 0, batch(0, 0, seq, 1, 16 << 10)) {
            accepted.push(seq);
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "a 64 KiB queue refused some of 6.4 MiB sent at once");
    assert_eq!(a.metrics().forwards_dropped, refused, "each refusal counted");
    // What was accepted arrives, in order.
    eventually("accepted batches at b", || nb.batches.lock().expect("lock").len() >= accepted.len()).await;
    let got: Vec<u64> = nb.batches.lock().expect("lock").iter().map(|(_, seq)| *seq).collect();
    assert_eq!(got, accepted);
    // Drained: the queue accepts again.
    eventually("room once drained", || a.send_forward(2, 0, batch(0, 0, 400, 1, 16 << 10))).await;
    a.shutdown();
    b.shutdown();
}

/// Throughput of 1 KiB publishes, 64 per batch, on 8 streams over loopback, retrying while
/// the queue is full. Ignored (timing): `cargo test --release -p node --test cluster_forward
/// -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn forward_throughput() {
    let ((a, na), (b, nb)) = pair(&config()).await;
    let (per_batch, size, batches) = (64, 1024, 4_000u64);
    let started = tokio::time::Instant::now();
    let mut refused = 0u64;
    for n in 0..batches {
        let stream = (n % STREAMS as u64) as usize;
        let one = batch(n + 1, stream, n / STREAMS as u64, per_batch, size);
        while !a.send_forward(2, stream, one.clone()) {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    eventually("every batch at b", || nb.batches.lock().expect("lock").len() as u64 >= batches).await;
    let delivered = started.elapsed();
    eventually("every ack at a", || na.acks.lock().expect("lock").len() as u64 >= batches).await;
    let acked = started.elapsed();
    let m = a.metrics();
    let msgs = batches * per_batch as u64;
    println!(
        "throughput: {msgs} x {size} B in {:.2} s: {:.0} msg/s, {:.1} MiB/s payload; all acked after {:.2} s; \
         {} writes, {:.4} frame bytes per payload byte, {} UDP bytes, {refused} full-queue retries",
        delivered.as_secs_f64(),
        msgs as f64 / delivered.as_secs_f64(),
        (msgs * size as u64) as f64 / delivered.as_secs_f64() / f64::from(1 << 20),
        acked.as_secs_f64(),
        m.forward_writes,
        m.forward_bytes_sent as f64 / m.forward_payload_bytes_sent as f64,
        m.udp_bytes_sent,
    );
    a.shutdown();
    b.shutdown();
}
