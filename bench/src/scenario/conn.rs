//! `conn`: N idle connections opened at a target rate. Reports the connect rate, the
//! per-connection connect latency, failures by kind and, with `--broker-pid`, the broker's
//! RSS growth per connection after the connections settle and connects per broker
//! CPU-second.

use super::base_params;
use super::layout::GroupPlan;
use super::opts::{Dur, RunOpts};
use super::traffic::{base_result, phase_notes, phases, start};
use crate::engine::proto::{Command, Slot, Step, SubSpec};
use crate::result::{self, Headline, RunResult, figure};

/// Options of `conn`.
#[derive(Clone, Debug, clap::Args)]
pub struct ConnArgs {
    /// Shared options.
    #[command(flatten)]
    pub opts: RunOpts,
    /// Connections.
    #[arg(long, default_value_t = 10_000)]
    pub conns: u64,
    /// Each connection also subscribes to its own fleet/{k}/cmd.
    #[arg(long)]
    pub subscribe: bool,
    /// How long connections stay idle before the broker's memory is read.
    #[arg(long, default_value = "5s")]
    pub hold: Dur,
}

/// Runs `conn`.
pub async fn run(a: &ConnArgs) -> anyhow::Result<RunResult> {
    let opts = &a.opts;
    let mut group = GroupPlan { lean: true, ..GroupPlan::new("conns", "c", a.conns) };
    if a.subscribe {
        group.subscribe = Some(SubSpec {
            filters: vec!["fleet/{k}/cmd".into()],
            count: 1,
            qos: opts.qos,
            per_packet: 1,
            window: 1,
            on_connect: true,
            slot: Slot::PerClient,
            expect_topic: None,
        });
    }
    let (mut d, run_id) = start(opts, std::slice::from_ref(&group)).await?;
    let mut params = base_params(opts);
    params.remove("load");
    params.remove("payload");
    params.insert("conns".into(), a.conns.to_string());
    params.insert("connect_rate".into(), opts.connect_rate.to_string());
    params.insert("hold".into(), a.hold.to_string());
    params.insert("subscribe".into(), a.subscribe.to_string());
    let mut r = base_result("conn", opts, run_id, params);
    r.workers = d.workers();
    let b0 = d.broker();
    d.phase("connect");
    let (connect, _) =
        result::merge_phases(&phases(d.step(&Command::Connect { groups: vec![] }, Step::Connect).await?));
    let b1 = d.broker();
    d.phase("hold");
    d.sleep(a.hold.0).await?;
    let b2 = d.broker();
    r.timeline = d.finish(false).await;

    phase_notes("connect", &connect, &mut r.notes);
    let f = &mut r.figures;
    f.insert(figure::CONNECTS_PER_SEC.into(), connect.per_sec);
    let cpu = result::usage(b0, b0, b1, connect.secs);
    if let Some(v) = result::per_cpu_sec(connect.ok, cpu.as_ref()) {
        f.insert(figure::CONNECTS_PER_CPU_SEC.into(), v);
    }
    if let (Some(b0), Some(b2)) = (b0, b2)
        && connect.ok > 0
    {
        f.insert(
            figure::BYTES_PER_CONNECTION.into(),
            (b2.rss_bytes as f64 - b0.rss_bytes as f64) / connect.ok as f64,
        );
    }
    r.broker_usage = result::usage(b0, b0, b2, connect.secs + a.hold.0.as_secs_f64());
    r.headline = Some(if b0.is_some() {
        Headline { figure: figure::BYTES_PER_CONNECTION.into(), higher_is_better: false }
    } else {
        Headline { figure: figure::CONNECTS_PER_SEC.into(), higher_is_better: true }
    });
    r.connect = Some(connect);
    Ok(r)
}
