//! TLS to the broker: the settings a run sends to its workers ([`TlsSpec`]) and the client
//! configuration each worker builds from them once and shares between its connections
//! ([`TlsConnector`]).
//!
//! rustls with the *ring* provider only. The CA bundle is read by the coordinator (so a bad
//! file fails the run before anything starts) and travels to the workers as PEM text.
//! `insecure` skips certificate verification (the handshake signatures are still checked):
//! for testing only, never to measure a production deployment's security.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use node::transport::tls::AnyCertificate;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

/// TLS settings of a run, as sent to every worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsSpec {
    /// Where the CA bundle came from (for error messages).
    pub ca_source: Option<String>,
    /// PEM text of the CA certificates to trust; `None` only with `insecure`.
    pub ca_pem: Option<String>,
    /// Skip certificate verification (testing only).
    pub insecure: bool,
    /// Name the broker's certificate must be valid for: a DNS name or an IP address.
    pub server_name: String,
}

/// Why the TLS settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Neither a CA bundle nor `--tls-insecure`.
    #[error(
        "--tls needs --ca FILE (PEM CA bundle to trust), or --tls-insecure to skip verification (testing only)"
    )]
    NoCa,
    /// A CA bundle and `--tls-insecure` together.
    #[error("--ca and --tls-insecure exclude each other")]
    CaAndInsecure,
    /// The CA file cannot be read.
    #[error("cannot read CA file {path}: {error}")]
    ReadCa {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The CA bundle is not PEM.
    #[error("CA bundle {source_name} is not valid PEM: {error}")]
    Pem {
        /// Where the bundle came from.
        source_name: String,
        /// The parse error.
        error: rustls_pki_types::pem::Error,
    },
    /// The CA bundle holds no certificate.
    #[error("CA bundle {0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCerts(String),
    /// A certificate of the bundle cannot be a trust anchor.
    #[error("certificate {index} of CA bundle {source_name} is unusable: {error}")]
    BadCa {
        /// Where the bundle came from.
        source_name: String,
        /// Position in the bundle, from 1.
        index: usize,
        /// Why.
        error: rustls::Error,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}: not a DNS name or IP address")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsSpec {
    /// The settings for `--tls`: the CA bundle read from `ca` (or none with `insecure`),
    /// the server name given or else the broker's IP. Checked completely (the client
    /// configuration is built once), so a bad file or name fails here, not in the workers.
    pub fn load(
        ca: Option<&Path>,
        insecure: bool,
        server_name: Option<&str>,
        broker: IpAddr,
    ) -> Result<Self, TlsError> {
        let ca_pem = match (ca, insecure) {
            (None, false) => return Err(TlsError::NoCa),
            (Some(_), true) => return Err(TlsError::CaAndInsecure),
            (None, true) => None,
            (Some(path), false) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| TlsError::ReadCa { path: path.display().to_string(), error })?,
            ),
        };
        let spec = Self {
            ca_source: ca.map(|p| p.display().to_string()),
            ca_pem,
            insecure,
            server_name: server_name.map_or_else(|| broker.to_string(), str::to_string),
        };
        TlsConnector::new(&spec)?;
        Ok(spec)
    }
}

/// A worker's TLS client side: one configuration shared by all its connections.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Builds the client configuration for `spec`.
    pub fn new(spec: &TlsSpec) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(spec.server_name.clone())
            .map_err(|_| TlsError::ServerName(spec.server_name.clone()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let config = match (&spec.ca_pem, spec.insecure) {
            (_, true) => builder
                .dangerous()
                // Any chain for any name; handshake signatures still checked.
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            (Some(pem), false) => {
                let name = spec.ca_source.clone().unwrap_or_else(|| "(inline)".into());
                builder.with_root_certificates(roots(pem, &name)?).with_no_client_auth()
            }
            (None, false) => return Err(TlsError::NoCa),
        };
        Ok(Self { config: Arc::new(config), server_name })
    }

    /// A new client-side TLS session (its ClientHello is ready to send).
    pub fn start(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}

/// The trust anchors of a PEM bundle.
fn roots(pem: &str, source_name: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|error| TlsError::Pem { source_name: source_name.into(), error })?;
        store.add(cert).map_err(|error| TlsError::BadCa {
            source_name: source_name.into(),
            index: i + 1,
            error,
        })?;
    }
    if store.is_empty() {
        return Err(TlsError::NoCerts(source_name.into()));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pem: Option<&str>, insecure: bool, name: &str) -> TlsSpec {
        TlsSpec {
            ca_source: Some("test.pem".into()),
            ca_pem: pem.map(str::to_string),
            insecure,
            server_name: name.into(),
        }
    }

    #[test]
    fn bad_bundles_and_names_are_clear_errors() {
        let none = TlsConnector::new(&spec(Some("not a certificate\n"), false, "127.0.0.1"));
        assert!(matches!(none, Err(TlsError::NoCerts(_))), "{none:?}");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bad = TlsConnector::new(&spec(Some(garbage), false, "127.0.0.1"));
        assert!(matches!(bad, Err(TlsError::BadCa { index: 1, .. })), "{bad:?}");
        let name = TlsConnector::new(&spec(None, true, "not a name!"));
        assert!(matches!(name, Err(TlsError::ServerName(_))), "{name:?}");
        assert!(TlsConnector::new(&spec(None, true, "broker.example")).is_ok());
        assert!(TlsConnector::new(&spec(None, false, "127.0.0.1")).is_err());
    }

    #[test]
    fn specs_survive_the_worker_protocol() {
        let s = spec(Some("-----BEGIN CERTIFICATE-----\n"), false, "broker.example");
        let json = serde_json::to_string(&s).expect("serialize");
        assert_eq!(serde_json::from_str::<TlsSpec>(&json).expect("deserialize"), s);
    }

    #[test]
    fn load_needs_a_ca_or_insecure_and_reports_the_file() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(matches!(TlsSpec::load(None, false, None, ip), Err(TlsError::NoCa)));
        let missing = TlsSpec::load(Some(Path::new("/nonexistent/ca.pem")), false, None, ip);
        let msg = missing.expect_err("missing file").to_string();
        assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");
        let insecure = TlsSpec::load(None, true, None, ip).expect("insecure");
        assert_eq!(insecure.server_name, "127.0.0.1");
        assert!(insecure.ca_pem.is_none());
    }
}
