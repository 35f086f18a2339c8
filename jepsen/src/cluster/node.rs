//! One broker node as a real process: spawn, SIGKILL, SIGSTOP/SIGCONT, restart, and a
//! per-node clock offset through libfaketime.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// Where libfaketime lives on Debian.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Node process errors.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Spawning or signalling failed.
    #[error("node {node}: {what}: {source}")]
    Io {
        /// Node index.
        node: usize,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The node did not accept connections in time.
    #[error("node {0} did not become ready in time")]
    NotReady(usize),
    /// The node is not running.
    #[error("node {0} is not running")]
    NotRunning(usize),
    /// A signal could not be delivered.
    #[error("node {node}: {msg}")]
    Signal {
        /// Node index.
        node: usize,
        /// The failure.
        msg: String,
    },
}

/// Per-node options.
#[derive(Clone, Debug, Default)]
pub struct NodeOpts {
    /// FLOTILLA_TEST_BUG for a `test-bugs` build.
    pub test_bug: Option<String>,
    /// Run under libfaketime so the clock nemesis can shift the wall clock.
    pub fake_clock: bool,
    /// Put the data directory on a tmpfs of this many MiB (root), for the disk-full nemesis.
    pub disk_mib: Option<u64>,
}

/// A broker node.
#[derive(Debug)]
pub struct Node {
    /// Index (0-based).
    pub index: usize,
    /// MQTT address.
    pub addr: SocketAddr,
    bin: PathBuf,
    dir: PathBuf,
    prefix: Vec<String>,
    env: Vec<(String, String)>,
    faketime_file: Option<PathBuf>,
    child: Option<Child>,
    paused: bool,
    mounted: bool,
    /// Processes started so far.
    pub starts: u32,
}

impl Node {
    /// Prepares (does not start) node `index` with its data under `dir`.
    pub fn new(
        index: usize,
        addr: SocketAddr,
        bin: &Path,
        dir: &Path,
        prefix: Vec<String>,
        opts: &NodeOpts,
    ) -> Result<Self, NodeError> {
        let io = |what, source| NodeError::Io { node: index, what, source };
        std::fs::create_dir_all(dir).map_err(|e| io("create dir", e))?;
        // Small segments on a small disk, so a full disk soon needs a new one.
        let (segment, checkpoint) =
            if opts.disk_mib.is_some() { (1 << 20, 4 << 20) } else { (8 << 20, 32 << 20) };
        let config = format!(
            "[broker]\nmax-queued-messages = 1000000\nsys-interval-secs = 0\n\n\
             [storage]\nsegment-bytes = {segment}\ncheckpoint-bytes = {checkpoint}\n"
        );
        std::fs::write(dir.join("flotilla.toml"), config).map_err(|e| io("write config", e))?;
        let mut env = Vec::new();
        if let Some(bug) = &opts.test_bug {
            env.push(("FLOTILLA_TEST_BUG".to_string(), bug.to_string()));
        }
        let faketime_file = opts.fake_clock.then(|| dir.join("faketime"));
        let mut mounted = false;
        if let Some(mib) = opts.disk_mib {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).map_err(|e| io("create data dir", e))?;
            let data = data.display().to_string();
            super::sh("mount", &["-t", "tmpfs", "-o", &format!("size={mib}m"), "fjdisk", &data])
                .map_err(|msg| NodeError::Signal { node: index, msg })?;
            mounted = true;
        }
        if let Some(f) = &faketime_file {
            std::fs::write(f, "+0\n").map_err(|e| io("write faketime", e))?;
            env.push(("LD_PRELOAD".into(), LIBFAKETIME.into()));
            env.push(("FAKETIME_TIMESTAMP_FILE".into(), f.display().to_string()));
            env.push(("FAKETIME_NO_CACHE".into(), "1".into()));
            // Wall clock only, like a settimeofday: timers and Instants stay monotonic.
            env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
        }
        Ok(Self {
            index,
            addr,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            prefix,
            env,
            faketime_file,
            child: None,
            paused: false,
            mounted,
            starts: 0,
        })
    }

    /// The node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process and waits until it accepts TCP connections.
    pub async fn start(&mut self, ready_within: Duration) -> Result<(), NodeError> {
        let io = |what, source| NodeError::Io { node: self.index, what, source };
        let log =
            OpenOptions::new().create(true).append(true).open(self.log_path()).map_err(|e| io("log", e))?;
        let log2 = log.try_clone().map_err(|e| io("log", e))?;
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(self.bin.display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(self.dir.join("flotilla.toml"))
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| NodeError::Io { node: self.index, what: "spawn", source: e })?;
        self.child = Some(child);
        self.paused = false;
        self.starts += 1;
        self.wait_ready(ready_within).await
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + within;
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(self.addr));
            if let Ok(Ok(_)) = attempt.await {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(NodeError::Signal {
                    node: self.index,
                    msg: format!("exited at start: {status}"),
                });
            }
            if Instant::now() >= deadline {
                return Err(NodeError::NotReady(self.index));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL and reap. Returns true if a running process was killed.
    pub fn kill(&mut self) -> Result<bool, NodeError> {
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        child.kill().map_err(|e| NodeError::Io { node: self.index, what: "kill", source: e })?;
        let status = child.wait().map_err(|e| NodeError::Io { node: self.index, what: "wait", source: e })?;
        self.paused = false;
        use std::os::unix::process::ExitStatusExt;
        Ok(status.signal() == Some(9))
    }

    fn signal(&self, sig: &str) -> Result<(), NodeError> {
        let pid = self.pid().ok_or(NodeError::NotRunning(self.index))?;
        super::sh("kill", &["-s", sig, &pid.to_string()])
            .map_err(|msg| NodeError::Signal { node: self.index, msg })
    }

    /// SIGSTOP; returns true once the kernel reports the process stopped.
    pub async fn pause(&mut self) -> Result<bool, NodeError> {
        self.signal("STOP")?;
        self.paused = true;
        let pid = self.pid().ok_or(NodeError::NotRunning(self.index))?;
        for _ in 0..50 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.lines().any(|l| l.starts_with("State:") && l.contains("T (stopped)")) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(false)
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> Result<(), NodeError> {
        if self.paused {
            self.signal("CONT")?;
            self.paused = false;
        }
        Ok(())
    }

    /// Sets the node's wall-clock offset in seconds (libfaketime re-reads the file). Returns
    /// true if a process under the same settings observes the offset.
    pub fn set_clock_offset(&self, secs: i64) -> Result<bool, NodeError> {
        let Some(f) = &self.faketime_file else {
            return Ok(false);
        };
        let io = |source| NodeError::Io { node: self.index, what: "faketime", source };
        std::fs::write(f, format!("{secs:+}\n")).map_err(io)?;
        // Confirm: `date +%s` with the same preload must be off by about `secs`.
        let mut cmd = Command::new("date");
        cmd.arg("+%s");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().map_err(io)?;
        let seen: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        let real =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok((seen - real as i64 - secs).abs() <= 2)
    }

    /// Whether the process is running (not necessarily responsive).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Graceful stop: SIGCONT, SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let _ = self.resume();
        if self.signal("TERM").is_ok() {
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if !self.is_running() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.kill();
    }

    /// Lines of the node log that report a panic.
    pub fn panics(&self) -> usize {
        let Ok(f) = File::open(self.log_path()) else {
            return 0;
        };
        use std::io::BufRead;
        std::io::BufReader::new(f).lines().map_while(Result::ok).filter(|l| l.contains("panicked at")).count()
    }
}

impl Node {
    fn ballast(&self) -> PathBuf {
        self.dir.join("data").join("fj-ballast")
    }

    /// Fills the node's (tmpfs) data filesystem; true once a write failed for lack of space.
    pub fn fill_disk(&self) -> Result<bool, NodeError> {
        use std::io::Write;
        if !self.mounted {
            return Ok(false);
        }
        let io = |source| NodeError::Io { node: self.index, what: "fill disk", source };
        let mut f = File::create(self.ballast()).map_err(io)?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..65_536 {
            if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
                return Ok(e.kind() == std::io::ErrorKind::StorageFull);
            }
        }
        Ok(false)
    }

    /// Removes the ballast; true if there was one.
    pub fn free_disk(&self) -> bool {
        self.mounted && std::fs::remove_file(self.ballast()).is_ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.resume();
            let _ = self.kill();
        }
        if self.mounted {
            let data = self.dir.join("data").display().to_string();
            if let Err(e) = super::sh("umount", &[&data]) {
                tracing::warn!("cleanup: {e}");
            }
        }
    }
}
