//! SHELL. One task per client: connect (paced), subscribe, publish, account deliveries,
//! and follow the coordinator's steps (disconnect, reconnect, shutdown) until told to stop.
//!
//! The task owns its [`Conn`] and waits on four things at once: the control channel, the
//! socket becoming readable, the socket becoming writable (only while bytes are waiting),
//! and its next timer (publisher schedule, SUBACK deadline, keep alive). It holds no buffer
//! while idle, so a worker can hold ~15,000 of them.
//!
//! Step protocol: the worker sets this member's `todo` and bumps the control epoch; the task
//! performs the todo and reports with `finish_todo` exactly once.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use node::mqtt::packet::{ConnAck, Packet, PubResp, QoS};
use tokio::sync::watch;

use super::ctx::{Control, Ctx, Group, Member, Status, Todo, add, sub};
use super::pattern::expand;
use super::proto::{Slot, global_index};
use super::publisher::Publisher;
use super::subscriber::{SubOutcome, Subscriber};
use crate::client::{ClientError, Conn, ConnectOpts};
use crate::clock;
use crate::stamp::Stamp;

/// How a connection ended.
enum Exit {
    /// Shutdown requested; `true` to purge a persistent session afterwards.
    Shutdown(bool),
    /// Dropped on command.
    Dropped,
    /// Lost: the broker closed it or it failed.
    Lost(&'static str),
}

/// Runs local member `idx` of group `g` until shutdown.
pub(crate) async fn run(ctx: Rc<Ctx>, g: usize, idx: u64) {
    add(&ctx.live_tasks, 1);
    let mut actor = Actor::new(ctx.clone(), g, idx);
    actor.life().await;
    actor.member().status.set(Status::Gone);
    sub(&ctx.live_tasks, 1);
    if ctx.live_tasks.get() == 0 {
        ctx.tasks_done.notify_one();
    }
}

struct Actor {
    ctx: Rc<Ctx>,
    g: usize,
    idx: u64,
    client_id: String,
    control: watch::Receiver<Control>,
    /// Boxed: most members do not publish, and the task should stay small.
    publisher: Option<Box<Publisher>>,
    subscriber: Subscriber,
    slot: u64,
    /// Each publisher's messages reach this member over one path (not a shared slot).
    ordered: bool,
    expect_topic: Option<ByteString>,
    ever_subscribed: bool,
    inbound_qos2: Vec<u16>,
    ping_at: Option<Instant>,
    /// Start of the connect that the current `Connect`/`Reconnect` todo is timing.
    setup_started: Option<Instant>,
}

impl Actor {
    fn new(ctx: Rc<Ctx>, g: usize, idx: u64) -> Self {
        let group = &ctx.groups[g];
        let vars = group.vars(&ctx.spec.run_id, idx);
        let global = global_index(group.spec.id, group.spec.offset + idx);
        let subs = group.spec.subscribe.as_ref();
        let slot_kind = subs.map_or(Slot::PerClient, |s| s.slot);
        let slot = slot_kind.key(global);
        let expect_topic =
            subs.and_then(|s| s.expect_topic.as_ref()).map(|p| ByteString::from(expand(p, &vars)));
        Self {
            client_id: expand(&group.spec.client_id, &vars),
            control: ctx.control.subscribe(),
            publisher: Publisher::new(&ctx, g, idx).map(Box::new),
            subscriber: Subscriber::new(),
            slot,
            ordered: slot_kind == Slot::PerClient,
            expect_topic,
            ever_subscribed: false,
            inbound_qos2: Vec::new(),
            ping_at: None,
            setup_started: None,
            ctx,
            g,
            idx,
        }
    }

    fn group(&self) -> &Group {
        &self.ctx.groups[self.g]
    }

    fn member(&self) -> &Member {
        &self.group().members[self.idx as usize]
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.ctx.spec.op_timeout_ms)
    }

    /// Reports the member's part of the current step, once.
    fn finish_todo(&self, outcome: Result<Duration, &str>) {
        let m = self.member();
        if m.todo.replace(Todo::None) != Todo::None {
            self.ctx.member_done(outcome);
        }
    }

    fn connect_opts(&self) -> ConnectOpts {
        let g = self.group();
        let global = global_index(g.spec.id, g.spec.offset + self.idx);
        ConnectOpts {
            source: self.ctx.source(global),
            broker: self.ctx.broker_of(self.g, self.idx).1,
            ..g.connect.clone()
        }
    }

    async fn life(&mut self) {
        loop {
            let Some(()) = self.wait_for_connect_todo().await else {
                Box::pin(self.purge_if_asked()).await;
                return;
            };
            let at = self.ctx.connect_slot();
            tokio::time::sleep_until(at.into()).await;
            let Ok(permit) = self.ctx.connect_slots.acquire().await else {
                return;
            };
            let started = Instant::now();
            self.setup_started = Some(started);
            let clean = self.group().spec.clean_start;
            // Boxed: the connect future is large and only alive while connecting.
            let opened = Box::pin(Conn::open(&self.connect_opts(), &self.client_id, clean)).await;
            drop(permit);
            let (conn, ack) = match opened {
                Ok(ok) => ok,
                Err(e) => {
                    self.member().status.set(Status::Failed);
                    self.ctx.error(e.kind());
                    self.finish_todo(Err(e.kind()));
                    continue;
                }
            };
            self.member().status.set(Status::Up);
            add(&self.ctx.counters.connected, 1);
            let exit = self.serve(conn, &ack).await;
            sub(&self.ctx.counters.connected, 1);
            if let Some(p) = &mut self.publisher {
                p.connection_lost(&self.ctx);
            }
            match exit {
                Exit::Shutdown(purge) => {
                    if purge && !clean {
                        Box::pin(self.purge()).await;
                    }
                    return;
                }
                Exit::Dropped => self.member().status.set(Status::Down),
                Exit::Lost(kind) => {
                    self.member().status.set(Status::Failed);
                    self.ctx.error(kind);
                    self.finish_todo(Err(kind));
                }
            }
            if clean {
                self.member().subscribed.set(false);
            }
        }
    }

    /// Waits until this member is told to connect; `None` on shutdown. A todo that needs a
    /// connection fails at once.
    async fn wait_for_connect_todo(&mut self) -> Option<()> {
        loop {
            let shutdown = self.control.borrow_and_update().shutdown.is_some();
            if shutdown {
                self.finish_todo(Err("shutdown"));
                return None;
            }
            match self.member().todo.get() {
                Todo::Connect | Todo::Reconnect => return Some(()),
                Todo::None => {}
                Todo::Subscribe | Todo::Disconnect { .. } => self.finish_todo(Err("not_connected")),
            }
            if self.control.changed().await.is_err() {
                return None;
            }
        }
    }

    async fn purge_if_asked(&mut self) {
        let purge = self.control.borrow().shutdown == Some(true);
        if purge && !self.group().spec.clean_start && self.ever_subscribed {
            self.purge().await;
        }
    }

    /// Ends a persistent session: a clean connect and a DISCONNECT.
    async fn purge(&mut self) {
        let opts = ConnectOpts { session_expiry_secs: 0, ..self.connect_opts() };
        let Ok(_permit) = self.ctx.connect_slots.acquire().await else {
            return;
        };
        if let Ok((conn, _)) = Conn::open(&opts, &self.client_id, true).await {
            conn.disconnect(self.op_timeout()).await;
        }
    }

    /// After CONNACK: subscribe if needed, then serve until the connection ends.
    async fn serve(&mut self, mut conn: Conn, ack: &ConnAck) -> Exit {
        let has_subs = self.group().spec.subscribe.is_some();
        if ack.session_present {
            self.ctx.phase.borrow_mut().stats.session_present += 1;
        } else {
            self.member().subscribed.set(false);
        }
        if let Some(p) = &mut self.publisher {
            p.set_receive_max(ack.properties.receive_maximum);
        }
        let on_connect = self.group().spec.subscribe.as_ref().is_some_and(|s| s.on_connect);
        if has_subs && !ack.session_present && (on_connect || self.ever_subscribed) {
            self.subscriber.start(&self.ctx, self.g, self.idx, &mut conn);
        } else {
            self.setup_done();
        }
        let keep_alive = Duration::from_secs(u64::from(self.ctx.spec.keep_alive_secs));
        self.ping_at = (!keep_alive.is_zero()).then(|| Instant::now() + keep_alive);
        self.control.mark_changed();
        // Packets that arrived with CONNACK (a persistent session's backlog) are buffered
        // already; the socket will not report them readable again.
        if let Err(e) = self.drain_buffered(&mut conn, clock::now_ns()) {
            return self.lost(&e);
        }
        loop {
            let now = Instant::now();
            if let Some(p) = &mut self.publisher {
                p.fill(&mut conn, &self.ctx, now);
            }
            if let Err(e) = conn.try_flush() {
                return Exit::Lost(e.kind());
            }
            let wake = self.next_wake(now, conn.write_backlog());
            let waiting = conn.write_backlog() > 0;
            tokio::select! {
                biased;
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Exit::Shutdown(false);
                    }
                    if let Some(exit) = self.on_control(&mut conn) {
                        return Box::pin(self.close(conn, exit)).await;
                    }
                }
                ready = conn.readable() => {
                    let read = match ready {
                        Ok(()) => self.on_readable(&mut conn),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = read {
                        return self.lost(&e);
                    }
                }
                ready = conn.writable(), if waiting => {
                    if let Err(e) = ready {
                        return self.lost(&e);
                    }
                }
                () = sleep_until(wake) => self.on_timer(&mut conn),
            }
            conn.trim();
        }
    }

    fn lost(&self, e: &ClientError) -> Exit {
        Exit::Lost(e.kind())
    }

    async fn close(&mut self, conn: Conn, exit: Exit) -> Exit {
        match exit {
            Exit::Shutdown(_) => conn.disconnect(self.op_timeout()).await,
            Exit::Dropped => {
                match self.member().todo.get() {
                    Todo::Disconnect { abrupt: true } => conn.abort(),
                    _ => conn.disconnect(self.op_timeout()).await,
                }
                self.finish_todo(Ok(Duration::ZERO));
            }
            Exit::Lost(_) => {}
        }
        exit
    }

    fn next_wake(&self, now: Instant, backlog: usize) -> Option<Instant> {
        let publish = self.publisher.as_ref().and_then(|p| p.next_wake(now, backlog));
        let deadline = self.subscriber.deadline(self.op_timeout());
        [publish, deadline, self.ping_at].into_iter().flatten().min()
    }

    fn on_control(&mut self, conn: &mut Conn) -> Option<Exit> {
        let c = *self.control.borrow_and_update();
        if let Some(purge) = c.shutdown {
            return Some(Exit::Shutdown(purge));
        }
        if let Some(p) = &mut self.publisher {
            p.set_window(&self.ctx, c.traffic);
        }
        match self.member().todo.get() {
            Todo::Disconnect { .. } => return Some(Exit::Dropped),
            Todo::Subscribe if !self.subscriber.active() => {
                if self.group().spec.subscribe.is_some() {
                    self.subscriber.start(&self.ctx, self.g, self.idx, conn);
                } else {
                    self.finish_todo(Err("no_subscriptions"));
                }
            }
            _ => {}
        }
        None
    }

    fn on_timer(&mut self, conn: &mut Conn) {
        let now = Instant::now();
        if self.ping_at.is_some_and(|at| now >= at) {
            conn.queue(&Packet::PingReq);
            if let Some(p) = &mut self.publisher {
                p.on_keepalive_ping();
            }
            let keep_alive = Duration::from_secs(u64::from(self.ctx.spec.keep_alive_secs));
            self.ping_at = Some(now + keep_alive);
        }
        let outcome = self.subscriber.check_timeout(&self.ctx, self.g, now, self.op_timeout());
        self.on_sub_outcome(outcome);
    }

    fn on_readable(&mut self, conn: &mut Conn) -> Result<(), ClientError> {
        if !conn.try_fill()? {
            return Ok(());
        }
        self.drain_buffered(conn, clock::now_ns())
    }

    fn drain_buffered(&mut self, conn: &mut Conn, rx_ns: u64) -> Result<(), ClientError> {
        while let Some(packet) = conn.next_packet()? {
            self.on_packet(packet, conn, rx_ns)?;
        }
        Ok(())
    }

    fn on_packet(&mut self, packet: Packet, conn: &mut Conn, rx_ns: u64) -> Result<(), ClientError> {
        let ctx = self.ctx.clone();
        match packet {
            Packet::Publish(p) => {
                let fresh = match p.qos {
                    QoS::AtMostOnce => true,
                    QoS::AtLeastOnce => {
                        conn.queue(&Packet::PubAck(PubResp::new(p.packet_id)));
                        true
                    }
                    QoS::ExactlyOnce => {
                        // Exactly once: a resent PUBLISH before PUBREL is not a new message.
                        let fresh = !self.inbound_qos2.contains(&p.packet_id);
                        if fresh {
                            self.inbound_qos2.push(p.packet_id);
                        }
                        conn.queue(&Packet::PubRec(PubResp::new(p.packet_id)));
                        fresh
                    }
                };
                if fresh {
                    let misrouted = self.expect_topic.as_ref().is_some_and(|t| *t != p.topic);
                    ctx.rx.borrow_mut().record(
                        self.slot,
                        self.ordered,
                        Stamp::read(&p.payload),
                        rx_ns,
                        misrouted,
                    );
                }
            }
            Packet::PubRel(r) => {
                self.inbound_qos2.retain(|&id| id != r.packet_id);
                conn.queue(&Packet::PubComp(PubResp::new(r.packet_id)));
            }
            Packet::PubAck(r) => {
                if let Some(p) = &mut self.publisher {
                    p.on_puback(&ctx, &r);
                }
            }
            Packet::PubRec(r) => {
                if let Some(p) = &mut self.publisher {
                    p.on_pubrec(&ctx, &r, conn);
                }
            }
            Packet::PubComp(r) => {
                if let Some(p) = &mut self.publisher {
                    p.on_pubcomp(&ctx, &r);
                }
            }
            Packet::SubAck(a) => {
                let outcome = self.subscriber.on_suback(&ctx, self.g, self.idx, &a, conn);
                self.on_sub_outcome(outcome);
            }
            Packet::PingResp => {
                if let Some(p) = &mut self.publisher {
                    p.on_pingresp();
                }
            }
            Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.reason_code)),
            _ => ctx.error("unexpected_packet"),
        }
        Ok(())
    }

    fn on_sub_outcome(&mut self, outcome: SubOutcome) {
        let SubOutcome::Complete { ok, failed, took } = outcome else {
            return;
        };
        {
            let mut p = self.ctx.phase.borrow_mut();
            p.stats.subscriptions_ok += u64::from(ok);
            p.stats.subscriptions_failed += u64::from(failed);
        }
        add(&self.ctx.counters.subscriptions, u64::from(ok));
        if ok == 0 {
            self.finish_todo(Err("subscribe_refused"));
            return;
        }
        self.ever_subscribed = true;
        let m = self.member();
        m.subscribed.set(true);
        if !m.listed.replace(true) {
            self.group().peers.borrow_mut().push(self.idx);
        }
        match self.member().todo.get() {
            Todo::Subscribe => self.finish_todo(Ok(took)),
            _ => self.setup_done(),
        }
    }

    /// The connect (and subscribe) of a `Connect`/`Reconnect` todo is complete.
    fn setup_done(&mut self) {
        if matches!(self.member().todo.get(), Todo::Connect | Todo::Reconnect) {
            let took = self.setup_started.take().map_or(Duration::ZERO, |s| s.elapsed());
            self.finish_todo(Ok(took));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::proto::WorkerSpec;

    /// A worker holds ~15,000 of these tasks: their state must stay small (measured 2.1 KB
    /// with tokio 1.54; the bound leaves room for toolchain changes, not for regressions like
    /// an inline connect future or publisher).
    #[test]
    fn member_task_state_stays_small() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let spec = WorkerSpec {
            worker: 0,
            run_id: "r".into(),
            brokers: vec!["127.0.0.1:1".parse().expect("addr")],
            sources: vec![],
            protocol: Default::default(),
            keep_alive_secs: 0,
            connect_rate: 0.0,
            connect_concurrency: 1,
            op_timeout_ms: 1,
            step_timeout_ms: 1,
            groups: vec![],
            tls: None,
        };
        let task = run(Ctx::new(spec, None, tx), 0, 0);
        assert!(size_of_val(&task) <= 3072, "member task is {} bytes", size_of_val(&task));
        assert!(size_of::<Actor>() <= 320, "Actor is {} bytes", size_of::<Actor>());
    }
}
