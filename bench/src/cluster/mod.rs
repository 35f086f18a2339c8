//! SHELL. `bench cluster-compare`: one single-node Flotilla against a local N-node cluster,
//! side by side in one run. Each scenario runs against both alternately (single, cluster,
//! single, cluster, ...); the cluster's clients are spread over its nodes (see
//! [`crate::scenario::opts::BrokerList`]), so publishers and subscribers sit on different
//! nodes and deliveries go through the cluster's forwarding. Reports per scenario delivered
//! msg/s, broker CPU-seconds per delivered message (summed over the cluster's nodes), their
//! median ratio cluster/single, and the forward bytes on the wire per forwarded payload byte
//! from the nodes' transport counters.

pub mod nodes;

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::brokers::{Kind, LocalBroker};
use crate::compare::median;
use crate::result::{RunResult, figure};
use crate::scenario::Scenario;
use crate::scenario::fanin::FaninArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::opts::{BrokerList, Dur, RunOpts};
use crate::scenario::p2p::P2pArgs;
use nodes::{ForwardCounters, LocalCluster};

/// Goal: cluster CPU per delivered message at most this times the single node's.
pub const CPU_RATIO_GOAL: f64 = 1.5;

/// Goal: forward bytes on the wire per forwarded payload byte.
pub const WIRE_GOAL: f64 = 1.05;

/// Options of `bench cluster-compare`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterCompareArgs {
    /// The Flotilla binary (target/release/flotilla).
    #[arg(long)]
    pub flotilla: PathBuf,
    /// Scenarios, comma separated: p2p-qos0-max, p2p-qos1-max, p2p-qos1-rate, fanin-wildcard,
    /// fanout. (p2p-qos1-max with one publisher per subscriber overloads the subscribers: the
    /// broker acknowledges a QoS 1 publish once queued, and disconnects a subscriber whose
    /// queue is full; p2p-qos1-rate offers a fixed rate instead.)
    #[arg(long, value_delimiter = ',', default_value = "p2p-qos0-max,p2p-qos1-rate,fanin-wildcard,fanout")]
    pub scenarios: Vec<String>,
    /// Cluster nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=7))]
    pub nodes: u32,
    /// Single/cluster pairs per scenario (at least 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=20))]
    pub pairs: u32,
    /// p2p: publisher/subscriber pairs (backends and vehicles).
    #[arg(long, default_value_t = 10)]
    pub p2p_pairs: u64,
    /// fan-in: publishers (one wildcard subscriber); fan-out: subscribers (one publisher).
    #[arg(long, default_value_t = 100)]
    pub fan: u64,
    /// p2p-qos1-rate: total publish rate, msg/s.
    #[arg(long, default_value_t = 20_000.0)]
    pub p2p_rate: f64,
    /// Seconds of idle CPU sampled on both brokers before the scenarios.
    #[arg(long, default_value = "5s")]
    pub idle: Dur,
    /// fan-in: total publish rate, msg/s.
    #[arg(long, default_value_t = 5000.0)]
    pub fanin_rate: f64,
    /// fan-out: broadcasts per second.
    #[arg(long, default_value_t = 50.0)]
    pub fanout_rate: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: u32,
    /// Warm-up before each measurement window.
    #[arg(long, default_value = "2s")]
    pub warmup: Dur,
    /// Measurement window of each run.
    #[arg(long, default_value = "10s")]
    pub measure: Dur,
    /// Longest wait for the cluster to become ready.
    #[arg(long, default_value = "3m")]
    pub ready_timeout: Dur,
    /// Pause between runs.
    #[arg(long, default_value = "2s")]
    pub pause: Dur,
    /// Append every run as JSON Lines to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No live progress display.
    #[arg(long)]
    pub no_progress: bool,
}

/// One scenario's outcome.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScenarioSummary {
    /// Scenario id.
    pub id: String,
    /// Delivered msg/s of each single-node run.
    pub single_rate: Vec<f64>,
    /// Delivered msg/s of each cluster run.
    pub cluster_rate: Vec<f64>,
    /// Broker CPU-seconds per delivered message of each single-node run.
    pub single_cpu_per_msg: Vec<f64>,
    /// The same, summed over the cluster's nodes, of each cluster run.
    pub cluster_cpu_per_msg: Vec<f64>,
    /// Per pair: cluster CPU per message / single CPU per message.
    pub cpu_ratio: Vec<f64>,
    /// Per cluster run: forward bytes on the wire per forwarded payload byte.
    pub wire_per_payload: Vec<f64>,
    /// Per cluster run: the forward counters' growth over the run (summed over nodes).
    pub forwards: Vec<ForwardCounters>,
    /// Lost and duplicate deliveries over all runs, single and cluster.
    pub lost: (f64, f64),
    /// See `lost`.
    pub duplicates: (f64, f64),
}

/// The outcome of `bench cluster-compare`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterComparison {
    /// Cluster nodes.
    pub nodes: u32,
    /// Pairs per scenario.
    pub pairs: u32,
    /// Per scenario.
    pub scenarios: Vec<ScenarioSummary>,
    /// Machine load average at the start and at the end.
    pub load_avg: (String, String),
    /// CPU cores used by the idle brokers before the scenarios: single, cluster (summed).
    pub idle_cores: (f64, f64),
}

/// The scenario for `id`, with the run's sizes.
pub fn scenario(args: &ClusterCompareArgs, id: &str) -> anyhow::Result<Scenario> {
    let base = RunOpts {
        warmup: args.warmup,
        measure: args.measure,
        payload: args.payload,
        no_progress: args.no_progress,
        ..RunOpts::default()
    };
    let closed = |qos: u8| RunOpts { qos, max: true, window: 32, ..base.clone() };
    let open = |rate: f64| RunOpts { qos: 0, rate: Some(rate), ..base.clone() };
    Ok(match id {
        "p2p-qos0-max" | "p2p-qos1-max" => Scenario::P2p(P2pArgs {
            opts: closed(u8::from(id == "p2p-qos1-max")),
            vehicles: args.p2p_pairs,
            backends: args.p2p_pairs,
        }),
        "p2p-qos1-rate" => Scenario::P2p(P2pArgs {
            opts: RunOpts { qos: 1, rate: Some(args.p2p_rate), ..base.clone() },
            vehicles: args.p2p_pairs,
            backends: args.p2p_pairs,
        }),
        "fanin-wildcard" => Scenario::Fanin(FaninArgs {
            opts: open(args.fanin_rate),
            vehicles: args.fan,
            backends: 1,
            shared: false,
        }),
        "fanout" => {
            Scenario::Fanout(FanoutArgs { opts: open(args.fanout_rate), vehicles: args.fan, regions: 1 })
        }
        _ => bail!(
            "unknown scenario {id:?} (use p2p-qos0-max, p2p-qos1-max, p2p-qos1-rate, fanin-wildcard, fanout)"
        ),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn fig(r: &RunResult, name: &str) -> f64 {
    r.figures.get(name).copied().unwrap_or(f64::NAN)
}

/// Broker CPU-seconds per delivered message of a run (NaN without CPU figures).
pub fn cpu_per_msg(r: &RunResult) -> f64 {
    let per_cpu = fig(r, figure::DELIVERIES_PER_CPU_SEC);
    if per_cpu > 0.0 { 1.0 / per_cpu } else { f64::NAN }
}

/// Starts the brokers, runs every scenario against both alternately, stops the brokers.
pub async fn run(args: &ClusterCompareArgs) -> anyhow::Result<(ClusterComparison, Vec<RunResult>)> {
    let ids: Vec<&str> = args.scenarios.iter().map(String::as_str).collect();
    for id in &ids {
        scenario(args, id)?;
    }
    let load_start = loadavg();
    let mut single = LocalBroker::start(&Kind::Flotilla { exe: args.flotilla.clone(), config: None })
        .context("cannot start the single-node Flotilla")?;
    eprintln!("cluster-compare: single node {} (pid {})", single.addr, single.pid);
    let mut cluster = match LocalCluster::start(&args.flotilla, args.nodes, args.ready_timeout.0).await {
        Ok(c) => c,
        Err(e) => {
            single.stop();
            return Err(e.context("cannot start the cluster"));
        }
    };
    eprintln!(
        "cluster-compare: cluster {} (pids {:?})",
        BrokerList::new(cluster.mqtt_addrs()).map(|b| b.to_string()).unwrap_or_default(),
        cluster.pids()
    );
    let idle_cores = idle_cpu(&[single.pid], &cluster.pids(), args.idle.0).await;
    eprintln!("cluster-compare: idle CPU cores: single {:.3}, cluster {:.3}", idle_cores.0, idle_cores.1);
    let result = run_all(args, &ids, &single, &cluster).await;
    cluster.stop();
    single.stop();
    let (scenarios, runs) = result?;
    let c = ClusterComparison {
        nodes: args.nodes,
        pairs: args.pairs,
        scenarios,
        load_avg: (load_start, loadavg()),
        idle_cores,
    };
    Ok((c, runs))
}

/// CPU cores the idle brokers use over `d`: single, cluster (NaN if unreadable).
async fn idle_cpu(single: &[u32], cluster: &[u32], d: std::time::Duration) -> (f64, f64) {
    let (s0, c0) = (crate::proc::sample_sum(single), crate::proc::sample_sum(cluster));
    tokio::time::sleep(d).await;
    let (s1, c1) = (crate::proc::sample_sum(single), crate::proc::sample_sum(cluster));
    let cores = |a: Option<crate::proc::ProcSample>, b: Option<crate::proc::ProcSample>| match (a, b) {
        (Some(a), Some(b)) if !d.is_zero() => crate::proc::cpu_between(&a, &b) / d.as_secs_f64(),
        _ => f64::NAN,
    };
    (cores(s0, s1), cores(c0, c1))
}

async fn run_all(
    args: &ClusterCompareArgs,
    ids: &[&str],
    single: &LocalBroker,
    cluster: &LocalCluster,
) -> anyhow::Result<(Vec<ScenarioSummary>, Vec<RunResult>)> {
    let mut all = Vec::new();
    let mut out = Vec::new();
    let cluster_addrs = BrokerList::new(cluster.mqtt_addrs()).context("a cluster without nodes")?;
    for id in ids {
        let mut s = ScenarioSummary { id: (*id).to_string(), ..ScenarioSummary::default() };
        for pair in 0..args.pairs {
            for on_cluster in [false, true] {
                let label = if on_cluster { "cluster" } else { "single" };
                eprintln!("cluster-compare: {id} pair {}/{} on {label}", pair + 1, args.pairs);
                let mut sc = scenario(args, id)?;
                let o = sc.opts_mut();
                o.label = label.into();
                if on_cluster {
                    o.broker = cluster_addrs.clone();
                    o.broker_pid = cluster.pids();
                } else {
                    o.broker = single.addr.into();
                    o.broker_pid = vec![single.pid];
                }
                let before = if on_cluster { Some(cluster.forward_counters().await?) } else { None };
                let mut r = sc.run().await.with_context(|| format!("{id} on {label}"))?;
                r.params.insert("experiment".into(), (*id).into());
                r.params.insert("load_avg".into(), loadavg());
                let (rate, cpu) = (fig(&r, figure::DELIVERIES_PER_SEC), cpu_per_msg(&r));
                let (lost, dup) = (fig(&r, figure::LOST), fig(&r, figure::DUPLICATES));
                if let Some(before) = before {
                    let d = cluster.forward_counters().await?.since(&before);
                    s.cluster_rate.push(rate);
                    s.cluster_cpu_per_msg.push(cpu);
                    s.wire_per_payload.push(d.wire_per_payload_byte());
                    s.forwards.push(d);
                    s.lost.1 += lost;
                    s.duplicates.1 += dup;
                    if let Some(&single_cpu) = s.single_cpu_per_msg.last() {
                        s.cpu_ratio.push(cpu / single_cpu);
                    }
                } else {
                    s.single_rate.push(rate);
                    s.single_cpu_per_msg.push(cpu);
                    s.lost.0 += lost;
                    s.duplicates.0 += dup;
                }
                if let Some(path) = &args.out {
                    crate::report::json::append(path, std::slice::from_ref(&r))?;
                }
                all.push(r);
                tokio::time::sleep(args.pause.0).await;
            }
        }
        eprint!("{}", render_one(&s));
        out.push(s);
    }
    Ok((out, all))
}

fn us(secs: f64) -> String {
    if secs.is_finite() { format!("{:.2}", secs * 1e6) } else { "-".into() }
}

fn num(x: f64, prec: usize) -> String {
    if x.is_finite() { format!("{x:.prec$}") } else { "-".into() }
}

fn list(v: &[f64], f: impl Fn(f64) -> String) -> String {
    v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(" / ")
}

fn render_one(s: &ScenarioSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: msg/s single {} cluster {}; CPU µs/msg single {} cluster {}; ratio {}; wire/payload {}",
        s.id,
        list(&s.single_rate, |x| num(x, 0)),
        list(&s.cluster_rate, |x| num(x, 0)),
        list(&s.single_cpu_per_msg, us),
        list(&s.cluster_cpu_per_msg, us),
        list(&s.cpu_ratio, |x| num(x, 2)),
        list(&s.wire_per_payload, |x| num(x, 3)),
    );
    out
}

/// The comparison as a Markdown table (medians over the pairs) with every pair's values.
pub fn render(c: &ClusterComparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "single node vs {}-node cluster, {} pairs per scenario (medians; load average {} at start, {} at end; idle broker CPU cores: single {:.3}, cluster {:.3})\n",
        c.nodes, c.pairs, c.load_avg.0, c.load_avg.1, c.idle_cores.0, c.idle_cores.1
    );
    let _ = writeln!(
        out,
        "| scenario | msg/s single | msg/s cluster | CPU µs/msg single | CPU µs/msg cluster | CPU ratio (goal <= {CPU_RATIO_GOAL}) | wire B / payload B (goal <= {WIRE_GOAL}) | forwards (all cluster runs) | lost s/c | dup s/c |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &c.scenarios {
        let fwd: u64 = s.forwards.iter().map(|f| f.forwards_sent).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{} |",
            s.id,
            num(median(&s.single_rate), 0),
            num(median(&s.cluster_rate), 0),
            us(median(&s.single_cpu_per_msg)),
            us(median(&s.cluster_cpu_per_msg)),
            num(median(&s.cpu_ratio), 2),
            num(median(&s.wire_per_payload), 3),
            fwd,
            s.lost.0,
            s.lost.1,
            s.duplicates.0,
            s.duplicates.1,
        );
    }
    let _ = writeln!(out, "\nper pair:");
    for s in &c.scenarios {
        out.push_str(&render_one(s));
        for f in &s.forwards {
            let _ = writeln!(
                out,
                "  cluster run: {} forwards sent in {} batches, {} received, {} dropped; {} payload B, \
                 {} forward-frame B, {} UDP B; forward batch acks {} sent, {} received",
                f.forwards_sent,
                f.forward_batches_sent,
                f.forwards_received,
                f.forwards_dropped,
                f.forward_payload_bytes_sent,
                f.forward_bytes_sent,
                f.udp_bytes_sent,
                f.forward_acks_sent,
                f.forward_acks_received
            );
        }
    }
    out
}
