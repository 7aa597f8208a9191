//! Node join tokens: how `wasmkube agent` joins a cluster with one string.
//!
//! A join token is `K10<sha256 of the cluster CA certificate, hex>::<secret>`, the shape
//! k3s uses. The secret is a bearer token of the apiserver (user `system:node-joiner`,
//! group `system:nodes`); the CA hash lets a new agent trust the apiserver: it downloads
//! the CA from the public `/cacerts` endpoint without verification, then checks it against
//! the hash before using it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::pki::{Pki, PkiError};

/// The file under the data directory that holds the join token.
pub const JOIN_TOKEN_FILE: &str = "node-token";
/// The user a join token authenticates as.
pub const JOINER_USER: &str = "system:node-joiner";

/// The sha256 of a PEM text, hex-encoded.
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The path of the join token file.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(JOIN_TOKEN_FILE)
}

/// Reads the cluster's join token, creating it (and its bearer token) on first use.
pub fn ensure_join_token(data_dir: &Path, pki: &Pki) -> Result<String, PkiError> {
    let path = token_path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if let Some((hash, secret)) = parse(&existing) {
            let known = pki.token_authenticator().authenticate(secret).is_some();
            if hash == ca_hash(pki.ca_pem()) && known {
                return Ok(existing);
            }
        }
    }
    let secret = pki.add_token(JOINER_USER, &["system:nodes"])?;
    let token = format!("K10{}::{secret}", ca_hash(pki.ca_pem()));
    write_private(&path, &token).map_err(|source| PkiError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(token)
}

/// Writes `text` to a file created with mode 0600 (never readable by others, not even
/// for a moment), through a temporary file renamed over `path`.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    // A stale temporary file may have another mode: start from none.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()?;
    debug_assert_eq!(file.metadata()?.permissions().mode() & 0o777, 0o600);
    std::fs::rename(&tmp, path)
}

/// Splits a join token into the CA hash and the bearer secret.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("K10")?;
    let (hash, secret) = rest.split_once("::")?;
    let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (valid_hash && !secret.is_empty()).then_some((hash, secret))
}

/// Why a join token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token is not of the form `K10<64 hex digits>::<secret>`.
    #[error(
        "the join token is malformed: it must look like K10<64 hex digits>::<secret>; print it on the server with `wasmkube server token`"
    )]
    MalformedToken,
    /// The server URL is not an https URL with a host.
    #[error("the server URL {0:?} is not valid: use https://HOST:PORT")]
    BadUrl(String),
    /// The server's `/cacerts` could not be fetched.
    #[error("cannot fetch the cluster CA from {url}: {reason}")]
    Fetch { url: String, reason: String },
    /// The CA the server sent does not match the token's hash.
    #[error(
        "the cluster CA from {url} does not match the join token (expected sha256 {expected}, got {actual}); check the server URL and the token"
    )]
    CaMismatch {
        url: String,
        expected: String,
        actual: String,
    },
}

/// Downloads the cluster CA from `server_url` and checks it against the join token.
/// Returns the CA (PEM) and the bearer secret to authenticate with.
pub async fn fetch_cluster_ca(
    server_url: &str,
    token: &str,
) -> Result<(String, String), JoinError> {
    let (hash, secret) = parse(token).ok_or(JoinError::MalformedToken)?;
    let uri: http::Uri = server_url
        .parse()
        .map_err(|_| JoinError::BadUrl(server_url.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(JoinError::BadUrl(server_url.to_string()));
    }
    let host = uri
        .host()
        .ok_or_else(|| JoinError::BadUrl(server_url.to_string()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let url = format!("{server_url}/cacerts");
    let (status, body) = crate::node_proxy::NodeClient::get_unverified(&host, port, "/cacerts")
        .await
        .map_err(|reason| JoinError::Fetch {
            url: url.clone(),
            reason,
        })?;
    if !status.is_success() {
        return Err(JoinError::Fetch {
            url,
            reason: format!("HTTP {status}"),
        });
    }
    let pem = String::from_utf8_lossy(&body).into_owned();
    let actual = ca_hash(&pem);
    if actual != hash {
        return Err(JoinError::CaMismatch {
            url,
            expected: hash.to_string(),
            actual,
        });
    }
    Ok((pem, secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_through_parse() {
        let hash = ca_hash("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n");
        let token = format!("K10{hash}::s3cret");
        assert_eq!(parse(&token), Some((hash.as_str(), "s3cret")));
    }

    #[test]
    fn malformed_join_tokens_are_rejected() {
        for bad in [
            "",
            "K10::x",
            "K10abc::x",
            "x::y",
            &format!("K10{}::", "a".repeat(64)),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_join_token_is_created_once_and_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let token = ensure_join_token(dir.path(), &pki).unwrap();
        assert_eq!(ensure_join_token(dir.path(), &pki).unwrap(), token);
        let (hash, secret) = parse(&token).unwrap();
        assert_eq!(hash, ca_hash(pki.ca_pem()));
        let identity = pki.token_authenticator().authenticate(secret).unwrap();
        assert_eq!(identity.user, JOINER_USER);
        let reloaded = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(ensure_join_token(dir.path(), &reloaded).unwrap(), token);
    }
}
