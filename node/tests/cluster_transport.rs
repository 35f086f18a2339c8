//! The QUIC cluster transport over loopback, in one process: endpoints exchange batches in
//! order, a sender reconnects after its peer restarts, a certificate from another CA is
//! refused, and malformed frames close the connection without reaching a group.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node::group::{GroupMessage, MessageBody, NodeId};
use node::raftstore::Transport;
use node::transport::frame::Frame;
use node::transport::tls::{self, TlsConfigs};
use node::transport::{Inbound, QuicTransport, TransportConfig, TransportSnapshot};

/// Generous: the machine is shared and loaded.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Collector {
    msgs: Mutex<Vec<GroupMessage>>,
    downs: Mutex<Vec<NodeId>>,
}

impl Inbound for Collector {
    fn deliver(&self, msg: GroupMessage) -> bool {
        self.msgs.lock().expect("lock").push(msg);
        true
    }

    fn peer_down(&self, node: NodeId) {
        self.downs.lock().expect("lock").push(node);
    }
}

impl Collector {
    fn count(&self) -> usize {
        self.msgs.lock().expect("lock").len()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config() -> TransportConfig {
    TransportConfig {
        reconnect_min_ms: 50,
        reconnect_max_ms: 300,
        idle_timeout_ms: 3000,
        keep_alive_ms: 500,
        ..TransportConfig::default()
    }
}

fn start(node_id: NodeId, port: u16, tls: TlsConfigs) -> (QuicTransport, Arc<Collector>) {
    let t = QuicTransport::bind(node_id, loopback(port), None, &config(), tls).expect("bind");
    let c = Arc::new(Collector::default());
    t.attach(c.clone());
    (t, c)
}

fn msg(group_id: u64, from: NodeId, to: NodeId, index: u64) -> GroupMessage {
    GroupMessage { group_id, from, to, body: MessageBody::HibernateAck { term: 1, index } }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("flotilla-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mutual(dir: &std::path::Path, node: NodeId) -> TlsConfigs {
    let ca = tls::load_certs("ca-cert", &dir.join("ca.pem")).expect("ca");
    let chain = tls::load_certs("node-cert", &dir.join(format!("node-{node}.pem"))).expect("cert");
    let key = tls::load_key(&dir.join(format!("node-{node}.key"))).expect("key");
    tls::mutual(&ca, chain, key).expect("mutual tls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_exchange_batches_in_order_and_learn_each_other() {
    let (a, ca) = start(1, 0, tls::dev_self_signed().expect("tls"));
    let (b, cb) = start(2, 0, tls::dev_self_signed().expect("tls"));
    // Only a knows b: b learns a from a's Hello and dials back.
    a.add_peer(2, b.addr());
    for batch in 0..200u64 {
        a.send(2, (0..10).map(|i| msg(batch, 1, 2, batch * 10 + i)).collect());
    }
    eventually("2,000 messages at b", || cb.count() == 2000).await;
    let got: Vec<u64> = cb
        .msgs
        .lock()
        .expect("lock")
        .iter()
        .map(|m| match m.body {
            MessageBody::HibernateAck { index, .. } => index,
            _ => u64::MAX,
        })
        .collect();
    assert_eq!(got, (0..2000).collect::<Vec<_>>(), "in order, nothing lost or duplicated");
    eventually("b knows a", || b.peers().iter().any(|p| p.node_id == 1)).await;
    b.send(1, vec![msg(7, 2, 1, 1)]);
    eventually("reply at a", || ca.count() == 1).await;
    let m: TransportSnapshot = a.metrics();
    assert_eq!(m.messages_sent, 2000);
    assert!(m.frames_sent < 2000, "batches were coalesced: {} frames", m.frames_sent);
    assert!(m.bytes_sent > 0 && b.metrics().bytes_received > 0);
    assert_eq!(m.dropped_queue_full + m.dropped_no_route + m.dropped_disconnected, 0);
    // Each side made the other's first dial prove its address (QUIC Retry) before a handshake.
    assert!(b.metrics().retries_sent >= 1 && a.metrics().retries_sent >= 1, "no QUIC Retry was sent");
    // Unknown destination: dropped and counted, never blocks.
    a.send(9, vec![msg(1, 1, 9, 1)]);
    assert_eq!(a.metrics().dropped_no_route, 1);
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncoalesced_mode_sends_one_frame_per_message() {
    let tls_a = tls::dev_self_signed().expect("tls");
    let cfg = TransportConfig { coalesce: false, ..config() };
    let a = QuicTransport::bind(1, loopback(0), None, &cfg, tls_a).expect("bind");
    let (b, cb) = start(2, 0, tls::dev_self_signed().expect("tls"));
    a.add_peer(2, b.addr());
    // Hello and address book on connect, plus the book broadcast queued by add_peer.
    eventually("connected and introduced", || a.metrics().frames_sent >= 3).await;
    // Address-book frames may still follow (both sides dial); count raft frames only.
    let frames_before = a.metrics().raft_frames_sent;
    a.send(2, (0..50).map(|i| msg(1, 1, 2, i)).collect());
    eventually("50 messages", || cb.count() == 50).await;
    assert_eq!(a.metrics().raft_frames_sent - frames_before, 50);
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reconnects_after_the_peer_restarts() {
    let (a, _ca) = start(1, 0, tls::dev_self_signed().expect("tls"));
    let (b, cb) = start(2, 0, tls::dev_self_signed().expect("tls"));
    let port = b.addr().port();
    a.add_peer(2, b.addr());
    a.send(2, vec![msg(1, 1, 2, 1)]);
    eventually("first message", || cb.count() == 1).await;
    b.shutdown();
    b.closed(Duration::from_secs(5)).await;
    drop(b);
    // The old endpoint's socket closes once its last task has noticed the shutdown.
    let started = tokio::time::Instant::now();
    let b2 = loop {
        match QuicTransport::bind(2, loopback(port), None, &config(), tls::dev_self_signed().expect("tls")) {
            Ok(t) => break t,
            Err(e) => assert!(started.elapsed() < WAIT, "rebind: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cb2 = Arc::new(Collector::default());
    b2.attach(cb2.clone());
    // Keep sending: messages sent while the peer is away are dropped (and counted); once
    // a reconnects, they flow again.
    let mut i = 2;
    eventually("a message at the restarted peer", || {
        a.send(2, vec![msg(1, 1, 2, i)]);
        i += 1;
        cb2.count() > 0
    })
    .await;
    let m = a.metrics();
    assert!(m.connects >= 2, "reconnected: {m:?}");
    assert!(m.disconnects >= 1, "noticed the loss: {m:?}");
    a.shutdown();
    b2.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_the_cluster_ca_and_refuses_another() {
    let good = TempDir::new("ca-good");
    let bad = TempDir::new("ca-bad");
    node::transport::certgen::generate(&good.0, &[1, 2]).expect("certs");
    node::transport::certgen::generate(&bad.0, &[3]).expect("certs");
    let (a, _ca) = start(1, 0, mutual(&good.0, 1));
    let (b, cb) = start(2, 0, mutual(&good.0, 2));
    let (c, cc) = start(3, 0, mutual(&bad.0, 3));
    a.add_peer(2, b.addr());
    a.add_peer(3, c.addr());
    c.add_peer(2, b.addr());
    let mut i = 0;
    eventually("a message over mutual TLS", || {
        a.send(2, vec![msg(1, 1, 2, i)]);
        i += 1;
        cb.count() > 0
    })
    .await;
    // a -> c: c's certificate is not from a's CA; c -> b: b refuses c's client certificate.
    for i in 0..20 {
        a.send(3, vec![msg(1, 1, 3, i)]);
        c.send(2, vec![msg(1, 3, 2, i)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("refused handshakes", || {
        a.metrics().connect_failures > 0 && b.metrics().handshake_failures > 0
    })
    .await;
    assert_eq!(cc.count(), 0, "nothing reached the node with a foreign certificate");
    assert!(cb.msgs.lock().expect("lock").iter().all(|m| m.from == 1), "nothing from node 3 reached b");
    a.shutdown();
    b.shutdown();
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_and_are_counted() {
    let (b, cb) = start(2, 0, tls::dev_self_signed().expect("tls"));
    let client_tls = tls::dev_self_signed().expect("tls");
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
    endpoint.set_default_client_config(client_tls.client);
    let hello = |buf: &mut Vec<u8>| {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        Frame::Hello { node_id: 5, addr }.encode(buf, 1 << 20).expect("encode");
    };
    let mut garbage_after_hello = Vec::new();
    hello(&mut garbage_after_hello);
    garbage_after_hello.extend_from_slice(&[0, 0, 0, 2, 9, 9]);
    let mut spoofed = Vec::new();
    hello(&mut spoofed);
    Frame::Raft(vec![msg(1, 6, 2, 1)]).encode(&mut spoofed, 1 << 20).expect("encode");
    let cases: [&[u8]; 4] = [
        // A frame that is not a Hello.
        &[0, 0, 0, 2, 1, 3],
        // A length prefix over the limit.
        &[0xff, 0xff, 0xff, 0xff],
        // An unknown frame version after a valid Hello.
        &garbage_after_hello,
        // A message claiming to come from another node than the Hello named.
        &spoofed,
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let conn = endpoint.connect(b.addr(), tls::SERVER_NAME).expect("connect").await.expect("handshake");
        let mut s = conn.open_uni().await.expect("stream");
        s.write_all(bytes).await.expect("write");
        let _ = s.finish();
        let want = i as u64 + 1;
        eventually("a rejected frame", || b.metrics().frames_rejected >= want).await;
        conn.close(0u32.into(), b"done");
    }
    assert_eq!(cb.count(), 0, "nothing malformed reached the store");
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_binds_the_node_id_to_the_certificate() {
    let dir = TempDir::new("ca-ident");
    node::transport::certgen::generate(&dir.0, &[1, 2]).expect("certs");
    let (a, ca) = start(1, 0, mutual(&dir.0, 1));
    // Node 5 holds a valid certificate of the cluster CA, but it names node 2.
    let (imp, cimp) = start(5, 0, mutual(&dir.0, 2));
    a.add_peer(5, imp.addr());
    imp.add_peer(1, a.addr());
    for i in 0..20 {
        a.send(5, vec![msg(1, 1, 5, i)]);
        imp.send(1, vec![msg(1, 5, 1, i)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("refused in both directions", || {
        let m = a.metrics();
        m.connect_failures > 0 && m.frames_rejected > 0
    })
    .await;
    assert_eq!(ca.count(), 0, "the impostor's messages never reached a");
    assert_eq!(cimp.count(), 0, "a never talked to the impostor");
    a.shutdown();
    imp.shutdown();
}

/// A peer whose address book names 1,500 nodes: at most 1,024 are learned (each gets a
/// dial task), the rest are refused and counted, and the book is re-broadcast once, not
/// once per new entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossiped_address_book_is_capped() {
    let (b, _cb) = start(2, 0, tls::dev_self_signed().expect("tls"));
    let client_tls = tls::dev_self_signed().expect("tls");
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
    endpoint.set_default_client_config(client_tls.client);
    let mut bytes = Vec::new();
    let me = SocketAddr::from(([127, 0, 0, 1], 1));
    Frame::Hello { node_id: 5, addr: me }.encode(&mut bytes, 1 << 20).expect("encode");
    let book: Vec<(NodeId, SocketAddr)> =
        (0..1_500u64).map(|i| (100 + i, SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)))).collect();
    Frame::Peers(book).encode(&mut bytes, 1 << 20).expect("encode");
    let conn = endpoint.connect(b.addr(), tls::SERVER_NAME).expect("connect").await.expect("handshake");
    let mut s = conn.open_uni().await.expect("stream");
    s.write_all(&bytes).await.expect("write");
    let _ = s.finish();
    eventually("the book is read", || b.metrics().peers_refused > 0).await;
    let peers = b.peers().len();
    assert!(peers <= 1_024 + 1, "{peers} peers learned");
    assert!(b.metrics().peers_refused >= 1_500 + 1 - 1_024 - 1, "{} refused", b.metrics().peers_refused);
    conn.close(0u32.into(), b"done");
    b.shutdown();
}
