//! `session`: a few client ids (`js-k`), each shared by several processes that connect
//! with persistent sessions, publish QoS 1 probes to their own topic `js/k` for a while,
//! and disconnect, so connections take each other over. Each id subscribed to `js/k` once
//! at the start; the subscription must survive every takeover and crash. The drain
//! reconnects every id (without subscribing) until it has every acknowledged probe.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use super::{Progress, WorkCtx, connect_op, disconnect_tracked, observe, setup_subscription};
use crate::client::{ConnectOpts, Ev, Outcome};
use crate::history::{Ctx, Kind};

/// Client ids.
pub const IDS: usize = 4;

/// Runs the session workload; true if every acknowledged probe reached its session.
pub async fn run(ctx: WorkCtx) -> bool {
    for k in 0..IDS {
        if !setup_subscription(
            &ctx,
            &format!("js-{k}"),
            &format!("js/{k}"),
            mqttbytes::QoS::AtLeastOnce,
            Duration::from_secs(30),
        )
        .await
        {
            tracing::error!("session: js-{k} could not subscribe");
            return false;
        }
    }
    // One Progress "subscriber" per id: probes of id k only need to reach id k.
    let progress: Vec<Arc<Progress>> = (0..IDS).map(|_| Arc::new(Progress::new(1))).collect();
    let mut tasks = Vec::new();
    for w in 0..ctx.concurrency.max(IDS) {
        tasks.push(tokio::spawn(worker(ctx.clone(), w, progress[w % IDS].clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
    ctx.wait_phase(super::Phase::Drain).await;
    let until = Instant::now() + ctx.final_time_limit;
    let mut rng = ctx.rng(0xd7);
    for (k, track) in progress.iter().enumerate() {
        for _ in 0..1_000 {
            if track.missing() == 0 || Instant::now() >= until {
                break;
            }
            let p = ctx.rec.new_process();
            let mut c = Ctx { p, client: format!("js-{k}"), conn: 0, node: ctx.pick_node(&mut rng) };
            let opts = ConnectOpts { client_id: c.client.clone(), clean: false, will: None };
            let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let quiet = Instant::now() + Duration::from_secs(3);
            while track.missing() > 0 && Instant::now() < quiet.min(until) {
                match conn.next(Instant::now() + Duration::from_millis(100)).await {
                    Some(Ev::Closed(_)) => break,
                    Some(ev) => {
                        if let Some(payload) = observe(&ctx.rec, &c, &ev) {
                            track.saw(0, &payload);
                        }
                    }
                    None => {}
                }
            }
            disconnect_tracked(&ctx, &c, conn, Some((track, 0))).await;
        }
    }
    progress.iter().all(|p| p.missing() == 0)
}

async fn worker(ctx: WorkCtx, w: usize, progress: Arc<Progress>) {
    let k = w % IDS;
    let mut rng = ctx.rng(4_000 + w as u64);
    let client = format!("js-{k}");
    let topic = format!("js/{k}");
    for _ in 0..1_000_000 {
        if !ctx.in_main() {
            return;
        }
        tokio::time::sleep(ctx.stagger(&mut rng)).await;
        let p = ctx.rec.new_process();
        let mut c = Ctx { p, client: client.clone(), conn: 0, node: ctx.pick_node(&mut rng) };
        let opts = ConnectOpts { client_id: client.clone(), clean: false, will: None };
        let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
            continue;
        };
        // Hold the session for a while, publishing probes.
        let hold = Instant::now() + Duration::from_millis(rng.random_range(1_000..4_000));
        let mut n = 0u64;
        let mut retired = false;
        while Instant::now() < hold && ctx.in_main() {
            let gap = Duration::from_millis(rng.random_range(50..250));
            let until = Instant::now() + gap;
            let mut closed = false;
            while let Some(ev) = conn.next(until).await {
                if matches!(ev, Ev::Closed(_)) {
                    closed = true;
                    break;
                }
                if let Some(payload) = observe(&ctx.rec, &c, &ev) {
                    progress.saw(0, &payload);
                }
            }
            if closed {
                ctx.rec.client(&c, Kind::Info, "session-lost", json!({"error": conn.closed()}));
                retired = true;
                break;
            }
            n += 1;
            let id = format!("{p}:{n}");
            ctx.rec.client(&c, Kind::Invoke, "publish", json!({"topic": topic, "qos": 1, "id": id}));
            let rec = ctx.rec.clone();
            let (c2, pr) = (c.clone(), progress.clone());
            let outcome = conn
                .publish(
                    &topic,
                    mqttbytes::QoS::AtLeastOnce,
                    false,
                    id.clone().into_bytes(),
                    ctx.deadline(),
                    &mut |ev| {
                        if let Some(payload) = observe(&rec, &c2, &ev) {
                            pr.saw(0, &payload);
                        }
                    },
                )
                .await;
            match outcome {
                Outcome::Ok => {
                    ctx.rec.client(&c, Kind::Ok, "publish", json!({"id": id}));
                    progress.expect(&id);
                }
                Outcome::Info(e) => {
                    ctx.rec.client(&c, Kind::Info, "publish", json!({"id": id, "error": e}));
                    retired = true;
                    break;
                }
            }
        }
        if !retired {
            disconnect_tracked(&ctx, &c, conn, Some((&progress, 0))).await;
        }
    }
}
