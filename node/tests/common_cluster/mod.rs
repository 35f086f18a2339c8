//! Real `flotilla` cluster nodes on loopback for tests: spawn, kill -9, restart, and the
//! admin API calls the tests need. Every spawned process is killed (by its pid, through
//! its `Child`) when its `ProcNode` is dropped.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::Method;
use node::admin::NodeInfo;
use node::admin::client::{ClientError, call, pd_call};
use node::admin::types::{CreateGroups, Created, GroupInfo, GroupList, NewGroup};
use node::group::{GroupId, NodeId};
use node::pd::PdReport;

/// Generous: the machine is shared and loaded.
pub const WAIT: Duration = Duration::from_secs(180);
/// Per admin call.
pub const CALL: Duration = Duration::from_secs(30);
/// The admin bearer token of every test node (in `admin.token` beside the node dirs).
pub const TOKEN: &str = "flotilla-test-admin-token";

/// Writes `root/admin.token` (mode 0600) if absent and makes this process's admin client
/// send its token; returns the file.
pub fn admin_token_file(root: &std::path::Path) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join("admin.token");
    if !path.exists() {
        std::fs::create_dir_all(root).expect("root dir");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("token");
        f.write_all(TOKEN.as_bytes()).expect("write token");
    }
    node::admin::client::set_token(TOKEN.to_owned());
    path
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("flotilla-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FLOTILLA_KEEP_TEST_DIRS").is_some() || std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("udp port")
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("tcp port")
}

/// One `flotilla` process (or its data, while stopped).
pub struct ProcNode {
    pub id: NodeId,
    pub cluster: SocketAddr,
    pub admin: SocketAddr,
    /// The MQTT listener.
    pub mqtt: SocketAddr,
    pub dir: PathBuf,
    pub join: Vec<SocketAddr>,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl ProcNode {
    pub fn new(id: NodeId, root: &std::path::Path, join: Vec<SocketAddr>, extra: Vec<String>) -> Self {
        admin_token_file(root);
        Self {
            id,
            cluster: free_udp(),
            admin: free_tcp(),
            mqtt: free_tcp(),
            dir: root.join(format!("node-{id}")),
            join,
            extra,
            child: None,
        }
    }

    /// Starts the process (stderr goes to `dir/../node-N.log`) and waits until its MQTT
    /// port accepts connections. Ports are picked free before the process binds them, so
    /// another process can take one in between: a node that exits at start is started
    /// again on new client and admin ports (its cluster address, which peers join, stays).
    pub fn spawn(&mut self) {
        for attempt in 1..=3 {
            self.spawn_once();
            if self.wait_listening(Duration::from_secs(30)) {
                return;
            }
            eprintln!("node {} exited at start (attempt {attempt}): {}", self.id, self.log_tail());
            self.admin = free_tcp();
            self.mqtt = free_tcp();
        }
        panic!("node {} did not start", self.id);
    }

    /// Waits until the MQTT port accepts a connection (true) or the process ends (false);
    /// true after `limit` either way (later waits decide).
    fn wait_listening(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(self.mqtt).is_ok() {
                return true;
            }
            if self.exit_status().is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The last line of the node's log that names an error.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
        log.lines().rev().find(|l| l.contains("rror")).unwrap_or("").to_owned()
    }

    fn spawn_once(&mut self) {
        assert!(self.child.is_none(), "node {} already runs", self.id);
        std::fs::create_dir_all(&self.dir).expect("node dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .arg("--cluster-listen")
            .arg(self.cluster.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .arg("--admin-token-file")
            .arg(self.dir.with_file_name("admin.token"))
            .arg("--listen")
            .arg(self.mqtt.to_string())
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--log")
            .arg(std::env::var("FLOTILLA_TEST_LOG").unwrap_or_else(|_| "warn".into()));
        if !self.join.is_empty() {
            let join: Vec<String> = self.join.iter().map(ToString::to_string).collect();
            cmd.arg("--join").arg(join.join(","));
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).env_remove("RUST_LOG");
        self.child = Some(cmd.spawn().expect("spawn flotilla"));
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful shutdown), if it runs.
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// The exit status if the process has ended (`None` while it runs or was never started).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub async fn info(&self) -> Result<NodeInfo, ClientError> {
        call::<(), NodeInfo>(self.admin, Method::GET, "/v1/nodes", None, CALL).await
    }

    pub async fn groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        Ok(call::<(), GroupList>(self.admin, Method::GET, "/v1/groups", None, CALL).await?.groups)
    }

    pub async fn group(&self, g: GroupId) -> Result<GroupInfo, ClientError> {
        call::<(), GroupInfo>(self.admin, Method::GET, &format!("/v1/groups/{g}"), None, CALL).await
    }

    /// Waits until the admin endpoint answers and `peers` peers are connected.
    pub async fn wait_ready(&self, peers: usize) {
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(info) = self.info().await
                && info.peers.iter().filter(|p| p.connected).count() >= peers
            {
                return;
            }
            assert!(start.elapsed() < WAIT, "node {} not ready", self.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Bootstraps this node's replicas of `groups` with `voters`.
    pub async fn create_groups(&self, groups: &[GroupId], voters: &[NodeId]) -> usize {
        let req = CreateGroups {
            groups: groups
                .iter()
                .map(|&id| NewGroup { id, start: String::new(), end: String::new(), voters: voters.to_vec() })
                .collect(),
        };
        let created: Created =
            call(self.admin, Method::POST, "/v1/groups", Some(&req), CALL).await.expect("create groups");
        created.created
    }
}

impl ProcNode {
    /// Bootstraps this node's replicas of groups with key spans `(id, start, end)`.
    pub async fn create_ranges(&self, ranges: &[(GroupId, String, String)], voters: &[NodeId]) -> usize {
        let req = CreateGroups {
            groups: ranges
                .iter()
                .map(|(id, start, end)| NewGroup {
                    id: *id,
                    start: start.clone(),
                    end: end.clone(),
                    voters: voters.to_vec(),
                })
                .collect(),
        };
        let created: Created =
            call(self.admin, Method::POST, "/v1/groups", Some(&req), CALL).await.expect("create ranges");
        created.created
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Admin endpoints by node, for a `ClusterClient`.
pub fn admin_map<'a>(nodes: impl IntoIterator<Item = &'a ProcNode>) -> BTreeMap<NodeId, SocketAddr> {
    nodes.into_iter().map(|n| (n.id, n.admin)).collect()
}

/// Per group, its replicas' `(node, info)`.
pub async fn replicas(nodes: &[&ProcNode]) -> BTreeMap<GroupId, Vec<(NodeId, GroupInfo)>> {
    let mut all: BTreeMap<GroupId, Vec<(NodeId, GroupInfo)>> = BTreeMap::new();
    for n in nodes {
        if let Ok(groups) = n.groups().await {
            for g in groups {
                all.entry(g.range.id).or_default().push((n.id, g));
            }
        }
    }
    all
}

/// Ranges the MQTT bootstrap creates on three PD voters: S, R, M and 16 log slices each.
pub const BOOTSTRAP_RANGES: usize = bootstrap_ranges(16);

/// Ranges the MQTT bootstrap creates on three PD voters with `log_groups_per_node`.
pub const fn bootstrap_ranges(log_groups_per_node: usize) -> usize {
    3 + log_groups_per_node * 3
}

/// The PD's report, from the node at `admin`.
pub async fn report(admin: SocketAddr) -> Option<PdReport> {
    pd_call(admin, Method::GET, "/v1/pd/report", Duration::from_secs(5)).await.ok()
}

/// Waits until the PD reports the bootstrap done; returns the report.
pub async fn bootstrap_done(admin: SocketAddr) -> PdReport {
    bootstrap_done_with(admin, BOOTSTRAP_RANGES).await
}

/// Waits until the PD reports the bootstrap of `ranges` ranges done; returns the report.
pub async fn bootstrap_done_with(admin: SocketAddr, ranges: usize) -> PdReport {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(r) = report(admin).await
            && r.mqtt_bootstrap == "done"
            && r.ranges >= ranges
        {
            println!("bootstrap done after {:.1} s: {} ranges", start.elapsed().as_secs_f64(), r.ranges);
            return r;
        }
        assert!(start.elapsed() < WAIT, "bootstrap never finished: {:?}", report(admin).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The node table's size on `n`.
pub async fn table_len(n: &ProcNode) -> usize {
    let v: serde_json::Value =
        call::<(), _>(n.admin, Method::GET, "/v1/kv/ranges", None, CALL).await.expect("ranges");
    v["ranges"].as_array().map_or(0, Vec::len)
}

/// Nodes 1, 2 and 3 (not started) with `--pd-voters 1,2,3` and `extra`, 2 and 3 joining 1.
pub fn three_nodes(tmp: &TempDir, extra: &[&str]) -> [ProcNode; 3] {
    let extra: Vec<String> = ["--pd-voters", "1,2,3"].iter().chain(extra).map(|s| s.to_string()).collect();
    let n1 = ProcNode::new(1, &tmp.0, Vec::new(), extra.clone());
    let join = vec![n1.cluster];
    let n2 = ProcNode::new(2, &tmp.0, join.clone(), extra.clone());
    let n3 = ProcNode::new(3, &tmp.0, join, extra);
    [n1, n2, n3]
}

/// Waits until the nodes see each other, the PD (on the first) reports the MQTT keyspace
/// bootstrapped, and every node's range table holds its ranges.
pub async fn until_keyspace_known(nodes: [&ProcNode; 3]) {
    until_ranges_known(nodes, BOOTSTRAP_RANGES).await;
}

/// [`until_keyspace_known`] for a bootstrap of `ranges` ranges.
pub async fn until_ranges_known(nodes: [&ProcNode; 3], ranges: usize) {
    for n in nodes {
        n.wait_ready(2).await;
    }
    bootstrap_done_with(nodes[0].admin, ranges).await;
    for n in nodes {
        let start = tokio::time::Instant::now();
        while table_len(n).await < ranges {
            assert!(start.elapsed() < WAIT, "node {} never learned the ranges", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
