//! SHELL. `bench suite`: the goal scenarios against Flotilla and Mosquitto, each run
//! on a freshly started broker (so memory figures start from a clean process), alternating
//! Flotilla and Mosquitto for every pair, then written to `BENCHMARKS.md` (between generated
//! markers; the rest of the file is kept), a JSON Lines file of every run and an HTML report.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::brokers::{Kind, LocalBroker, version};
use crate::compare::{self, Comparison, Target};
use crate::report::{figure_value, html, json};
use crate::result::{RunResult, figure};
use crate::scenario::Scenario;
use crate::scenario::conn::ConnArgs;
use crate::scenario::fanin::FaninArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::opts::{Dur, RunOpts};
use crate::scenario::p2p::P2pArgs;
use crate::scenario::persist::PersistArgs;
use crate::scenario::storm::StormArgs;
use crate::scenario::subs::SubsArgs;

const BEGIN: &str = "<!-- bench suite: generated section begins -->";
const END: &str = "<!-- bench suite: generated section ends -->";

/// Options of `bench suite`.
#[derive(Clone, Debug, clap::Args)]
pub struct SuiteArgs {
    /// The Flotilla binary.
    #[arg(long, default_value = "target/release/flotilla")]
    pub flotilla: PathBuf,
    /// Run Flotilla with its default durable journal (fsync per batch) instead of in memory
    /// like the Mosquitto configuration.
    #[arg(long)]
    pub durable: bool,
    /// The Mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Flotilla/Mosquitto pairs per experiment (at least 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub pairs: u32,
    /// Markdown file to write the results into.
    #[arg(long, default_value = "bench/BENCHMARKS.md")]
    pub md: PathBuf,
    /// Directory for the JSON Lines results and the HTML report.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// Shorter windows and smaller fleets (a smoke test of the suite itself).
    #[arg(long)]
    pub quick: bool,
    /// Run only these experiments (comma separated ids).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// No live progress display.
    #[arg(long)]
    pub no_progress: bool,
    /// Do not run anything: re-render the markdown and HTML from an earlier suite.jsonl.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

/// What a goal asks of the Flotilla/Mosquitto ratio of a figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Want {
    /// Flotilla / Mosquitto at least this (higher is better).
    AtLeast(f64),
    /// Flotilla no more than Mosquitto (lower is better).
    NoMore,
    /// Reported, no target.
    Info,
}

/// One experiment: a scenario run on both brokers.
pub struct Experiment {
    /// Short id.
    pub id: &'static str,
    /// The scenario.
    pub scenario: Scenario,
}

/// One row of the goals table.
pub struct Goal {
    /// What is measured.
    pub what: &'static str,
    /// Experiment id.
    pub experiment: &'static str,
    /// Figure name.
    pub figure: &'static str,
    /// The target.
    pub want: Want,
}

/// The experiments of the suite.
pub fn experiments(base: &RunOpts, quick: bool) -> Vec<Experiment> {
    let scale = |n: u64| if quick { (n / 5).max(10) } else { n };
    let timed = RunOpts {
        warmup: Dur(Duration::from_secs(if quick { 1 } else { 2 })),
        measure: Dur(Duration::from_secs(if quick { 3 } else { 10 })),
        ..base.clone()
    };
    let closed = |qos: u8| RunOpts { qos, max: true, window: 32, ..timed.clone() };
    let open = |qos: u8, rate: f64| RunOpts { qos, rate: Some(rate), ..timed.clone() };
    vec![
        Experiment {
            id: "p2p-qos0-max",
            scenario: Scenario::P2p(P2pArgs { opts: closed(0), vehicles: scale(1000), backends: 4 }),
        },
        Experiment {
            id: "p2p-qos1-max",
            scenario: Scenario::P2p(P2pArgs { opts: closed(1), vehicles: scale(1000), backends: 4 }),
        },
        Experiment {
            id: "fanin-wildcard",
            scenario: Scenario::Fanin(FaninArgs {
                opts: open(0, 20_000.0),
                vehicles: scale(2000),
                backends: 2,
                shared: false,
            }),
        },
        Experiment {
            id: "fanout",
            scenario: Scenario::Fanout(FanoutArgs { opts: open(0, 20.0), vehicles: scale(5000), regions: 1 }),
        },
        Experiment {
            id: "subs",
            scenario: Scenario::Subs(SubsArgs {
                opts: timed.clone(),
                clients: scale(100),
                subs_per_client: 1000,
                per_packet: 10,
                sub_window: 4,
                wildcards: 0.1,
                hold: Dur(Duration::from_secs(3)),
            }),
        },
        Experiment {
            id: "conn-idle",
            scenario: Scenario::Conn(ConnArgs {
                opts: timed.clone(),
                conns: scale(10_000),
                subscribe: false,
                hold: Dur(Duration::from_secs(if quick { 3 } else { 12 })),
            }),
        },
        Experiment {
            id: "p2p-5k-latency",
            scenario: Scenario::P2p(P2pArgs { opts: open(0, 5000.0), vehicles: scale(1000), backends: 4 }),
        },
        Experiment {
            id: "persist",
            scenario: Scenario::Persist(PersistArgs {
                opts: open(1, 5000.0),
                vehicles: scale(1000),
                backends: 2,
                messages_per_vehicle: 20,
                replay_max: Dur(Duration::from_secs(60)),
            }),
        },
        Experiment {
            id: "storm",
            scenario: Scenario::Storm(StormArgs {
                // As fast as possible, but no more attempts in flight than a listen backlog of
                // 100 holds: beyond it SYNs are dropped and retried after 1 s, and the figure
                // would measure the kernel's retransmission timer.
                opts: RunOpts { connect_rate: 0.0, connect_concurrency: 64, ..open(1, 2000.0) },
                vehicles: scale(2000),
                backends: 4,
                fraction: 0.5,
                clean: false,
                graceful: false,
            }),
        },
    ]
}

/// The goals of the issue, and informational rows.
pub fn goals() -> Vec<Goal> {
    use figure::*;
    let g = |what, experiment, figure, want| Goal { what, experiment, figure, want };
    vec![
        g(
            "p2p QoS 0, deliveries per broker CPU-second",
            "p2p-qos0-max",
            DELIVERIES_PER_CPU_SEC,
            Want::AtLeast(2.0),
        ),
        g(
            "p2p QoS 1, deliveries per broker CPU-second",
            "p2p-qos1-max",
            DELIVERIES_PER_CPU_SEC,
            Want::AtLeast(2.0),
        ),
        g(
            "fan-in, deliveries per broker CPU-second",
            "fanin-wildcard",
            DELIVERIES_PER_CPU_SEC,
            Want::AtLeast(12.0),
        ),
        g("fan-out, deliveries per broker CPU-second", "fanout", DELIVERIES_PER_CPU_SEC, Want::AtLeast(50.0)),
        g("subscriptions per broker CPU-second", "subs", SUBSCRIBES_PER_CPU_SEC, Want::AtLeast(2.0)),
        g("broker bytes per idle connection", "conn-idle", BYTES_PER_CONNECTION, Want::NoMore),
        g("broker bytes per subscription", "subs", BYTES_PER_SUBSCRIPTION, Want::NoMore),
        g("p99 latency at 5,000 msg/s (QoS 0)", "p2p-5k-latency", LATENCY_P99_US, Want::NoMore),
        g("p2p QoS 0 closed loop, deliveries per second", "p2p-qos0-max", DELIVERIES_PER_SEC, Want::Info),
        g("p2p QoS 1 closed loop, deliveries per second", "p2p-qos1-max", DELIVERIES_PER_SEC, Want::Info),
        g("connects per broker CPU-second", "conn-idle", CONNECTS_PER_CPU_SEC, Want::Info),
        g("p50 latency at 5,000 msg/s (QoS 0)", "p2p-5k-latency", LATENCY_P50_US, Want::Info),
        g("p99.9 latency at 5,000 msg/s (QoS 0)", "p2p-5k-latency", LATENCY_P999_US, Want::Info),
        g("persistent sessions: replayed messages per second", "persist", REPLAY_PER_SEC, Want::Info),
        g(
            "persistent sessions: broker bytes per queued message",
            "persist",
            BYTES_PER_QUEUED_MESSAGE,
            Want::Info,
        ),
        g("storm: reconnects per second", "storm", RECONNECTS_PER_SEC, Want::Info),
        g("storm: commands lost", "storm", LOST, Want::Info),
    ]
}

fn met(want: Want, ratio: f64) -> &'static str {
    match want {
        Want::AtLeast(x) if ratio >= x => "yes",
        Want::NoMore if ratio <= 1.0 => "yes",
        Want::Info => "",
        _ if ratio.is_nan() => "n/a",
        _ => "**no**",
    }
}

fn ratio_text(r: f64) -> String {
    if r.is_finite() { format!("{r:.2}") } else { "-".into() }
}

fn target_text(want: Want) -> String {
    match want {
        Want::AtLeast(x) => format!(">= {x}x"),
        Want::NoMore => "<= 1x".into(),
        Want::Info => "-".into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git_describe() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs the suite (or reads an earlier one with `--from`) and writes its outputs.
pub async fn run(args: &SuiteArgs) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let jsonl = args.out_dir.join("suite.jsonl");
    let all = match &args.from {
        Some(path) => json::read(path)?,
        None => run_all(args, &jsonl).await?,
    };
    let mut comparisons: BTreeMap<&'static str, Comparison> = BTreeMap::new();
    let t = |label: &str| Target {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        pid: None,
        label: label.into(),
    };
    for exp in experiments(&RunOpts::default(), args.quick) {
        let runs: Vec<RunResult> = all
            .iter()
            .filter(|r| r.params.get("experiment").map(String::as_str) == Some(exp.id))
            .cloned()
            .collect();
        if !runs.is_empty() {
            comparisons.insert(
                exp.id,
                compare::summarize(exp.scenario.name(), &t("flotilla"), &t("mosquitto"), runs),
            );
        }
    }
    let load_of =
        |r: Option<&RunResult>| r.and_then(|r| r.params.get("load_avg").cloned()).unwrap_or_default();
    let load = format!("{} at the first run, {} at the last", load_of(all.first()), load_of(all.last()));
    let text = markdown(args, &comparisons, &suite_command(args), &load);
    write_markdown(&args.md, &text)?;
    let summary: String = comparisons.values().map(compare::render).collect::<Vec<_>>().join("\n");
    let html_path = args.out_dir.join("suite.html");
    std::fs::write(&html_path, html::render("Flotilla vs Mosquitto", &all, Some(&summary)))
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    eprintln!("wrote {} and {}", args.md.display(), html_path.display());
    Ok(text)
}

/// Runs every experiment on fresh brokers, appending each result to `jsonl`.
async fn run_all(args: &SuiteArgs, jsonl: &PathBuf) -> anyhow::Result<Vec<RunResult>> {
    let config = if args.durable {
        None
    } else {
        let path = args.out_dir.join("flotilla-in-memory.toml");
        std::fs::write(&path, "[storage]\npersistence = false\n")
            .context("cannot write the Flotilla config")?;
        Some(path)
    };
    let flotilla = Kind::Flotilla { exe: args.flotilla.clone(), config };
    let mosquitto = Kind::Mosquitto { exe: args.mosquitto.clone() };
    let base = RunOpts { no_progress: args.no_progress, ..RunOpts::default() };
    let _ = std::fs::remove_file(jsonl);
    let mut all = Vec::new();
    for exp in experiments(&base, args.quick) {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == exp.id) {
            continue;
        }
        for pair in 0..args.pairs {
            for (label, kind) in [("flotilla", &flotilla), ("mosquitto", &mosquitto)] {
                eprintln!("suite: {} pair {}/{} on {label}", exp.id, pair + 1, args.pairs);
                let load = loadavg();
                let mut broker = LocalBroker::start(kind)?;
                let mut s = exp.scenario.clone();
                let o = s.opts_mut();
                o.broker = broker.addr.into();
                o.broker_pid = vec![broker.pid];
                o.label = label.into();
                let r = s.run().await.with_context(|| format!("{} on {label}", exp.id));
                broker.stop();
                let mut r = r?;
                r.params.insert("experiment".into(), exp.id.into());
                r.params.insert("load_avg".into(), load);
                json::append(jsonl, std::slice::from_ref(&r))?;
                all.push(r);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Ok(all)
}

fn suite_command(args: &SuiteArgs) -> String {
    let mut c = format!(
        "cargo run --release -p bench -- suite --flotilla {} --mosquitto {} --pairs {}",
        args.flotilla.display(),
        args.mosquitto.display(),
        args.pairs
    );
    if args.durable {
        c.push_str(" --durable");
    }
    if args.quick {
        c.push_str(" --quick");
    }
    c
}

/// The generated section of BENCHMARKS.md.
pub fn markdown(
    args: &SuiteArgs,
    comparisons: &BTreeMap<&'static str, Comparison>,
    command: &str,
    load: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "Generated by `{command}` (after `cargo build --release -p node --bin flotilla -p bench`).\n"
    );
    let _ = writeln!(
        out,
        "- Machine: {}; the brokers and the load generator share it, and so may other work (load average {load}): absolute rates vary with that, per-CPU-second and per-connection figures much less.",
        machine()
    );
    let _ = writeln!(
        out,
        "- Flotilla: `{}` ({}), tree `{}`, {}.",
        args.flotilla.display(),
        version(&args.flotilla, "--version"),
        git_describe(),
        if args.durable {
            "durable journal (default config)"
        } else {
            "in memory (`[storage] persistence = false`)"
        }
    );
    let _ = writeln!(
        out,
        "- Mosquitto: `{}` ({}), `persistence false`, `max_connections -1`, `log_type error` + `warning`.",
        args.mosquitto.display(),
        version(&args.mosquitto, "-h")
    );
    let _ = writeln!(
        out,
        "- Every run starts a fresh broker; runs alternate Flotilla, Mosquitto for {} pairs; figures are medians of the pairs, the ratio is the median of the per-pair ratios Flotilla / Mosquitto.\n",
        args.pairs
    );
    let _ =
        writeln!(out, "| goal | experiment | Flotilla | Mosquitto | Flotilla / Mosquitto | target | met |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---|---|");
    for g in goals() {
        let Some(c) = comparisons.get(g.experiment) else {
            continue;
        };
        let a = c.median_a.get(g.figure).copied().unwrap_or(f64::NAN);
        let b = c.median_b.get(g.figure).copied().unwrap_or(f64::NAN);
        let r = c.median_ratio.get(g.figure).copied().unwrap_or(f64::NAN);
        let ratios: Vec<String> = c
            .pairs
            .get(g.figure)
            .map(|p| p.iter().map(|p| ratio_text(p.ratio)).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | **{}** ({}) | {} | {} |",
            g.what,
            g.experiment,
            figure_value(g.figure, a),
            figure_value(g.figure, b),
            ratio_text(r),
            ratios.join(", "),
            target_text(g.want),
            met(g.want, r)
        );
    }
    let _ = writeln!(out, "\n### Experiments\n");
    for e in experiments(&RunOpts::default(), args.quick) {
        let Some(c) = comparisons.get(e.id) else {
            continue;
        };
        let params = c
            .runs
            .first()
            .map(|r| {
                r.params
                    .iter()
                    .filter(|(k, _)| *k != "experiment" && *k != "load_avg")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let _ = writeln!(out, "- `{}`: `{}` {}", e.id, e.scenario.name(), params);
        let notes: Vec<String> =
            c.runs.iter().flat_map(|r| r.notes.iter().map(move |n| format!("{}: {n}", r.label))).collect();
        let mut seen = Vec::new();
        for n in notes {
            if !seen.contains(&n) && seen.len() < 6 {
                let _ = writeln!(out, "  - note: {n}");
                seen.push(n);
            }
        }
    }
    let _ = writeln!(out, "\nEvery figure of every experiment (medians):\n");
    let _ = writeln!(out, "| experiment | figure | Flotilla | Mosquitto | F / M |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for (id, c) in comparisons {
        for (name, r) in &c.median_ratio {
            let a = c.median_a.get(name).copied().unwrap_or(f64::NAN);
            let b = c.median_b.get(name).copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "| `{id}` | {name} | {} | {} | {} |",
                figure_value(name, a),
                figure_value(name, b),
                ratio_text(*r)
            );
        }
    }
    let _ = writeln!(out, "{END}");
    out
}

/// Replaces the generated section of the file (or creates it), keeping the rest.
pub fn write_markdown(path: &PathBuf, generated: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &old[..b], generated.trim_end(), &old[e + END.len()..])
        }
        _ => format!("# Benchmarks\n\n{generated}"),
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_goal_names_an_experiment() {
        let ids: Vec<&str> = experiments(&RunOpts::default(), false).iter().map(|e| e.id).collect();
        for g in goals() {
            assert!(ids.contains(&g.experiment), "{}", g.experiment);
        }
    }

    #[test]
    fn regenerating_keeps_hand_written_text() {
        let dir = std::env::temp_dir().join(format!("bench-suite-md-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("B.md");
        write_markdown(&path, &format!("{BEGIN}\none\n{END}\n")).expect("write");
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("\n## Analysis\nhand written\n");
        std::fs::write(&path, text).expect("write");
        write_markdown(&path, &format!("{BEGIN}\ntwo\n{END}\n")).expect("rewrite");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("two") && !text.contains("one\n") && text.contains("hand written"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn goal_verdicts() {
        assert_eq!(met(Want::AtLeast(2.0), 2.5), "yes");
        assert_eq!(met(Want::AtLeast(2.0), 1.5), "**no**");
        assert_eq!(met(Want::NoMore, 0.9), "yes");
        assert_eq!(met(Want::NoMore, f64::NAN), "n/a");
    }
}
