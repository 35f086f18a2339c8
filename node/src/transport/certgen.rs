//! SHELL. `flotilla cert`: a development cluster CA and node certificates (rcgen 0.14, ring).
//!
//! Files in the output directory: `ca.pem`, `ca.key`, and `node-N.pem` / `node-N.key` per
//! node. An existing `ca.key` is reused, so more node certificates can be added later; the
//! CA certificate is re-derived from the same distinguished name and key, which keeps the
//! issuer name and key identifier of older node certificates valid.
//! Node certificates carry the name [`SERVER_NAME`] and both server and client usage.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::tls::{SERVER_NAME, TlsError, node_name};
use crate::group::NodeId;

/// The CA's common name.
const CA_NAME: &str = "Flotilla development cluster CA";

/// Why certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generation failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

fn write(path: PathBuf, text: &str) -> Result<(), CertError> {
    std::fs::write(&path, text).map_err(|source| CertError::Io { path, source })
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Writes (or reuses) the CA in `dir` and a certificate for every node in `nodes`.
/// Returns the files written.
pub fn generate(dir: &Path, nodes: &[NodeId]) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.to_owned(), source })?;
    let mut written = Vec::new();
    let ca_key_path = dir.join("ca.key");
    let ca_key = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|source| CertError::Io { path: ca_key_path.clone(), source })?;
        KeyPair::from_pem(&pem).map_err(TlsError::from)?
    } else {
        let key = KeyPair::generate().map_err(TlsError::from)?;
        write(ca_key_path.clone(), &key.serialize_pem())?;
        written.push(ca_key_path);
        key
    };
    let params = ca_params().map_err(TlsError::from)?;
    let ca_cert = params.self_signed(&ca_key).map_err(TlsError::from)?;
    let ca_pem_path = dir.join("ca.pem");
    if !ca_pem_path.exists() {
        write(ca_pem_path.clone(), &ca_cert.pem())?;
        written.push(ca_pem_path);
    }
    let issuer = Issuer::new(params, ca_key);
    for &node in nodes {
        let key = KeyPair::generate().map_err(TlsError::from)?;
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_string(), node_name(node)]).map_err(TlsError::from)?;
        params.distinguished_name.push(DnType::CommonName, format!("flotilla node {node}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(TlsError::from)?;
        let cert_path = dir.join(format!("node-{node}.pem"));
        let key_path = dir.join(format!("node-{node}.key"));
        write(cert_path.clone(), &cert.pem())?;
        write(key_path.clone(), &key.serialize_pem())?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}
