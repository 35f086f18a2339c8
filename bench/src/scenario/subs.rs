//! `subs`: many distinct subscriptions. Clients connect first; then each subscribes its
//! filters (`fleet/{k}/cmd/{j}`, a share of them wildcards `fleet/{k}/+/w{j}`) in SUBSCRIBE
//! packets of several filters with a few packets outstanding. Reports subscriptions per
//! second and per broker CPU-second, and the broker's RSS growth per subscription.

use super::base_params;
use super::layout::GroupPlan;
use super::opts::{Dur, RunOpts};
use super::traffic::{base_result, phase_notes, phases, start};
use crate::engine::proto::{Command, Slot, Step, SubSpec};
use crate::result::{self, Headline, RunResult, figure};

/// Options of `subs`.
#[derive(Clone, Debug, clap::Args)]
pub struct SubsArgs {
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
    /// Subscribing clients.
    #[arg(long, default_value_t = 100)]
    pub clients: u64,
    /// Distinct filters per client.
    #[arg(long, default_value_t = 1000)]
    pub subs_per_client: u32,
    /// Filters per SUBSCRIBE packet.
    #[arg(long, default_value_t = 10)]
    pub per_packet: u32,
    /// SUBSCRIBE packets outstanding per client.
    #[arg(long, default_value_t = 4)]
    pub sub_window: u32,
    /// Share of filters with a `+` wildcard (in tenths: 0.1 = one in ten).
    #[arg(long, default_value_t = 0.1)]
    pub wildcards: f64,
    /// How long subscriptions stay before the broker's memory is read.
    #[arg(long, default_value = "3s")]
    pub hold: Dur,
}

/// Ten filter patterns, `round(10 * share)` of them wildcards.
pub(crate) fn patterns(share: f64) -> Vec<String> {
    let wild = (share.clamp(0.0, 1.0) * 10.0).round() as usize;
    (0..10).map(|i| if i < wild { "fleet/{k}/+/w{j}".into() } else { "fleet/{k}/cmd/{j}".into() }).collect()
}

/// Runs `subs`.
pub async fn run(a: &SubsArgs) -> anyhow::Result<RunResult> {
    let opts = &a.opts;
    let group = GroupPlan {
        lean: true,
        subscribe: Some(SubSpec {
            filters: patterns(a.wildcards),
            count: a.subs_per_client,
            qos: opts.qos,
            per_packet: a.per_packet.max(1),
            window: a.sub_window.max(1),
            on_connect: false,
            slot: Slot::PerClient,
            expect_topic: None,
        }),
        ..GroupPlan::new("subscribers", "s", a.clients)
    };
    let (mut d, run_id) = start(opts, std::slice::from_ref(&group)).await?;
    let mut params = base_params(opts);
    params.remove("load");
    params.remove("payload");
    params.insert("clients".into(), a.clients.to_string());
    params.insert("subs_per_client".into(), a.subs_per_client.to_string());
    params.insert("per_packet".into(), a.per_packet.to_string());
    params.insert("wildcards".into(), a.wildcards.to_string());
    let mut r = base_result("subs", opts, run_id, params);
    r.workers = d.workers();
    let b_start = d.broker();
    d.phase("connect");
    let (connect, _) =
        result::merge_phases(&phases(d.step(&Command::Connect { groups: vec![] }, Step::Connect).await?));
    phase_notes("connect", &connect, &mut r.notes);
    d.sleep(std::time::Duration::from_millis(500)).await?;
    let b0 = d.broker();
    d.phase("subscribe");
    let (subscribe, _) =
        result::merge_phases(&phases(d.step(&Command::Subscribe { groups: vec![] }, Step::Subscribe).await?));
    let b1 = d.broker();
    phase_notes("subscribe", &subscribe, &mut r.notes);
    d.phase("hold");
    d.sleep(a.hold.0).await?;
    let b2 = d.broker();
    r.timeline = d.finish(false).await;

    let subs = subscribe.subscriptions_ok;
    let f = &mut r.figures;
    let rate = if subscribe.secs > 0.0 { subs as f64 / subscribe.secs } else { 0.0 };
    f.insert(figure::SUBSCRIBES_PER_SEC.into(), rate);
    f.insert("subscriptions".into(), subs as f64);
    let cpu = result::usage(b0, b0, b1, subscribe.secs);
    if let Some(v) = result::per_cpu_sec(subs, cpu.as_ref()) {
        f.insert(figure::SUBSCRIBES_PER_CPU_SEC.into(), v);
    }
    if let (Some(b0), Some(b2)) = (b0, b2)
        && subs > 0
    {
        f.insert(
            figure::BYTES_PER_SUBSCRIPTION.into(),
            (b2.rss_bytes as f64 - b0.rss_bytes as f64) / subs as f64,
        );
    }
    r.broker_usage = result::usage(b_start, b0, b2, subscribe.secs);
    r.headline = Some(if cpu.is_some() {
        Headline { figure: figure::SUBSCRIBES_PER_CPU_SEC.into(), higher_is_better: true }
    } else {
        Headline { figure: figure::SUBSCRIBES_PER_SEC.into(), higher_is_better: true }
    });
    r.connect = Some(connect);
    r.subscribe = Some(subscribe);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_share_in_tenths() {
        let p = patterns(0.1);
        assert_eq!(p.len(), 10);
        assert_eq!(p.iter().filter(|f| f.contains('+')).count(), 1);
        assert_eq!(patterns(0.0).iter().filter(|f| f.contains('+')).count(), 0);
    }
}
