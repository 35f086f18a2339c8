//! Shared test harness: an in-process broker on a real loopback socket, and helpers for the
//! rumqttc clients (v4 = MQTT 3.1.1, v5) the tests drive it with.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use node::broker::auth::Authenticator;
use node::config::NodeConfig;
use node::server::{Server, ShutdownHandle};

pub mod http;
pub mod mqtt;
pub mod ops;
pub mod raw;

/// A running broker; shuts down when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    data_dir: std::path::PathBuf,
    handle: ShutdownHandle,
    join: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    /// Starts a broker with default config on 127.0.0.1 and a free port.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a broker after letting `tweak` change the config.
    pub async fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = test_config();
        tweak(&mut config);
        let data_dir = config.data_dir.clone();
        let server = Server::bind(config).await.expect("bind");
        Self::spawn(server, data_dir)
    }

    /// Starts a broker with a custom authenticator.
    pub async fn start_with_auth(auth: Box<dyn Authenticator>, tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = test_config();
        tweak(&mut config);
        let data_dir = config.data_dir.clone();
        let server = Server::bind_with_auth(config, auth).await.expect("bind");
        Self::spawn(server, data_dir)
    }

    fn spawn(server: Server, data_dir: std::path::PathBuf) -> Self {
        let addr = server.local_addr().expect("addr");
        let handle = server.shutdown_handle();
        let join = Some(tokio::spawn(server.run()));
        Self { addr, data_dir, handle, join }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Graceful shutdown; waits for the server task to finish.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(j) = self.join.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), j).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.handle.shutdown();
        // Open files stay valid after unlinking; the directory is gone either way.
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Loopback on a free port, a private data directory, `$SYS` off (tests that want it turn
/// it on).
pub fn test_config() -> NodeConfig {
    let mut config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: temp_data_dir(),
        ..NodeConfig::default()
    };
    config.broker.sys_interval_secs = 0;
    // Small segments: every test broker preallocates one.
    config.storage.segment_bytes = 1 << 20;
    config.storage.checkpoint_bytes = 4 << 20;
    config
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("flotilla-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Upper bound for waiting on one expected event in tests (a hang guard, not a speed check).
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts the `flotilla` binary on 127.0.0.1:`port` with its data in `dir` and `config`
/// (TOML, written beside `dir`), logging at `log`; returns once the port accepts
/// connections (20 s at most).
pub fn spawn_broker(port: u16, dir: &std::path::Path, config: &str, log: &str) -> std::process::Child {
    use std::process::{Command, Stdio};
    let file = dir.with_extension("toml");
    std::fs::write(&file, config).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(&file)
        .args(["--log", log])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn flotilla");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
