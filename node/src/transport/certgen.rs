//! SHELL. `flotilla cert`: a development cluster CA and node certificates (rcgen 0.14, ring).
//!
//! Files in the output directory: `ca.pem`, `ca.key`, and `node-N.pem` / `node-N.key` per
//! node. An existing `ca.key` is reused, so more node certificates can be added later; the
//! CA certificate is re-derived from the same distinguished name and key, which keeps the
//! issuer name and key identifier of older node certificates valid.
//! Node certificates carry the name [`SERVER_NAME`] and both server and client usage.
//!
//! - Private keys (`ca.key`, `node-N.key`) are created with mode 0600 by the `open` that
//!   creates them (an existing file is removed first, never truncated and reused, since a
//!   reused file keeps its old mode), so no other user can read them at any moment.
//! - `ca.pem` without `ca.key` is refused ([`CertError::OrphanCa`]) rather than paired with
//!   a new key it does not belong to.
//! - A reused `ca.key` that group or others may read is refused ([`CertError::KeyExposed`]):
//!   whoever could read it can mint node certificates, so the CA must be treated as leaked
//!   (or, if no one else could have read it, made private with `chmod 600`).
//! - Node certificates are valid for one year ([`NODE_VALIDITY`]), the CA for ten
//!   ([`CA_VALIDITY`]), so node certificates are re-issued yearly under the same CA. Both
//!   start [`CLOCK_SKEW`] before they were made, for peers whose clocks lag. A node
//!   certificate issued late in the CA's life still ends one year on: past the CA's end the
//!   chain no longer verifies, and the CA must be replaced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::tls::{SERVER_NAME, TlsError, node_name};
use crate::group::NodeId;

/// The CA's common name.
const CA_NAME: &str = "Flotilla development cluster CA";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a node certificate is valid after it is made: one year.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * DAY.as_secs());
/// How long the CA certificate is valid after it is made: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * DAY.as_secs());
/// Certificates are valid from this long before they are made.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Mode of the private key files.
const KEY_MODE: u32 = 0o600;

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
    /// The CA key to reuse may be read by group or others.
    #[error(
        "{path} has mode {mode:o}: group or others may read the CA key, and anyone who did can \
         mint node certificates; if the key may have leaked, make a new CA in another directory, \
         otherwise make it private (chmod 600) and retry"
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `ca.pem` is there but `ca.key` is not: certificates signed by a new key would not
    /// verify against it.
    #[error(
        "{path} exists but its key ca.key does not: restore ca.key, or remove ca.pem and \
         every node certificate to start a new CA"
    )]
    OrphanCa {
        /// The CA certificate.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_owned(), source }
}

fn write(path: PathBuf, text: &str) -> Result<(), CertError> {
    std::fs::write(&path, text).map_err(|source| CertError::Io { path, source })
}

/// Writes a private key into a new file created with mode 0600 (an existing file is
/// removed first: opening it would keep its old mode).
fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(path)(e)),
        _ => {}
    }
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(KEY_MODE).open(path).map_err(io_err(path))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err(path))
}

/// Reads the CA key to reuse, refusing one that group or others may read.
fn read_private(path: &Path) -> Result<KeyPair, CertError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyExposed { path: path.to_owned(), mode });
    }
    let mut pem = String::new();
    file.read_to_string(&mut pem).map_err(io_err(path))?;
    Ok(KeyPair::from_pem(&pem).map_err(TlsError::from)?)
}

/// Sets `params` valid from [`CLOCK_SKEW`] before `now` until `validity` after it.
fn set_validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(since_epoch.as_secs());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
}

fn ca_params(now: SystemTime) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, now, CA_VALIDITY);
    Ok(params)
}

fn node_params(node: NodeId, now: SystemTime) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), node_name(node)])?;
    params.distinguished_name.push(DnType::CommonName, format!("flotilla node {node}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, now, NODE_VALIDITY);
    Ok(params)
}

/// Writes (or reuses) the CA in `dir` and a certificate for every node in `nodes`, valid
/// from now. Returns the files written.
pub fn generate(dir: &Path, nodes: &[NodeId]) -> Result<Vec<PathBuf>, CertError> {
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(crate::clock::wall_ms());
    generate_at(dir, nodes, now)
}

/// [`generate`] with certificates valid from `now`.
pub fn generate_at(dir: &Path, nodes: &[NodeId], now: SystemTime) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = Vec::new();
    let ca_key_path = dir.join("ca.key");
    let ca_pem_path = dir.join("ca.pem");
    let ca_key = if ca_key_path.exists() {
        read_private(&ca_key_path)?
    } else if ca_pem_path.exists() {
        return Err(CertError::OrphanCa { path: ca_pem_path });
    } else {
        let key = KeyPair::generate().map_err(TlsError::from)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        written.push(ca_key_path);
        key
    };
    let params = ca_params(now).map_err(TlsError::from)?;
    let ca_cert = params.self_signed(&ca_key).map_err(TlsError::from)?;
    if !ca_pem_path.exists() {
        write(ca_pem_path.clone(), &ca_cert.pem())?;
        written.push(ca_pem_path);
    }
    let issuer = Issuer::new(params, ca_key);
    for &node in nodes {
        let key = KeyPair::generate().map_err(TlsError::from)?;
        let params = node_params(node, now).map_err(TlsError::from)?;
        let cert = params.signed_by(&key, &issuer).map_err(TlsError::from)?;
        let cert_path = dir.join(format!("node-{node}.pem"));
        let key_path = dir.join(format!("node-{node}.key"));
        write(cert_path.clone(), &cert.pem())?;
        write_private(&key_path, &key.serialize_pem())?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::UnixTime;
    use webpki::{EndEntityCert, KeyUsage};

    use super::*;
    use crate::transport::tls::load_certs;

    /// A scratch directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("flotilla-certgen-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn private_keys_are_created_with_mode_0600() {
        let dir = Dir::new("mode");
        // A key file left world-readable by an older run is replaced, not reused.
        std::fs::create_dir_all(&dir.0).expect("dir");
        std::fs::write(dir.0.join("node-2.key"), "old").expect("old key");
        set_mode(&dir.0.join("node-2.key"), 0o644);
        generate(&dir.0, &[1, 2]).expect("generate");
        for key in ["ca.key", "node-1.key", "node-2.key"] {
            assert_eq!(mode(&dir.0.join(key)), 0o600, "{key}");
        }
        generate(&dir.0, &[3]).expect("reuses the private CA key");
        assert_eq!(mode(&dir.0.join("node-3.key")), 0o600);
    }

    #[test]
    fn a_reused_ca_key_readable_by_group_or_others_is_refused() {
        let dir = Dir::new("exposed");
        generate(&dir.0, &[1]).expect("generate");
        let ca_key = dir.0.join("ca.key");
        for exposed in [0o640, 0o604] {
            set_mode(&ca_key, exposed);
            let err = generate(&dir.0, &[2]).expect_err("exposed CA key");
            assert!(matches!(err, CertError::KeyExposed { mode, .. } if mode == exposed), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            assert!(!dir.0.join("node-2.pem").exists());
        }
        set_mode(&ca_key, 0o400);
        generate(&dir.0, &[2]).expect("a private CA key is reused");
    }

    #[test]
    fn a_ca_certificate_without_its_key_is_refused() {
        let dir = Dir::new("orphan");
        generate(&dir.0, &[1]).expect("generate");
        std::fs::remove_file(dir.0.join("ca.key")).expect("rm");
        let err = generate(&dir.0, &[2]).expect_err("ca.pem without ca.key");
        assert!(matches!(err, CertError::OrphanCa { .. }), "{err}");
        assert!(!dir.0.join("ca.key").exists() && !dir.0.join("node-2.pem").exists());
    }

    /// Verifies `node`'s certificate in `dir` against the CA there at `at`, as a peer would.
    fn verify_at(dir: &Path, node: NodeId, at: SystemTime) -> Result<(), webpki::Error> {
        let ca = load_certs("ca-cert", &dir.join("ca.pem")).expect("ca.pem");
        let cert = load_certs("node-cert", &dir.join(format!("node-{node}.pem"))).expect("node cert");
        let anchor = webpki::anchor_from_trusted_cert(&ca[0]).expect("anchor");
        let ee = EndEntityCert::try_from(&cert[0]).expect("parses");
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms.all;
        let time = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970"));
        ee.verify_for_usage(algs, &[anchor], &[], time, KeyUsage::client_auth(), None, None).map(|_| ())
    }

    #[test]
    fn node_certificates_verify_for_one_year_from_now() {
        let dir = Dir::new("window");
        let before = SystemTime::now();
        generate(&dir.0, &[1]).expect("generate");
        let after = SystemTime::now();
        let second = Duration::from_secs(1);
        // Certificates count whole seconds: `before` and `after` bound the moment they were
        // made, and the checks leave a second of slack either way.
        for at in [before, after, after - CLOCK_SKEW, before + NODE_VALIDITY] {
            verify_at(&dir.0, 1, at).expect("valid");
        }
        let early = verify_at(&dir.0, 1, before - CLOCK_SKEW - 2 * second);
        assert!(matches!(early, Err(webpki::Error::CertNotValidYet { .. })), "{early:?}");
        let late = verify_at(&dir.0, 1, after + NODE_VALIDITY + 2 * second);
        assert!(matches!(late, Err(webpki::Error::CertExpired { .. })), "{late:?}");
    }

    /// Splits the first DER element off `der`: (tag, contents, rest).
    fn der_next(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (der[0], der[1]);
        let (len, at) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            (der[2..2 + n].iter().fold(0, |len, &b| len << 8 | usize::from(b)), 2 + n)
        };
        (tag, &der[at..at + len], &der[at + len..])
    }

    /// The notBefore and notAfter of a DER certificate, as (ASN.1 tag, text).
    fn validity(cert: &[u8]) -> [(u8, String); 2] {
        let (_, cert, _) = der_next(cert);
        let (_, mut tbs, _) = der_next(cert);
        if tbs[0] == 0xa0 {
            tbs = der_next(tbs).2; // version
        }
        for _ in ["serial", "signature algorithm", "issuer"] {
            tbs = der_next(tbs).2;
        }
        let (_, validity, _) = der_next(tbs);
        let (t1, not_before, rest) = der_next(validity);
        let (t2, not_after, _) = der_next(rest);
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("ASCII time");
        [(t1, text(not_before)), (t2, text(not_after))]
    }

    #[test]
    fn certificates_carry_their_validity_window() {
        let dir = Dir::new("der");
        // 2027-01-15 08:00:00 UTC.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        generate_at(&dir.0, &[1], now).expect("generate");
        const UTC_TIME: u8 = 0x17;
        let cases = [
            // The CA: ten years of 365 days (three leap days in between).
            ("ca.pem", "270115075500Z", "370112080000Z"),
            // A node: one year.
            ("node-1.pem", "270115075500Z", "280115080000Z"),
        ];
        for (file, not_before, not_after) in cases {
            let cert = load_certs("cert", &dir.0.join(file)).expect("certificate");
            let expected = [(UTC_TIME, not_before.to_string()), (UTC_TIME, not_after.to_string())];
            assert_eq!(validity(&cert[0]), expected, "{file}");
        }
    }
}
