//! Recoverable storage errors do not switch durability off: while the broker process is out
//! of file descriptors (EMFILE, set with `prlimit` on the real binary) the journal cannot
//! create its next segment; acknowledgements wait, and once descriptors are free again the
//! writes are retried, acknowledged and survive a SIGKILL. Meanwhile publishers are not read
//! past `max-journal-lag-bytes`, so the records waiting for the disk stay bounded.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The broker process, killed when the test ends, passing or not.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CONFIG: &str = "[storage]\nsegment-bytes = 1048576\ncheckpoint-bytes = 16777216\n";

fn start_broker(port: u16, dir: &Path) -> Broker {
    start_broker_with(port, dir, CONFIG)
}

fn start_broker_with(port: u16, dir: &Path, text: &str) -> Broker {
    Broker(common::spawn_broker(port, dir, text, "warn"))
}

/// Sets the soft descriptor limit of process `pid`, keeping the hard limit.
fn set_nofile(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

/// The soft descriptor limit of `pid`, from `/proc/PID/limits`.
fn soft_nofile(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("proc limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    line.split_whitespace().nth(3).expect("soft limit").to_string()
}

/// Lowest descriptor number `pid` has free: with the soft limit there, every `open` fails
/// with EMFILE while the descriptors already open keep working.
fn lowest_free_fd(pid: u32) -> u32 {
    let open: std::collections::BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    (0..).find(|n| !open.contains(n)).expect("a free descriptor")
}

fn options(id: &str, port: u16, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(64);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

fn pump(mut el: EventLoop) -> mpsc::UnboundedReceiver<Option<Packet>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(Some(p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    rx
}

async fn connect(o: MqttOptions) -> (AsyncClient, mpsc::UnboundedReceiver<Option<Packet>>) {
    let (c, el) = AsyncClient::new(o, 128);
    let mut rx = pump(el);
    let ack = tokio::time::timeout(common::WAIT, rx.recv()).await.expect("CONNACK in time");
    assert!(matches!(ack, Some(Some(Packet::ConnAck(_)))), "{ack:?}");
    (c, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_creation_failing_with_emfile_is_retried_and_durability_stays_on() {
    let dir = common::temp_data_dir();
    let port = free_port();
    let broker = start_broker(port, &dir);
    let pid = broker.0.id();

    // A persistent session, offline: what is published for it is queued and journaled.
    let (sub, mut srx) = connect(options("emfile-sub", port, false)).await;
    sub.subscribe("e/t", QoS::AtLeastOnce).await.expect("subscribe");
    loop {
        match tokio::time::timeout(common::WAIT, srx.recv()).await.expect("SUBACK in time") {
            Some(Some(Packet::SubAck(_))) => break,
            Some(Some(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    sub.disconnect().await.expect("disconnect");
    let (publ, mut prx) = connect(options("emfile-pub", port, true)).await;

    // No descriptor left: the journal cannot open its next segment's files.
    let soft = soft_nofile(pid);
    set_nofile(pid, &lowest_free_fd(pid).to_string());
    let payload = vec![3u8; 64 << 10];
    let count = 40u16; // 2.5 MiB: at least two segment rolls with 1 MiB segments
    for i in 0..count {
        let mut p = payload.clone();
        p[..2].copy_from_slice(&i.to_be_bytes());
        publ.publish("e/t", QoS::AtLeastOnce, false, p).await.expect("publish");
    }
    // While it cannot write, nothing past the first segment is acknowledged, and the
    // publisher stays connected (a switched-off journal disconnects a 3.1.1 publisher).
    let mut acked = 0;
    let quiet = Instant::now() + Duration::from_secs(1);
    while let Ok(p) = tokio::time::timeout_at(quiet.into(), prx.recv()).await {
        match p {
            Some(Some(Packet::PubAck(_))) => acked += 1,
            Some(Some(_)) => {}
            other => panic!("publisher lost while the journal was out of descriptors: {other:?}"),
        }
    }
    assert!(acked < count, "all {count} acknowledged while no segment could be created");

    set_nofile(pid, &soft);
    while acked < count {
        match tokio::time::timeout(common::WAIT, prx.recv()).await.expect("PUBACK once descriptors are back")
        {
            Some(Some(Packet::PubAck(_))) => acked += 1,
            Some(Some(_)) => {}
            other => panic!("publisher lost after descriptors came back: {other:?}"),
        }
    }

    // Acknowledged means durable: all of it survives a SIGKILL.
    drop(broker);
    let broker = start_broker(port, &dir);
    let (_sub, mut srx) = connect(options("emfile-sub", port, false)).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < usize::from(count) {
        match tokio::time::timeout(common::WAIT, srx.recv()).await.expect("queued messages after restart") {
            Some(Some(Packet::Publish(p))) => {
                seen.insert(u16::from_be_bytes([p.payload[0], p.payload[1]]));
            }
            Some(Some(_)) => {}
            other => panic!("subscriber lost: {other:?}"),
        }
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

/// Hardening: the lag pause used to stop reading every client, so a subscriber's PINGREQ
/// and PUBACK went unread too (its deliveries could not drain, its keep alive could lapse).
/// Only PUBLISH waits now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_not_read_while_the_journal_lags_past_max_journal_lag_bytes_but_others_are() {
    use tokio::io::AsyncWriteExt;
    let dir = common::temp_data_dir();
    let port = free_port();
    let config = format!("{CONFIG}max-journal-lag-bytes = 4194304\n");
    let broker = start_broker_with(port, &dir, &config);
    let pid = broker.0.id();
    let mut publ = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let connect = node::mqtt::packet::Connect {
        protocol: Some(node::mqtt::packet::Protocol::V3_1_1),
        clean_start: true,
        client_id: "lag-flood".into(),
        ..Default::default()
    };
    let mut wire = bytes::BytesMut::new();
    node::mqtt::codec::encode(
        &node::mqtt::packet::Packet::Connect(Box::new(connect)),
        node::mqtt::packet::Protocol::V3_1_1,
        &mut wire,
    );
    publ.write_all(&wire).await.expect("CONNECT");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v311 = node::mqtt::packet::Protocol::V3_1_1;
    let mut pinger = common::raw::Raw::connect(addr, v311, "lag-pinger").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The disk "stops": no segment can be created, so records pile up behind it.
    let soft = soft_nofile(pid);
    set_nofile(pid, &lowest_free_fd(pid).to_string());
    // 48 MiB of retained QoS 1 messages (each journaled), written as fast as the broker reads.
    let mut sent = 0usize;
    for i in 0..48u16 {
        let p = node::mqtt::packet::Publish {
            topic: format!("lag/{i}").into(),
            qos: node::mqtt::packet::QoS::AtLeastOnce,
            retain: true,
            packet_id: i + 1,
            payload: bytes::Bytes::from(vec![1u8; (1 << 20) - 1024]),
            ..Default::default()
        };
        let mut b = bytes::BytesMut::new();
        node::mqtt::codec::encode(
            &node::mqtt::packet::Packet::Publish(p),
            node::mqtt::packet::Protocol::V3_1_1,
            &mut b,
        );
        match tokio::time::timeout(Duration::from_secs(2), publ.write_all(&b)).await {
            Ok(Ok(())) => sent += b.len(),
            Ok(Err(e)) => panic!("the broker closed the publisher: {e}"),
            Err(_) => break, // blocked: the broker stopped reading
        }
    }
    eprintln!("journal stalled: the broker took {} MiB of 48 MiB of QoS 1 publishes", sent >> 20);
    assert!(sent < 32 << 20, "the broker read {sent} bytes of publishes it could not journal");
    // The journal still lags (nothing can be written), yet a client that does not publish
    // is read and answered.
    pinger.send(node::mqtt::packet::Packet::PingReq).await;
    let pong = tokio::time::timeout(Duration::from_secs(3), pinger.recv()).await;
    assert!(
        matches!(pong, Ok(Some(node::mqtt::packet::Packet::PingResp))),
        "no PINGRESP while the journal lags: {pong:?}"
    );
    set_nofile(pid, &soft);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}
