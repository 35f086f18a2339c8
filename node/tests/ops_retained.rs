//! Retained messages and publishing through the admin API and the `flotilla retained` /
//! `flotilla publish` CLI of the real binary: a deleted retained message is gone for new
//! subscribers, also after a restart (the deletion is journaled).

mod common;

use std::time::Duration;

use common::mqtt::{Client, options};
use common::ops::OpsBroker;
use rumqttc::{Packet, QoS};

fn cli(b: &OpsBroker, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .args(["--admin", &b.admin.to_string(), "--admin-token-file"])
        .arg(b.dir.join("admin.token"))
        .output()
        .expect("run flotilla")
}

fn cli_ok(b: &OpsBroker, args: &[&str]) -> String {
    let out = cli(b, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The retained topics a new subscriber to `r/#` gets (waits 500 ms after the last one).
async fn retained_topics(port: u16, id: &str) -> Vec<String> {
    let mut c = Client::connect(options(id, port)).await;
    c.client.subscribe("r/#", QoS::AtLeastOnce).await.expect("subscribe");
    let mut topics = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), c.rx.recv()).await {
            Ok(Some(Ok(Packet::Publish(p)))) => topics.push(p.topic.clone()),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("{other:?}"),
            Err(_) => break,
        }
    }
    topics.sort();
    topics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_retained_messages_are_listed_and_deleted_for_new_subscribers() {
    let mut b = OpsBroker::start("");
    let mut live = Client::connect(options("live", b.port)).await;
    live.client.subscribe("r/#", QoS::AtLeastOnce).await.expect("subscribe");
    live.until("SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    let out = cli_ok(&b, &["publish", "--topic", "r/a", "--payload", "hello", "--qos", "1", "--retain"]);
    assert!(out.contains("delivered to 1"), "{out}");
    let got = live.until("PUBLISH", |p| matches!(p, Packet::Publish(_))).await;
    assert!(matches!(got, Packet::Publish(ref p) if p.payload.as_ref() == b"hello"), "{got:?}");
    let publ = Client::connect(options("publ", b.port)).await;
    publ.client.publish("r/b", QoS::AtLeastOnce, true, "kept").await.expect("publish");
    live.until("PUBLISH r/b", |p| matches!(p, Packet::Publish(_))).await;

    let list: serde_json::Value =
        serde_json::from_str(&cli_ok(&b, &["retained", "list", "--filter", "r/#"])).expect("json");
    let topics: Vec<&str> =
        list.as_array().expect("array").iter().filter_map(|r| r["topic"].as_str()).collect();
    assert_eq!(topics, ["r/a", "r/b"], "{list}");
    assert_eq!(retained_topics(b.port, "before").await, ["r/a", "r/b"]);

    let out = cli_ok(&b, &["retained", "delete", "r/a"]);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(retained_topics(b.port, "after").await, ["r/b"]);
    assert_eq!(b.call("DELETE", "/v1/retained/r%2Fa", "").status, 404, "already gone");
    // The live subscriber got nothing from the deletion.
    let quiet = tokio::time::timeout(Duration::from_millis(300), live.rx.recv()).await;
    assert!(!matches!(quiet, Ok(Some(Ok(Packet::Publish(_))))), "{quiet:?}");

    let sys = b.call("POST", "/v1/publish", r#"{"topic":"$SYS/broker/uptime","payload":"0"}"#);
    assert_eq!(sys.status, 400, "{}", sys.body);
    let wild = b.call("POST", "/v1/publish", r#"{"topic":"r/#","payload":"0"}"#);
    assert_eq!(wild.status, 400, "{}", wild.body);
    assert!(!cli(&b, &["retained", "delete", "r/a"]).status.success());

    drop((live, publ));
    b.restart();
    assert_eq!(retained_topics(b.port, "restarted").await, ["r/b"], "the deletion was journaled");
}
