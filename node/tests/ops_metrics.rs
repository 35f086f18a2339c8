//! The admin endpoint of a single node (the real binary): `/healthz`, `/readyz`, and
//! `/metrics` scraped before and after MQTT traffic, whose figures must have moved.

mod common;

use common::http::{self, sample};
use common::mqtt::{Client, options};
use common::ops::OpsBroker;
use rumqttc::{Packet, QoS};

fn start(extra: &str) -> OpsBroker {
    OpsBroker::start(&format!(
        "[broker]\nallow-anonymous = false\nusers = [{{ username = \"u\", password = \"p\" }}]\n{extra}"
    ))
}

fn authed(id: &str, port: u16) -> rumqttc::MqttOptions {
    let mut o = options(id, port);
    o.set_credentials("u", "p");
    o
}

fn refusals(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("flotilla_connects_refused_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_probes_answer_without_a_token() {
    let b = start("");
    assert_eq!(http::get(b.admin, "/healthz").status, 200);
    assert_eq!(http::get(b.admin, "/readyz").status, 200);
    let before = http::get(b.admin, "/metrics");
    assert_eq!(before.status, 200);
    assert!(
        before.header("content-type").is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        before.headers
    );
    let before = before.body;
    for name in ["flotilla_connects_total", "flotilla_connections", "flotilla_journal_write_seconds_count"] {
        assert!(before.contains(&format!("\n{name} ")), "{name} missing:\n{before}");
    }
    assert_eq!(sample(&before, "flotilla_connects_total"), 0.0);

    let mut sub = Client::connect(authed("sub", b.port)).await;
    sub.client.subscribe("t/#", QoS::AtLeastOnce).await.expect("subscribe");
    sub.until("SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    let mut publ = Client::connect(authed("pub", b.port)).await;
    for i in 0..5 {
        publ.client.publish("t/x", QoS::AtLeastOnce, false, format!("m{i}")).await.expect("publish");
    }
    publ.client.publish("t/r", QoS::AtLeastOnce, true, "kept").await.expect("publish retained");
    for _ in 0..6 {
        sub.until("PUBLISH", |p| matches!(p, Packet::Publish(_))).await;
        // PUBACK waits for the journal: the retained message is written by then.
        publ.until("PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    }
    // A persistent session that went away: what it subscribed to queues for it.
    let mut o = authed("away", b.port);
    o.set_clean_session(false);
    let mut away = Client::connect(o).await;
    away.client.subscribe("q/#", QoS::AtLeastOnce).await.expect("subscribe");
    away.until("SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    away.client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(common::WAIT, away.rx.recv()).await;
    for i in 0..3 {
        publ.client.publish("q/x", QoS::AtLeastOnce, false, format!("q{i}")).await.expect("publish");
        publ.until("PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    }
    let mut bad = options("bad", b.port);
    bad.set_credentials("u", "wrong");
    let mut bad = Client::start(bad);
    let refused = bad.next().await;
    assert!(
        refused.is_err()
            || matches!(refused, Ok(Packet::ConnAck(ref a)) if a.code != rumqttc::ConnectReturnCode::Success),
        "{refused:?}"
    );

    // The journal writer runs on its own thread: wait for its round to be counted.
    let journal = "flotilla_journal_write_seconds_count";
    let deadline = std::time::Instant::now() + common::WAIT;
    let after = loop {
        let after = http::get(b.admin, "/metrics").body;
        if sample(&after, journal) > sample(&before, journal) || std::time::Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&after, "flotilla_connects_total"), 3.0, "{after}");
    assert_eq!(sample(&after, "flotilla_queued_messages"), 3.0, "{after}");
    assert!(after.contains("\nflotilla_inflight_messages "), "{after}");
    assert_eq!(sample(&after, "flotilla_connections"), 2.0);
    assert!(refusals(&after) >= 1.0 && refusals(&before) == 0.0, "{after}");
    assert!(sample(&after, "flotilla_messages_received_total") >= 9.0);
    assert!(sample(&after, "flotilla_messages_sent_total") >= 6.0);
    for name in
        ["flotilla_bytes_received_total", "flotilla_bytes_sent_total", "flotilla_journal_write_seconds_count"]
    {
        assert!(sample(&after, name) > sample(&before, name), "{name} did not grow:\n{after}");
    }
    assert_eq!(sample(&after, "flotilla_subscriptions"), 2.0, "the live and the away session");
    // `$SYS` topics are retained too.
    let retained = "flotilla_retained_messages";
    assert_eq!(sample(&after, retained) - sample(&before, retained), 1.0, "{after}");
    // Anything else needs the token (see ops_auth.rs).
    assert_eq!(http::get(b.admin, "/v1/nope").status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_is_ready_with_a_pd_leader_and_exports_raft_engine_metrics() {
    let cluster = common::free_port();
    let b = start(&format!("[cluster]\nnode-id = 1\nlisten = \"127.0.0.1:{cluster}\"\n[pd]\nvoters = [1]\n"));
    let scrape = http::get(b.admin, "/metrics").body;
    assert!(scrape.contains("\nraft_engine_"), "no raft-engine metrics:\n{scrape}");
    assert!(scrape.contains("\nflotilla_connections "), "{scrape}");
}
