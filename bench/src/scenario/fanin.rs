//! `fanin`: vehicles publish `fleet/{k}/telemetry`; backends subscribe to `fleet/+/telemetry`
//! (each backend gets every message) or, with `--shared`, to `$share/bench/fleet/+/telemetry`
//! (each message goes to one backend).

use super::layout::GroupPlan;
use super::opts::RunOpts;
use super::traffic::{self, ByRegion, Plan, total};
use super::{base_params, load};
use crate::engine::proto::{PubSpec, Slot, SubSpec, TopicSpec};
use crate::result::RunResult;

/// Options of `fanin`.
#[derive(Clone, Debug, clap::Args)]
pub struct FaninArgs {
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
    /// Vehicles publishing telemetry.
    #[arg(long, default_value_t = 1000)]
    pub vehicles: u64,
    /// Backend subscribers.
    #[arg(long, default_value_t = 2)]
    pub backends: u64,
    /// Backends share one $share group instead of each receiving everything.
    #[arg(long)]
    pub shared: bool,
}

fn expect_wildcard(sent: &ByRegion, subscribed: &ByRegion) -> u64 {
    total(sent, "vehicles") * total(subscribed, "backends")
}

fn expect_shared(sent: &ByRegion, subscribed: &ByRegion) -> u64 {
    total(sent, "vehicles") * u64::from(total(subscribed, "backends") > 0)
}

/// Runs `fanin`.
pub async fn run(a: &FaninArgs) -> anyhow::Result<RunResult> {
    let opts = &a.opts;
    let mut params = base_params(opts);
    params.insert("vehicles".into(), a.vehicles.to_string());
    params.insert("backends".into(), a.backends.to_string());
    params.insert("subscription".into(), if a.shared { "$share" } else { "wildcard" }.into());
    if !opts.max {
        params.insert("rate".into(), format!("{}", opts.rate.unwrap_or(5000.0)));
    }
    let filter = if a.shared { "$share/bench/fleet/+/telemetry" } else { "fleet/+/telemetry" };
    let vehicles = GroupPlan {
        lean: true,
        publish: Some(PubSpec {
            topic: TopicSpec::Own("fleet/{k}/telemetry".into()),
            qos: opts.qos,
            payload_len: opts.payload,
            load: load(opts, a.vehicles, 5000.0),
        }),
        ..GroupPlan::new("vehicles", "v", a.vehicles)
    };
    let backends = GroupPlan {
        subscribe: Some(SubSpec {
            filters: vec![filter.into()],
            count: 1,
            qos: opts.qos,
            per_packet: 1,
            window: 1,
            on_connect: true,
            slot: if a.shared { Slot::Shared(1) } else { Slot::PerClient },
            expect_topic: None,
        }),
        ..GroupPlan::new("backends", "b", a.backends)
    };
    traffic::run(Plan {
        scenario: "fanin",
        opts,
        params,
        groups: vec![vehicles, backends],
        expect: if a.shared { expect_shared } else { expect_wildcard },
        storm: None,
        notes: Vec::new(),
    })
    .await
}
