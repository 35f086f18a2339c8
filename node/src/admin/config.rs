//! The `[admin]` section of the node configuration: where the admin HTTP endpoint listens
//! (off by default). Documented in `flotilla.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `[admin]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// Admin HTTP endpoint address; unset = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Fault injection for tests: `POST /v1/debug/isolate {"isolated": true}` makes the node
    /// drop all cluster traffic, as a partition would. Never on in production (default off;
    /// off, the endpoint does not exist).
    pub fault_injection: bool,
    /// The bearer token's file (mode 0600; generated when absent); unset = `admin.token` in
    /// the data directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// Why an `[admin]` section is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminConfigError {
    /// The endpoint would be reachable from other hosts.
    #[error("admin.listen = {0} is not a loopback address (the admin endpoint serves loopback only)")]
    NotLoopback(SocketAddr),
}

impl AdminConfig {
    /// The token file in force for a node whose data lives in `data_dir`.
    pub fn token_path(&self, data_dir: &Path) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| data_dir.join("admin.token"))
    }

    /// Checks the section's own rules.
    pub fn validate(&self) -> Result<(), AdminConfigError> {
        match self.listen {
            Some(addr) if !addr.ip().is_loopback() => Err(AdminConfigError::NotLoopback(addr)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_must_be_loopback_and_unknown_keys_are_refused() {
        AdminConfig::default().validate().expect("off");
        let cfg: AdminConfig = toml::from_str("listen = \"127.0.0.1:9946\"\n").expect("parses");
        cfg.validate().expect("loopback");
        let public = SocketAddr::from(([0, 0, 0, 0], 9946));
        assert_eq!(
            AdminConfig { listen: Some(public), ..AdminConfig::default() }.validate(),
            Err(AdminConfigError::NotLoopback(public))
        );
        let err = toml::from_str::<AdminConfig>("admin-listen = \"127.0.0.1:9946\"\n").expect_err("old name");
        assert!(err.to_string().contains("admin-listen"), "{err}");
    }
}
