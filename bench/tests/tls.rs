//! The bench client over TLS against a real Mosquitto with a TLS listener.
//!
//! Each test generates a CA and a server certificate (for 127.0.0.1 and `localhost`) with
//! rcgen, starts `/usr/sbin/mosquitto` on a free loopback port with them, and runs the
//! harness over TLS: a p2p QoS 1 run that must deliver and lose nothing, a client trusting
//! another CA that must fail with a certificate error, and `--tls-insecure` that must connect
//! without any CA. Without Mosquitto the tests print why and return (set
//! `BENCH_REQUIRE_MOSQUITTO=1` to make that a failure).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::client::{ClientError, Conn, ConnectOpts};
use bench::result::RunResult;
use bench::scenario::opts::{Dur, RunOpts};
use bench::scenario::p2p::P2pArgs;
use bench::tls::{TlsConnector, TlsSpec};
use node::mqtt::packet::Protocol;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A CA: its certificate (PEM) and what it needs to sign.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> anyhow::Result<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca { pem: cert.pem(), issuer: Issuer::new(params, key) })
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`: (cert PEM, key PEM).
fn server_cert(ca: &Ca) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, "bench test broker");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Mosquitto with a TLS listener, killed (by its own pid) when dropped.
struct TlsMosquitto {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    /// The CA that signed the broker's certificate, as a file.
    ca_file: PathBuf,
}

impl Drop for TlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `None` (with the reason printed) when Mosquitto is not installed.
fn start_mosquitto(test: &str) -> anyhow::Result<Option<TlsMosquitto>> {
    if !Path::new(MOSQUITTO).exists() {
        if std::env::var_os("BENCH_REQUIRE_MOSQUITTO").is_some() {
            bail!("{MOSQUITTO} is missing and BENCH_REQUIRE_MOSQUITTO is set");
        }
        eprintln!("SKIPPED {test}: {MOSQUITTO} is not installed (apt-get install mosquitto)");
        return Ok(None);
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bench-tls-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = new_ca("bench test CA")?;
    let (cert, key) = server_cert(&ca)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem)?;
    std::fs::write(dir.join("server.pem"), cert)?;
    std::fs::write(dir.join("server.key"), key)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conf = dir.join("mosquitto.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             log_type error\nlog_type warning\n"
        ),
    )?;
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start mosquitto")?;
    let mut broker = TlsMosquitto { child, addr, dir, ca_file };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline || matches!(broker.child.try_wait(), Ok(Some(_))) {
            bail!("mosquitto did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(broker))
}

fn opts(broker: &TlsMosquitto) -> RunOpts {
    RunOpts {
        broker: broker.addr.into(),
        qos: 1,
        rate: Some(400.0),
        warmup: Dur(Duration::from_millis(200)),
        measure: Dur(Duration::from_millis(1500)),
        drain: Dur(Duration::from_secs(5)),
        quiet: Dur(Duration::from_millis(500)),
        in_process: true,
        no_progress: true,
        connect_rate: 0.0,
        op_timeout: Dur(Duration::from_secs(5)),
        tls: true,
        ca: Some(broker.ca_file.clone()),
        ..RunOpts::default()
    }
}

fn assert_clean_delivery(r: &RunResult, vehicles: u64) {
    let connect = r.connect.as_ref().expect("connect summary");
    assert_eq!(connect.failed, 0, "connect failures: {connect:?}");
    assert_eq!(connect.ok, vehicles + 2, "every client connected: {connect:?}");
    let t = r.traffic.as_ref().expect("traffic summary");
    let a = t.accounting;
    assert!(t.delivered_in_window > 0, "no deliveries in the window: {t:?}");
    assert!(t.sent > 100, "too little traffic to prove anything: {t:?}");
    assert_eq!(a.expected, t.sent, "one vehicle per command: {a:?}");
    assert_eq!(a.unique, a.expected, "every message arrived: {a:?}");
    assert_eq!(a.lost, 0, "{a:?}");
    assert_eq!(a.duplicates, 0, "{a:?}");
    assert_eq!(t.unacked, 0, "every QoS 1 message was acknowledged: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_qos1_over_tls_delivers_everything_once() -> anyhow::Result<()> {
    let Some(broker) = start_mosquitto("p2p_qos1_over_tls_delivers_everything_once")? else {
        return Ok(());
    };
    let args = P2pArgs { opts: opts(&broker), vehicles: 40, backends: 2 };
    let r = bench::scenario::p2p::run(&args).await?;
    assert_clean_delivery(&r, 40);
    assert_eq!(r.params.get("tls").map(String::as_str), Some("on"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_a_certificate_error() -> anyhow::Result<()> {
    let Some(broker) = start_mosquitto("a_wrong_ca_fails_with_a_certificate_error")? else {
        return Ok(());
    };
    let other = new_ca("some other CA")?;
    let other_file = broker.dir.join("other-ca.pem");
    std::fs::write(&other_file, &other.pem)?;

    // One client: the error names the certificate problem.
    let spec = TlsSpec::load(Some(&other_file), false, None, broker.addr.ip())?;
    let connect = ConnectOpts {
        broker: broker.addr,
        source: None,
        protocol: Protocol::V3_1_1,
        keep_alive_secs: 0,
        timeout: Duration::from_secs(5),
        session_expiry_secs: 0,
        lean: false,
        tls: Some(TlsConnector::new(&spec)?),
    };
    let err = Conn::open(&connect, "wrong-ca", true).await.err().context("connected despite the wrong CA")?;
    assert!(matches!(err, ClientError::Tls(_)), "not a TLS error: {err:?}");
    assert_eq!(err.kind(), "tls_unknown_ca");
    let msg = err.to_string();
    assert!(msg.contains("TLS") && msg.contains("certificate"), "unclear error: {msg}");

    // A whole run: every client fails to connect, counted as that kind.
    let mut o = opts(&broker);
    o.ca = Some(other_file);
    o.drain = Dur(Duration::from_secs(1));
    let args = P2pArgs { opts: o, vehicles: 5, backends: 1 };
    let r = bench::scenario::p2p::run(&args).await?;
    let c = r.connect.as_ref().expect("connect summary");
    assert_eq!(c.ok, 0, "{c:?}");
    assert_eq!(c.failures.get("tls_unknown_ca"), Some(&6), "{c:?}");

    // A CA file that does not exist fails the run before anything starts.
    let mut o = opts(&broker);
    o.ca = Some(broker.dir.join("missing.pem"));
    let err = bench::scenario::p2p::run(&P2pArgs { opts: o, vehicles: 5, backends: 1 })
        .await
        .err()
        .context("ran with a missing CA file")?;
    assert!(err.to_string().contains("cannot read CA file"), "{err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_insecure_connects_without_a_ca() -> anyhow::Result<()> {
    let Some(broker) = start_mosquitto("tls_insecure_connects_without_a_ca")? else {
        return Ok(());
    };
    let mut o = opts(&broker);
    o.ca = None;
    o.tls_insecure = true;
    // Not a name of the certificate either: verification is off entirely.
    o.tls_server_name = Some("not-the-broker.example".into());
    o.mqtt = bench::scenario::opts::parse_mqtt("5").map_err(anyhow::Error::msg)?;
    let args = P2pArgs { opts: o, vehicles: 20, backends: 2 };
    let r = bench::scenario::p2p::run(&args).await?;
    assert_clean_delivery(&r, 20);
    Ok(())
}
