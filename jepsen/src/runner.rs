//! One test run: network and nodes up, workload and nemesis concurrently for the time
//! limit, heal, drain, stop, check, report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::check::{self, Verdict};
use crate::cluster::{Cluster, Net, NetMode, Node, NodeError, NodeOpts};
use crate::history::{History, HistoryError, Kind, Meta, Recorder};
use crate::nemesis::{self, FaultKind};
use crate::report;
use crate::workload::{Phase, WorkCtx, Workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct TestOpts {
    /// The workload.
    pub workload: Workload,
    /// Enabled fault kinds (empty: no faults).
    pub nemesis: Vec<FaultKind>,
    /// Main phase length.
    pub time_limit: Duration,
    /// Seed of op streams and schedule.
    pub seed: u64,
    /// Client processes at a time.
    pub concurrency: usize,
    /// Operations per second overall.
    pub rate: f64,
    /// Broker nodes.
    pub nodes: usize,
    /// The `flotilla` binary.
    pub bin: PathBuf,
    /// Directory for the history, node data and logs, and the report.
    pub out: PathBuf,
    /// Try network namespaces (root); otherwise 127.0.0.x.
    pub netns: bool,
    /// FLOTILLA_TEST_BUG for the nodes (a `test-bugs` build).
    pub test_bug: Option<String>,
    /// Bound on the drain.
    pub final_time_limit: Duration,
    /// After this an operation is `info`.
    pub op_timeout: Duration,
}

/// Harness failures (not verdicts).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A node could not be started or controlled.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The history could not be written.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Files.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The options cannot work.
    #[error("{0}")]
    Setup(String),
}

/// A finished run.
#[derive(Debug)]
pub struct RunResult {
    /// The checkers' verdict.
    pub verdict: Verdict,
    /// The history.
    pub history: History,
    /// Where everything was written.
    pub dir: PathBuf,
}

static RUNS: AtomicU8 = AtomicU8::new(0);

/// Size of each node's data filesystem with the disk-full nemesis, MiB.
pub const DISK_MIB: u64 = 128;

fn run_id() -> u8 {
    let base = (std::process::id() % 200) as u8;
    (base.wrapping_add(RUNS.fetch_add(1, Ordering::Relaxed).wrapping_mul(7)) % 250) + 1
}

fn free_port(ip: &str) -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Runs one test.
pub async fn run(opts: &TestOpts) -> Result<RunResult, RunError> {
    if !opts.bin.exists() {
        return Err(RunError::Setup(format!(
            "broker binary {} not found (cargo build --release -p node)",
            opts.bin.display()
        )));
    }
    let dir = opts.out.clone();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let net = Net::setup(run_id(), opts.nodes, opts.netns, free_port("127.0.0.10")?);
    if opts.nemesis.contains(&FaultKind::Partition) && (net.mode != NetMode::Namespaces || opts.nodes < 2) {
        return Err(RunError::Setup(
            "the partition nemesis needs network namespaces and --nodes >= 2".into(),
        ));
    }
    let clock = opts.nemesis.contains(&FaultKind::Clock);
    if clock && !Path::new(crate::cluster::node::LIBFAKETIME).exists() {
        return Err(RunError::Setup(
            "the clock nemesis needs libfaketime (apt-get install -y faketime)".into(),
        ));
    }
    let node_opts = NodeOpts {
        test_bug: opts.test_bug.clone(),
        fake_clock: clock,
        disk_mib: opts.nemesis.contains(&FaultKind::DiskFull).then_some(DISK_MIB),
    };
    let mut nodes = Vec::new();
    for i in 0..opts.nodes {
        let node_dir = dir.join(format!("n{}", i + 1));
        nodes.push(Node::new(i, net.addr(i), &opts.bin, &node_dir, net.exec_prefix(i), &node_opts)?);
    }
    let mut cluster = Cluster { nodes, net };
    for n in &mut cluster.nodes {
        n.start(Duration::from_secs(30)).await?;
    }
    let limit_ms = opts.time_limit.as_millis() as u64;
    let schedule = nemesis::schedule(opts.seed, &opts.nemesis, opts.nodes, limit_ms);
    let meta = Meta {
        seed: opts.seed,
        workload: opts.workload.name().into(),
        nemesis: opts.nemesis.iter().map(|k| k.name().to_string()).collect(),
        time_limit_s: opts.time_limit.as_secs(),
        concurrency: opts.concurrency,
        rate: opts.rate,
        nodes: opts.nodes,
        net: if cluster.net.mode == NetMode::Namespaces { "netns" } else { "loopback" }.into(),
        broker: opts.bin.display().to_string(),
        test_bug: opts.test_bug.clone(),
        schedule: schedule.clone(),
    };
    let rec = Recorder::create(&dir.join("history.jsonl"), &meta)?;
    let addrs = cluster.nodes.iter().map(|n| n.addr).collect();
    let cluster = Arc::new(Mutex::new(cluster));
    let (phase_tx, phase_rx) = watch::channel(Phase::Main);
    let ctx = WorkCtx {
        rec: rec.clone(),
        addrs,
        seed: opts.seed,
        concurrency: opts.concurrency,
        rate: opts.rate,
        phase: phase_rx.clone(),
        op_timeout: opts.op_timeout,
        final_time_limit: opts.final_time_limit,
    };
    tracing::info!(dir = %dir.display(), faults = schedule.len(), "run started");
    let t0 = Instant::now();
    let workload = tokio::spawn(opts.workload.run(ctx));
    let nem = tokio::spawn(nemesis::execute(schedule, cluster.clone(), rec.clone(), phase_rx, t0));
    tokio::time::sleep(opts.time_limit).await;
    tracing::info!("main phase over; healing");
    let _ = phase_tx.send(Phase::Heal);
    if tokio::time::timeout(Duration::from_secs(90), nem).await.is_err() {
        tracing::error!("nemesis did not finish healing in time");
    }
    // Every node must be up for the drain.
    let healed = nemesis::run::heal_all(&mut *cluster.lock().await).await;
    rec.nemesis(Kind::Info, "healthy", None, json!({"ok": healed.is_ok(), "detail": healed.err()}));
    let _ = phase_tx.send(Phase::Drain);
    tracing::info!("draining");
    let bound = opts.final_time_limit + Duration::from_secs(60);
    let caught_up = matches!(tokio::time::timeout(bound, workload).await, Ok(Ok(true)));
    rec.nemesis(Kind::Info, "drain", None, json!({"caught_up": caught_up}));
    let panics = {
        let mut c = cluster.lock().await;
        c.stop_all();
        c.nodes.iter().map(Node::panics).sum::<usize>()
    };
    rec.nemesis(Kind::Info, "node-logs", None, json!({"panics": panics}));
    let history = History { meta, events: rec.finish() };
    let verdict = check::check(&history);
    report::write(&dir, &history, &verdict)?;
    Ok(RunResult { verdict, history, dir })
}

/// Checks a saved history and writes the report next to it (or into `out`).
pub fn check_file(path: &Path, out: Option<&Path>) -> Result<RunResult, RunError> {
    let history = History::read(path)?;
    let verdict = check::check(&history);
    let dir = out.map_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    report::write(&dir, &history, &verdict)?;
    Ok(RunResult { verdict, history, dir })
}
