//! Client assignment over several broker addresses (`--broker A,B,C`).
//!
//! The rule is checked directly (`broker_slot`, the worker specs) and end to end: three
//! recording TCP proxies stand for three cluster nodes in front of one in-process Flotilla
//! broker, and a p2p run over them must publish every command through another proxy than the
//! one its vehicle receives it through, use every proxy, and lose nothing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bench::engine::proto::{Load, PubSpec, TopicSpec};
use bench::scenario::fanin::FaninArgs;
use bench::scenario::layout::{GroupPlan, broker_slot, specs};
use bench::scenario::opts::{BrokerList, Dur, RunOpts};
use bench::scenario::p2p::P2pArgs;
use bytes::{Buf, BytesMut};
use node::config::NodeConfig;
use node::server::{Server, ShutdownHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn one_address_gets_everything() {
    for k in 0..50 {
        assert_eq!(broker_slot(k, 0, 1), 0);
        assert_eq!(broker_slot(k, 1, 1), 0);
    }
}

#[test]
fn publisher_and_subscriber_of_an_index_are_on_different_addresses() {
    for n in 2..=5 {
        let mut per_addr = vec![0u32; n];
        for k in 0..(10 * n as u64) {
            let (sub, publ) = (broker_slot(k, 0, n), broker_slot(k, 1, n));
            assert_ne!(sub, publ, "k {k} of {n}");
            assert_eq!(sub, (k % n as u64) as usize);
            per_addr[sub] += 1;
        }
        assert!(per_addr.iter().all(|&c| c == 10), "round robin: {per_addr:?}");
    }
}

#[test]
fn specs_shift_publishing_groups_and_carry_every_address() {
    let addrs: BrokerList = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3".parse().expect("list");
    let opts = RunOpts { broker: addrs.clone(), ..RunOpts::default() };
    let publish = PubSpec {
        topic: TopicSpec::Own("t/{k}".into()),
        qos: 0,
        payload_len: 64,
        load: Load::Window { inflight: 1 },
    };
    let groups = [
        GroupPlan::new("subs", "s", 10),
        GroupPlan { publish: Some(publish), ..GroupPlan::new("pubs", "p", 10) },
    ];
    let specs = specs(&opts, "r", &groups, 2, None);
    for s in &specs {
        assert_eq!(s.brokers, addrs.addrs());
        assert_eq!(s.groups[0].broker_shift, 0);
        assert_eq!(s.groups[1].broker_shift, 1);
    }
}

/// Topics of the PUBLISH frames a proxy saw, by direction.
#[derive(Default)]
struct Seen {
    published: BTreeSet<String>,
    delivered: BTreeSet<String>,
    connections: u64,
}

fn frame_len(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((2 + i, 2 + i + len));
        }
    }
    None
}

/// Copies `from` to `to`, recording the topic of every PUBLISH frame.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
    to_client: bool,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut out = Vec::new();
        while let Some((head, n)) = frame_len(&buf).filter(|&(_, n)| buf.len() >= n) {
            let frame = &buf[..n];
            if frame[0] >> 4 == 3 && n >= head + 2 {
                let tl = usize::from(u16::from_be_bytes([frame[head], frame[head + 1]]));
                if let Some(t) = frame.get(head + 2..head + 2 + tl) {
                    let topic = String::from_utf8_lossy(t).into_owned();
                    let mut s = seen.lock().expect("seen");
                    if to_client {
                        s.delivered.insert(topic)
                    } else {
                        s.published.insert(topic)
                    };
                }
            }
            out.extend_from_slice(frame);
            buf.advance(n);
        }
        if to.write_all(&out).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

async fn start_proxy(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, Arc<Mutex<Seen>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            s.lock().expect("seen").connections += 1;
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, s.clone(), false));
            tokio::spawn(pipe(sr, cw, s.clone(), true));
        }
    });
    Ok((addr, seen))
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

async fn start_broker(name: &str) -> anyhow::Result<Broker> {
    let dir = std::env::temp_dir().join(format!("bench-assign-{name}-{}", std::process::id()));
    let mut config = NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: dir, ..NodeConfig::default() };
    config.broker.sys_interval_secs = 0;
    config.storage.persistence = false;
    let server = Server::bind(config).await.context("bind broker")?;
    let addr = server.local_addr()?;
    let handle = server.shutdown_handle();
    tokio::spawn(server.run());
    Ok(Broker { addr, handle })
}

async fn three_proxies(broker: &Broker) -> anyhow::Result<(BrokerList, Vec<Arc<Mutex<Seen>>>)> {
    let mut addrs = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (a, s) = start_proxy(broker.addr).await?;
        addrs.push(a);
        seen.push(s);
    }
    Ok((BrokerList::new(addrs).context("three addresses")?, seen))
}

fn opts(broker: BrokerList) -> RunOpts {
    RunOpts {
        broker,
        rate: Some(300.0),
        warmup: Dur(Duration::from_millis(200)),
        measure: Dur(Duration::from_millis(1000)),
        drain: Dur(Duration::from_secs(5)),
        quiet: Dur(Duration::from_millis(500)),
        in_process: true,
        no_progress: true,
        connect_rate: 0.0,
        ..RunOpts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_commands_cross_addresses() -> anyhow::Result<()> {
    let broker = start_broker("p2p").await?;
    let (addrs, seen) = three_proxies(&broker).await?;
    let args = P2pArgs { opts: opts(addrs), vehicles: 9, backends: 9 };
    let r = bench::scenario::p2p::run(&args).await?;
    let t = r.traffic.as_ref().context("traffic summary")?;
    assert!(t.sent > 100, "too little traffic: {t:?}");
    assert_eq!(t.accounting.lost, 0, "{t:?}");
    for (i, s) in seen.iter().enumerate() {
        let s = s.lock().expect("seen");
        assert_eq!(s.connections, 6, "proxy {i}: 3 vehicles and 3 backends");
        assert!(!s.delivered.is_empty() && !s.published.is_empty(), "proxy {i} unused");
        let same: Vec<_> = s.published.intersection(&s.delivered).collect();
        assert!(same.is_empty(), "proxy {i} carried both the publish and the delivery of {same:?}");
        // Vehicle k subscribes through proxy k mod 3.
        for topic in &s.delivered {
            let k: usize = topic.split('/').nth(1).and_then(|k| k.parse().ok()).context("topic")?;
            assert_eq!(k % 3, i, "{topic} delivered through proxy {i}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanin_spreads_publishers_over_addresses() -> anyhow::Result<()> {
    let broker = start_broker("fanin").await?;
    let (addrs, seen) = three_proxies(&broker).await?;
    let args = FaninArgs { opts: opts(addrs), vehicles: 6, backends: 1, shared: false };
    let r = bench::scenario::fanin::run(&args).await?;
    let t = r.traffic.as_ref().context("traffic summary")?;
    assert_eq!(t.accounting.lost, 0, "{t:?}");
    // Backend 0 on proxy 0; vehicle k publishes through proxy (k + 1) mod 3.
    for (i, s) in seen.iter().enumerate() {
        let s = s.lock().expect("seen");
        assert_eq!(s.connections, 2 + u64::from(i == 0), "proxy {i}");
        for topic in &s.published {
            let k: usize = topic.split('/').nth(1).and_then(|k| k.parse().ok()).context("topic")?;
            assert_eq!((k + 1) % 3, i, "{topic} published through proxy {i}");
        }
        assert_eq!(s.delivered.is_empty(), i != 0, "proxy {i}: deliveries only to the backend");
    }
    Ok(())
}
