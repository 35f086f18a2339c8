//! Slow and hostile readers cannot make the broker hold memory for them: a client that
//! floods PINGREQ without reading is not read while its replies wait, and is closed after
//! `write-stall-timeout-secs`; subscribers that never read hold at most one pull of
//! `max-transmit-bytes` each, not a pull of 256 messages. Measured on the real binary's RSS.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use bytes::BytesMut;
use node::mqtt::codec::encode;
use node::mqtt::packet::{Packet, Protocol, Publish, QoS, SubOptions, Subscribe};
use node::mqtt::properties::Properties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(dir: &Path, config: &str) -> (Broker, SocketAddr) {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    (Broker(common::spawn_broker(port, dir, config, "warn")), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb << 10
}

fn wire(packet: Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(&packet, Protocol::V3_1_1, &mut b);
    b.to_vec()
}

/// A 3.1.1 connection with a 4 KiB receive buffer that reads only its CONNACK (and, with
/// `filter`, its SUBACK), then never again. `clean`: the clean session flag.
async fn non_reader(addr: SocketAddr, id: &str, clean: bool, filter: Option<&str>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = socket.connect(addr).await.expect("connect");
    let mut connect = common::raw::connect_packet(Protocol::V3_1_1, id);
    connect.clean_start = clean;
    s.write_all(&wire(Packet::Connect(Box::new(connect)))).await.expect("CONNECT");
    let mut ack = [0u8; 4];
    timeout(common::WAIT, s.read_exact(&mut ack)).await.expect("CONNACK in time").expect("CONNACK");
    if let Some(f) = filter {
        let opts = SubOptions { qos: QoS::AtLeastOnce, ..SubOptions::default() };
        let sub =
            Subscribe { packet_id: 1, properties: Properties::default(), filters: vec![(f.into(), opts)] };
        s.write_all(&wire(Packet::Subscribe(sub))).await.expect("SUBSCRIBE");
        let mut suback = [0u8; 5];
        timeout(common::WAIT, s.read_exact(&mut suback)).await.expect("SUBACK in time").expect("SUBACK");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pingreq_flood_without_reading_is_not_read_and_is_closed_after_write_stall_timeout() {
    let dir = common::temp_data_dir();
    let (broker, addr) = start_broker(&dir, "[broker]\nwrite-stall-timeout-secs = 2\n");
    let pid = broker.0.id();
    let mut flood = non_reader(addr, "pingreq-flood", true, None).await;
    let before = rss(pid);
    // 8 MiB of PINGREQ (4 million packets), or as much as the broker takes in 2 s.
    let chunk = [0xC0u8, 0x00].repeat(32 << 10);
    let mut sent = 0usize;
    while sent < 8 << 20 {
        match timeout(Duration::from_secs(2), flood.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    let grown = rss(pid).saturating_sub(before);
    eprintln!(
        "PINGREQ flood: {} KiB written before the broker stopped reading; RSS grew {} KiB",
        sent >> 10,
        grown >> 10
    );
    assert!(sent < 8 << 20, "the broker read all 8 MiB of PINGREQ from a client that reads nothing");
    assert!(grown < 64 << 20, "RSS grew {grown} bytes for a client that reads nothing");
    // Still not reading, past the timeout: the broker closes it. Reading afterwards only
    // drains what the kernel buffered, then meets the end of the stream (or a reset).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut sink = vec![0u8; 1 << 16];
    let closed = timeout(common::WAIT, async {
        loop {
            match flood.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a client that never read stayed connected past write-stall-timeout-secs");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_hold_at_most_one_pull_of_max_transmit_bytes_each() {
    let dir = common::temp_data_dir();
    // A window wide enough that the packet budget alone (256) would let one pull take all.
    let config = "[broker]\nmax-inflight = 256\n[storage]\npersistence = false\n";
    let (broker, addr) = start_broker(&dir, config);
    let pid = broker.0.id();
    // Four persistent sessions subscribe QoS 1, then go offline.
    for i in 0..4 {
        let mut s = non_reader(addr, &format!("never-reads-{i}"), false, Some("big/#")).await;
        s.write_all(&[0xE0, 0x00]).await.expect("DISCONNECT");
    }
    let mut publ = common::raw::Raw::connect(addr, Protocol::V3_1_1, "big-publisher").await;
    let before = rss(pid);
    // 48 messages of 1 MiB, each acknowledged: all queued for the four sessions.
    let payload = bytes::Bytes::from(vec![7u8; (1 << 20) - 64]);
    for i in 0..48u16 {
        let p = Publish {
            topic: "big/t".into(),
            qos: QoS::AtLeastOnce,
            packet_id: i + 1,
            payload: payload.clone(),
            ..Publish::default()
        };
        publ.send(Packet::Publish(p)).await;
        let ack = publ.expect("PUBACK").await;
        assert!(matches!(ack, Packet::PubAck(_)), "{ack:?}");
    }
    // The sessions come back and never read: each gets one pull of its queue.
    let mut readers = Vec::new();
    for i in 0..4 {
        readers.push(non_reader(addr, &format!("never-reads-{i}"), false, None).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss(pid).saturating_sub(before);
    eprintln!("4 subscribers that never read, 48 x 1 MiB: RSS grew {} MiB", grown >> 20);
    // The 48 MiB of messages are held once, shared by the queues; each reader may hold one
    // pull of max-transmit-bytes (1 MiB) on top. Pulls of 256 messages would add 4 x 48 MiB.
    assert!(grown < 120 << 20, "RSS grew {} MiB for readers that never read", grown >> 20);
    drop(readers);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

/// Every packet a connection sends until it closes (30 s at most).
async fn drain_to_close(s: &mut TcpStream, protocol: Protocol) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let read_all = async {
        loop {
            while let Some(p) =
                node::mqtt::codec::decode(&mut buf, Some(protocol), 1 << 28).expect("well formed")
            {
                packets.push(p);
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(Duration::from_secs(30), read_all).await.expect("closed in time");
    packets
}

/// Hardening: a stalled client used to be closed without a word. Now its backlog is cut at a
/// packet boundary and DISCONNECT 0x97 follows, written once the socket has room (within
/// the linger), so a v5 client that was merely too slow learns why it was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_v5_subscriber_gets_disconnect_0x97_after_its_cut_backlog() {
    let dir = common::temp_data_dir();
    let config = "[broker]\nwrite-stall-timeout-secs = 1\n[storage]\npersistence = false\n";
    let (broker, addr) = start_broker(&dir, config);
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut sub = socket.connect(addr).await.expect("connect");
    let v5 = |p: Packet| {
        let mut b = BytesMut::new();
        encode(&p, Protocol::V5, &mut b);
        b.to_vec()
    };
    let connect = common::raw::connect_packet(Protocol::V5, "stalled-v5");
    sub.write_all(&v5(Packet::Connect(Box::new(connect)))).await.expect("CONNECT");
    let opts = SubOptions { qos: QoS::AtMostOnce, ..SubOptions::default() };
    let subscribe = Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![("flood/#".into(), opts)],
    };
    sub.write_all(&v5(Packet::Subscribe(subscribe))).await.expect("SUBSCRIBE");
    let mut publ = common::raw::Raw::connect(addr, Protocol::V3_1_1, "flood-publisher").await;
    // 16 MiB of QoS 0 towards a reader that does not read: its socket fills, a pull waits.
    let payload = bytes::Bytes::from(vec![1u8; 8 << 10]);
    for _ in 0..2048 {
        let p = Publish { topic: "flood/t".into(), payload: payload.clone(), ..Publish::default() };
        publ.send(Packet::Publish(p)).await;
    }
    // Past write-stall-timeout-secs, well within the 5 s linger: read everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let packets = drain_to_close(&mut sub, Protocol::V5).await;
    let publishes = packets.iter().filter(|p| matches!(p, Packet::Publish(_))).count();
    eprintln!("stalled v5 subscriber: {} packets ({publishes} PUBLISH) before the close", packets.len());
    match packets.last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, 0x97, "{d:?}"),
        last => {
            let kind = last
                .map(|p| format!("{p:?}").chars().take_while(|c| c.is_alphanumeric()).collect::<String>());
            panic!("the stream ended without DISCONNECT 0x97; last packet {kind:?}")
        }
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}
