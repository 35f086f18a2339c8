//! SHELL. Starts and stops local brokers for the suite: Flotilla and Mosquitto on free
//! loopback ports, each with its own temporary directory, stopped with SIGTERM (through
//! `kill`, by process id) and killed if it does not exit in time.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Longest wait for a broker to accept connections or to exit.
const WAIT: Duration = Duration::from_secs(15);

/// Which broker to start.
#[derive(Clone, Debug)]
pub enum Kind {
    /// `flotilla --listen .. --data-dir .. --log warn [--config FILE]`.
    Flotilla {
        /// The binary.
        exe: PathBuf,
        /// Extra configuration file.
        config: Option<PathBuf>,
    },
    /// `mosquitto -c FILE` with a loopback listener, anonymous access, no connection limit,
    /// no persistence, and only warnings and errors logged (as Flotilla's `--log warn`; by
    /// default Mosquitto logs every connection).
    Mosquitto {
        /// The binary.
        exe: PathBuf,
    },
}

/// A running local broker.
#[derive(Debug)]
pub struct LocalBroker {
    child: Option<Child>,
    /// Listen address.
    pub addr: SocketAddr,
    /// Process id.
    pub pid: u32,
    dir: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(l.local_addr()?.port())
}

impl LocalBroker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start(kind: &Kind) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("bench-broker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut cmd = match kind {
            Kind::Flotilla { exe, config } => {
                let mut c = Command::new(exe);
                c.arg("--listen")
                    .arg(addr.to_string())
                    .arg("--data-dir")
                    .arg(dir.join("data"))
                    .arg("--log")
                    .arg("warn");
                if let Some(cfg) = config {
                    c.arg("--config").arg(cfg);
                }
                c
            }
            Kind::Mosquitto { exe } => {
                let conf = dir.join("mosquitto.conf");
                let text = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n{}",
                    "log_type error\nlog_type warning\n"
                );
                std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
                let mut c = Command::new(exe);
                c.arg("-c").arg(conf);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {kind:?}"))?;
        let pid = child.id();
        let mut b = Self { child: Some(child), addr, pid, dir };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline || b.exited() {
                b.stop();
                bail!("{kind:?} did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let start-up allocations settle before anything is measured.
        std::thread::sleep(Duration::from_millis(500));
        Ok(b)
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Stops the broker: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first line of a command's output (`--version` and the like), for reports.
pub fn version(exe: &PathBuf, arg: &str) -> String {
    Command::new(exe)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}
