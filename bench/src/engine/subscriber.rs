//! SHELL. The subscribing half of a member: sends its filters in SUBSCRIBE packets with a
//! bounded number outstanding and counts what SUBACK grants.
//!
//! Invariants: `outstanding <= window`; `ok + failed` counts filters whose SUBACK arrived (or
//! that timed out); the subscription is complete when every filter is counted.

use std::time::{Duration, Instant};

use bytestring::ByteString;
use node::mqtt::packet::{Packet, QoS, SubAck, SubOptions, Subscribe};

use super::ctx::Ctx;
use super::pattern::expand;
use super::publisher::PUB_ID_MAX;
use crate::client::Conn;

/// Subscription progress of one member on one connection.
#[derive(Debug)]
pub(crate) struct Subscriber {
    next: u32,
    outstanding: u32,
    ok: u32,
    failed: u32,
    active: bool,
    started: Instant,
    last_progress: Instant,
    next_id: u16,
}

/// What a SUBACK or a timeout led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubOutcome {
    /// More SUBACKs to come.
    Pending,
    /// Every filter answered: granted and refused counts, and the time taken.
    Complete { ok: u32, failed: u32, took: Duration },
}

impl Subscriber {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            next: 0,
            outstanding: 0,
            ok: 0,
            failed: 0,
            active: false,
            started: now,
            last_progress: now,
            next_id: PUB_ID_MAX,
        }
    }

    /// Whether a subscription is in progress.
    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// Starts subscribing every filter of local member `idx` of group `g`.
    pub(crate) fn start(&mut self, ctx: &Ctx, g: usize, idx: u64, conn: &mut Conn) {
        *self = Self::new();
        self.active = true;
        self.pump(ctx, g, idx, conn);
    }

    /// Deadline for the next SUBACK.
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.active.then(|| self.last_progress + timeout)
    }

    fn pump(&mut self, ctx: &Ctx, g: usize, idx: u64, conn: &mut Conn) {
        let group = &ctx.groups[g];
        let Some(spec) = &group.spec.subscribe else {
            return;
        };
        let qos = QoS::from_u8(spec.qos).unwrap_or(QoS::AtMostOnce);
        let mut vars = group.vars(&ctx.spec.run_id, idx);
        while self.outstanding < spec.window.max(1) && self.next < spec.count {
            let n = spec.per_packet.max(1).min(spec.count - self.next);
            let filters = (self.next..self.next + n)
                .map(|j| {
                    vars.j = u64::from(j);
                    let pattern = &spec.filters[j as usize % spec.filters.len()];
                    (ByteString::from(expand(pattern, &vars)), SubOptions { qos, ..SubOptions::default() })
                })
                .collect();
            self.next_id = if self.next_id == u16::MAX { PUB_ID_MAX + 1 } else { self.next_id + 1 };
            conn.queue(&Packet::Subscribe(Subscribe {
                packet_id: self.next_id,
                filters,
                ..Subscribe::default()
            }));
            self.next += n;
            self.outstanding += 1;
        }
    }

    /// Counts a SUBACK and sends more filters.
    pub(crate) fn on_suback(
        &mut self,
        ctx: &Ctx,
        g: usize,
        idx: u64,
        ack: &SubAck,
        conn: &mut Conn,
    ) -> SubOutcome {
        if !self.active {
            ctx.error("unexpected_suback");
            return SubOutcome::Pending;
        }
        let granted = ack.reason_codes.iter().filter(|&&c| c < 0x80).count() as u32;
        self.ok += granted;
        self.failed += ack.reason_codes.len() as u32 - granted;
        self.outstanding = self.outstanding.saturating_sub(1);
        self.last_progress = Instant::now();
        self.pump(ctx, g, idx, conn);
        self.outcome(ctx, g)
    }

    /// Gives up on the outstanding SUBACKs if `timeout` passed without one.
    pub(crate) fn check_timeout(
        &mut self,
        ctx: &Ctx,
        g: usize,
        now: Instant,
        timeout: Duration,
    ) -> SubOutcome {
        if !self.active || now < self.last_progress + timeout {
            return SubOutcome::Pending;
        }
        let count = ctx.groups[g].spec.subscribe.as_ref().map_or(0, |s| s.count);
        self.failed = count - self.ok;
        self.outstanding = 0;
        self.next = count;
        ctx.error("subscribe_timeout");
        self.outcome(ctx, g)
    }

    fn outcome(&mut self, ctx: &Ctx, g: usize) -> SubOutcome {
        let count = ctx.groups[g].spec.subscribe.as_ref().map_or(0, |s| s.count);
        if self.ok + self.failed < count {
            return SubOutcome::Pending;
        }
        self.active = false;
        SubOutcome::Complete { ok: self.ok, failed: self.failed, took: self.started.elapsed() }
    }
}
