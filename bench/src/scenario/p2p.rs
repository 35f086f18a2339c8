//! `p2p`: the fleet pattern. Each vehicle subscribes to its own `fleet/{k}/cmd`; backends
//! publish to random subscribed vehicles (of their own worker, so every worker's traffic is
//! self-contained). Each message should reach exactly one vehicle, once.

use super::layout::GroupPlan;
use super::opts::RunOpts;
use super::traffic::{self, ByRegion, Plan, total};
use super::{base_params, load};
use crate::engine::proto::{PubSpec, Slot, SubSpec, TopicSpec};
use crate::result::RunResult;

/// Options of `p2p`.
#[derive(Clone, Debug, clap::Args)]
pub struct P2pArgs {
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
    /// Vehicles, each subscribed to fleet/{k}/cmd.
    #[arg(long, default_value_t = 1000)]
    pub vehicles: u64,
    /// Backend publishers (raised to one per worker).
    #[arg(long, default_value_t = 4)]
    pub backends: u64,
}

/// The vehicles of the point-to-point pattern: `fleet/{k}/cmd` subscribers.
pub(crate) fn vehicles(opts: &RunOpts, n: u64, persistent: bool) -> GroupPlan {
    let cmd = "fleet/{k}/cmd".to_string();
    GroupPlan {
        lean: true,
        clean_start: !persistent,
        session_expiry_secs: if persistent { 3600 } else { 0 },
        subscribe: Some(SubSpec {
            filters: vec![cmd.clone()],
            count: 1,
            qos: opts.qos,
            per_packet: 1,
            window: 1,
            on_connect: true,
            slot: Slot::Shared(0),
            expect_topic: Some(cmd),
        }),
        ..GroupPlan::new("vehicles", "v", n)
    }
}

/// Backends publishing commands to random vehicles.
pub(crate) fn backends(opts: &RunOpts, n: u64, default_rate: f64) -> GroupPlan {
    GroupPlan {
        publish: Some(PubSpec {
            topic: TopicSpec::Peer { group: "vehicles".into(), pattern: "fleet/{k}/cmd".into() },
            qos: opts.qos,
            payload_len: opts.payload,
            load: load(opts, n, default_rate),
        }),
        ..GroupPlan::new("backends", "b", n)
    }
}

/// Every command goes to one vehicle.
pub(crate) fn expect_p2p(sent: &ByRegion, _subscribed: &ByRegion) -> u64 {
    total(sent, "backends")
}

/// Backends needed so every worker has one.
pub(crate) fn backend_count(opts: &RunOpts, vehicles: u64, backends: u64, notes: &mut Vec<String>) -> u64 {
    let workers = u64::from(opts.worker_count(vehicles + backends));
    if backends < workers {
        notes.push(format!("backends raised from {backends} to {workers}: one per worker"));
    }
    backends.max(workers)
}

/// Runs `p2p`.
pub async fn run(a: &P2pArgs) -> anyhow::Result<RunResult> {
    let opts = &a.opts;
    let mut notes = Vec::new();
    let backend_n = backend_count(opts, a.vehicles, a.backends, &mut notes);
    let mut params = base_params(opts);
    params.insert("vehicles".into(), a.vehicles.to_string());
    params.insert("backends".into(), backend_n.to_string());
    if !opts.max {
        params.insert("rate".into(), format!("{}", opts.rate.unwrap_or(5000.0)));
    }
    traffic::run(Plan {
        scenario: "p2p",
        opts,
        params,
        groups: vec![vehicles(opts, a.vehicles, false), backends(opts, backend_n, 5000.0)],
        expect: expect_p2p,
        storm: None,
        notes,
    })
    .await
}
