//! The network shell under many clients: wide fan-outs that span several reactor rounds and
//! reactors, and a subscriber whose socket fills up. Real sockets, rumqttc and raw clients;
//! every wait bounded (a hang guard, never a speed check).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{TestBroker, WAIT};
use node::mqtt::codec;
use node::mqtt::packet as np;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a rumqttc client whose received payloads are collected in the returned set; the
/// client is subscribed to `topic` once the function returns.
async fn subscriber(
    broker: &TestBroker,
    id: &str,
    topic: &str,
) -> (AsyncClient, Arc<Mutex<HashSet<Vec<u8>>>>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    let (client, mut ev) = AsyncClient::new(o, 64);
    let got = Arc::new(Mutex::new(HashSet::new()));
    let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel();
    let mut subacked_tx = Some(subacked_tx);
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            match e {
                Event::Incoming(Packet::Publish(p)) => {
                    sink.lock().expect("lock").insert(p.payload.to_vec());
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subacked_tx.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
    });
    client.subscribe(topic, QoS::AtLeastOnce).await.expect("subscribe");
    tokio::time::timeout(WAIT, subacked_rx).await.expect("SUBACK in time").expect("SUBACK");
    (client, got)
}

/// More deliveries than one reactor round takes (16,384) to subscribers spread over every
/// reactor: each subscriber gets every message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_fanout_reaches_every_subscriber_across_rounds_and_reactors() {
    const SUBSCRIBERS: usize = 300;
    const MESSAGES: usize = 60;
    let broker = TestBroker::start().await;
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        subs.push(subscriber(&broker, &format!("fan-sub-{i}"), "fan/out").await);
    }
    let mut o = MqttOptions::new("fan-pub", "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    let (publisher, mut ev) = AsyncClient::new(o, 128);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    for m in 0..MESSAGES {
        publisher.publish("fan/out", QoS::AtLeastOnce, false, format!("m{m}")).await.expect("publish");
    }
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let short: Vec<usize> = subs
            .iter()
            .enumerate()
            .filter(|(_, (_, got))| got.lock().expect("lock").len() < MESSAGES)
            .map(|(i, _)| i)
            .collect();
        if short.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscribers still short, e.g. fan-sub-{} has {} of {MESSAGES}",
            short.len(),
            short[0],
            subs[short[0]].1.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn encode(p: &np::Packet) -> BytesMut {
    let mut b = BytesMut::new();
    codec::encode(p, np::Protocol::V3_1_1, &mut b);
    b
}

/// A subscriber that stops reading while megabytes are routed to it: the broker keeps what
/// its socket cannot take and sends it all, in order, once the client reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_every_queued_byte_once_it_reads() {
    const MESSAGES: usize = 96;
    const PAYLOAD: usize = 64 * 1024;
    let broker = TestBroker::start_with(|c| c.broker.max_queued_messages = 1000).await;
    let mut raw = TcpStream::connect(broker.addr()).await.expect("connect");
    let connect = np::Connect {
        protocol: Some(np::Protocol::V3_1_1),
        clean_start: true,
        client_id: "slow-reader".into(),
        ..np::Connect::default()
    };
    raw.write_all(&encode(&np::Packet::Connect(Box::new(connect)))).await.expect("write");
    let sub = np::Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: vec![("slow/t".into(), np::SubOptions { qos: np::QoS::AtMostOnce, ..Default::default() })],
    };
    raw.write_all(&encode(&np::Packet::Subscribe(sub))).await.expect("write");
    let mut rbuf = BytesMut::new();
    let next = async |raw: &mut TcpStream, rbuf: &mut BytesMut| loop {
        if let Some(p) = codec::decode(rbuf, Some(np::Protocol::V3_1_1), usize::MAX).expect("decode") {
            return p;
        }
        let n = tokio::time::timeout(WAIT, raw.read_buf(rbuf)).await.expect("read in time").expect("read");
        assert!(n > 0, "broker closed the slow reader");
    };
    assert!(matches!(next(&mut raw, &mut rbuf).await, np::Packet::ConnAck(_)));
    assert!(matches!(next(&mut raw, &mut rbuf).await, np::Packet::SubAck(_)));

    let mut o = MqttOptions::new("slow-pub", "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (publisher, mut ev) = AsyncClient::new(o, 128);
    let pump = tokio::spawn(async move {
        let mut acked = 0;
        while let Ok(e) = ev.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = e {
                acked += 1;
                if acked == MESSAGES {
                    return;
                }
            }
        }
    });
    for m in 0..MESSAGES {
        let mut payload = vec![b'.'; PAYLOAD];
        payload[..8].copy_from_slice(&(m as u64).to_be_bytes());
        publisher.publish("slow/t", QoS::AtLeastOnce, false, payload).await.expect("publish");
    }
    // All routed (acknowledged to the publisher) while the subscriber reads nothing.
    tokio::time::timeout(WAIT * 3, pump).await.expect("PUBACKs in time").expect("pump");
    for m in 0..MESSAGES {
        match next(&mut raw, &mut rbuf).await {
            np::Packet::Publish(p) => {
                assert_eq!(p.payload.len(), PAYLOAD);
                assert_eq!(p.payload[..8], (m as u64).to_be_bytes(), "message {m} out of order");
            }
            other => panic!("expected PUBLISH {m}, got {other:?}"),
        }
    }
}
