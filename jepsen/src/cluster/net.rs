//! Network setup: one namespace per node on a bridge (root needed), or, when namespaces are
//! unavailable, one 127.0.0.x address per node in the current namespace.
//!
//! Every resource is named with the `fj` prefix and the run id, and removed on drop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::sh;

/// How nodes are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Namespace per node on bridge `fjbr<run>`, addresses 10.78.<run>.<i+1>.
    Namespaces,
    /// 127.0.0.<10+i> in the current namespace (no partitions possible).
    Loopback,
}

/// The network of one run.
#[derive(Debug)]
pub struct Net {
    /// The mode in use.
    pub mode: NetMode,
    run: u8,
    nodes: usize,
    created: Vec<Created>,
    /// MQTT port on every node.
    pub port: u16,
}

#[derive(Debug)]
enum Created {
    Bridge(String),
    Namespace(String),
}

impl Net {
    /// Sets up namespaces and a bridge, or falls back to loopback addresses with a warning
    /// when that fails (not root, no `ip`, no netns support) or when `allow_netns` is false.
    pub fn setup(run: u8, nodes: usize, allow_netns: bool, loopback_port: u16) -> Self {
        let mut net = Self { mode: NetMode::Namespaces, run, nodes, created: Vec::new(), port: 1883 };
        if allow_netns {
            match net.try_namespaces() {
                Ok(()) => return net,
                Err(e) => {
                    net.teardown();
                    tracing::warn!(
                        "network namespaces unavailable ({e}); falling back to 127.0.0.x addresses \
                         in the current namespace: partitions are not possible in this mode"
                    );
                }
            }
        }
        net.mode = NetMode::Loopback;
        net.port = loopback_port;
        net
    }

    /// Namespace name of node `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("fjn{}-{}", self.run, i + 1)
    }

    fn bridge(&self) -> String {
        format!("fjbr{}", self.run)
    }

    /// IP of node `i`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        match self.mode {
            NetMode::Namespaces => Ipv4Addr::new(10, 78, self.run, i as u8 + 1),
            NetMode::Loopback => Ipv4Addr::new(127, 0, 0, 10 + i as u8),
        }
    }

    /// MQTT address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip(i)), self.port)
    }

    /// Command prefix that runs a program in node `i`'s network.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        match self.mode {
            NetMode::Namespaces => vec!["ip".into(), "netns".into(), "exec".into(), self.namespace(i)],
            NetMode::Loopback => Vec::new(),
        }
    }

    fn try_namespaces(&mut self) -> Result<(), String> {
        let br = self.bridge();
        sh("ip", &["link", "add", &br, "type", "bridge"])?;
        self.created.push(Created::Bridge(br.clone()));
        sh("ip", &["link", "set", &br, "up"])?;
        sh("ip", &["addr", "add", &format!("10.78.{}.254/24", self.run), "dev", &br])?;
        for i in 0..self.nodes {
            let ns = self.namespace(i);
            sh("ip", &["netns", "add", &ns])?;
            self.created.push(Created::Namespace(ns.clone()));
            let veth = format!("fjv{}-{}", self.run, i + 1);
            sh("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            sh("ip", &["link", "set", &veth, "master", &br])?;
            sh("ip", &["link", "set", &veth, "up"])?;
            sh("ip", &["-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"])?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Removes what `setup` created (the veths go with their namespaces). Idempotent.
    pub fn teardown(&mut self) {
        for c in self.created.drain(..).rev() {
            let r = match &c {
                Created::Namespace(ns) => sh("ip", &["netns", "del", ns]),
                Created::Bridge(br) => sh("ip", &["link", "del", br]),
            };
            if let Err(e) = r {
                tracing::warn!("cleanup: {e}");
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}
