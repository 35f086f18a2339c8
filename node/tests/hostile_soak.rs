//! Hostile-client soak on the real binary: while anonymous clients publish 1 MiB messages
//! with maximal user properties to a subscriber that never reads, flood PINGREQ without
//! reading, hold sockets open without CONNECT past the connection limit (from five other
//! loopback addresses), and subscribe
//! 100,000 `#` filters in one packet, a normal client's QoS 1 round trips keep succeeding,
//! the broker's RSS stays under 512 MiB, and QoS 1 durability is still on afterwards (a
//! message acknowledged after the soak survives SIGKILL).
//!
//! Runs `FLOTILLA_SOAK_SECS` seconds (default 20; CI may set 60).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use common::raw::{Raw, connect_packet};
use node::mqtt::codec::encode;
use node::mqtt::packet::{Packet, Protocol, PubResp, Publish, QoS, SubOptions, Subscribe};
use node::mqtt::properties::Properties;
use node::mqtt::reason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const RSS_MAX: u64 = 512 << 20;

/// What the hostile clients got through: big PUBLISH bytes and PINGREQ bytes written, and
/// sockets opened without CONNECT.
static BIG_BYTES: AtomicU64 = AtomicU64::new(0);
static PING_BYTES: AtomicU64 = AtomicU64::new(0);
static HOARDED: AtomicU64 = AtomicU64::new(0);
const CONFIG: &str =
    "[broker]\nmax-connections = 200\nmax-queued-messages = 100\nwrite-stall-timeout-secs = 5\n";

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(dir: &Path, port: u16) -> Broker {
    Broker(common::spawn_broker(port, dir, CONFIG, "error"))
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

fn wire(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(packet, protocol, &mut b);
    b.to_vec()
}

/// A v5 connection with a 4 KiB receive buffer that reads its CONNACK (and SUBACK) and then
/// never reads again; `None` if the broker did not let it in (connection limit).
async fn non_reader(addr: SocketAddr, id: &str, filter: Option<&str>) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    let mut s = socket.connect(addr).await.ok()?;
    s.write_all(&wire(&Packet::Connect(Box::new(connect_packet(Protocol::V5, id))), Protocol::V5))
        .await
        .ok()?;
    let mut head = [0u8; 64];
    let n = timeout(common::WAIT, s.read(&mut head)).await.ok()?.ok()?;
    if n < 4 || head[0] != 0x20 || head[3] != 0 {
        return None;
    }
    if let Some(f) = filter {
        let opts = SubOptions { qos: QoS::AtMostOnce, ..SubOptions::default() };
        let sub =
            Subscribe { packet_id: 1, properties: Properties::default(), filters: vec![(f.into(), opts)] };
        s.write_all(&wire(&Packet::Subscribe(sub), Protocol::V5)).await.ok()?;
        timeout(common::WAIT, s.read(&mut head)).await.ok()?.ok()?;
    }
    Some(s)
}

/// 1 MiB PUBLISHes with 64 user properties of ~16 KiB in all, QoS 0, as fast as the broker
/// reads them, to a subscriber that never reads (replaced whenever the broker closes it).
async fn big_publisher(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let props: Vec<(ByteString, ByteString)> =
        (0..64).map(|i| (ByteString::from(format!("k{i:02}")), ByteString::from("v".repeat(240)))).collect();
    let properties = Properties { user_properties: props.into(), ..Properties::default() };
    let publish = Publish {
        topic: "hostile/big".into(),
        qos: QoS::AtMostOnce,
        payload: Bytes::from(vec![0x5Au8; (1 << 20) - 20_000]),
        properties,
        ..Publish::default()
    };
    let bytes = wire(&Packet::Publish(publish), Protocol::V5);
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let sub = non_reader(addr, &format!("never-reads-{round}"), Some("hostile/#")).await;
        let Some(mut publ) = non_reader(addr, &format!("big-pub-{round}"), None).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            if !matches!(timeout(Duration::from_secs(1), publ.write_all(&bytes)).await, Ok(Ok(()))) {
                break;
            }
            BIG_BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        drop(sub);
    }
}

/// PINGREQ without ever reading, reconnecting when the broker closes the connection.
async fn pingreq_flood(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let chunk = [0xC0u8, 0x00].repeat(32 << 10);
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let Some(mut s) = non_reader(addr, &format!("ping-flood-{round}"), None).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            match timeout(Duration::from_secs(1), s.write_all(&chunk)).await {
                Ok(Ok(())) => {
                    PING_BYTES.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Keeps 250 sockets open without CONNECT (the limit is 200), 50 from each of 127.0.0.2 to
/// 127.0.0.6, renewing them every 3 s.
async fn socket_hoarder(addr: SocketAddr, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut held = Vec::new();
        for i in 0..250u8 {
            let Ok(socket) = TcpSocket::new_v4() else { continue };
            if socket.bind(SocketAddr::from(([127, 0, 0, 2 + i % 5], 0))).is_err() {
                continue;
            }
            if let Ok(Ok(s)) = timeout(Duration::from_secs(1), socket.connect(addr)).await {
                held.push(s);
                HOARDED.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// QoS 1 publish to its own subscription, PUBACK and delivery, until stopped.
async fn round_trips(mut c: Raw, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> Raw {
    let mut n: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        n = n % 60_000 + 1;
        let p = Publish {
            topic: "normal/rt".into(),
            qos: QoS::AtLeastOnce,
            packet_id: n,
            payload: Bytes::copy_from_slice(&n.to_be_bytes()),
            ..Publish::default()
        };
        c.send(Packet::Publish(p)).await;
        let (mut acked, mut delivered) = (false, false);
        while !(acked && delivered) {
            match c.expect("PUBACK and delivery of a normal QoS 1 round trip").await {
                Packet::PubAck(a) if a.packet_id == n => {
                    assert!(a.reason_code < 0x80, "normal publish refused: {a:?}");
                    acked = true;
                }
                Packet::Publish(p) if p.payload[..] == n.to_be_bytes() => {
                    c.send(Packet::PubAck(PubResp::new(p.packet_id))).await;
                    delivered = true;
                }
                Packet::Publish(p) => c.send(Packet::PubAck(PubResp::new(p.packet_id))).await,
                other => panic!("normal client got {other:?}"),
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    c
}

async fn subscribe_qos1(c: &mut Raw, filter: &str) {
    let ack =
        c.subscribe(1, &[(filter, SubOptions { qos: QoS::AtLeastOnce, ..SubOptions::default() })]).await;
    assert_eq!(ack.reason_codes, vec![1], "{ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_leave_normal_qos1_round_trips_working_rss_bounded_and_durability_on() {
    let soak = Duration::from_secs(
        std::env::var("FLOTILLA_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20),
    );
    let dir = common::temp_data_dir();
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let broker = start_broker(&dir, port);
    let pid = broker.0.id();

    // 100,000 `#` filters in one SUBSCRIBE: refused with 0x97 before any is stored.
    let mut wild = Raw::connect(addr, Protocol::V5, "wildcard-hoarder").await;
    let opts = SubOptions { qos: QoS::AtMostOnce, ..SubOptions::default() };
    let filters = (0..100_000).map(|_| (ByteString::from("#"), opts)).collect();
    wild.send(Packet::Subscribe(Subscribe { packet_id: 1, properties: Properties::default(), filters }))
        .await;
    wild.expect_disconnect(reason::QUOTA_EXCEEDED).await;

    let mut normal = Raw::connect(addr, Protocol::V5, "normal").await;
    subscribe_qos1(&mut normal, "normal/rt").await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let hostile = [
        tokio::spawn(big_publisher(addr, stop.clone())),
        tokio::spawn(pingreq_flood(addr, stop.clone())),
        tokio::spawn(socket_hoarder(addr, stop.clone())),
    ];
    let trips = tokio::spawn(round_trips(normal, stop.clone(), done.clone()));
    let started = Instant::now();
    let mut rss_max = 0;
    while started.elapsed() < soak {
        rss_max = rss_max.max(rss(pid));
        assert!(!trips.is_finished(), "the normal client failed during the soak");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut normal = trips.await.expect("normal QoS 1 round trips kept succeeding");
    for h in hostile {
        h.abort();
    }
    let trips = done.load(Ordering::Relaxed);
    eprintln!(
        "soak {soak:?}: {trips} normal QoS 1 round trips; hostile: {} MiB of 1 MiB PUBLISHes, {} MiB of \
         PINGREQ, {} sockets without CONNECT; broker RSS at most {} MiB",
        BIG_BYTES.load(Ordering::Relaxed) >> 20,
        PING_BYTES.load(Ordering::Relaxed) >> 20,
        HOARDED.load(Ordering::Relaxed),
        rss_max >> 20
    );
    assert!(trips > 0, "no normal round trip completed");
    assert!(rss_max < RSS_MAX, "broker RSS reached {} MiB (bound {} MiB)", rss_max >> 20, RSS_MAX >> 20);

    // Durability is on: a QoS 1 message acknowledged now survives SIGKILL.
    let mut keeper = connect_persistent(addr).await;
    subscribe_qos1(&mut keeper, "soak/durable").await;
    keeper.send(Packet::Disconnect(Default::default())).await;
    keeper.expect_closed().await;
    let p = Publish {
        topic: "soak/durable".into(),
        qos: QoS::AtLeastOnce,
        packet_id: 1,
        payload: Bytes::from_static(b"kept"),
        ..Publish::default()
    };
    normal.send(Packet::Publish(p)).await;
    loop {
        match normal.expect("PUBACK after the soak").await {
            Packet::PubAck(a) if a.packet_id == 1 => {
                assert_eq!(a.reason_code, reason::SUCCESS, "QoS 1 refused after the soak: {a:?}");
                break;
            }
            Packet::Publish(p) => normal.send(Packet::PubAck(PubResp::new(p.packet_id))).await,
            other => panic!("{other:?}"),
        }
    }
    drop(broker);
    let _broker = start_broker(&dir, port);
    let mut keeper = connect_persistent(addr).await;
    let got = keeper.expect_publish().await;
    assert_eq!(&got.payload[..], b"kept");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

async fn connect_persistent(addr: SocketAddr) -> Raw {
    let mut c = connect_packet(Protocol::V5, "soak-keeper");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    // Retried: hoarded sockets may still hold every slot for a moment.
    for _ in 0..100 {
        let mut raw = Raw::open(addr, Protocol::V5).await;
        raw.send(Packet::Connect(Box::new(c.clone()))).await;
        if let Some(Packet::ConnAck(ack)) = raw.recv().await
            && ack.reason_code == reason::SUCCESS
        {
            return raw;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the persistent client could not connect");
}
