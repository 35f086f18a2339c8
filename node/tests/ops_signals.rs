//! Signals on the real binary: SIGHUP leaves the broker running and its clients connected.

mod common;

use std::time::Duration;

use common::mqtt::{Client, options};
use common::ops::OpsBroker;
use rumqttc::{Packet, QoS};

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_broker_and_its_clients() {
    let mut b = OpsBroker::start("");
    let mut sub = Client::connect(options("hup-sub", b.port)).await;
    sub.client.subscribe("hup/#", QoS::AtLeastOnce).await.expect("subscribe");
    sub.until("SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    for _ in 0..3 {
        signal(b.child.id(), "-HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(b.child.try_wait().expect("wait").is_none(), "the broker exited on SIGHUP");

    // The subscriber kept its connection: a new publish reaches it.
    let publ = Client::connect(options("hup-pub", b.port)).await;
    publ.client.publish("hup/x", QoS::AtLeastOnce, false, "after").await.expect("publish");
    let got = sub.until("PUBLISH", |p| matches!(p, Packet::Publish(_))).await;
    assert!(matches!(got, Packet::Publish(ref p) if p.payload.as_ref() == b"after"), "{got:?}");
    assert_eq!(common::http::get(b.admin, "/readyz").status, 200);
}
