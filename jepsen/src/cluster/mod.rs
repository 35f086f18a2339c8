//! The nodes under test: network setup ([`net`]) and broker processes ([`node`]).

pub mod net;
pub mod node;

pub use net::{Net, NetMode};
pub use node::{Node, NodeError, NodeOpts};

use std::process::Command;

/// Runs a command; returns its stderr as the error when it fails.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

/// The network and the nodes of one run.
#[derive(Debug)]
pub struct Cluster {
    /// The network (dropped after the nodes).
    pub nodes: Vec<Node>,
    /// Namespaces or loopback.
    pub net: Net,
}

impl Cluster {
    /// Stops every node gracefully.
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop(std::time::Duration::from_secs(5));
        }
    }
}
