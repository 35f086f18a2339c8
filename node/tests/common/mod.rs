//! Shared test harness: an in-process broker on a real loopback socket, and helpers for the
//! rumqttc clients (v4 = MQTT 3.1.1, v5) the tests drive it with.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use node::broker::auth::Authenticator;
use node::config::NodeConfig;
use node::server::{Server, ShutdownHandle};

/// A running broker; shuts down when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
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
        let server = Server::bind(config).await.expect("bind");
        Self::spawn(server)
    }

    /// Starts a broker with a custom authenticator.
    pub async fn start_with_auth(auth: Box<dyn Authenticator>, tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = test_config();
        tweak(&mut config);
        let server = Server::bind_with_auth(config, auth).await.expect("bind");
        Self::spawn(server)
    }

    fn spawn(server: Server) -> Self {
        let addr = server.local_addr().expect("addr");
        let handle = server.shutdown_handle();
        let join = Some(tokio::spawn(server.run()));
        Self { addr, handle, join }
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
    }
}

/// Loopback on a free port, `$SYS` off (tests that want it turn it on).
fn test_config() -> NodeConfig {
    let mut config = NodeConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..NodeConfig::default() };
    config.broker.sys_interval_secs = 0;
    config
}

/// Upper bound for waiting on one expected event in tests (a hang guard, not a speed check).
pub const WAIT: Duration = Duration::from_secs(10);
