//! SHELL. TLS for the cluster transport: rustls 0.23 on ring (never aws-lc-rs), wrapped into
//! quinn server and client configurations.
//!
//! - Mutual TLS ([`TlsMode::Mutual`]): both sides present a certificate signed by the
//!   cluster CA; anything else fails the handshake. Certificates name [`SERVER_NAME`] and
//!   `node-N` ([`node_name`]): a dialer asks for `node-N` of the node it wants, and a
//!   receiver checks the client certificate names the node its `Hello` claims
//!   ([`peer_is_node`]), so a node cannot pose as another.
//! - Development ([`TlsMode::DevSelfSigned`]): each node makes a throwaway self-signed
//!   certificate; clients check the handshake signature but accept any certificate, so
//!   the mode is allowed on loopback addresses only (see
//!   `TransportConfig::check_addresses`).

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::{TlsMode, TransportConfig};

/// The name every node certificate carries and every client asks for: node identity is the
/// CA's signature plus the `Hello` frame, not the host name.
pub const SERVER_NAME: &str = "flotilla-node";
/// The ALPN protocol of the raft transport.
const ALPN: &[u8] = b"flotilla-raft/1";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {reason}")]
    Load {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (bad key, no usable CA, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A certificate could not be generated.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CA could not become a client verifier.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// The provider lacks the cipher suite QUIC needs.
    #[error("QUIC needs TLS 1.3 with AES-128-GCM: {0}")]
    Quic(String),
}

/// The quinn configurations of one node.
pub struct TlsConfigs {
    /// For accepting connections.
    pub server: quinn::ServerConfig,
    /// For dialing peers.
    pub client: quinn::ClientConfig,
    /// Mutual TLS: receivers check that a peer's certificate names the node it claims.
    pub mutual: bool,
}

/// The certificate name of node `node`.
pub fn node_name(node: crate::group::NodeId) -> String {
    format!("node-{node}")
}

/// Whether `conn`'s peer presented a certificate valid for [`node_name`]`(node)`.
pub fn peer_is_node(conn: &quinn::Connection, node: crate::group::NodeId) -> bool {
    let Some(identity) = conn.peer_identity() else { return false };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else { return false };
    let Some(cert) = chain.first() else { return false };
    let Ok(name) = ServerName::try_from(node_name(node)) else { return false };
    webpki::EndEntityCert::try_from(cert).is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds both configurations for `cfg` (without transport tuning; the caller sets it).
pub fn configs(cfg: &TransportConfig) -> Result<TlsConfigs, TlsError> {
    match cfg.tls {
        TlsMode::Mutual => {
            let ca = load_certs("ca-cert", &cfg.ca_cert)?;
            let chain = load_certs("node-cert", &cfg.node_cert)?;
            let key = load_key(&cfg.node_key)?;
            mutual(&ca, chain, key)
        }
        TlsMode::DevSelfSigned => dev_self_signed(),
    }
}

/// Mutual TLS from the CA certificates `ca`, this node's `chain` and `key`.
pub fn mutual(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsConfigs, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    wrap(server, client, true)
}

/// A throwaway self-signed certificate; peers' certificates are not checked.
pub fn dev_self_signed() -> Result<TlsConfigs, TlsError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let chain = vec![certified.cert.der().clone()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let verifier = AnyCertificate::new(provider().signature_verification_algorithms);
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    wrap(server, client, false)
}

fn wrap(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    mutual: bool,
) -> Result<TlsConfigs, TlsError> {
    let server = QuicServerConfig::try_from(server).map_err(|e| TlsError::Quic(e.to_string()))?;
    let client = QuicClientConfig::try_from(client).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(TlsConfigs {
        server: quinn::ServerConfig::with_crypto(Arc::new(server)),
        client: quinn::ClientConfig::new(Arc::new(client)),
        mutual,
    })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Load { what, path: path.display().to_string(), reason };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load {
        what: "node-key",
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Development verifier: any certificate for any name, but the handshake signature must be
/// valid (the peer holds the key of the certificate it sent). Also serves the bench
/// harness's `--tls-insecure`, where it keeps the measured TLS work equal to verification.
#[derive(Debug)]
pub struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    /// A verifier that checks handshake signatures with `algorithms` (a crypto provider's
    /// `signature_verification_algorithms`).
    pub fn new(algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { algorithms }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
