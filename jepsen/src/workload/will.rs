//! `will`: every connection has a unique will (`jw/<process>`, payload `process:n`, QoS 1).
//! A connection ends in one of three ways: a clean DISCONNECT (`disconnect`: the will must
//! not be published), an abrupt close by the client (`crash`: it must be), or a close it
//! did not ask for, such as a broker crash (`session-lost`: it must be, after restart).
//! A persistent watcher subscribed to `jw/#` records the wills.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Progress, WorkCtx, connect_op, disconnect_op, persistent_subscriber, setup_subscription};
use crate::client::{ConnectOpts, Ev};
use crate::history::{Ctx, Kind};

/// The watcher's client id.
pub const WATCHER: &str = "jw-watch";

/// Runs the will workload; true if every expected will reached the watcher.
pub async fn run(ctx: WorkCtx) -> bool {
    if !setup_subscription(&ctx, WATCHER, "jw/#", mqttbytes::QoS::AtLeastOnce, Duration::from_secs(30)).await
    {
        tracing::error!("will: the watcher could not subscribe");
        return false;
    }
    let progress = Arc::new(Progress::new(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher =
        tokio::spawn(persistent_subscriber(ctx.clone(), WATCHER.into(), 0, progress.clone(), None, stop_rx));
    let mut tasks = Vec::new();
    for w in 0..ctx.concurrency {
        tasks.push(tokio::spawn(worker(ctx.clone(), w, progress.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
    ctx.wait_phase(super::Phase::Drain).await;
    let caught_up = progress.drain(ctx.final_time_limit).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), watcher).await;
    caught_up
}

async fn worker(ctx: WorkCtx, w: usize, progress: Arc<Progress>) {
    let mut rng = ctx.rng(5_000 + w as u64);
    for n in 1..=1_000_000u64 {
        if !ctx.in_main() {
            return;
        }
        tokio::time::sleep(ctx.stagger(&mut rng)).await;
        let p = ctx.rec.new_process();
        let will = format!("{p}:{n}");
        let mut c = Ctx { p, client: format!("jw-{p}"), conn: 0, node: ctx.pick_node(&mut rng) };
        let opts = ConnectOpts {
            client_id: c.client.clone(),
            clean: true,
            will: Some((format!("jw/{p}"), will.clone().into_bytes(), mqttbytes::QoS::AtLeastOnce)),
        };
        let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
            continue;
        };
        let hold = Instant::now() + Duration::from_millis(rng.random_range(200..2_000));
        let mut lost = None;
        while let Some(ev) = conn.next(hold).await {
            if let Ev::Closed(e) = ev {
                lost = Some(e);
                break;
            }
        }
        if let Some(e) = lost {
            ctx.rec.client(&c, Kind::Info, "session-lost", json!({"will": will, "error": e}));
            progress.expect(&will);
            continue;
        }
        if rng.random_bool(0.5) {
            ctx.rec.client(&c, Kind::Invoke, "crash", json!({"will": will}));
            drop(conn);
            ctx.rec.client(&c, Kind::Ok, "crash", json!({"will": will}));
            progress.expect(&will);
        } else {
            disconnect_op(&ctx, &c, conn).await;
        }
    }
}
