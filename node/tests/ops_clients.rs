//! Operator actions on connected clients, through the admin API and the `flotilla client`
//! CLI of the real binary: list and show, kick (a 5.0 client sees DISCONNECT 0x98), and
//! bans by client id, user and address that refuse reconnects until they expire.

mod common;

use std::time::Duration;

use common::ops::OpsBroker;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use tokio::sync::mpsc;

type Rx = mpsc::UnboundedReceiver<Result<Packet, ConnectionError>>;

fn v5(id: &str, port: u16, user: Option<&str>) -> (AsyncClient, Rx) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = user {
        o.set_credentials(u, "pw");
    }
    let (client, mut el) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    (client, rx)
}

async fn next(rx: &mut Rx) -> Result<Packet, ConnectionError> {
    tokio::time::timeout(common::WAIT, rx.recv()).await.expect("in time").expect("loop alive")
}

async fn connected(id: &str, port: u16, user: Option<&str>) -> (AsyncClient, Rx) {
    let (c, mut rx) = v5(id, port, user);
    let ack = next(&mut rx).await;
    assert!(matches!(ack, Ok(Packet::ConnAck(_))), "{id}: {ack:?}");
    (c, rx)
}

/// The first answer to a CONNECT from `id` (`Ok` = accepted).
async fn try_connect(id: &str, port: u16, user: Option<&str>) -> Result<(), String> {
    let (_c, mut rx) = v5(id, port, user);
    match next(&mut rx).await {
        Ok(Packet::ConnAck(_)) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Users `alice` and `mallory` (password `pw`); anonymous clients are accepted too.
const USERS: &str = "[broker]\nusers = [{ username = \"alice\", password = \"pw\" }, \
                     { username = \"mallory\", password = \"pw\" }]\n";

fn cli(b: &OpsBroker, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .args(["--admin", &b.admin.to_string(), "--admin-token-file"])
        .arg(b.dir.join("admin.token"))
        .output()
        .expect("run flotilla");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_listed_shown_and_kicked_with_0x98() {
    let b = OpsBroker::start(USERS);
    let (c, mut rx) = connected("kick-me", b.port, Some("alice")).await;
    c.subscribe("k/#", QoS::AtLeastOnce).await.expect("subscribe");
    while !matches!(next(&mut rx).await, Ok(Packet::SubAck(_))) {}

    let list: serde_json::Value = serde_json::from_str(&cli(&b, &["client", "list"])).expect("json");
    let me = list.as_array().expect("array").iter().find(|c| c["client_id"] == "kick-me").expect("listed");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["protocol"], 5);
    assert_eq!(me["address"], "127.0.0.1");
    assert_eq!(me["subscriptions"], serde_json::json!(["k/#"]));
    assert!(me["connected_since_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{me}");
    let shown = b.call("GET", "/v1/clients/kick-me", "");
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(b.call("GET", "/v1/clients/nobody", "").status, 404);

    let out = cli(&b, &["client", "kick", "kick-me"]);
    assert!(out.contains("kicked kick-me"), "{out}");
    // rumqttc reports a server DISCONNECT as the error that ends its loop.
    let code = loop {
        match next(&mut rx).await {
            Ok(Packet::Disconnect(d)) => break d.reason_code,
            Ok(_) => {}
            Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                break reason_code;
            }
            Err(e) => panic!("closed without DISCONNECT 0x98: {e}"),
        }
    };
    assert_eq!(code, DisconnectReasonCode::AdministrativeAction);
    assert_eq!(b.call("POST", "/v1/clients/kick-me/kick", "").status, 404, "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_refuse_reconnects_until_they_expire() {
    let b = OpsBroker::start(USERS);
    let (_c, _rx) = connected("pest", b.port, None).await;
    let out = cli(&b, &["client", "ban", "--client-id", "pest", "--secs", "2"]);
    assert!(out.contains("banned"), "{out}");
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let refused = try_connect("pest", b.port, None).await.expect_err("banned id");
    assert!(refused.contains(&format!("{:?}", ConnectReturnCode::Banned)), "{refused}");
    try_connect("other", b.port, None).await.expect("others still connect");

    let ban_user = r#"{"target":{"kind":"user","value":"mallory"},"secs":2}"#;
    assert_eq!(b.call("POST", "/v1/bans", ban_user).status, 200);
    let refused = try_connect("m1", b.port, Some("mallory")).await.expect_err("banned user");
    assert!(refused.contains(&format!("{:?}", ConnectReturnCode::Banned)), "{refused}");
    let bad = b.call("POST", "/v1/bans", r#"{"target":{"kind":"user","value":"x"},"secs":0}"#);
    assert_eq!(bad.status, 400, "{}", bad.body);

    tokio::time::sleep(
        until.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(300),
    )
    .await;
    try_connect("pest", b.port, None).await.expect("the id ban expired");
    try_connect("m2", b.port, Some("mallory")).await.expect("the user ban expired");

    // An address ban closes sockets at accept, before any CONNACK.
    cli(&b, &["client", "ban", "--address", "127.0.0.1", "--secs", "2"]);
    try_connect("from-banned-address", b.port, None).await.expect_err("address banned");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    try_connect("from-banned-address", b.port, None).await.expect("the address ban expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_the_rate_are_refused_with_0x9f() {
    let b = OpsBroker::start("[broker]\nconnect-rate = 1\nconnect-burst = 3\n");
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(connected(&format!("burst-{i}"), b.port, None).await);
    }
    let refused = try_connect("over", b.port, None).await.expect_err("over the rate");
    assert!(refused.contains(&format!("{:?}", ConnectReturnCode::ConnectionRateExceeded)), "{refused}");
    let scrape = common::http::get(b.admin, "/metrics").body;
    assert_eq!(
        common::http::sample(&scrape, "flotilla_connects_refused_total{reason=\"0x9f\"}"),
        1.0,
        "{scrape}"
    );
    // The bucket refills at one CONNECT a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    try_connect("later", b.port, None).await.expect("a token came back");
}
