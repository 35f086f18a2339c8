//! `retained`: a register per topic (`jr/k`). Writers publish retained QoS 1 values
//! (unique `process:counter`, sometimes an empty payload that deletes). Readers SUBSCRIBE
//! and take the retained message the broker sends right after SUBACK, or none within a
//! settle window. The read's interval is [SUBSCRIBE sent, SUBACK received]. The final
//! phase reads every topic once more.

use std::time::Duration;

use mqttbytes::QoS;
use mqttbytes::v4::Packet;
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{WorkCtx, connect_op, disconnect_op};
use crate::client::{Conn, ConnectOpts, Ev, Outcome};
use crate::history::{Ctx, Kind};

/// Topics (independent registers).
pub const TOPICS: usize = 3;
/// How long after SUBACK a retained message may take to arrive before the read is `none`.
const SETTLE: Duration = Duration::from_millis(750);

/// Runs the retained workload; true if every final read succeeded.
pub async fn run(ctx: WorkCtx) -> bool {
    let writers = (ctx.concurrency / 2).max(1);
    let readers = ctx.concurrency.saturating_sub(writers).max(1);
    let mut tasks = Vec::new();
    for w in 0..writers {
        tasks.push(tokio::spawn(writer(ctx.clone(), w)));
    }
    for r in 0..readers {
        tasks.push(tokio::spawn(reader(ctx.clone(), r)));
    }
    for t in tasks {
        let _ = t.await;
    }
    ctx.wait_phase(super::Phase::Drain).await;
    let until = Instant::now() + ctx.final_time_limit;
    let mut rng = ctx.rng(0xf1);
    let mut all = true;
    for k in 0..TOPICS {
        let topic = format!("jr/{k}");
        let mut done = false;
        while !done && Instant::now() < until {
            let p = ctx.rec.new_process();
            let mut c = Ctx { p, client: format!("jr-final-{p}"), conn: 0, node: ctx.pick_node(&mut rng) };
            let opts = ConnectOpts { client_id: c.client.clone(), clean: true, will: None };
            if let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await {
                done = read(&ctx, &c, &mut conn, &topic).await != Read::Info;
                disconnect_op(&ctx, &c, conn).await;
            }
            if !done {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        all &= done;
    }
    all
}

async fn writer(ctx: WorkCtx, worker: usize) {
    let mut rng = ctx.rng(2_000 + worker as u64);
    for _ in 0..1_000_000 {
        if !ctx.in_main() {
            return;
        }
        let p = ctx.rec.new_process();
        let mut c = Ctx { p, client: format!("jr-w-{p}"), conn: 0, node: ctx.pick_node(&mut rng) };
        let opts = ConnectOpts { client_id: c.client.clone(), clean: true, will: None };
        let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for n in 1..=1_000_000u64 {
            tokio::time::sleep(ctx.stagger(&mut rng)).await;
            if !ctx.in_main() {
                disconnect_op(&ctx, &c, conn).await;
                return;
            }
            let topic = format!("jr/{}", rng.random_range(0..TOPICS));
            let value = (!rng.random_bool(0.1)).then(|| format!("{p}:{n}"));
            ctx.rec.client(&c, Kind::Invoke, "write", json!({"topic": topic, "value": value}));
            let payload = value.clone().unwrap_or_default().into_bytes();
            let outcome =
                conn.publish(&topic, QoS::AtLeastOnce, true, payload, ctx.deadline(), &mut |_| {}).await;
            match outcome {
                Outcome::Ok => ctx.rec.client(&c, Kind::Ok, "write", json!({"topic": topic, "value": value})),
                Outcome::Info(e) => {
                    ctx.rec.client(
                        &c,
                        Kind::Info,
                        "write",
                        json!({"topic": topic, "value": value, "error": e}),
                    );
                    break;
                }
            }
        }
    }
}

async fn reader(ctx: WorkCtx, worker: usize) {
    let mut rng = ctx.rng(3_000 + worker as u64);
    for _ in 0..1_000_000 {
        if !ctx.in_main() {
            return;
        }
        let p = ctx.rec.new_process();
        let mut c = Ctx { p, client: format!("jr-r-{p}"), conn: 0, node: ctx.pick_node(&mut rng) };
        let opts = ConnectOpts { client_id: c.client.clone(), clean: true, will: None };
        let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !read_loop(&ctx, &c, &mut conn, &mut rng).await {
            continue;
        }
        disconnect_op(&ctx, &c, conn).await;
        return;
    }
}

/// Reads on one connection; false when the connection must be replaced.
async fn read_loop(ctx: &WorkCtx, c: &Ctx, conn: &mut Conn, rng: &mut SmallRng) -> bool {
    for _ in 0..1_000_000 {
        tokio::time::sleep(ctx.stagger(rng)).await;
        if !ctx.in_main() {
            return true;
        }
        let topic = format!("jr/{}", rng.random_range(0..TOPICS));
        match read(ctx, c, conn, &topic).await {
            Read::Value => {
                if conn.unsubscribe(&topic, ctx.deadline(), &mut |_| {}).await.is_err() {
                    return false;
                }
            }
            // A late retained message must not be taken for the next read: new connection.
            Read::None | Read::Info => return false,
        }
    }
    true
}

#[derive(PartialEq, Eq)]
enum Read {
    Value,
    None,
    Info,
}

/// One recorded read of `topic` (the connection must not be subscribed to it).
async fn read(ctx: &WorkCtx, c: &Ctx, conn: &mut Conn, topic: &str) -> Read {
    ctx.rec.client(c, Kind::Invoke, "read", json!({"topic": topic}));
    if let Err(e) = conn.subscribe(topic, QoS::AtLeastOnce, ctx.deadline(), &mut |_| {}).await {
        ctx.rec.client(c, Kind::Info, "read", json!({"topic": topic, "error": e}));
        return Read::Info;
    }
    let acked = ctx.rec.now();
    let until = Instant::now() + SETTLE;
    loop {
        match conn.next(until).await {
            None => {
                ctx.rec.client_at(acked, c, Kind::Ok, "read", json!({"topic": topic, "value": Value::Null}));
                return Read::None;
            }
            Some(Ev::Closed(e)) => {
                ctx.rec.client(c, Kind::Info, "read", json!({"topic": topic, "error": e}));
                return Read::Info;
            }
            Some(Ev::In(Packet::Publish(p))) if p.retain && p.topic == topic => {
                let value = String::from_utf8_lossy(&p.payload).into_owned();
                ctx.rec.client_at(acked, c, Kind::Ok, "read", json!({"topic": topic, "value": value}));
                return Read::Value;
            }
            Some(_) => {}
        }
    }
}
