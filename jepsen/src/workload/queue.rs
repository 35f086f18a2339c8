//! `queue`: publishers send unique `process:counter` values with QoS 1 (topics `jq/1/k`)
//! and QoS 2 (`jq/2/k`) to persistent subscribers of `jq/#` (granted QoS 2). Subscribers go
//! offline now and then. The drain waits until every subscriber has every acknowledged
//! value.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::sync::watch;

use super::{
    Progress, WorkCtx, connect_op, disconnect_op, observe, persistent_subscriber, setup_subscription,
};
use crate::client::{ConnectOpts, Outcome, qos};
use crate::history::{Ctx, Kind};

/// Persistent subscribers.
pub const SUBSCRIBERS: usize = 3;
/// Topics per QoS.
pub const TOPICS: usize = 4;

/// Runs the queue workload; true if the drain caught up.
pub async fn run(ctx: WorkCtx) -> bool {
    let progress = Arc::new(Progress::new(SUBSCRIBERS));
    for i in 0..SUBSCRIBERS {
        let id = format!("jq-sub-{i}");
        if !setup_subscription(&ctx, &id, "jq/#", mqttbytes::QoS::ExactlyOnce, Duration::from_secs(30)).await
        {
            tracing::error!("queue: subscriber {id} could not subscribe");
            return false;
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let c = ctx.clone();
        let (p, s) = (progress.clone(), stop_rx.clone());
        subs.push(tokio::spawn(persistent_subscriber(
            c,
            format!("jq-sub-{i}"),
            i,
            p,
            Some((3_000, 15_000)),
            s,
        )));
    }
    let mut pubs = Vec::new();
    for w in 0..ctx.concurrency {
        pubs.push(tokio::spawn(publisher(ctx.clone(), w, progress.clone())));
    }
    for p in pubs {
        let _ = p.await;
    }
    ctx.wait_phase(super::Phase::Drain).await;
    let caught_up = progress.drain(ctx.final_time_limit).await;
    // Late duplicates still show up in the history.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    for s in subs {
        let _ = tokio::time::timeout(Duration::from_secs(15), s).await;
    }
    caught_up
}

async fn publisher(ctx: WorkCtx, worker: usize, progress: Arc<Progress>) {
    let mut rng = ctx.rng(1_000 + worker as u64);
    for _ in 0..1_000_000 {
        if !ctx.in_main() {
            return;
        }
        let p = ctx.rec.new_process();
        let mut c = Ctx { p, client: format!("jq-pub-{p}"), conn: 0, node: ctx.pick_node(&mut rng) };
        let opts = ConnectOpts { client_id: c.client.clone(), clean: true, will: None };
        let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
            tokio::time::sleep(ctx.stagger(&mut rng).max(Duration::from_millis(100))).await;
            continue;
        };
        for n in 1..=1_000_000u64 {
            tokio::time::sleep(ctx.stagger(&mut rng)).await;
            if !ctx.in_main() {
                disconnect_op(&ctx, &c, conn).await;
                return;
            }
            let level = rng.random_range(1..=2u8);
            let topic = format!("jq/{level}/{}", rng.random_range(0..TOPICS));
            let id = format!("{p}:{n}");
            ctx.rec.client(&c, Kind::Invoke, "publish", json!({"topic": topic, "qos": level, "id": id}));
            let rec = ctx.rec.clone();
            let c2 = c.clone();
            let outcome = conn
                .publish(&topic, qos(level), false, id.clone().into_bytes(), ctx.deadline(), &mut |ev| {
                    drop(observe(&rec, &c2, &ev))
                })
                .await;
            match outcome {
                Outcome::Ok => {
                    ctx.rec.client(&c, Kind::Ok, "publish", json!({"id": id}));
                    progress.expect(&id);
                }
                Outcome::Info(e) => {
                    // Indeterminate: retire this process and its connection.
                    ctx.rec.client(&c, Kind::Info, "publish", json!({"id": id, "error": e}));
                    break;
                }
            }
        }
    }
}
