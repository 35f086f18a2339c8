//! The journal shrinks: checkpoints delete the segments before them, so a long uptime of
//! consumed QoS 1 traffic keeps the journal directory within a small multiple of
//! `checkpoint-bytes`, and a state larger than `checkpoint-bytes` does not make every
//! checkpoint trigger the next one.

mod common;

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const SEGMENT_BYTES: u32 = 1 << 20;
const CHECKPOINT_BYTES: u64 = 2 << 20;

fn options(id: &str, port: u16, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(32);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

fn pump(mut el: EventLoop) -> mpsc::UnboundedReceiver<Packet> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn connect(o: MqttOptions) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let (c, el) = AsyncClient::new(o, 64);
    let mut rx = pump(el);
    let ack = tokio::time::timeout(common::WAIT, rx.recv()).await.expect("CONNACK in time");
    assert!(matches!(ack, Some(Packet::ConnAck(_))), "{ack:?}");
    (c, rx)
}

/// Waits for the next packet matching `pick`, skipping others.
async fn next_where(rx: &mut mpsc::UnboundedReceiver<Packet>, what: &str, pick: impl Fn(&Packet) -> bool) {
    loop {
        match tokio::time::timeout(common::WAIT, rx.recv()).await {
            Ok(Some(p)) if pick(&p) => return,
            Ok(Some(_)) => {}
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

/// Bytes of every file in the journal directory (preallocated lengths included) and the
/// segment files' names, sorted.
fn journal_files(data_dir: &Path) -> (u64, Vec<String>) {
    let mut bytes = 0;
    let mut names = Vec::new();
    for e in std::fs::read_dir(data_dir.join("journal")).expect("journal dir").flatten() {
        // A file deleted by a checkpoint between the listing and this call counts nothing.
        let Ok(meta) = e.metadata() else { continue };
        bytes += meta.len();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            names.push(name);
        }
    }
    names.sort();
    (bytes, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_qos1_traffic_of_128x_checkpoint_bytes_leaves_the_journal_under_3x_checkpoint_bytes() {
    consumed_qos1_traffic_leaves_the_journal_under_3x_checkpoint_bytes(128 * CHECKPOINT_BYTES).await;
}

/// The long-uptime variant: 1 GiB (512 x `checkpoint-bytes`) of consumed QoS 1 traffic
/// (about 15 s in a debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_of_consumed_qos1_traffic_leaves_the_journal_under_3x_checkpoint_bytes() {
    consumed_qos1_traffic_leaves_the_journal_under_3x_checkpoint_bytes(1 << 30).await;
}

/// Pushes `total` bytes of QoS 1 through a persistent session that consumes as it goes
/// (at most 16 messages unacknowledged or undelivered), sampling the journal directory's
/// size, and asserts its peak stays under 3 x `checkpoint-bytes`.
async fn consumed_qos1_traffic_leaves_the_journal_under_3x_checkpoint_bytes(total: u64) {
    let data_dir = common::temp_data_dir();
    let dir = data_dir.clone();
    let broker = common::TestBroker::start_with(|c| {
        c.data_dir = dir;
        c.storage.segment_bytes = SEGMENT_BYTES;
        c.storage.checkpoint_bytes = CHECKPOINT_BYTES;
    })
    .await;
    let port = broker.port();
    let (sub, mut srx) = connect(options("retention-sub", port, false)).await;
    sub.subscribe("r/t", QoS::AtLeastOnce).await.expect("subscribe");
    next_where(&mut srx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    let (publ, mut prx) = connect(options("retention-pub", port, true)).await;

    let payload = vec![7u8; 64 << 10];
    let count = total / payload.len() as u64;
    let (mut largest, mut acked, mut delivered) = (0, 0, 0);
    for i in 0..count {
        publ.publish("r/t", QoS::AtLeastOnce, false, payload.clone()).await.expect("publish");
        // Keep at most 16 messages unacknowledged and undelivered: the session consumes.
        while i + 1 - acked > 16 || i + 1 - delivered > 16 {
            tokio::select! {
                p = prx.recv() => if let Some(Packet::PubAck(_)) = p { acked += 1 },
                p = srx.recv() => if let Some(Packet::Publish(_)) = p { delivered += 1 },
            }
        }
        if i % 8 == 0 {
            largest = largest.max(journal_files(&data_dir).0);
        }
    }
    while delivered < count {
        next_where(&mut srx, "PUBLISH", |p| matches!(p, Packet::Publish(_))).await;
        delivered += 1;
    }
    let (end, names) = journal_files(&data_dir);
    largest = largest.max(end);
    eprintln!(
        "{} MiB of QoS 1 through a persistent session; journal at most {} bytes ({:.2} x \
         checkpoint-bytes), {} bytes and {} segments at the end",
        total >> 20,
        largest,
        largest as f64 / CHECKPOINT_BYTES as f64,
        end,
        names.len()
    );
    assert!(
        largest < 3 * CHECKPOINT_BYTES,
        "the journal grew to {largest} bytes ({} segments at the end) with checkpoint-bytes = {CHECKPOINT_BYTES}",
        names.len()
    );
    drop((sub, publ));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_checkpoint_bytes_does_not_trigger_checkpoints_while_idle() {
    let data_dir = common::temp_data_dir();
    let dir = data_dir.clone();
    let broker = common::TestBroker::start_with(|c| {
        c.data_dir = dir;
        c.storage.segment_bytes = SEGMENT_BYTES;
        c.storage.checkpoint_bytes = CHECKPOINT_BYTES;
    })
    .await;
    let (publ, mut prx) = connect(options("snapshot-pub", broker.port(), true)).await;
    // 3 MiB of retained messages: every snapshot is larger than checkpoint-bytes.
    let payload = vec![1u8; 64 << 10];
    for i in 0..48 {
        publ.publish(format!("big/{i}"), QoS::AtLeastOnce, true, payload.clone()).await.expect("publish");
        next_where(&mut prx, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    }
    // Let the checkpoint this traffic triggered finish, then watch an idle broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, before) = journal_files(&data_dir);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, after) = journal_files(&data_dir);
    assert_eq!(before, after, "an idle broker kept writing checkpoints (new segments appeared)");
    drop(publ);
    broker.stop().await;
}
