//! Shared test harness: an in-process broker on a real loopback socket, and helpers for the
//! rumqttc clients (v4 = MQTT 3.1.1, v5) the tests drive it with.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use node::broker::auth::Authenticator;
use node::config::NodeConfig;
use node::server::{Server, ShutdownHandle};

#[path = "../common_cluster/mod.rs"]
pub mod cluster;
pub mod http;
pub mod mqtt;
pub mod ops;
pub mod raw;

/// A running broker, or with `FLOTILLA_TEST_CLUSTER=3` a three-node cluster of real
/// `flotilla` processes whose clients land on nodes 2 and 3 in turn; shuts down when
/// dropped.
pub struct TestBroker {
    /// MQTT listeners clients are spread over (one for a single broker).
    addrs: Vec<SocketAddr>,
    /// The next entry of `addrs` to hand out.
    next: AtomicUsize,
    data_dir: std::path::PathBuf,
    kind: Kind,
}

enum Kind {
    /// An in-process broker.
    Local { handle: ShutdownHandle, join: Option<tokio::task::JoinHandle<()>> },
    /// Three processes; `_tmp` (their data) is removed after they are killed.
    Cluster { nodes: Box<[cluster::ProcNode; 3]>, _tmp: cluster::TempDir },
}

/// `FLOTILLA_TEST_CLUSTER`: unset or `1` for one in-process broker, `3` for a three-node
/// cluster of real processes.
pub fn cluster_size() -> usize {
    match std::env::var("FLOTILLA_TEST_CLUSTER").as_deref() {
        Err(_) | Ok("") | Ok("1") => 1,
        Ok("3") => 3,
        Ok(other) => panic!("FLOTILLA_TEST_CLUSTER={other}: only 1 and 3 are supported"),
    }
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
        if cluster_size() == 3 {
            return Self::start_cluster(config).await;
        }
        let data_dir = config.data_dir.clone();
        let server = Server::bind(config).await.expect("bind");
        Self::spawn(server, data_dir)
    }

    /// Three real nodes sharing `config` (written as their TOML file; node ids, addresses
    /// and data directories come from the command line). One message-log group per node
    /// keeps the bootstrap short.
    async fn start_cluster(mut config: NodeConfig) -> Self {
        config.cluster.log_groups_per_node = 1;
        // Leaders report their new ranges with the next heartbeat: a short one ends the
        // bootstrap sooner.
        config.pd.heartbeat_ms = 250;
        let tmp = cluster::TempDir::new("conformance");
        let file = tmp.0.join("node.toml");
        std::fs::write(&file, toml::to_string(&config).expect("config as TOML")).expect("config file");
        let file = file.to_str().expect("utf-8 path").to_owned();
        // Ports are picked free and then bound by the processes: another test can take one
        // in between, so a cluster that does not come up is started again on new ports.
        for attempt in 1..=3 {
            let mut nodes = cluster::three_nodes(&tmp, &["--config", &file]);
            for n in &mut nodes {
                n.dir = tmp.0.join(format!("try-{attempt}-node-{}", n.id));
                n.spawn();
            }
            let [n1, n2, n3] = &nodes;
            let ready = cluster::until_ranges_known([n1, n2, n3], cluster::bootstrap_ranges(1));
            if tokio::time::timeout(Duration::from_secs(90), ready).await.is_ok() {
                let addrs = vec![n2.mqtt, n3.mqtt];
                let kind = Kind::Cluster { nodes: Box::new(nodes), _tmp: tmp };
                return Self { addrs, next: AtomicUsize::new(0), data_dir: config.data_dir, kind };
            }
            for n in &mut nodes {
                let (id, status) = (n.id, n.exit_status());
                eprintln!("cluster start {attempt}: node {id} exited: {status:?}");
            }
        }
        panic!("the three-node cluster did not come up in three attempts (logs in {})", tmp.0.display());
    }

    /// Starts a broker with a custom authenticator: always one in-process broker (a
    /// cluster's nodes are separate processes, which cannot run a test's authenticator).
    pub async fn start_with_auth(auth: Box<dyn Authenticator>, tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        if cluster_size() != 1 {
            eprintln!(
                "FLOTILLA_TEST_CLUSTER: a custom authenticator runs on one in-process broker, not a cluster"
            );
        }
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
        Self { addrs: vec![addr], next: AtomicUsize::new(0), data_dir, kind: Kind::Local { handle, join } }
    }

    /// The MQTT address for the next client: the broker's, or in a cluster nodes 2 and 3
    /// in turn (the first client on node 2, the second on node 3, ...).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()]
    }

    /// The port of [`addr`](Self::addr).
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Graceful shutdown; waits for the server task (or a cluster's processes, sent
    /// SIGTERM) to finish.
    pub async fn stop(mut self) {
        match &mut self.kind {
            Kind::Local { handle, join } => {
                handle.shutdown();
                if let Some(j) = join.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(10), j).await;
                }
            }
            Kind::Cluster { nodes, .. } => {
                for n in nodes.iter() {
                    n.terminate();
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                for n in nodes.iter_mut() {
                    while n.exit_status().is_none() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Kind::Local { handle, .. } = &self.kind {
            handle.shutdown();
        }
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
