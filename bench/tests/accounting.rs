//! Scenario accounting against an injected broker fault.
//!
//! A small TCP proxy sits between the bench clients and a real (in-process) Flotilla broker
//! and drops or duplicates PUBLISH frames on their way from the broker to the subscribers,
//! counting exactly what it did. The runs must then report exactly that loss and those
//! duplicates: the accounting is proven against a known fault, not against itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bench::result::RunResult;
use bench::scenario::fanin::FaninArgs;
use bench::scenario::fanout::FanoutArgs;
use bench::scenario::opts::{Dur, RunOpts};
use bench::scenario::p2p::P2pArgs;
use bench::scenario::storm::StormArgs;
use bytes::{Buf, BytesMut};
use node::config::NodeConfig;
use node::server::{Server, ShutdownHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to PUBLISH frames from the broker, counted over all connections.
#[derive(Clone, Copy, Debug, Default)]
struct Fault {
    /// Drop every n-th PUBLISH (0: never).
    drop_every: u64,
    /// Send every n-th PUBLISH twice (0: never).
    dup_every: u64,
}

#[derive(Default)]
struct Counts {
    publishes: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
}

struct Proxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

/// Whole-frame length of the MQTT packet at the start of `buf`, if complete enough to tell.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(2 + i + len);
        }
    }
    None
}

async fn broker_to_client(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Fault,
    counts: Arc<Counts>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        out.clear();
        while let Some(n) = frame_len(&buf).filter(|&n| buf.len() >= n) {
            let frame = &buf[..n];
            if frame[0] >> 4 == 3 {
                let k = counts.publishes.fetch_add(1, Ordering::SeqCst) + 1;
                if fault.drop_every > 0 && k.is_multiple_of(fault.drop_every) {
                    counts.dropped.fetch_add(1, Ordering::SeqCst);
                    buf.advance(n);
                    continue;
                }
                if fault.dup_every > 0 && k.is_multiple_of(fault.dup_every) {
                    counts.duplicated.fetch_add(1, Ordering::SeqCst);
                    out.extend_from_slice(frame);
                }
            }
            out.extend_from_slice(frame);
            buf.advance(n);
        }
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn start_proxy(upstream: SocketAddr, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, cw) = client.into_split();
            let (sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            tokio::spawn(broker_to_client(sr, cw, fault, c.clone()));
        }
    });
    Proxy { addr, counts }
}

struct Broker {
    addr: SocketAddr,
    handle: ShutdownHandle,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn start_broker() -> Broker {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bench-accounting-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let mut config =
        NodeConfig { listen: "127.0.0.1:0".parse().expect("addr"), data_dir: dir, ..NodeConfig::default() };
    config.broker.sys_interval_secs = 0;
    // The accounting is under test, not durability: keep the broker in memory.
    config.storage.persistence = false;
    let server = Server::bind(config).await.expect("bind broker");
    let addr = server.local_addr().expect("broker addr");
    let handle = server.shutdown_handle();
    tokio::spawn(server.run());
    Broker { addr, handle }
}

fn opts(broker: SocketAddr, qos: u8) -> RunOpts {
    RunOpts {
        broker: broker.into(),
        qos,
        rate: Some(400.0),
        warmup: Dur(Duration::from_millis(200)),
        measure: Dur(Duration::from_millis(1500)),
        drain: Dur(Duration::from_secs(5)),
        quiet: Dur(Duration::from_millis(500)),
        in_process: true,
        no_progress: true,
        connect_rate: 0.0,
        ..RunOpts::default()
    }
}

fn check(r: &RunResult, proxy: &Proxy, fan: u64) {
    let t = r.traffic.as_ref().expect("traffic summary");
    let a = t.accounting;
    let dropped = proxy.counts.dropped.load(Ordering::SeqCst);
    let duplicated = proxy.counts.duplicated.load(Ordering::SeqCst);
    let publishes = proxy.counts.publishes.load(Ordering::SeqCst);
    assert!(t.sent > 50, "too little traffic to prove anything: {t:?}");
    assert_eq!(a.expected, t.sent * fan, "expected deliveries: {a:?}");
    assert_eq!(publishes, a.expected, "the broker delivered every message to the proxy once");
    assert_eq!(a.lost, dropped, "reported loss equals the injected drops: {a:?}");
    assert_eq!(a.duplicates, duplicated, "reported duplicates equal the injected ones: {a:?}");
    assert_eq!(a.unique, a.expected - dropped);
    assert_eq!(a.unexpected, 0);
    assert_eq!(t.misrouted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_qos0_reports_exactly_the_dropped_and_duplicated_frames() {
    let broker = start_broker().await;
    let proxy = start_proxy(broker.addr, Fault { drop_every: 17, dup_every: 29 }).await;
    let args = P2pArgs { opts: opts(proxy.addr, 0), vehicles: 50, backends: 2 };
    let r = bench::scenario::p2p::run(&args).await.expect("run");
    assert!(proxy.counts.dropped.load(Ordering::SeqCst) > 0);
    check(&r, &proxy, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_qos1_counts_every_redelivered_frame_as_a_duplicate() {
    let broker = start_broker().await;
    let proxy = start_proxy(broker.addr, Fault { drop_every: 0, dup_every: 13 }).await;
    let args = P2pArgs { opts: opts(proxy.addr, 1), vehicles: 40, backends: 2 };
    let r = bench::scenario::p2p::run(&args).await.expect("run");
    assert!(proxy.counts.duplicated.load(Ordering::SeqCst) > 0);
    check(&r, &proxy, 1);
    let t = r.traffic.as_ref().expect("traffic");
    assert_eq!(t.acked, t.sent, "every QoS 1 publish was acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_qos2_resent_publish_before_pubrel_is_not_a_new_message() {
    let broker = start_broker().await;
    let proxy = start_proxy(broker.addr, Fault { drop_every: 0, dup_every: 11 }).await;
    let args = P2pArgs { opts: opts(proxy.addr, 2), vehicles: 40, backends: 2 };
    let r = bench::scenario::p2p::run(&args).await.expect("run");
    let t = r.traffic.as_ref().expect("traffic");
    assert!(proxy.counts.duplicated.load(Ordering::SeqCst) > 0);
    // Exactly once: the client recognises the resent packet id and delivers once.
    assert_eq!(t.accounting.duplicates, 0, "{:?}", t.accounting);
    assert_eq!(t.accounting.lost, 0, "{:?}", t.accounting);
    assert_eq!(t.accounting.unique, t.sent);
    assert_eq!(t.acked, t.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_accounts_each_vehicle_separately() {
    let broker = start_broker().await;
    let proxy = start_proxy(broker.addr, Fault { drop_every: 7, dup_every: 23 }).await;
    let mut o = opts(proxy.addr, 0);
    o.rate = Some(60.0);
    let args = FanoutArgs { opts: o, vehicles: 30, regions: 3 };
    let r = bench::scenario::fanout::run(&args).await.expect("run");
    // Three regions of ten vehicles: every broadcast is expected ten times.
    check(&r, &proxy, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_fanin_over_two_worker_processes_merges_exactly() {
    let broker = start_broker().await;
    let proxy = start_proxy(broker.addr, Fault { drop_every: 19, dup_every: 31 }).await;
    let mut o = opts(proxy.addr, 0);
    o.in_process = false;
    o.workers = Some(2);
    o.worker_exe = Some(env!("CARGO_BIN_EXE_bench").into());
    let args = FaninArgs { opts: o, vehicles: 60, backends: 4, shared: true };
    let r = bench::scenario::fanin::run(&args).await.expect("run");
    assert_eq!(r.workers, 2);
    // One $share group: each message is expected once, at whichever backend got it.
    check(&r, &proxy, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_fanin_expects_every_backend_to_get_everything() {
    let broker = start_broker().await;
    let proxy = start_proxy(broker.addr, Fault { drop_every: 0, dup_every: 0 }).await;
    let args = FaninArgs { opts: opts(proxy.addr, 1), vehicles: 30, backends: 3, shared: false };
    let r = bench::scenario::fanin::run(&args).await.expect("run");
    check(&r, &proxy, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_with_persistent_sessions_loses_nothing() {
    let broker = start_broker().await;
    let mut o = opts(broker.addr, 1);
    o.measure = Dur(Duration::from_secs(2));
    let args = StormArgs { opts: o, vehicles: 60, backends: 2, fraction: 0.5, clean: false, graceful: false };
    let r = bench::scenario::storm::run(&args).await.expect("run");
    let t = r.traffic.as_ref().expect("traffic");
    let back = r.reconnect.as_ref().expect("reconnect phase");
    assert!(back.ok > 0);
    assert_eq!(back.failed, 0);
    assert_eq!(back.session_present, back.ok, "persistent sessions survive the drop");
    assert_eq!(r.figures["storm_disconnected"] as u64, back.ok);
    assert_eq!(t.accounting.lost, 0, "{:?}", t.accounting);
    assert_eq!(t.accounting.unique, t.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_replays_every_queued_message() {
    let broker = start_broker().await;
    let args = bench::scenario::persist::PersistArgs {
        opts: opts(broker.addr, 1),
        vehicles: 40,
        backends: 2,
        messages_per_vehicle: 5,
        replay_max: Dur(Duration::from_secs(20)),
    };
    let r = bench::scenario::persist::run(&args).await.expect("run");
    let t = r.traffic.as_ref().expect("traffic");
    let back = r.reconnect.as_ref().expect("reconnect phase");
    assert_eq!(back.session_present, 40);
    assert_eq!(t.acked, t.sent);
    assert_eq!(t.accounting.expected, t.sent);
    assert_eq!(t.accounting.lost, 0, "{:?}", t.accounting);
    assert_eq!(t.accounting.duplicates, 0, "{:?}", t.accounting);
}
