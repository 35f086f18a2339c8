//! SHELL. The admin API's bearer token and the request checks around it.
//!
//! The token lives in a file (`[admin] token-file`, default `data-dir/admin.token`), mode
//! 0600: read if present (a file others may read is refused), else generated from
//! `/dev/urandom` and written once, its path logged. Every endpoint but `/openapi.json`, `/metrics`,
//! `/healthz` and `/readyz` needs `Authorization: Bearer <token>`, a `Host` naming this
//! endpoint (loopback, `localhost` or the bound address: no DNS rebinding) and, on requests
//! that change something, `Content-Type: application/json` (no cross-site form posts).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap};

use super::types::ApiError;

/// Random bytes in a generated token (hex-encoded, so twice as many characters).
const TOKEN_BYTES: usize = 32;

/// Why the token could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the file failed.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Group or others may access the file.
    #[error("admin token file {path} has mode {mode:o}; it must be 0600 (chmod 600 {path})")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no token.
    #[error("admin token file {0} is empty")]
    Empty(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io { path: path.to_owned(), source }
}

/// Reads the token in `path` (checking its mode), or generates and writes one.
pub fn load_or_create(path: &Path) -> Result<String, TokenError> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::Permissions { path: path.to_owned(), mode });
            }
            read(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Reads a token file (trailing whitespace ignored).
pub fn read(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(path.to_owned()));
    }
    Ok(token.to_owned())
}

fn create(path: &Path) -> Result<String, TokenError> {
    let mut random = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(io_error(Path::new("/dev/urandom")))?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(io_error(path))?;
    tracing::info!(path = %path.display(), "admin API token generated (send it as `Authorization: Bearer <token>`)");
    Ok(token)
}

/// Equal in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header value names this endpoint: `localhost`, a loopback address or
/// the bound address, with any port.
fn host_allowed(host: &str, local: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip == local.ip())
}

/// The checks of a request to a protected endpoint.
pub(crate) fn check(
    method: &Method,
    headers: &HeaderMap,
    local: SocketAddr,
    token: &str,
) -> Result<(), ApiError> {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host_allowed(host, local) {
        return Err(ApiError::Forbidden { message: format!("Host {host:?} is not this endpoint") });
    }
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if !bearer.is_some_and(|b| same(b.as_bytes(), token.as_bytes())) {
        return Err(ApiError::Unauthorized);
    }
    if *method != Method::GET && *method != Method::HEAD {
        let ct = headers.get(CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_naming_this_endpoint_pass_others_do_not() {
        let local: SocketAddr = "127.0.0.1:9946".parse().expect("addr");
        for ok in ["127.0.0.1:9946", "localhost:9946", "LOCALHOST", "[::1]:9946", "127.0.0.2"] {
            assert!(host_allowed(ok, local), "{ok}");
        }
        for bad in ["evil.example:9946", "evil.example", "", "10.0.0.1:9946", "127.0.0.1.evil.example"] {
            assert!(!host_allowed(bad, local), "{bad}");
        }
        assert!(host_allowed("10.0.0.1:9946", "10.0.0.1:9946".parse().expect("addr")));
    }

    #[test]
    fn a_token_file_is_made_0600_reused_and_refused_when_others_may_read_it() {
        let dir = std::env::temp_dir().join(format!("flotilla-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/admin.token");
        let made = load_or_create(&path).expect("generated");
        assert_eq!(made.len(), 2 * TOKEN_BYTES);
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path).expect("reused"), made);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(load_or_create(&path), Err(TokenError::Permissions { mode: 0o644, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
