//! `jepsen`: run a fault-injection test against Flotilla nodes, or check a saved history.
//!
//! Exit codes: 0 pass, 1 a safety violation, 2 unknown or a harness error.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jepsen::nemesis::FaultKind;
use jepsen::runner::{self, TestOpts};
use jepsen::workload::Workload;

#[derive(Parser)]
#[command(about = "Jepsen-style fault-injection tests for Flotilla")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start nodes, run a workload under a seeded nemesis, heal, drain and check.
    Test {
        /// queue, retained, session or will.
        #[arg(long, value_enum)]
        workload: Workload,
        /// Comma-separated faults: kill, pause, clock, disk-full, partition; or "none".
        #[arg(long, default_value = "kill,pause,clock")]
        nemesis: String,
        /// Main phase length, seconds.
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Seed of the op streams and the fault schedule.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Client processes at a time.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Operations per second, all processes together.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Broker nodes.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// The flotilla binary (default: $CARGO_TARGET_DIR or target, /release/flotilla).
        #[arg(long)]
        bin: Option<PathBuf>,
        /// Output directory (default: jepsen-store/<workload>-<seed>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not try network namespaces; use 127.0.0.x addresses.
        #[arg(long)]
        no_netns: bool,
        /// FLOTILLA_TEST_BUG for a `test-bugs` build of the broker.
        #[arg(long)]
        test_bug: Option<String>,
        /// Bound on the final drain, seconds.
        #[arg(long, default_value_t = 60)]
        final_time_limit: u64,
    },
    /// Re-run the checkers on a saved history.jsonl and rewrite the report next to it.
    Check {
        /// The history file.
        history: PathBuf,
        /// Where to write the report (default: the history's directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn default_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("release").join("flotilla")
}

fn parse_nemesis(s: &str) -> anyhow::Result<Vec<FaultKind>> {
    use clap::ValueEnum;
    if s == "none" || s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|k| FaultKind::from_str(k.trim(), true).map_err(|e| anyhow::anyhow!("nemesis {k}: {e}")))
        .collect()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn real_main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { history, out } => runner::check_file(&history, out.as_deref())?,
        Cmd::Test {
            workload,
            nemesis,
            time_limit,
            seed,
            concurrency,
            rate,
            nodes,
            bin,
            out,
            no_netns,
            test_bug,
            final_time_limit,
        } => {
            let opts = TestOpts {
                workload,
                nemesis: parse_nemesis(&nemesis)?,
                time_limit: Duration::from_secs(time_limit),
                seed,
                concurrency,
                rate,
                nodes,
                bin: bin.unwrap_or_else(default_bin),
                out: out.unwrap_or_else(|| PathBuf::from(format!("jepsen-store/{}-{seed}", workload.name()))),
                netns: !no_netns,
                test_bug,
                final_time_limit: Duration::from_secs(final_time_limit),
                op_timeout: Duration::from_secs(5),
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async {
                tokio::select! {
                    r = runner::run(&opts) => r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; nodes and namespaces cleaned up")),
                }
            })?
        }
    };
    print!("{}", jepsen::report::summary(&result.history, &result.verdict));
    println!("report: {}", result.dir.join("report.html").display());
    Ok(result.verdict.exit_code())
}
