//! Network partitions as nftables rules inside each node's namespace.
//!
//! A *grudge* says, for each node, which nodes it drops traffic from and to. Each node gets
//! one table (`inet fjpart`), so healing is one atomic `nft delete table`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Partition shapes (as in Jepsen's combined nemesis).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Two halves that cannot talk.
    Halves,
    /// One node cut off from all others (majority / minority).
    Majority,
    /// Every node sees only its ring neighbours (a different majority each, for 5 nodes).
    Ring,
    /// Two halves joined by one node that sees both.
    Bridge,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Self; 4] = [Self::Halves, Self::Majority, Self::Ring, Self::Bridge];
}

/// `grudge[i]` is the set of nodes node `i` cannot talk to; symmetric. `pivot` rotates the
/// node numbering so different faults hit different nodes.
pub fn grudge(shape: Shape, n: usize, pivot: usize) -> Vec<BTreeSet<usize>> {
    let mut g = vec![BTreeSet::new(); n];
    if n < 2 {
        return g;
    }
    let at = |k: usize| (k + pivot) % n;
    let mut cut = |a: usize, b: usize| {
        if a != b {
            g[a].insert(b);
            g[b].insert(a);
        }
    };
    match shape {
        Shape::Halves => {
            let half = n / 2;
            for i in 0..half {
                for j in half..n {
                    cut(at(i), at(j));
                }
            }
        }
        Shape::Majority => {
            for j in 1..n {
                cut(at(0), at(j));
            }
        }
        Shape::Ring => {
            // Keep only ring neighbours (and each node itself).
            for i in 0..n {
                for j in (i + 1)..n {
                    let d = j - i;
                    if d != 1 && d != n - 1 {
                        cut(at(i), at(j));
                    }
                }
            }
        }
        Shape::Bridge => {
            // at(0) is the bridge; the rest split in two halves.
            let rest: Vec<usize> = (1..n).map(at).collect();
            let half = rest.len() / 2;
            for &a in &rest[..half] {
                for &b in &rest[half..] {
                    cut(a, b);
                }
            }
        }
    }
    g
}

/// The nft script that makes one node drop traffic with the IPs in `peers`.
pub fn nft_script(peers: &[std::net::Ipv4Addr]) -> String {
    if peers.is_empty() {
        return String::new();
    }
    let set = peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    format!(
        "table inet fjpart {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         ip saddr {{ {set} }} drop\n  }}\n  chain output {{\n    type filter hook output priority 0; policy \
         accept;\n    ip daddr {{ {set} }} drop\n  }}\n}}\n"
    )
}

/// Applies `script` in namespace `ns` (`nft -f -`).
pub fn apply(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child.stdin.take().map(|mut s| s.write_all(script.as_bytes())).transpose().map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// Removes the partition table in `ns` (absent is fine).
pub fn heal(ns: &str) {
    let _ = crate::cluster::sh("ip", &["netns", "exec", ns, "nft", "delete", "table", "inet", "fjpart"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sees(g: &[BTreeSet<usize>], a: usize, b: usize) -> bool {
        !g[a].contains(&b)
    }

    #[test]
    fn shapes_cut_what_they_say() {
        let h = grudge(Shape::Halves, 5, 0);
        assert!(!sees(&h, 0, 4) && sees(&h, 0, 1) && sees(&h, 2, 3));
        let m = grudge(Shape::Majority, 5, 2);
        assert_eq!(m[2].len(), 4);
        assert!(sees(&m, 0, 1) && sees(&m, 3, 4));
        let r = grudge(Shape::Ring, 5, 0);
        for i in 0..5 {
            assert_eq!(r[i].len(), 2, "node {i} sees exactly its two neighbours");
            assert!(sees(&r, i, (i + 1) % 5));
        }
        let b = grudge(Shape::Bridge, 5, 0);
        assert!(b[0].is_empty(), "the bridge sees everyone");
        assert!(!sees(&b, 1, 3) && sees(&b, 1, 2));
        for g in [h, m, r, b] {
            for (a, set) in g.iter().enumerate() {
                for &x in set {
                    assert!(g[x].contains(&a), "symmetric");
                }
            }
        }
        assert!(grudge(Shape::Halves, 1, 0)[0].is_empty());
    }

    #[test]
    fn nft_script_drops_both_directions() {
        let s = nft_script(&["10.78.1.2".parse().expect("ip"), "10.78.1.3".parse().expect("ip")]);
        assert!(s.contains("ip saddr { 10.78.1.2, 10.78.1.3 } drop"));
        assert!(s.contains("ip daddr { 10.78.1.2, 10.78.1.3 } drop"));
        assert!(nft_script(&[]).is_empty());
    }
}
