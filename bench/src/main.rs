//! The `bench` binary: `bench SCENARIO [options]`, `bench compare`, `bench plan`,
//! `bench report`, `bench suite`, `bench cluster-compare`; `bench worker` is the worker-process entry point.

use std::path::PathBuf;

use anyhow::Context;
use bench::cluster::{self, ClusterCompareArgs};
use bench::compare::{self, CompareArgs};
use bench::plan::{self, PlanArgs};
use bench::report::{html, json, table};
use bench::result::RunResult;
use bench::scenario::Scenario;
use bench::scenario::opts::RunOpts;
use bench::suite::{self, SuiteArgs};
use clap::{Parser, Subcommand};

/// Capacity-planning harness for MQTT brokers: load scenarios, comparisons and fleet sizing.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Scenario(Scenario),
    /// Run one scenario against two brokers alternately (A B A B, at least 3 pairs) and report
    /// the ratio per pair and the median.
    Compare(CompareArgs),
    /// Size a fleet deployment: calibrate one broker node with the scenarios, then divide
    /// the fleet profile's load by the measured capacities.
    Plan(PlanArgs),
    /// Run the goal scenarios against Flotilla and Mosquitto (fresh brokers, alternating)
    /// and write BENCHMARKS.md, a JSON Lines file and an HTML report.
    Suite(SuiteArgs),
    /// One single-node Flotilla against a local N-node cluster (fresh processes, clients
    /// spread over the nodes), scenario by scenario, alternating; reports msg/s, broker CPU
    /// per delivered message and forward wire bytes per payload byte.
    ClusterCompare(ClusterCompareArgs),
    /// Render an HTML report from JSON Lines results.
    Report(ReportArgs),
    /// Worker process entry point (used by bench itself).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// JSON Lines files written with --out.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// HTML file to write.
    #[arg(long)]
    html: PathBuf,
    /// Report title.
    #[arg(long, default_value = "Flotilla bench report")]
    title: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Worker = cli.cmd {
        return bench::worker::worker_main();
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(cli.cmd))
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Scenario(s) => {
            let r = s.run().await?;
            output(s.opts(), &[r])
        }
        Cmd::Compare(args) => {
            let c = compare::run(&args).await?;
            let opts = args.scenario.opts();
            if opts.json {
                println!("{}", serde_json::to_string(&c)?);
            } else {
                print!("{}", compare::render(&c));
            }
            if let Some(path) = &opts.out {
                json::append(path, &c.runs)?;
            }
            if let Some(path) = &opts.html {
                let title = format!("{}: {} vs {}", c.scenario, c.a.label, c.b.label);
                write_html(path, &html::render(&title, &c.runs, Some(&compare::render(&c))))?;
            }
            Ok(())
        }
        Cmd::Plan(args) => {
            let (sizing, results) = plan::run(&args).await?;
            if args.opts.json {
                println!("{}", serde_json::to_string(&sizing)?);
            } else {
                print!("{}", plan::render(&sizing));
            }
            if let Some(path) = &args.opts.out {
                json::append(path, &results)?;
            }
            if let Some(path) = &args.opts.html {
                write_html(
                    path,
                    &html::render("Fleet plan calibration", &results, Some(&plan::render(&sizing))),
                )?;
            }
            Ok(())
        }
        Cmd::Suite(args) => {
            let text = suite::run(&args).await?;
            print!("{text}");
            Ok(())
        }
        Cmd::ClusterCompare(args) => {
            let (c, _runs) = cluster::run(&args).await?;
            if args.json {
                println!("{}", serde_json::to_string(&c)?);
            } else {
                print!("{}", cluster::render(&c));
            }
            Ok(())
        }
        Cmd::Report(args) => {
            let mut runs = Vec::new();
            for p in &args.inputs {
                runs.extend(json::read(p)?);
            }
            write_html(&args.html, &html::render(&args.title, &runs, None))
        }
        Cmd::Worker => Ok(()),
    }
}

fn output(opts: &RunOpts, results: &[RunResult]) -> anyhow::Result<()> {
    for r in results {
        if opts.json {
            println!("{}", json::line(r)?);
        } else {
            print!("{}", table::render(r));
        }
    }
    if let Some(path) = &opts.out {
        json::append(path, results)?;
    }
    if let Some(path) = &opts.html {
        let title = results.first().map_or("bench".into(), |r| format!("{} against {}", r.scenario, r.label));
        write_html(path, &html::render(&title, results, None))?;
    }
    Ok(())
}

fn write_html(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
