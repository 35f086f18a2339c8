//! SHELL. Runs engine workers and talks to them: in threads of this process, or as
//! `bench worker` subprocesses so a run can hold more connections than one process may open
//! (each process here is limited to 20,000 files).
//!
//! Subprocess protocol, one JSON value per line: the coordinator writes the [`WorkerSpec`]
//! and then [`Command`]s to the worker's stdin; the worker writes [`Event`]s to its stdout.
//! The worker's stderr is inherited (diagnostics only). A worker exits after `Shutdown` or
//! when its stdin closes, and is killed if its handle is dropped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;

use crate::engine::proto::{Command, Event, WorkerSpec};

/// Commands queued per worker.
const COMMAND_QUEUE: usize = 64;

/// Events queued from all workers.
const EVENT_QUEUE: usize = 4096;

/// Longest a JSON line from a worker may be (a report with large bitmaps).
const LINE_MAX: usize = 512 * 1024 * 1024;

/// Where workers run.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Threads of this process (tests, small runs).
    InProcess,
    /// `EXE worker` subprocesses.
    Subprocess {
        /// The bench binary.
        exe: PathBuf,
    },
}

enum Handle {
    Thread(std::thread::JoinHandle<()>),
    Process(Child),
}

/// A set of running workers.
pub struct WorkerSet {
    commands: Vec<mpsc::Sender<Command>>,
    events: mpsc::Receiver<(u32, Event)>,
    handles: Vec<Handle>,
}

impl WorkerSet {
    /// Starts one worker per spec.
    pub async fn start(specs: Vec<WorkerSpec>, mode: &Mode) -> anyhow::Result<Self> {
        let (ev_tx, events) = mpsc::channel(EVENT_QUEUE);
        let mut set = Self { commands: Vec::new(), events, handles: Vec::new() };
        for spec in specs {
            let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
            let handle = match mode {
                Mode::InProcess => start_thread(spec, cmd_rx, ev_tx.clone())?,
                Mode::Subprocess { exe } => start_process(exe, spec, cmd_rx, ev_tx.clone()).await?,
            };
            set.commands.push(cmd_tx);
            set.handles.push(handle);
        }
        Ok(set)
    }

    /// Process ids of the workers (this process for in-process workers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .handles
            .iter()
            .map(|h| match h {
                Handle::Thread(_) => std::process::id(),
                Handle::Process(c) => c.id().unwrap_or(0),
            })
            .filter(|&p| p != 0)
            .collect();
        pids.dedup();
        pids
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Sends `cmd` to every worker.
    pub async fn send_all(&self, cmd: &Command) -> anyhow::Result<()> {
        for (i, tx) in self.commands.iter().enumerate() {
            tx.send(cmd.clone()).await.map_err(|_| anyhow!("worker {i} is gone"))?;
        }
        Ok(())
    }

    /// The next event from any worker; `None` once all have exited.
    pub async fn next_event(&mut self) -> Option<(u32, Event)> {
        self.events.recv().await
    }

    /// Closes the command channels and waits up to `grace` for the workers to exit; kills
    /// subprocesses that do not.
    pub async fn finish(mut self, grace: Duration) {
        self.commands.clear();
        let deadline = tokio::time::Instant::now() + grace;
        // Keep draining events so no worker blocks on a full channel while exiting.
        let drain = async { while self.events.recv().await.is_some() {} };
        let _ = tokio::time::timeout_at(deadline, drain).await;
        for h in self.handles {
            match h {
                Handle::Thread(t) => {
                    // The thread ends once its command channel is closed and its tasks stop.
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
                Handle::Process(mut c) => {
                    if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
                        let _ = c.kill().await;
                    }
                }
            }
        }
    }
}

fn start_thread(
    spec: WorkerSpec,
    cmd_rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<(u32, Event)>,
) -> anyhow::Result<Handle> {
    let id = spec.worker;
    let (inner_tx, mut inner_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    tokio::spawn(async move {
        while let Some(e) = inner_rx.recv().await {
            if ev_tx.send((id, e)).await.is_err() {
                return;
            }
        }
    });
    let thread = std::thread::Builder::new()
        .name(format!("bench-worker-{id}"))
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, crate::engine::run(spec, cmd_rx, inner_tx));
        })
        .context("cannot start worker thread")?;
    Ok(Handle::Thread(thread))
}

async fn start_process(
    exe: &PathBuf,
    spec: WorkerSpec,
    mut cmd_rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<(u32, Event)>,
) -> anyhow::Result<Handle> {
    let id = spec.worker;
    let mut child = Process::new(exe)
        .arg("worker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start worker process {}", exe.display()))?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let mut first = serde_json::to_string(&spec)?;
    first.push('\n');
    stdin.write_all(first.as_bytes()).await.context("cannot send the spec to a worker")?;
    tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            let Ok(mut line) = serde_json::to_string(&cmd) else {
                return;
            };
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
        // Dropping stdin tells the worker to shut down.
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let event = match lines.next_line().await {
                Ok(Some(line)) if line.len() <= LINE_MAX => serde_json::from_str::<Event>(&line)
                    .unwrap_or_else(|e| Event::Failed(format!("worker {id} sent an unreadable event: {e}"))),
                Ok(Some(_)) => Event::Failed(format!("worker {id} sent an oversized line")),
                Ok(None) => Event::Failed(format!("worker {id} exited")),
                Err(e) => Event::Failed(format!("worker {id} output: {e}")),
            };
            let last = matches!(&event, Event::Failed(_));
            if ev_tx.send((id, event)).await.is_err() || last {
                return;
            }
        }
    });
    Ok(Handle::Process(child))
}

/// The `bench worker` entry point: reads a spec and commands from stdin, writes events to
/// stdout, until `Shutdown` or end of input.
pub fn worker_main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let first = lines.next_line().await?.context("no worker spec on stdin")?;
        let spec: WorkerSpec = serde_json::from_str(&first).context("unreadable worker spec")?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
        tokio::task::spawn_local(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Command>(&line) {
                    Ok(cmd) => {
                        if cmd_tx.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("bench worker: ignoring unreadable command: {e}"),
                }
            }
        });
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::task::spawn_local(async move {
            let mut out = tokio::io::stdout();
            let mut stopping = false;
            loop {
                let event = if stopping {
                    ev_rx.try_recv().ok()
                } else {
                    tokio::select! {
                        biased;
                        e = ev_rx.recv() => e,
                        _ = &mut stop_rx => {
                            stopping = true;
                            ev_rx.try_recv().ok()
                        }
                    }
                };
                let Some(event) = event else {
                    return;
                };
                let Ok(mut line) = serde_json::to_string(&event) else {
                    continue;
                };
                line.push('\n');
                if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
                    return;
                }
            }
        });
        crate::engine::run(spec, cmd_rx, ev_tx).await;
        // Tasks still holding an event sender must not keep the process alive: write what is
        // queued, then stop.
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        anyhow::Ok(())
    })
}
