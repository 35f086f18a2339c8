//! `fanout`: one broadcaster per region publishes `region/{r}/broadcast`; every vehicle of the
//! region subscribes to it and should get each broadcast once.

use super::layout::GroupPlan;
use super::opts::RunOpts;
use super::traffic::{self, ByRegion, Plan};
use super::{base_params, load};
use crate::engine::proto::{PubSpec, Slot, SubSpec, TopicSpec};
use crate::result::RunResult;

/// Options of `fanout`.
#[derive(Clone, Debug, clap::Args)]
pub struct FanoutArgs {
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
    /// Vehicles, spread over the regions.
    #[arg(long, default_value_t = 5000)]
    pub vehicles: u64,
    /// Regions, one broadcaster each.
    #[arg(long, default_value_t = 1)]
    pub regions: u64,
}

fn expect(sent: &ByRegion, subscribed: &ByRegion) -> u64 {
    let (Some(sent), Some(subs)) = (sent.get("broadcasters"), subscribed.get("vehicles")) else {
        return 0;
    };
    sent.iter().zip(subs).map(|(s, n)| s * n).sum()
}

/// Runs `fanout`.
pub async fn run(a: &FanoutArgs) -> anyhow::Result<RunResult> {
    let opts = &a.opts;
    let regions = a.regions.max(1);
    let mut params = base_params(opts);
    params.insert("vehicles".into(), a.vehicles.to_string());
    params.insert("regions".into(), regions.to_string());
    if !opts.max {
        params.insert("rate".into(), format!("{}", opts.rate.unwrap_or(20.0)));
    }
    let topic = "region/{r}/broadcast".to_string();
    let broadcasters = GroupPlan {
        regions,
        publish: Some(PubSpec {
            topic: TopicSpec::Own(topic.clone()),
            qos: opts.qos,
            payload_len: opts.payload,
            load: load(opts, regions, 20.0),
        }),
        ..GroupPlan::new("broadcasters", "r", regions)
    };
    let vehicles = GroupPlan {
        lean: true,
        regions,
        subscribe: Some(SubSpec {
            filters: vec![topic.clone()],
            count: 1,
            qos: opts.qos,
            per_packet: 1,
            window: 1,
            on_connect: true,
            slot: Slot::PerClient,
            expect_topic: Some(topic),
        }),
        ..GroupPlan::new("vehicles", "v", a.vehicles)
    };
    traffic::run(Plan {
        scenario: "fanout",
        opts,
        params,
        groups: vec![broadcasters, vehicles],
        expect,
        storm: None,
        notes: Vec::new(),
    })
    .await
}
