//! Workloads: what the client processes do, and the drain that ends each run.
//!
//! Every workload runs its main phase until the phase leaves [`Phase::Main`], waits for
//! [`Phase::Drain`] (the nemesis has healed by then), drains or does its final reads, and
//! returns whether the drain caught up.

pub mod queue;
pub mod retained;
pub mod session;
pub mod will;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use mqttbytes::v4::Packet;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{self, Conn, ConnectOpts, Ev};
use crate::history::{Ctx, Kind, Recorder};

/// Run phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Operations and faults.
    Main,
    /// No new operations; the nemesis heals everything.
    Heal,
    /// Everything healed: drain / final reads.
    Drain,
}

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// QoS 1 and 2 publishes of unique values to persistent subscribers.
    Queue,
    /// A register of retained values per topic, read at subscribe time.
    Retained,
    /// Client ids shared by several processes: takeover and session survival.
    Session,
    /// Wills published on abrupt disconnects and crashes, never on clean disconnects.
    Will,
}

impl Workload {
    /// The name in the history header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Retained => "retained",
            Self::Session => "session",
            Self::Will => "will",
        }
    }

    /// Runs the workload; returns whether the drain caught up.
    pub async fn run(self, ctx: WorkCtx) -> bool {
        match self {
            Self::Queue => queue::run(ctx).await,
            Self::Retained => retained::run(ctx).await,
            Self::Session => session::run(ctx).await,
            Self::Will => will::run(ctx).await,
        }
    }
}

/// What every workload process gets.
#[derive(Clone)]
pub struct WorkCtx {
    /// The history.
    pub rec: Recorder,
    /// MQTT address of each node.
    pub addrs: Vec<SocketAddr>,
    /// Seed of every op stream.
    pub seed: u64,
    /// Client processes at a time.
    pub concurrency: usize,
    /// Operations per second, all processes together.
    pub rate: f64,
    /// The run phase.
    pub phase: watch::Receiver<Phase>,
    /// After this an operation is recorded `info`.
    pub op_timeout: Duration,
    /// Upper bound on the drain.
    pub final_time_limit: Duration,
}

impl WorkCtx {
    /// A deterministic random stream for `stream` (a worker number).
    pub fn rng(&self, stream: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream)
    }

    /// Pause between one process's operations: uniform in [0, 2·concurrency/rate).
    pub fn stagger(&self, rng: &mut SmallRng) -> Duration {
        let mean = self.concurrency as f64 / self.rate.max(0.001);
        Duration::from_secs_f64(rng.random_range(0.0..2.0 * mean))
    }

    /// Whether the main phase is on.
    pub fn in_main(&self) -> bool {
        *self.phase.borrow() == Phase::Main
    }

    /// Waits until the phase is at least `p`.
    pub async fn wait_phase(&self, p: Phase) {
        let mut rx = self.phase.clone();
        let _ = rx.wait_for(|now| *now >= p).await;
    }

    /// A random node.
    pub fn pick_node(&self, rng: &mut SmallRng) -> usize {
        rng.random_range(0..self.addrs.len())
    }

    /// The operation deadline from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.op_timeout
    }
}

/// Connects as a recorded `connect` operation. A new connection number goes into `c`.
pub async fn connect_op(ctx: &WorkCtx, c: &mut Ctx, opts: &ConnectOpts) -> Option<Conn> {
    c.conn = ctx.rec.new_conn();
    let will = opts.will.as_ref().map(|w| String::from_utf8_lossy(&w.1).into_owned());
    ctx.rec.client(c, Kind::Invoke, "connect", json!({"clean": opts.clean, "will": will}));
    match client::connect(ctx.addrs[c.node], opts, ctx.op_timeout).await {
        Ok(conn) => {
            ctx.rec.client(c, Kind::Ok, "connect", json!({"session_present": conn.session_present}));
            Some(conn)
        }
        Err(client::ConnectError::Timeout) => {
            ctx.rec.client(c, Kind::Info, "connect", json!({"error": "timeout"}));
            None
        }
        Err(e) => {
            ctx.rec.client(c, Kind::Fail, "connect", json!({"error": e.to_string()}));
            None
        }
    }
}

/// Records a delivery (`deliver`) or a QoS 2 release (`release`); returns the payload of
/// a delivery.
pub fn observe(rec: &Recorder, c: &Ctx, ev: &Ev) -> Option<String> {
    match ev {
        Ev::In(Packet::Publish(p)) => {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            rec.client(
                c,
                Kind::Ok,
                "deliver",
                json!({"topic": p.topic, "payload": payload, "qos": p.qos as u8, "dup": p.dup,
                       "retain": p.retain, "pkid": p.pkid}),
            );
            Some(payload)
        }
        Ev::In(Packet::PubRel(r)) => {
            rec.client(c, Kind::Ok, "release", json!({"pkid": r.pkid}));
            None
        }
        _ => None,
    }
}

/// Connects with a persistent session, subscribes `filter` and disconnects, retrying
/// until it works or `within` passes.
pub async fn setup_subscription(
    ctx: &WorkCtx,
    client_id: &str,
    filter: &str,
    qos: mqttbytes::QoS,
    within: Duration,
) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let mut c = Ctx { p: ctx.rec.new_process(), client: client_id.into(), conn: 0, node: 0 };
        let opts = ConnectOpts { client_id: client_id.into(), clean: false, will: None };
        let Some(mut conn) = connect_op(ctx, &mut c, &opts).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        ctx.rec.client(&c, Kind::Invoke, "subscribe", json!({"filter": filter, "qos": qos as u8}));
        let rec = ctx.rec.clone();
        let c2 = c.clone();
        match conn.subscribe(filter, qos, ctx.deadline(), &mut |ev| drop(observe(&rec, &c2, &ev))).await {
            Ok(()) => {
                ctx.rec.client(&c, Kind::Ok, "subscribe", json!({"filter": filter}));
                disconnect_op(ctx, &c, conn).await;
                return true;
            }
            Err(e) => ctx.rec.client(&c, Kind::Info, "subscribe", json!({"filter": filter, "error": e})),
        }
    }
    false
}

/// A recorded graceful DISCONNECT.
pub async fn disconnect_op(ctx: &WorkCtx, c: &Ctx, conn: Conn) -> bool {
    disconnect_tracked(ctx, c, conn, None).await
}

/// A recorded graceful DISCONNECT; deliveries that arrive meanwhile count for subscriber
/// `track.1` of `track.0`.
pub async fn disconnect_tracked(
    ctx: &WorkCtx,
    c: &Ctx,
    conn: Conn,
    track: Option<(&Progress, usize)>,
) -> bool {
    ctx.rec.client(c, Kind::Invoke, "disconnect", Value::Null);
    let rec = ctx.rec.clone();
    let c2 = c.clone();
    let sent = conn
        .disconnect(ctx.deadline(), &mut |ev| {
            if let (Some(payload), Some((p, i))) = (observe(&rec, &c2, &ev), track) {
                p.saw(i, &payload);
            }
        })
        .await;
    let kind = if sent { Kind::Ok } else { Kind::Info };
    ctx.rec.client(c, kind, "disconnect", Value::Null);
    sent
}

/// Which payloads each subscriber has seen, against which it must see (acknowledged
/// publishes, expected wills): the drain's progress.
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<(HashSet<String>, Vec<HashSet<String>>)>,
}

impl Progress {
    /// Tracks `subscribers` subscribers.
    pub fn new(subscribers: usize) -> Self {
        Self { inner: Mutex::new((HashSet::new(), vec![HashSet::new(); subscribers])) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, Vec<HashSet<String>>)> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `id` must reach every subscriber.
    pub fn expect(&self, id: &str) {
        self.lock().0.insert(id.to_string());
    }

    /// Subscriber `sub` saw `id`.
    pub fn saw(&self, sub: usize, id: &str) {
        if let Some(s) = self.lock().1.get_mut(sub) {
            s.insert(id.to_string());
        }
    }

    /// Expected payloads some subscriber has not seen yet (summed over subscribers).
    pub fn missing(&self) -> usize {
        let g = self.lock();
        g.1.iter().map(|seen| g.0.iter().filter(|id| !seen.contains(*id)).count()).sum()
    }

    /// Waits until nothing is missing or `within` passes; true if caught up.
    pub async fn drain(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self.missing() == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A persistent subscriber (subscription made beforehand by [`setup_subscription`]) that
/// stays connected, reconnects after every loss, and (in the main phase, if
/// `reconnect_ms` is given) disconnects on purpose now and then to stay offline briefly.
/// Runs until `stop` turns true.
pub async fn persistent_subscriber(
    ctx: WorkCtx,
    client_id: String,
    index: usize,
    progress: std::sync::Arc<Progress>,
    reconnect_ms: Option<(u64, u64)>,
    stop: watch::Receiver<bool>,
) {
    let mut rng = ctx.rng((5 << 32) + index as u64);
    for _ in 0..1_000_000 {
        if *stop.borrow() {
            return;
        }
        let node = ctx.pick_node(&mut rng);
        let mut c = Ctx { p: ctx.rec.new_process(), client: client_id.clone(), conn: 0, node };
        let opts = ConnectOpts { client_id: client_id.clone(), clean: false, will: None };
        let Some(mut conn) = connect_op(&ctx, &mut c, &opts).await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let voluntary = reconnect_ms
            .filter(|_| ctx.in_main())
            .map(|(lo, hi)| Instant::now() + Duration::from_millis(rng.random_range(lo..hi)));
        loop {
            let tick = Instant::now() + Duration::from_millis(100);
            let until = voluntary.map_or(tick, |v| v.min(tick));
            match conn.next(until).await {
                Some(Ev::Closed(e)) => {
                    ctx.rec.client(&c, Kind::Info, "session-lost", json!({"error": e}));
                    break;
                }
                Some(ev) => {
                    if let Some(payload) = observe(&ctx.rec, &c, &ev) {
                        progress.saw(index, &payload);
                    }
                }
                None => {
                    if *stop.borrow() {
                        disconnect_tracked(&ctx, &c, conn, Some((&progress, index))).await;
                        return;
                    }
                    if voluntary.is_some_and(|v| Instant::now() >= v) && ctx.in_main() {
                        disconnect_tracked(&ctx, &c, conn, Some((&progress, index))).await;
                        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
                        break;
                    }
                }
            }
        }
    }
}
