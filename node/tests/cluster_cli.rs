//! The `flotilla` binary's cluster command line: `flotilla cert` writes a CA and node
//! certificates that two nodes then use for mutual TLS; bad cluster settings stop the
//! process with a clear message instead of starting.

mod common_cluster;

use std::process::Command;
use std::time::Duration;

use common_cluster::{ProcNode, TempDir};
use node::admin::client::ClusterClient;

#[test]
fn dev_tls_off_loopback_is_refused_with_a_clear_error() {
    let tmp = TempDir::new("cli-bad");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "--node-id",
            "1",
            "--cluster-listen",
            "10.1.2.3:7946",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&tmp.0)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback") && err.contains("flotilla cert"), "{err}");
}

#[test]
fn cert_refuses_node_zero() {
    let tmp = TempDir::new("cli-cert0");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["cert", "--nodes", "0", "--dir"])
        .arg(&tmp.0)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("positive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_from_flotilla_cert_form_a_cluster() {
    let tmp = TempDir::new("cli-mtls");
    let certs = tmp.0.join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["cert", "--nodes", "1,2", "--dir"])
        .arg(&certs)
        .output()
        .expect("run cert");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["ca.pem", "ca.key", "node-1.pem", "node-1.key", "node-2.pem", "node-2.key"] {
        assert!(certs.join(f).exists(), "{f}");
    }
    let config = |n: u64| {
        let path = tmp.0.join(format!("node-{n}.toml"));
        let text = format!(
            "[transport]\ntls = \"mutual\"\nca-cert = \"{}\"\nnode-cert = \"{}\"\nnode-key = \"{}\"\n",
            certs.join("ca.pem").display(),
            certs.join(format!("node-{n}.pem")).display(),
            certs.join(format!("node-{n}.key")).display()
        );
        std::fs::write(&path, text).expect("config");
        vec!["--config".to_string(), path.display().to_string()]
    };
    let mut n1 = ProcNode::new(1, &tmp.0, Vec::new(), config(1));
    let mut n2 = ProcNode::new(2, &tmp.0, vec![n1.cluster], config(2));
    n1.spawn();
    n2.spawn();
    n1.wait_ready(1).await;
    n2.wait_ready(1).await;
    for n in [&n1, &n2] {
        assert_eq!(n.create_groups(&[1, 2], &[1, 2]).await, 2);
    }
    let client = ClusterClient::new(common_cluster::admin_map([&n1, &n2]), Duration::from_secs(60));
    for g in [1, 2] {
        client.put(g, "k", "v").await.expect("put");
        assert_eq!(client.get(g, "k").await.expect("get").as_deref(), Some("v"));
    }
    let info = n1.info().await.expect("info");
    assert_eq!(info.transport.handshake_failures, 0);
}
