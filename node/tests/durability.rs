//! Crash durability of the real broker binary: SIGKILL while clients publish QoS 1 and
//! QoS 2 to persistent subscribers, restart on the same data dir, and check that nothing
//! acknowledged was lost (QoS 2 exactly once), retained messages and subscriptions survived,
//! and the will of a client connected at the crash was published.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn start_broker(port: u16, dir: &Path) -> Child {
    // Queues large enough that no acknowledged message is dropped by the queue bound.
    common::spawn_broker(port, dir, "[broker]\nmax-queued-messages = 100000\n", "warn")
}

fn options(id: &str, port: u16, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(64);
    o
}

/// Runs an event loop, forwarding every incoming packet, until it errors.
fn pump(mut el: EventLoop) -> (mpsc::UnboundedReceiver<Packet>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    (rx, h)
}

async fn connect(
    o: MqttOptions,
) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>, tokio::task::JoinHandle<()>) {
    let (c, el) = AsyncClient::new(o, 256);
    let (mut rx, h) = pump(el);
    let ack = tokio::time::timeout(common::WAIT, rx.recv()).await.expect("CONNACK in time");
    assert!(matches!(ack, Some(Packet::ConnAck(_))), "{ack:?}");
    (c, rx, h)
}

async fn expect_suback(rx: &mut mpsc::UnboundedReceiver<Packet>) {
    loop {
        match tokio::time::timeout(common::WAIT, rx.recv()).await.expect("SUBACK in time") {
            Some(Packet::SubAck(_)) => return,
            Some(_) => {}
            None => panic!("connection closed before SUBACK"),
        }
    }
}

/// Publishes `n` numbered messages and records which were acknowledged (PUBACK for QoS 1,
/// PUBCOMP for QoS 2), until the broker dies.
async fn publish_until_killed(
    port: u16,
    id: &str,
    topic: &str,
    qos: QoS,
    n: u16,
) -> tokio::task::JoinHandle<BTreeSet<u16>> {
    let (c, mut rx, _h) = connect(options(id, port, true)).await;
    let topic = topic.to_string();
    // The sender works on a clone: rumqttc's event loop ends when every client is dropped.
    let sending = c.clone();
    tokio::spawn(async move {
        let sender = tokio::spawn(async move {
            for i in 1..=n {
                if sending.publish(topic.as_str(), qos, false, i.to_be_bytes().to_vec()).await.is_err() {
                    return;
                }
            }
        });
        // Acknowledgements come in PUBLISH order (MQTT-4.6.0-2), so the k-th PUBACK (QoS 1)
        // or PUBCOMP (QoS 2) acknowledges message k. rumqttc reuses packet ids, so they
        // cannot name the message.
        let mut count: u16 = 0;
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            match p {
                Packet::PubAck(_) if qos == QoS::AtLeastOnce => count += 1,
                Packet::PubComp(_) if qos == QoS::ExactlyOnce => count += 1,
                _ => {}
            }
        }
        let acked: BTreeSet<u16> = (1..=count).collect();
        sender.abort();
        drop(c);
        acked
    })
}

/// Collects publishes on a reconnected persistent session until `quiet` passes without one.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Packet>,
    quiet: Duration,
) -> Vec<(String, Vec<u8>, QoS, bool)> {
    let mut got = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(quiet, rx.recv()).await {
        if let Packet::Publish(p) = p {
            got.push((p.topic.clone(), p.payload.to_vec(), p.qos, p.retain));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged() {
    let dir = common::temp_data_dir();
    let port = free_port();
    let mut broker = start_broker(port, &dir);

    // Persistent subscribers, then offline: everything for them is queued in the broker.
    let (sub, mut rx, h) = connect(options("durable-sub", port, false)).await;
    sub.subscribe("d/q1", QoS::AtLeastOnce).await.expect("subscribe");
    expect_suback(&mut rx).await;
    sub.subscribe("d/q2", QoS::ExactlyOnce).await.expect("subscribe");
    expect_suback(&mut rx).await;
    sub.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(common::WAIT, h).await;
    let (watcher, mut wrx, wh) = connect(options("durable-watcher", port, false)).await;
    watcher.subscribe("d/will", QoS::AtLeastOnce).await.expect("subscribe");
    expect_suback(&mut wrx).await;
    watcher.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(common::WAIT, wh).await;

    // A client whose connection is open when the broker dies: its will must go out.
    let mut wo = options("durable-doomed", port, true);
    wo.set_last_will(LastWill::new("d/will", "doomed-gone", QoS::AtLeastOnce, false));
    let (_doomed, _drx, _dh) = connect(wo).await;

    // Retained, acknowledged.
    let (r, mut rrx, _rh) = connect(options("durable-retainer", port, true)).await;
    r.publish("d/ret", QoS::AtLeastOnce, true, b"kept".to_vec()).await.expect("publish");
    loop {
        match tokio::time::timeout(common::WAIT, rrx.recv()).await.expect("PUBACK in time") {
            Some(Packet::PubAck(_)) => break,
            Some(_) => {}
            None => panic!("closed"),
        }
    }

    // Publish QoS 1 and QoS 2 streams; kill -9 once both have acknowledgements.
    let q1 = publish_until_killed(port, "durable-pub1", "d/q1", QoS::AtLeastOnce, 20_000).await;
    let q2 = publish_until_killed(port, "durable-pub2", "d/q2", QoS::ExactlyOnce, 20_000).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    broker.kill().expect("SIGKILL");
    let _ = broker.wait();
    let acked1 = q1.await.expect("publisher 1");
    let acked2 = q2.await.expect("publisher 2");
    assert!(!acked1.is_empty() && !acked2.is_empty(), "kill came before any acknowledgement");

    let mut broker = start_broker(port, &dir);
    let (sub, mut rx, _h) = connect(options("durable-sub", port, false)).await;
    let got = collect(&mut rx, Duration::from_secs(3)).await;
    let mut q1_seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut q2_seen: BTreeMap<u16, usize> = BTreeMap::new();
    for (topic, payload, _, _) in &got {
        let seq = u16::from_be_bytes([payload[0], payload[1]]);
        let seen = if topic == "d/q1" { &mut q1_seen } else { &mut q2_seen };
        *seen.entry(seq).or_default() += 1;
    }
    let lost1: Vec<u16> = acked1.iter().filter(|s| !q1_seen.contains_key(s)).copied().collect();
    let lost2: Vec<u16> = acked2.iter().filter(|s| !q2_seen.contains_key(s)).copied().collect();
    assert!(
        lost1.is_empty(),
        "{} PUBACKed QoS 1 messages lost, e.g. {:?}",
        lost1.len(),
        &lost1[..lost1.len().min(5)]
    );
    assert!(
        lost2.is_empty(),
        "{} PUBCOMPed QoS 2 messages lost, e.g. {:?}",
        lost2.len(),
        &lost2[..lost2.len().min(5)]
    );
    let dup2: Vec<(&u16, &usize)> = q2_seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup2.is_empty(), "QoS 2 messages delivered more than once: {dup2:?}");
    eprintln!(
        "acked before kill: QoS1 {} QoS2 {}; delivered after restart: QoS1 {} QoS2 {}",
        acked1.len(),
        acked2.len(),
        q1_seen.len(),
        q2_seen.len()
    );

    // The subscription itself survived: a new message reaches the resumed session.
    let (p, mut prx, _ph) = connect(options("durable-pub3", port, true)).await;
    p.publish("d/q1", QoS::AtLeastOnce, false, 60000u16.to_be_bytes().to_vec()).await.expect("publish");
    let _ = tokio::time::timeout(common::WAIT, prx.recv()).await;
    let after = collect(&mut rx, Duration::from_secs(2)).await;
    assert!(after.iter().any(|(t, pl, _, _)| t == "d/q1" && pl[..] == 60000u16.to_be_bytes()), "{after:?}");
    drop(sub);

    // The will of the client connected at the crash reached the watcher's session.
    let (_w, mut wrx, _wh) = connect(options("durable-watcher", port, false)).await;
    let wills = collect(&mut wrx, Duration::from_secs(2)).await;
    assert!(wills.iter().any(|(t, pl, _, _)| t == "d/will" && pl[..] == b"doomed-gone"[..]), "{wills:?}");

    // Retained survived.
    let (f, mut frx, _fh) = connect(options("durable-fresh", port, true)).await;
    f.subscribe("d/ret", QoS::AtLeastOnce).await.expect("subscribe");
    let ret = collect(&mut frx, Duration::from_secs(2)).await;
    assert!(ret.iter().any(|(t, pl, _, retain)| t == "d/ret" && pl[..] == b"kept"[..] && *retain), "{ret:?}");

    broker.kill().expect("kill");
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

/// Runs the broker to completion and returns its exit status and stderr.
fn run_to_exit(port: u16, dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args(["--log", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flotilla");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
            return (status, err);
        }
        if Instant::now() > deadline || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            child.kill().expect("kill");
            let status = child.wait().expect("wait");
            return (status, String::from("(started and served)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_journal_refuses_to_start_until_repaired() {
    let dir = common::temp_data_dir();
    let port = free_port();
    let mut broker = start_broker(port, &dir);
    let (r, mut rx, _h) = connect(options("corrupt-writer", port, true)).await;
    for i in 0..20u8 {
        r.publish(format!("c/{i}"), QoS::AtLeastOnce, true, vec![i; 100]).await.expect("publish");
    }
    let mut acks = 0;
    while acks < 20 {
        match tokio::time::timeout(common::WAIT, rx.recv()).await.expect("PUBACK in time") {
            Some(Packet::PubAck(_)) => acks += 1,
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    broker.kill().expect("kill");
    let _ = broker.wait();

    // Damage the first record (a byte inside its payload); valid records follow it, so this
    // is corruption, not a torn tail.
    let log = dir.join("journal").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&log).expect("read segment");
    bytes[32 + 28 + 8] ^= 0xFF;
    std::fs::write(&log, &bytes).expect("write segment");

    let (status, err) = run_to_exit(port, &dir, &[]);
    assert!(!status.success(), "broker started on a corrupted journal");
    assert!(err.contains("00000000000000000000.log"), "error does not name the file: {err}");
    assert!(err.contains("--repair"), "error does not say how to recover: {err}");

    let (_, served) = run_to_exit(port, &dir, &["--repair"]);
    assert_eq!(served, "(started and served)", "--repair did not start the broker");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
}

/// Bytes of journal records (their payloads, as the broker encoded them) in `dir/journal`,
/// and how many of them carry a stored message (`Record::Message`).
fn journal_contents(dir: &Path) -> (u64, usize) {
    use node::broker::journal::{Record, WallClock};
    let log = storage::SegmentLog::open(storage::OsFs, dir.join("journal"), storage::LogConfig::default())
        .expect("open the journal");
    let clock = WallClock::new(Instant::now(), 0);
    let (mut bytes, mut messages, mut at) = (0u64, 0usize, log.start_offset());
    loop {
        let batch = log.read_from(at, 1 << 20).expect("read the journal");
        let Some(last) = batch.last() else { break };
        at = last.offset + 1;
        for r in &batch {
            bytes += r.payload.len() as u64;
            let record = Record::decode(bytes::Bytes::copy_from_slice(r.payload), &clock).expect("decodes");
            messages += usize::from(matches!(record, Record::Message { .. }));
        }
    }
    (bytes, messages)
}

/// Journal bytes for `MESSAGES` 8 KiB QoS 1 messages published to `subscribers` persistent
/// sessions, half of them offline, half connected (and acknowledging).
async fn journal_for(subscribers: usize) -> (u64, usize) {
    const MESSAGES: usize = 10;
    let dir = common::temp_data_dir();
    let port = free_port();
    let mut broker = start_broker(port, &dir);
    let mut online = Vec::new();
    for i in 0..subscribers {
        let (c, mut rx, h) = connect(options(&format!("once-sub-{i}"), port, false)).await;
        c.subscribe("once/t", QoS::AtLeastOnce).await.expect("subscribe");
        expect_suback(&mut rx).await;
        if i % 2 == 0 {
            c.disconnect().await.expect("disconnect");
            let _ = tokio::time::timeout(common::WAIT, h).await;
        } else {
            online.push((c, rx, h));
        }
    }
    let (p, mut prx, _ph) = connect(options("once-pub", port, true)).await;
    for i in 0..MESSAGES {
        p.publish("once/t", QoS::AtLeastOnce, false, vec![i as u8; 8 << 10]).await.expect("publish");
    }
    let mut acks = 0;
    while acks < MESSAGES {
        match tokio::time::timeout(common::WAIT, prx.recv()).await.expect("PUBACK in time") {
            Some(Packet::PubAck(_)) => acks += 1,
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    broker.kill().expect("kill");
    let _ = broker.wait();
    drop(online);
    let contents = journal_contents(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("toml"));
    contents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_is_journaled_once_however_many_persistent_sessions_queue_it() {
    let (one, one_messages) = journal_for(1).await;
    let (twenty, twenty_messages) = journal_for(20).await;
    assert_eq!((one_messages, twenty_messages), (10, 10), "one Message record per published message");
    println!("journal bytes for 10 × 8 KiB QoS 1 messages: 1 session {one}, 20 sessions {twenty}");
    let payloads = 10 * (8 << 10) as u64;
    assert!(one >= payloads, "{one} bytes hold the payloads");
    // Nineteen more sessions add their enqueue and acknowledgement records, tens of bytes per
    // message each, never a copy of a payload (which would be 19 × 80 KiB more).
    assert!(twenty < one + 19 * 10 * 256, "1 session: {one} B of journal; 20 sessions: {twenty} B");
}
