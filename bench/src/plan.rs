//! `bench plan`: sizes a fleet deployment from a fleet profile and a calibration of one
//! broker node.
//!
//! Calibration runs the scenarios against a live broker (with `--broker-pid`, so capacities
//! are per broker CPU-second and memory per connection/subscription/queued message); the
//! profile's load is then divided by those capacities, with headroom, to give nodes, memory
//! and disk. The model is deliberately simple and printed with every figure it used:
//!
//! - CPU cores = the sum of telemetry msg/s by QoS over fan-in deliveries per CPU-s at that
//!   QoS, commands/s over p2p deliveries per CPU-s, broadcast deliveries/s over fan-out
//!   deliveries per CPU-s, and peak connects/s over connects per CPU-s;
//! - memory = vehicles x bytes per connection + subscriptions x bytes per subscription +
//!   queued messages x bytes per queued message, where queued messages = persistent vehicles
//!   x offline share x commands per vehicle over the retention time (capped by the per-session
//!   queue limit);
//! - disk = queued messages x (command payload + record overhead) x replication.
//!
//! Inter-node forwarding of a cluster is not modelled: the result is the capacity of nodes
//! that each serve their own share of the fleet.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::report::{bytes, count};
use crate::result::{RunResult, figure};
use crate::scenario::Scenario;
use crate::scenario::conn::ConnArgs;
use crate::scenario::fanin::FaninArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::opts::{Dur, RunOpts};
use crate::scenario::p2p::P2pArgs;
use crate::scenario::persist::PersistArgs;
use crate::scenario::subs::SubsArgs;

/// A fleet profile (`fleet.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetProfile {
    /// The fleet's load.
    pub fleet: Fleet,
    /// The machines it runs on.
    pub node: NodeSpec,
}

/// The load a fleet puts on the brokers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fleet {
    /// Vehicles, each one MQTT connection.
    pub vehicles: u64,
    /// Peak connection rate to absorb (reconnect storms), per second.
    pub connect_rate_per_sec: f64,
    /// Seconds between two telemetry messages of one vehicle.
    pub telemetry_interval_secs: f64,
    /// Telemetry payload, bytes.
    pub telemetry_payload_bytes: u32,
    /// Share of telemetry sent at QoS 0, 1 and 2 (summing to 1).
    pub telemetry_qos_mix: [f64; 3],
    /// Commands per vehicle per hour (QoS 1, point to point).
    pub commands_per_vehicle_per_hour: f64,
    /// Command payload, bytes.
    pub command_payload_bytes: u32,
    /// Subscriptions per vehicle.
    pub subscriptions_per_vehicle: u32,
    /// Regions receiving broadcasts.
    pub regions: u64,
    /// Broadcasts per second over all regions.
    pub broadcasts_per_sec: f64,
    /// Share of vehicles with persistent sessions.
    pub persistent_share: f64,
    /// Share of persistent vehicles offline at any time.
    pub offline_share: f64,
    /// How long queued commands for offline vehicles are kept, hours.
    pub retention_hours: f64,
    /// Messages a broker queues per offline session at most.
    pub queue_limit_per_session: u64,
}

/// One broker node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSpec {
    /// CPU cores.
    pub cores: f64,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Disk, GiB.
    pub disk_gib: f64,
    /// Share of every resource kept free (0.3 = plan for 70% use).
    pub headroom: f64,
    /// Copies of durable state.
    pub replication: u32,
    /// Connections one node may hold (open-file limit).
    pub max_connections: u64,
}

impl FleetProfile {
    /// Reads and checks a profile.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let p: Self =
            toml::from_str(&text).with_context(|| format!("invalid fleet profile {}", path.display()))?;
        p.validate()?;
        Ok(p)
    }

    /// Checks ranges.
    pub fn validate(&self) -> anyhow::Result<()> {
        let f = &self.fleet;
        let mix: f64 = f.telemetry_qos_mix.iter().sum();
        if (mix - 1.0).abs() > 1e-6 || f.telemetry_qos_mix.iter().any(|&x| x < 0.0) {
            bail!("telemetry-qos-mix must be three shares summing to 1");
        }
        if f.telemetry_interval_secs <= 0.0 {
            bail!("telemetry-interval-secs must be positive");
        }
        for (name, v) in [("persistent-share", f.persistent_share), ("offline-share", f.offline_share)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be within 0..=1");
            }
        }
        if !(0.0..1.0).contains(&self.node.headroom) {
            bail!("headroom must be within 0..1");
        }
        if self.node.cores <= 0.0 || self.node.memory_gib <= 0.0 || self.node.max_connections == 0 {
            bail!("node cores, memory-gib and max-connections must be positive");
        }
        Ok(())
    }
}

/// Per-node capacities measured against one broker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Broker RSS growth per idle connection, bytes.
    pub bytes_per_connection: f64,
    /// Broker RSS growth per subscription, bytes.
    pub bytes_per_subscription: f64,
    /// Broker RSS growth per queued QoS 1 message, bytes.
    pub bytes_per_queued_message: f64,
    /// Connections per broker CPU-second.
    pub connects_per_cpu_sec: f64,
    /// Fan-in deliveries per broker CPU-second, by QoS.
    pub fanin_per_cpu_sec: [f64; 3],
    /// Point-to-point QoS 1 deliveries per broker CPU-second.
    pub p2p_qos1_per_cpu_sec: f64,
    /// Fan-out deliveries per broker CPU-second.
    pub fanout_per_cpu_sec: f64,
    /// Where each figure came from.
    pub sources: BTreeMap<String, String>,
}

/// Options of `bench plan`.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    /// Fleet profile (TOML); see bench/fleet.example.toml.
    #[arg(long)]
    pub fleet: PathBuf,
    /// Calibrate from these results (JSON Lines from --out) instead of running scenarios.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --from: use only the runs with this label (e.g. flotilla in suite results).
    #[arg(long)]
    pub only_label: Option<String>,
    /// Open-loop telemetry rate of the fan-in calibration runs, msg/s.
    #[arg(long, default_value_t = 20_000.0)]
    pub calibration_rate: f64,
    /// Calibration scale: clients per calibration run.
    #[arg(long, default_value_t = 2000)]
    pub calibration_clients: u64,
    /// Shared options: the broker to calibrate against (--broker, --broker-pid required).
    #[command(flatten)]
    pub opts: RunOpts,
}

/// What `bench plan` computed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sizing {
    /// The profile.
    pub profile: FleetProfile,
    /// The calibration used.
    pub calibration: Calibration,
    /// Load and need figures, by name.
    pub figures: BTreeMap<String, f64>,
    /// Nodes needed by CPU, memory, disk and connections.
    pub nodes_by: BTreeMap<String, u64>,
    /// Nodes to deploy: the largest need.
    pub nodes: u64,
}

fn fig(r: &RunResult, name: &str) -> Option<f64> {
    r.figures.get(name).copied().filter(|v| v.is_finite() && *v > 0.0)
}

/// Picks the calibration figures out of results: for each figure, the median over the runs
/// that measured it (p2p only from QoS 1 runs, fan-in by QoS).
pub fn calibrate_from(results: &[RunResult]) -> Calibration {
    let mut found: BTreeMap<String, (Vec<f64>, Vec<String>)> = BTreeMap::new();
    for r in results {
        let qos: usize = r.params.get("qos").and_then(|q| q.parse().ok()).unwrap_or(0).min(2);
        let wanted: Vec<(String, &str)> = match r.scenario.as_str() {
            "conn" => vec![
                ("bytes_per_connection".into(), figure::BYTES_PER_CONNECTION),
                ("connects_per_cpu_sec".into(), figure::CONNECTS_PER_CPU_SEC),
            ],
            "subs" => vec![("bytes_per_subscription".into(), figure::BYTES_PER_SUBSCRIPTION)],
            "persist" => vec![("bytes_per_queued_message".into(), figure::BYTES_PER_QUEUED_MESSAGE)],
            "fanin" => vec![(format!("fanin_qos{qos}_per_cpu_sec"), figure::DELIVERIES_PER_CPU_SEC)],
            "p2p" if qos == 1 => vec![("p2p_qos1_per_cpu_sec".into(), figure::DELIVERIES_PER_CPU_SEC)],
            "fanout" => vec![("fanout_per_cpu_sec".into(), figure::DELIVERIES_PER_CPU_SEC)],
            _ => vec![],
        };
        for (key, name) in wanted {
            if let Some(v) = fig(r, name) {
                let e = found.entry(key).or_default();
                e.0.push(v);
                e.1.push(format!("{} {} run {}", r.scenario, r.label, r.run_id));
            }
        }
    }
    let mut c = Calibration::default();
    let mut take = |key: &str| -> f64 {
        let Some((values, sources)) = found.get(key) else {
            return 0.0;
        };
        c.sources.insert(key.to_string(), sources.join(", "));
        crate::compare::median(values)
    };
    let bytes_per_connection = take("bytes_per_connection");
    let connects_per_cpu_sec = take("connects_per_cpu_sec");
    let bytes_per_subscription = take("bytes_per_subscription");
    let bytes_per_queued_message = take("bytes_per_queued_message");
    let fanin =
        [take("fanin_qos0_per_cpu_sec"), take("fanin_qos1_per_cpu_sec"), take("fanin_qos2_per_cpu_sec")];
    let p2p = take("p2p_qos1_per_cpu_sec");
    let fanout = take("fanout_per_cpu_sec");
    c.bytes_per_connection = bytes_per_connection;
    c.connects_per_cpu_sec = connects_per_cpu_sec;
    c.bytes_per_subscription = bytes_per_subscription;
    c.bytes_per_queued_message = bytes_per_queued_message;
    c.fanin_per_cpu_sec = fanin;
    c.p2p_qos1_per_cpu_sec = p2p;
    c.fanout_per_cpu_sec = fanout;
    // Without a QoS 2 (or 1) fan-in run, assume the next lower QoS's capacity halved.
    for q in 1..3 {
        if c.fanin_per_cpu_sec[q] == 0.0 {
            c.fanin_per_cpu_sec[q] = c.fanin_per_cpu_sec[q - 1] / 2.0;
        }
    }
    c
}

/// The calibration scenarios for `profile`, scaled to `clients`, with fan-in at `rate` msg/s.
/// The memory runs come first, the largest first: later runs on the same broker reuse memory
/// freed by earlier ones and under-report their growth. Fan-in and fan-out run open loop:
/// closed loop bounds what a broker accepts, not what it delivers, so overload would measure
/// load shedding instead of capacity.
pub fn calibration_runs(profile: &FleetProfile, opts: &RunOpts, clients: u64, rate: f64) -> Vec<Scenario> {
    let f = &profile.fleet;
    let base = RunOpts {
        warmup: Dur(Duration::from_secs(2)),
        measure: Dur(Duration::from_secs(8)),
        no_progress: opts.no_progress,
        ..opts.clone()
    };
    let closed = |qos: u8, payload: u32| RunOpts { qos, payload, max: true, rate: None, ..base.clone() };
    let open = |qos: u8, payload: u32, rate: f64| RunOpts {
        qos,
        payload,
        max: false,
        rate: Some(rate),
        ..base.clone()
    };
    let mut runs = vec![Scenario::Conn(ConnArgs {
        opts: base.clone(),
        conns: clients,
        subscribe: false,
        hold: Dur(Duration::from_secs(5)),
    })];
    if f.persistent_share > 0.0 {
        runs.push(Scenario::Persist(PersistArgs {
            opts: RunOpts { qos: 1, payload: f.command_payload_bytes, ..base.clone() },
            vehicles: clients / 2,
            backends: 2,
            messages_per_vehicle: 50,
            replay_max: Dur(Duration::from_secs(60)),
        }));
    }
    runs.push(Scenario::Subs(SubsArgs {
        opts: base.clone(),
        clients: (clients / 20).max(1),
        subs_per_client: 200,
        per_packet: 10,
        sub_window: 4,
        wildcards: 0.1,
        hold: Dur(Duration::from_secs(3)),
    }));
    for q in 0..3u8 {
        if f.telemetry_qos_mix[q as usize] > 0.0 {
            runs.push(Scenario::Fanin(FaninArgs {
                opts: open(q, f.telemetry_payload_bytes, rate),
                vehicles: clients,
                backends: 4,
                shared: true,
            }));
        }
    }
    runs.push(Scenario::P2p(P2pArgs {
        opts: closed(1, f.command_payload_bytes),
        vehicles: clients,
        backends: 4,
    }));
    if f.broadcasts_per_sec > 0.0 {
        // 20 broadcasts per second, each to every calibration vehicle.
        runs.push(Scenario::Fanout(FanoutArgs {
            opts: open(0, f.command_payload_bytes, 20.0),
            vehicles: clients,
            regions: 1,
        }));
    }
    runs
}

/// Calibration figures that were not measured (zero), which make the sizing optimistic.
pub fn missing(c: &Calibration) -> Vec<&'static str> {
    [
        ("bytes per connection", c.bytes_per_connection),
        ("bytes per subscription", c.bytes_per_subscription),
        ("bytes per queued message", c.bytes_per_queued_message),
        ("connects per CPU-second", c.connects_per_cpu_sec),
        ("fan-in QoS 0 per CPU-second", c.fanin_per_cpu_sec[0]),
        ("p2p QoS 1 per CPU-second", c.p2p_qos1_per_cpu_sec),
        ("fan-out per CPU-second", c.fanout_per_cpu_sec),
    ]
    .into_iter()
    .filter(|(_, v)| *v <= 0.0)
    .map(|(name, _)| name)
    .collect()
}

/// Sizes the fleet.
pub fn size(profile: &FleetProfile, c: &Calibration) -> Sizing {
    let f = &profile.fleet;
    let n = &profile.node;
    let mut figures = BTreeMap::new();
    let telemetry = f.vehicles as f64 / f.telemetry_interval_secs;
    let commands = f.vehicles as f64 * f.commands_per_vehicle_per_hour / 3600.0;
    let broadcast = f.broadcasts_per_sec * f.vehicles as f64 / f.regions.max(1) as f64;
    let per = |load: f64, cap: f64| {
        if load == 0.0 {
            0.0
        } else if cap > 0.0 {
            load / cap
        } else {
            f64::INFINITY
        }
    };
    let telemetry_cores: f64 =
        (0..3).map(|q| per(telemetry * f.telemetry_qos_mix[q], c.fanin_per_cpu_sec[q])).sum();
    let command_cores = per(commands, c.p2p_qos1_per_cpu_sec);
    let broadcast_cores = if broadcast > 0.0 { per(broadcast, c.fanout_per_cpu_sec) } else { 0.0 };
    let connect_cores = per(f.connect_rate_per_sec, c.connects_per_cpu_sec);
    let cores = telemetry_cores + command_cores + broadcast_cores + connect_cores;
    let retention_secs = f.retention_hours * 3600.0;
    let per_offline =
        (f.commands_per_vehicle_per_hour / 3600.0 * retention_secs).min(f.queue_limit_per_session as f64);
    let queued = f.vehicles as f64 * f.persistent_share * f.offline_share * per_offline;
    let subscriptions = f.vehicles as f64 * f64::from(f.subscriptions_per_vehicle);
    let memory = f.vehicles as f64 * c.bytes_per_connection
        + subscriptions * c.bytes_per_subscription
        + queued * c.bytes_per_queued_message;
    let disk = queued * (f64::from(f.command_payload_bytes) + 64.0) * f64::from(n.replication.max(1));
    for (k, v) in [
        ("telemetry_msgs_per_sec", telemetry),
        ("commands_per_sec", commands),
        ("broadcast_deliveries_per_sec", broadcast),
        ("cores_telemetry", telemetry_cores),
        ("cores_commands", command_cores),
        ("cores_broadcast", broadcast_cores),
        ("cores_connect_peak", connect_cores),
        ("cores_total", cores),
        ("subscriptions", subscriptions),
        ("queued_messages", queued),
        ("memory_bytes", memory),
        ("disk_bytes", disk),
    ] {
        figures.insert(k.to_string(), v);
    }
    let usable = 1.0 - n.headroom;
    let gib = 1024.0 * 1024.0 * 1024.0;
    let need = |total: f64, per_node: f64| -> u64 {
        if !total.is_finite() {
            return u64::MAX;
        }
        (total / (per_node * usable)).ceil().max(1.0) as u64
    };
    let mut nodes_by = BTreeMap::new();
    nodes_by.insert("cpu".to_string(), need(cores, n.cores));
    nodes_by.insert("memory".to_string(), need(memory, n.memory_gib * gib));
    nodes_by.insert("disk".to_string(), if disk > 0.0 { need(disk, n.disk_gib * gib) } else { 1 });
    nodes_by.insert("connections".to_string(), need(f.vehicles as f64, n.max_connections as f64));
    let nodes = nodes_by.values().copied().max().unwrap_or(1);
    Sizing { profile: profile.clone(), calibration: c.clone(), figures, nodes_by, nodes }
}

/// The sizing as text.
pub fn render(s: &Sizing) -> String {
    let mut out = String::new();
    let f = &s.profile.fleet;
    let n = &s.profile.node;
    let c = &s.calibration;
    let _ = writeln!(
        out,
        "fleet: {} vehicles; node: {} cores, {} GiB memory, {} GiB disk, {:.0}% headroom",
        f.vehicles,
        n.cores,
        n.memory_gib,
        n.disk_gib,
        n.headroom * 100.0
    );
    let _ = writeln!(out, "calibration (per broker node):");
    let _ = writeln!(out, "  bytes per connection          {}", bytes(c.bytes_per_connection));
    let _ = writeln!(out, "  bytes per subscription        {}", bytes(c.bytes_per_subscription));
    let _ = writeln!(out, "  bytes per queued message      {}", bytes(c.bytes_per_queued_message));
    let _ = writeln!(out, "  connects per CPU-second       {}", count(c.connects_per_cpu_sec));
    for q in 0..3 {
        let _ = writeln!(out, "  fan-in QoS {q} per CPU-second   {}", count(c.fanin_per_cpu_sec[q]));
    }
    let _ = writeln!(out, "  p2p QoS 1 per CPU-second      {}", count(c.p2p_qos1_per_cpu_sec));
    let _ = writeln!(out, "  fan-out per CPU-second        {}", count(c.fanout_per_cpu_sec));
    let _ = writeln!(out, "load and needs:");
    for (k, v) in &s.figures {
        let text = if k.contains("bytes") {
            bytes(*v)
        } else if k.starts_with("cores") {
            format!("{v:.2}")
        } else {
            count(*v)
        };
        let _ = writeln!(out, "  {k:<30} {text}");
    }
    let _ = writeln!(out, "nodes needed:");
    for (k, v) in &s.nodes_by {
        let _ = writeln!(out, "  by {k:<27} {v}");
    }
    let _ = writeln!(out, "deploy {} nodes", s.nodes);
    for m in missing(c) {
        let _ = writeln!(
            out,
            "warning: {m} was not measured (for memory: the broker reused memory freed by an earlier run; restart it, or calibrate --from suite results); the sizing leaves it out"
        );
    }
    out
}

/// Runs `bench plan`.
pub async fn run(args: &PlanArgs) -> anyhow::Result<(Sizing, Vec<RunResult>)> {
    let profile = FleetProfile::load(&args.fleet)?;
    let results = match &args.from {
        Some(path) => {
            let mut runs = crate::report::json::read(path)?;
            if let Some(label) = &args.only_label {
                runs.retain(|r| &r.label == label);
            }
            runs
        }
        None => {
            if args.opts.broker_pid.is_empty() {
                bail!("calibration needs --broker-pid (capacities are per broker CPU-second)");
            }
            let mut results = Vec::new();
            for s in calibration_runs(&profile, &args.opts, args.calibration_clients, args.calibration_rate) {
                eprintln!("plan: calibrating with {}", s.name());
                results.push(s.run().await?);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            results
        }
    };
    let c = calibrate_from(&results);
    Ok((size(&profile, &c), results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> FleetProfile {
        let text = include_str!("../fleet.example.toml");
        toml::from_str(text).expect("example profile parses")
    }

    #[test]
    fn example_profile_is_valid() {
        let p = example();
        p.validate().expect("valid");
        assert_eq!(p.fleet.vehicles, 1_000_000);
    }

    #[test]
    fn sizing_scales_with_the_fleet() {
        let p = example();
        let c = Calibration {
            bytes_per_connection: 1000.0,
            bytes_per_subscription: 500.0,
            bytes_per_queued_message: 300.0,
            connects_per_cpu_sec: 20_000.0,
            fanin_per_cpu_sec: [100_000.0, 50_000.0, 25_000.0],
            p2p_qos1_per_cpu_sec: 50_000.0,
            fanout_per_cpu_sec: 500_000.0,
            sources: BTreeMap::new(),
        };
        let s = size(&p, &c);
        assert!(s.nodes >= 1);
        let mut bigger = p.clone();
        bigger.fleet.vehicles *= 4;
        let s4 = size(&bigger, &c);
        assert!(s4.figures["cores_telemetry"] > 3.9 * s.figures["cores_telemetry"]);
        assert!(s4.figures["memory_bytes"] > 3.9 * s.figures["memory_bytes"]);
        assert!(s4.nodes >= s.nodes);
        assert_eq!(s.nodes, *s.nodes_by.values().max().expect("some"));
    }

    #[test]
    fn calibration_picks_figures_by_scenario() {
        let mut conn = RunResult { scenario: "conn".into(), ..RunResult::default() };
        conn.figures.insert(figure::BYTES_PER_CONNECTION.into(), 900.0);
        let mut fanin = RunResult { scenario: "fanin".into(), ..RunResult::default() };
        fanin.params.insert("qos".into(), "1".into());
        fanin.figures.insert(figure::DELIVERIES_PER_CPU_SEC.into(), 40_000.0);
        let mut fanin2 = fanin.clone();
        fanin2.figures.insert(figure::DELIVERIES_PER_CPU_SEC.into(), 60_000.0);
        let mut p2p_qos0 = RunResult { scenario: "p2p".into(), ..RunResult::default() };
        p2p_qos0.figures.insert(figure::DELIVERIES_PER_CPU_SEC.into(), 1.0);
        let c = calibrate_from(&[conn, fanin, fanin2, p2p_qos0]);
        assert_eq!(c.p2p_qos1_per_cpu_sec, 0.0, "a QoS 0 p2p run says nothing about QoS 1");
        assert_eq!(c.bytes_per_connection, 900.0);
        assert_eq!(c.fanin_per_cpu_sec[1], 50_000.0);
        assert_eq!(c.fanin_per_cpu_sec[2], 25_000.0);
    }
}
