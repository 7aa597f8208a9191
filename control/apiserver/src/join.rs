//! Join tokens: how `wasmkube agent` joins a cluster with one string.
//!
//! A join token is `K10<sha256 of the cluster CA certificate, hex>::<bootstrap token>`, the
//! shape k3s uses, around a Kubernetes bootstrap token (`<id>.<secret>`, see
//! `bootstrap_token`; `wasmkube server token create` makes one). The CA hash lets a new
//! agent trust the apiserver: it downloads the CA from the public `/cacerts` endpoint
//! without verification, then checks it against the hash before using it (kubeadm's
//! `--discovery-token-ca-cert-hash`). The bootstrap token then only lets it ask for its
//! own node certificate.
//!
//! Older versions joined with a shared bearer secret (`<data-dir>/node-token`, a static
//! token of the group `system:nodes`); [`remove_legacy_join_token`] revokes it on start.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bootstrap_token::BootstrapToken;
use crate::pki::{Pki, PkiError};

/// The file older versions kept the shared join secret in.
const LEGACY_TOKEN_FILE: &str = "node-token";
/// The user of the shared join secret of older versions.
const LEGACY_JOINER_USER: &str = "system:node-joiner";

/// The sha256 of a PEM text, hex-encoded.
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The join token for `token` on the cluster whose CA is `ca_pem`.
pub fn join_token(ca_pem: &str, token: &BootstrapToken) -> String {
    format!("K10{}::{token}", ca_hash(ca_pem))
}

/// Revokes the shared join secret of older versions: its file and its static token.
pub fn remove_legacy_join_token(data_dir: &Path, pki: &Pki) -> Result<(), PkiError> {
    let path = data_dir.join(LEGACY_TOKEN_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed the old shared join token; join nodes with `wasmkube server token create`")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(PkiError::Io { path, source }),
    }
    pki.remove_tokens_of(LEGACY_JOINER_USER)
}

/// Splits a join token into the CA hash and the bootstrap token.
pub fn parse(token: &str) -> Result<(&str, BootstrapToken), JoinError> {
    let rest = token
        .trim()
        .strip_prefix("K10")
        .ok_or(JoinError::MalformedToken)?;
    let (hash, secret) = rest.split_once("::").ok_or(JoinError::MalformedToken)?;
    let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_hash || secret.is_empty() {
        return Err(JoinError::MalformedToken);
    }
    let token = BootstrapToken::parse(secret).ok_or(JoinError::NotBootstrapToken)?;
    Ok((hash, token))
}

/// Why a join token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token is not of the form `K10<64 hex digits>::<id>.<secret>`.
    #[error(
        "the join token is malformed: it must look like K10<64 hex digits>::<6 characters>.<16 characters>; create one on the server with `wasmkube server token create`"
    )]
    MalformedToken,
    /// The token carries something else than a bootstrap token (an older shared secret).
    #[error(
        "the join token does not carry a bootstrap token (<6 characters>.<16 characters>): shared join secrets of older versions are no longer accepted; create a token on the server with `wasmkube server token create`"
    )]
    NotBootstrapToken,
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
/// Returns the CA (PEM) and the bootstrap token to authenticate with.
pub async fn fetch_cluster_ca(
    server_url: &str,
    token: &str,
) -> Result<(String, BootstrapToken), JoinError> {
    let (hash, bootstrap) = parse(token)?;
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
    Ok((pem, bootstrap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_through_parse() {
        let ca = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        let token = BootstrapToken::generate();
        let joined = join_token(ca, &token);
        let (hash, parsed) = parse(&joined).expect("parses");
        assert_eq!(hash, ca_hash(ca));
        assert_eq!(parsed, token);
    }

    #[test]
    fn malformed_and_old_join_tokens_are_rejected() {
        for bad in [
            "",
            "K10::x",
            "K10abc::x",
            "x::y",
            &format!("K10{}::", "a".repeat(64)),
        ] {
            assert!(
                matches!(parse(bad), Err(JoinError::MalformedToken)),
                "{bad}"
            );
        }
        let old = format!(
            "K10{}::{}",
            "a".repeat(64),
            "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"
        );
        assert!(matches!(parse(&old), Err(JoinError::NotBootstrapToken)));
    }

    #[test]
    fn the_old_shared_join_secret_is_revoked_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let secret = pki
            .add_token(LEGACY_JOINER_USER, &["system:nodes"])
            .unwrap();
        std::fs::write(dir.path().join(LEGACY_TOKEN_FILE), "K10x::y\n").unwrap();
        remove_legacy_join_token(dir.path(), &pki).unwrap();
        assert!(pki.token_authenticator().authenticate(&secret).is_none());
        assert!(!dir.path().join(LEGACY_TOKEN_FILE).exists());
        let reloaded = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert!(
            reloaded
                .token_authenticator()
                .authenticate(&secret)
                .is_none()
        );
        assert!(
            reloaded
                .token_authenticator()
                .authenticate(pki.admin_token())
                .is_some()
        );
    }
}
