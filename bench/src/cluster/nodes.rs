//! SHELL. A local Flotilla cluster for `bench cluster-compare`: N node processes on free
//! loopback ports (UDP for the cluster, TCP for admin and MQTT), each with a fresh data
//! directory, started with `--node-id`, `--pd-voters` and `--join`; ready when the placement
//! driver reports the MQTT keyspace bootstrapped and every node routes over all its ranges.
//! Stopped with SIGTERM (through `kill`, by process id), killed if it does not exit in time.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use node::admin::client::{call, pd_call};
use serde::{Deserialize, Serialize};

/// Longest wait for a node to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Bound on one admin request.
const CALL: Duration = Duration::from_secs(3);

/// Ranges the MQTT keyspace bootstrap creates (the readiness threshold).
pub const READY_RANGES: u64 = 51;

/// One node process.
#[derive(Debug)]
pub struct NodeProc {
    child: Option<Child>,
    /// Node id.
    pub id: u64,
    /// Process id.
    pub pid: u32,
    /// MQTT listener.
    pub mqtt: SocketAddr,
    /// Admin (HTTP) listener.
    pub admin: SocketAddr,
    /// Cluster (QUIC) address.
    pub cluster: SocketAddr,
}

impl NodeProc {
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// SIGTERM, then SIGKILL after a grace period; only this node's own process.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, node 1 first.
    pub nodes: Vec<NodeProc>,
    dir: PathBuf,
    /// Where the nodes' logs are written (kept after the run).
    pub logs: PathBuf,
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0").context("no free TCP port")?.local_addr()?)
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0").context("no free UDP port")?.local_addr()?)
}

/// Forward counters of one node's transport, from `GET /v1/nodes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardCounters {
    /// Forwarded publishes written.
    pub forwards_sent: u64,
    /// Payload bytes of the forwarded publishes.
    pub forward_payload_bytes_sent: u64,
    /// Bytes of forward frames written, length prefixes included.
    pub forward_bytes_sent: u64,
    /// Forwarded publishes not sent.
    pub forwards_dropped: u64,
    /// UDP bytes sent by the node's QUIC connections (all traffic, QUIC overhead included).
    pub udp_bytes_sent: u64,
    /// Forward batches (frames) written.
    #[serde(default)]
    pub forward_batches_sent: u64,
    /// Forwarded publishes read from peers.
    #[serde(default)]
    pub forwards_received: u64,
    /// Forward batch ids acknowledged to peers.
    #[serde(default)]
    pub forward_acks_sent: u64,
    /// Forward batch ids acknowledged by peers.
    #[serde(default)]
    pub forward_acks_received: u64,
}

impl ForwardCounters {
    /// `self - earlier`, counter by counter (saturating: a restarted node counts from 0).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            forwards_sent: self.forwards_sent.saturating_sub(earlier.forwards_sent),
            forward_payload_bytes_sent: self
                .forward_payload_bytes_sent
                .saturating_sub(earlier.forward_payload_bytes_sent),
            forward_bytes_sent: self.forward_bytes_sent.saturating_sub(earlier.forward_bytes_sent),
            forwards_dropped: self.forwards_dropped.saturating_sub(earlier.forwards_dropped),
            udp_bytes_sent: self.udp_bytes_sent.saturating_sub(earlier.udp_bytes_sent),
            forward_batches_sent: self.forward_batches_sent.saturating_sub(earlier.forward_batches_sent),
            forwards_received: self.forwards_received.saturating_sub(earlier.forwards_received),
            forward_acks_sent: self.forward_acks_sent.saturating_sub(earlier.forward_acks_sent),
            forward_acks_received: self.forward_acks_received.saturating_sub(earlier.forward_acks_received),
        }
    }

    /// Counter by counter sum.
    pub fn plus(&self, o: &Self) -> Self {
        Self {
            forwards_sent: self.forwards_sent + o.forwards_sent,
            forward_payload_bytes_sent: self.forward_payload_bytes_sent + o.forward_payload_bytes_sent,
            forward_bytes_sent: self.forward_bytes_sent + o.forward_bytes_sent,
            forwards_dropped: self.forwards_dropped + o.forwards_dropped,
            udp_bytes_sent: self.udp_bytes_sent + o.udp_bytes_sent,
            forward_batches_sent: self.forward_batches_sent + o.forward_batches_sent,
            forwards_received: self.forwards_received + o.forwards_received,
            forward_acks_sent: self.forward_acks_sent + o.forward_acks_sent,
            forward_acks_received: self.forward_acks_received + o.forward_acks_received,
        }
    }

    /// Forward bytes on the wire per forwarded payload byte (NaN without forwards).
    pub fn wire_per_payload_byte(&self) -> f64 {
        if self.forward_payload_bytes_sent == 0 {
            return f64::NAN;
        }
        self.forward_bytes_sent as f64 / self.forward_payload_bytes_sent as f64
    }
}

#[derive(Deserialize)]
struct NodeInfoView {
    transport: ForwardCounters,
}

impl LocalCluster {
    /// Starts `n` nodes of `exe` and waits, at most `ready`, until MQTT can run through
    /// the cluster. Every process started is stopped again if that fails.
    pub async fn start(exe: &Path, n: u32, ready: Duration) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("bench-cluster-{}-{}", std::process::id(), free_tcp()?.port()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let logs = dir.with_extension("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        eprintln!("cluster-compare: node logs in {}", logs.display());
        let mut c = Self { nodes: Vec::new(), dir, logs };
        let voters = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        // The nodes share one admin token, made here, which this process sends.
        let token_file = c.dir.join("admin.token");
        node::admin::client::set_token(node::admin::token::load_or_create(&token_file)?);
        for id in 1..=u64::from(n) {
            let (mqtt, admin, cluster) = (free_tcp()?, free_tcp()?, free_udp()?);
            let data = c.dir.join(format!("n{id}"));
            let mut cmd = Command::new(exe);
            cmd.arg("--node-id")
                .arg(id.to_string())
                .arg("--pd-voters")
                .arg(&voters)
                .arg("--cluster-listen")
                .arg(cluster.to_string())
                .arg("--admin-listen")
                .arg(admin.to_string())
                .arg("--admin-token-file")
                .arg(&token_file)
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen")
                .arg(mqtt.to_string())
                .arg("--log")
                .arg("warn");
            if let Some(first) = c.nodes.first() {
                cmd.arg("--join").arg(first.cluster.to_string());
            }
            // Each node's log (warnings and errors) goes to a file kept after the run.
            let log_path = c.logs.join(format!("node{id}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("cannot start {}", exe.display()))?;
            let pid = child.id();
            c.nodes.push(NodeProc { child: Some(child), id, pid, mqtt, admin, cluster });
        }
        if let Err(e) = c.wait_ready(ready).await {
            c.stop();
            return Err(e);
        }
        Ok(c)
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last;
        loop {
            if let Some(n) = self.nodes.iter_mut().find_map(|n| n.exited().then_some(n.id)) {
                bail!("cluster node {n} exited while starting");
            }
            match self.readiness().await {
                Ok(None) => break,
                Ok(Some(why)) => last = why,
                Err(e) => last = format!("{e:#}"),
            }
            if start.elapsed() >= limit {
                bail!("cluster not ready after {:.0} s: {last}", limit.as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for n in &self.nodes {
            if TcpStream::connect_timeout(&n.mqtt, Duration::from_secs(1)).is_err() {
                bail!("node {} does not accept MQTT connections on {}", n.id, n.mqtt);
            }
        }
        eprintln!("cluster-compare: cluster ready after {:.1} s", start.elapsed().as_secs_f64());
        Ok(())
    }

    /// `None` when ready, else what is missing.
    async fn readiness(&self) -> anyhow::Result<Option<String>> {
        let admin = self.nodes[0].admin;
        let report: serde_json::Value = pd_call(admin, Method::GET, "/v1/pd/report", CALL).await?;
        let boot = report.get("mqtt_bootstrap").and_then(|v| v.as_str()).unwrap_or("");
        let ranges = report.get("ranges").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if boot != "done" || ranges < READY_RANGES {
            return Ok(Some(format!("PD report: mqtt_bootstrap {boot:?}, {ranges} ranges")));
        }
        for n in &self.nodes {
            let v: serde_json::Value =
                call::<(), _>(n.admin, Method::GET, "/v1/kv/ranges", None, CALL).await?;
            let have = v.get("ranges").and_then(|r| r.as_array()).map_or(0, Vec::len) as u64;
            if have < READY_RANGES {
                return Ok(Some(format!("node {} routes over {have} ranges", n.id)));
            }
        }
        Ok(None)
    }

    /// MQTT addresses, node 1 first.
    pub fn mqtt_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.mqtt).collect()
    }

    /// Process ids, node 1 first.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// The forward counters summed over the nodes.
    pub async fn forward_counters(&self) -> anyhow::Result<ForwardCounters> {
        let mut sum = ForwardCounters::default();
        for n in &self.nodes {
            let info: NodeInfoView = call::<(), _>(n.admin, Method::GET, "/v1/nodes", None, CALL)
                .await
                .with_context(|| format!("GET /v1/nodes of node {}", n.id))?;
            sum = sum.plus(&info.transport);
        }
        Ok(sum)
    }

    /// Stops every node (by pid) and removes the data directories.
    pub fn stop(&mut self) {
        for n in self.nodes.iter_mut().rev() {
            n.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_counters_difference_and_ratio() {
        let a = ForwardCounters {
            forward_payload_bytes_sent: 100,
            forward_bytes_sent: 130,
            ..Default::default()
        };
        let b = ForwardCounters {
            forward_payload_bytes_sent: 1100,
            forward_bytes_sent: 1180,
            ..Default::default()
        };
        let d = b.since(&a);
        assert!((d.wire_per_payload_byte() - 1.05).abs() < 1e-9);
        assert!(ForwardCounters::default().wire_per_payload_byte().is_nan());
        let json = r#"{"transport":{"forwards_sent":3,"forward_payload_bytes_sent":9,"forward_bytes_sent":12,
            "forwards_dropped":0,"udp_bytes_sent":50,"frames_sent":7},"node_id":1}"#;
        let v: NodeInfoView = serde_json::from_str(json).expect("node info");
        assert_eq!(v.transport.forward_bytes_sent, 12);
    }
}
