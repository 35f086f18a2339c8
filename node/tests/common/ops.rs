//! The real `flotilla` binary with its admin endpoint on: killed and its data removed on
//! drop (a failing test leaks no process).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::http;

/// A running broker process with the admin endpoint on.
pub struct OpsBroker {
    pub child: std::process::Child,
    pub port: u16,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    config: String,
}

impl OpsBroker {
    /// Starts the binary with `[admin] listen` and `extra` TOML; returns once `/readyz`
    /// answers 200.
    pub fn start(extra: &str) -> Self {
        let (port, admin_port) = (super::free_port(), super::free_port());
        let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        let dir = super::temp_data_dir();
        let config = format!("[admin]\nlisten = \"{admin}\"\n{extra}");
        let child = super::spawn_broker(port, &dir, &config, "warn");
        http::wait_ok(admin, "/readyz");
        Self { child, port, admin, dir, config }
    }

    /// SIGKILL and start again on the same ports and data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = super::spawn_broker(self.port, &self.dir, &self.config, "warn");
        http::wait_ok(self.admin, "/readyz");
    }

    /// The admin token the broker generated in its data directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token")).expect("token file").trim().to_owned()
    }

    /// `method path` with the bearer token and a JSON body.
    pub fn call(&self, method: &str, path: &str, body: &str) -> http::Reply {
        let bearer = format!("Bearer {}", self.token());
        let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
        http::request(self.admin, method, path, &headers, body)
    }
}

impl Drop for OpsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
