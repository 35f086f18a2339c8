//! `log-format = "json"` on the real binary: every line it writes to stderr, from startup
//! through MQTT traffic, a refused CONNECT, SIGHUP and shutdown, is one JSON object.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::mqtt::{Client, options};
use rumqttc::{Packet, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_is_json() {
    let (port, dir) = (common::free_port(), common::temp_data_dir());
    let admin = common::free_port();
    let config = dir.with_extension("toml");
    std::fs::write(&config, format!("log-format = \"json\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"))
        .expect("config");
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "debug", "--data-dir"])
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn");
    common::http::wait_ok(([127, 0, 0, 1], admin).into(), "/readyz");

    let mut o = options("json-logs", port);
    o.set_credentials("logger", "");
    let mut c = Client::connect(o).await;
    c.client.subscribe("j/#", QoS::AtLeastOnce).await.expect("subscribe");
    c.until("SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    c.client.publish("j/x", QoS::AtLeastOnce, true, "x").await.expect("publish");
    c.until("PUBLISH", |p| matches!(p, Packet::Publish(_))).await;
    c.client.disconnect().await.expect("disconnect");
    // A garbage CONNECT gives the broker a decode error to log.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).expect("raw");
    std::io::Write::write_all(&mut raw, b"\x10\x03\x00\x00\x00").expect("garbage");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for sig in ["-HUP", "-TERM"] {
        let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill");
        assert!(ok.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status:?}");

    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "too few lines to judge:\n{text}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("timestamp").is_some() && v.get("level").is_some(), "{line}");
    }
    assert!(text.contains("SIGHUP"), "the SIGHUP line is missing:\n{text}");
    // Connect and disconnect events carry client id, user, address and reason code.
    let events: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let event = |message: &str| {
        events
            .iter()
            .find(|v| v["fields"]["message"] == message && v["fields"]["client_id"] == "json-logs")
            .unwrap_or_else(|| panic!("no {message:?} event for json-logs:\n{text}"))
            .clone()
    };
    let connected = event("client connected");
    assert_eq!(connected["fields"]["address"], "127.0.0.1", "{connected}");
    assert_eq!(connected["fields"]["user"], "logger", "{connected}");
    assert_eq!(connected["fields"]["reason_code"], 0, "{connected}");
    let gone = event("client disconnected");
    assert_eq!(gone["fields"]["address"], "127.0.0.1", "{gone}");
    assert_eq!(gone["fields"]["reason_code"], 0, "{gone}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&config);
}
