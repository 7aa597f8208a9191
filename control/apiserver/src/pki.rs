//! The cluster's PKI: a CA, the apiserver's serving certificate, the admin client
//! certificate, static bearer tokens, and the admin kubeconfig.
//!
//! Everything is created on the first start under the data directory and reused later:
//!
//! ```text
//! <data-dir>/pki/ca.crt, ca.key          self-signed CA, ECDSA P-256, 10 years
//! <data-dir>/pki/server.crt, server.key  serving certificate, ~1 year, SANs below
//! <data-dir>/pki/admin.crt, admin.key    client certificate CN=admin, O=system:masters
//! <data-dir>/tokens.csv                  bearer tokens, kube-apiserver --token-auth-file format
//! <data-dir>/kubeconfig.yaml             written by [`write_kubeconfig`]
//! ```
//!
//! Keys and tokens are written with mode 0600. A serving certificate that lacks a SAN
//! needed now (another bind address), is not signed by the CA, or is about to expire is
//! re-issued by the same CA, so existing kubeconfigs keep working. Certificates are made
//! with rcgen and read back with x509-parser.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rand::RngCore;
use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use thiserror::Error;

use crate::authn::{GROUP_MASTERS, TokenAuthenticator, TokenEntry, TokenFileError};

mod files;
mod issue;

use files::{Pair, create_private_dir, invalid, read_optional, write_private};
use issue::{
    build_server_config, issue_client_cert, leaf_is_current, new_ca, new_server_cert, serving_sans,
};

/// User of the admin client certificate and token.
pub const ADMIN_USER: &str = "admin";
/// Name of the cluster, user and context in the admin kubeconfig.
pub const KUBECONFIG_NAME: &str = "wasmkube";

/// An error creating or loading the PKI.
#[derive(Debug, Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only one of a certificate and its key exists; refusing to overwrite the other.
    #[error("{present} exists but {missing} does not; restore it or remove both")]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A requested SAN is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {name:?}: {source}")]
    InvalidSan {
        /// The SAN as given.
        name: String,
        /// rcgen's complaint.
        #[source]
        source: rcgen::Error,
    },
    /// Generating a key or certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// The certificate or key.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The token file is malformed.
    #[error("{path}: {source}")]
    TokenFile {
        /// The token file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: TokenFileError,
    },
    /// Building the TLS configuration failed.
    #[error("building the TLS configuration: {0}")]
    Tls(String),
    /// Serializing the kubeconfig failed.
    #[error("serializing the kubeconfig: {0}")]
    Kubeconfig(#[from] serde_yaml_ng::Error),
    /// More than one group for a client certificate: rcgen writes one value per subject
    /// attribute (rustls/rcgen#81), so every group but the last would be lost.
    #[error(
        "a client certificate can carry one group (its O) for now, not {} ({}): bind the user, or one group it is in",
        .0.len(),
        .0.join(", ")
    )]
    TooManyGroups(Vec<String>),
}

/// The cluster's certificates, keys and tokens, loaded or created under a data directory.
pub struct Pki {
    data_dir: PathBuf,
    ca_cert_pem: String,
    ca_key_pem: String,
    server_cert_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    admin_token: String,
    tokens: Arc<TokenAuthenticator>,
    server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the PKI under `data_dir`, creating whatever is missing.
    ///
    /// `sans` are extra names for the serving certificate (the bind address's IP or host,
    /// public names); unspecified addresses (`0.0.0.0`, `::`) and brackets are ignored.
    pub fn load_or_create(data_dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
        let pki_dir = data_dir.join("pki");
        create_private_dir(data_dir)?;
        create_private_dir(&pki_dir)?;

        let ca_files = Pair::new(&pki_dir, "ca");
        let (ca_cert_pem, ca_key_pem, ca_is_new) = match ca_files.read()? {
            Some((cert, key)) => (cert, key, false),
            None => {
                let (cert, key) = new_ca()?;
                ca_files.write(&cert, &key)?;
                tracing::info!(path = %ca_files.cert.display(), "created the cluster CA");
                (cert, key, true)
            }
        };
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| invalid(&ca_files.key, e))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| invalid(&ca_files.cert, e))?;
        let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|e| invalid(&ca_files.cert, e))?;

        let wanted_sans = serving_sans(sans)?;
        let server_files = Pair::new(&pki_dir, "server");
        let (server_cert_pem, server_key_pem) = match server_files.read()? {
            Some((cert, key))
                if !ca_is_new && leaf_is_current(&cert, &ca_der, Some(&wanted_sans)) =>
            {
                (cert, key)
            }
            _ => {
                let (cert, key) = new_server_cert(&issuer, &wanted_sans)?;
                server_files.write(&cert, &key)?;
                tracing::info!(path = %server_files.cert.display(), sans = ?wanted_sans, "issued the serving certificate");
                (cert, key)
            }
        };

        let admin_files = Pair::new(&pki_dir, "admin");
        let (admin_cert_pem, admin_key_pem) = match admin_files.read()? {
            Some((cert, key)) if !ca_is_new && leaf_is_current(&cert, &ca_der, None) => (cert, key),
            _ => {
                let (cert, key) = issue_client_cert(&issuer, ADMIN_USER, &[GROUP_MASTERS])?;
                admin_files.write(&cert, &key)?;
                tracing::info!(path = %admin_files.cert.display(), "issued the admin client certificate");
                (cert, key)
            }
        };

        let (tokens, admin_token) = load_tokens(data_dir)?;
        let server_config = build_server_config(&ca_der, &server_cert_pem, &server_key_pem)?;
        Ok(Pki {
            data_dir: data_dir.to_path_buf(),
            ca_cert_pem,
            ca_key_pem,
            server_cert_pem,
            admin_cert_pem,
            admin_key_pem,
            admin_token,
            tokens,
            server_config,
        })
    }

    /// The rustls configuration for the apiserver: the serving certificate, client
    /// certificates verified against the CA but optional (bearer tokens work too), ALPN
    /// `h2` and `http/1.1`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server_config)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The serving certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The admin client certificate (CN=admin, O=system:masters), PEM.
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin_cert_pem
    }

    /// The admin client key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn admin_key_pem(&self) -> &str {
        &self.admin_key_pem
    }

    /// The admin bearer token (user admin, group system:masters).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bearer-token authenticator over `<data-dir>/tokens.csv`.
    pub fn token_authenticator(&self) -> Arc<TokenAuthenticator> {
        Arc::clone(&self.tokens)
    }

    /// Issues a client certificate signed by the cluster CA: user `common_name`, groups
    /// `organizations` (e.g. `system:node:n1` in `system:nodes`; at most one, see
    /// [`PkiError::TooManyGroups`]). Returns (cert, PKCS#8 key) PEM.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<(String, String), PkiError> {
        let path = self.data_dir.join("pki").join("ca.key");
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| invalid(&path, e))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &ca_key)
            .map_err(|e| invalid(&path.with_extension("crt"), e))?;
        issue_client_cert(&issuer, common_name, organizations)
    }

    /// The cluster CA as the signer of CertificateSigningRequests, issuing certificates
    /// valid for at most `duration`.
    pub fn signing_authority(
        &self,
        duration: std::time::Duration,
    ) -> crate::certificates::signer::SigningAuthority {
        crate::certificates::signer::SigningAuthority::new(
            &self.ca_cert_pem,
            &self.ca_key_pem,
            duration,
        )
    }

    /// Removes every static token of `user` (from `tokens.csv` too).
    pub fn remove_tokens_of(&self, user: &str) -> Result<(), PkiError> {
        if self.tokens.remove_user(user) {
            write_private(
                &tokens_path(&self.data_dir),
                self.tokens.to_file_contents().as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Generates a new bearer token for `user` in `groups`, saves it to `tokens.csv` and
    /// makes it valid at once. Returns the token.
    pub fn add_token(&self, user: &str, groups: &[&str]) -> Result<String, PkiError> {
        let token = random_token();
        self.tokens.insert(TokenEntry {
            token: token.clone(),
            user: user.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        });
        write_private(
            &tokens_path(&self.data_dir),
            self.tokens.to_file_contents().as_bytes(),
        )?;
        Ok(token)
    }
}

/// Writes a key or token file only its owner may read (0600), atomically.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_private(path, contents)
}

/// Writes a certificate or public key (0644), atomically.
pub(crate) fn write_public_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    files::write_public(path, contents)
}

/// `<data-dir>/tokens.csv`.
pub fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens.csv")
}

/// `<data-dir>/kubeconfig.yaml`.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig.yaml")
}

/// Writes the admin kubeconfig to `<data-dir>/kubeconfig.yaml` (mode 0600): cluster,
/// user and context `wasmkube`/`admin`/`wasmkube`, CA and client certificate embedded.
pub fn write_kubeconfig(data_dir: &Path, server_url: &str, pki: &Pki) -> Result<PathBuf, PkiError> {
    let yaml = kubeconfig_yaml(
        server_url,
        pki.ca_pem(),
        ADMIN_USER,
        pki.admin_cert_pem(),
        pki.admin_key_pem(),
    )?;
    let path = kubeconfig_path(data_dir);
    write_private(&path, yaml.as_bytes())?;
    Ok(path)
}

/// A kubeconfig (YAML) for the cluster at `server_url` that authenticates with a client
/// certificate (e.g. one from [`Pki::issue_client_cert`]): cluster and context `wasmkube`,
/// user `user`, CA and certificate embedded.
pub fn kubeconfig_yaml(
    server_url: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<String, PkiError> {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": KUBECONFIG_NAME,
            "cluster": { "server": server_url, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(cert_pem),
                "client-key-data": b64(key_pem),
            },
        }],
        "contexts": [{
            "name": KUBECONFIG_NAME,
            "context": { "cluster": KUBECONFIG_NAME, "user": user },
        }],
        "current-context": KUBECONFIG_NAME,
        "preferences": {},
    });
    Ok(serde_yaml_ng::to_string(&config)?)
}

/// A kubeconfig (YAML) for `user` in `groups` with a new client certificate signed by the
/// CA of the cluster in `data_dir` (what `kubeadm kubeconfig user` makes). `server_url`
/// defaults to the server of the admin kubeconfig there. The cluster must have started
/// once; only the CA is read, nothing is written (the serving certificate, the admin
/// credentials and the tokens stay as they are, whatever SANs the server runs with).
pub fn user_kubeconfig(
    data_dir: &Path,
    user: &str,
    groups: &[&str],
    server_url: Option<&str>,
) -> Result<String, PkiError> {
    let ca_files = Pair::new(&data_dir.join("pki"), "ca");
    if user.is_empty() {
        return Err(PkiError::Invalid {
            path: ca_files.cert,
            reason: "a client certificate needs a user name (its CN)".into(),
        });
    }
    let Some((ca_cert_pem, ca_key_pem)) = ca_files.read()? else {
        return Err(PkiError::Invalid {
            path: ca_files.cert,
            reason: "no cluster CA here: start `wasmkube server` once with this --data-dir".into(),
        });
    };
    let server_url = match server_url {
        Some(url) => url.to_string(),
        None => admin_server_url(data_dir)?,
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| invalid(&ca_files.key, e))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key).map_err(|e| invalid(&ca_files.cert, e))?;
    let (cert, key) = issue_client_cert(&issuer, user, groups)?;
    kubeconfig_yaml(&server_url, &ca_cert_pem, user, &cert, &key)
}

/// The server URL of the admin kubeconfig in `data_dir`.
fn admin_server_url(data_dir: &Path) -> Result<String, PkiError> {
    let path = kubeconfig_path(data_dir);
    let text = std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
        path: path.clone(),
        source,
    })?;
    let admin: serde_json::Value = serde_yaml_ng::from_str(&text)?;
    match admin
        .pointer("/clusters/0/cluster/server")
        .and_then(serde_json::Value::as_str)
    {
        Some(url) => Ok(url.to_string()),
        None => Err(PkiError::Invalid {
            path,
            reason: "the kubeconfig names no server".into(),
        }),
    }
}

/// Loads `tokens.csv`, creating it or adding an admin token when there is none.
fn load_tokens(data_dir: &Path) -> Result<(Arc<TokenAuthenticator>, String), PkiError> {
    let path = tokens_path(data_dir);
    let tokens = match read_optional(&path)? {
        Some(text) => TokenAuthenticator::parse(&text).map_err(|source| PkiError::TokenFile {
            path: path.clone(),
            source,
        })?,
        None => TokenAuthenticator::default(),
    };
    let existing = tokens
        .entries()
        .into_iter()
        .find(|e| e.user == ADMIN_USER && e.groups.iter().any(|g| g == GROUP_MASTERS));
    let admin_token = match existing {
        Some(entry) => entry.token,
        None => {
            let token = random_token();
            tokens.insert(TokenEntry {
                token: token.clone(),
                user: ADMIN_USER.to_string(),
                uid: String::new(),
                groups: vec![GROUP_MASTERS.to_string()],
            });
            write_private(&path, tokens.to_file_contents().as_bytes())?;
            token
        }
    };
    Ok((Arc::new(tokens), admin_token))
}

/// 32 random bytes, URL-safe base64 without padding (43 characters).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::issue::{San, ip_from_bytes};
    use super::*;
    use crate::authn::identity_from_certificate;

    fn sans_of(cert_pem: &str) -> BTreeSet<San> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let san = cert
            .subject_alternative_name()
            .expect("valid")
            .expect("present");
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    Some(San::Dns(dns.to_string()))
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    ip_from_bytes(bytes).map(San::Ip)
                }
                _ => None,
            })
            .collect()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn first_start_creates_every_file_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &["192.0.2.7".to_string()]).expect("created");
        for name in ["ca", "server", "admin"] {
            assert!(
                dir.path().join(format!("pki/{name}.crt")).is_file(),
                "{name}.crt"
            );
            let key = dir.path().join(format!("pki/{name}.key"));
            let text = std::fs::read_to_string(&key).expect("key");
            assert!(
                text.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{name}.key is PKCS#8 PEM"
            );
            #[cfg(unix)]
            assert_eq!(mode(&key), 0o600, "{name}.key mode");
        }
        #[cfg(unix)]
        assert_eq!(mode(&tokens_path(dir.path())), 0o600);
        assert_eq!(pki.admin_token().len(), 43);
        let sans = sans_of(pki.server_cert_pem());
        for wanted in [
            San::Dns("localhost".into()),
            San::Ip("127.0.0.1".parse().expect("ip")),
            San::Ip("::1".parse().expect("ip")),
            San::Ip("192.0.2.7".parse().expect("ip")),
        ] {
            assert!(sans.contains(&wanted), "{wanted:?} in {sans:?}");
        }
    }

    #[test]
    fn second_start_reuses_every_certificate_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &[]).expect("created");
        let second = Pki::load_or_create(dir.path(), &[]).expect("loaded");
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.server_cert_pem(), second.server_cert_pem());
        assert_eq!(first.admin_cert_pem(), second.admin_cert_pem());
        assert_eq!(first.admin_key_pem(), second.admin_key_pem());
        assert_eq!(first.admin_token(), second.admin_token());
        assert!(
            second
                .token_authenticator()
                .authenticate(first.admin_token())
                .is_some()
        );
    }

    #[test]
    fn a_new_bind_address_reissues_only_the_serving_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &["127.0.0.1".to_string()]).expect("created");
        let sans = ["10.9.8.7".to_string(), "API.example.com".to_string()];
        let second = Pki::load_or_create(dir.path(), &sans).expect("reissued");
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.admin_cert_pem(), second.admin_cert_pem());
        assert_ne!(first.server_cert_pem(), second.server_cert_pem());
        let present = sans_of(second.server_cert_pem());
        assert!(present.contains(&San::Ip("10.9.8.7".parse().expect("ip"))));
        assert!(present.contains(&San::Dns("api.example.com".into())));
        assert!(leaf_is_current(
            second.server_cert_pem(),
            &CertificateDer::from(der(second.ca_pem())),
            None
        ));

        let third = Pki::load_or_create(dir.path(), &sans).expect("loaded");
        assert_eq!(
            second.server_cert_pem(),
            third.server_cert_pem(),
            "same SANs keep the certificate"
        );
    }

    #[test]
    fn unspecified_and_bracketed_addresses_are_normalised() {
        let sans = serving_sans(&[
            "0.0.0.0".into(),
            "[::]".into(),
            "[fd00::1]".into(),
            " ".into(),
        ])
        .expect("valid");
        assert!(
            !sans
                .iter()
                .any(|s| matches!(s, San::Ip(ip) if ip.is_unspecified()))
        );
        assert!(sans.contains(&San::Ip("fd00::1".parse().expect("ip"))));
    }

    #[test]
    fn an_invalid_san_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            Pki::load_or_create(dir.path(), &["bad name\u{e9}".to_string()]).expect_err("invalid");
        assert!(matches!(err, PkiError::InvalidSan { .. }), "{err}");
    }

    #[test]
    fn a_missing_ca_key_is_refused_rather_than_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(dir.path(), &[]).expect("created");
        std::fs::remove_file(dir.path().join("pki/ca.key")).expect("remove");
        let err = Pki::load_or_create(dir.path(), &[]).expect_err("incomplete");
        assert!(matches!(err, PkiError::Incomplete { .. }), "{err}");
    }

    #[test]
    fn a_serving_certificate_from_another_ca_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &[]).expect("created");
        Pki::load_or_create(other.path(), &[]).expect("created");
        for file in ["server.crt", "server.key"] {
            std::fs::copy(
                other.path().join("pki").join(file),
                dir.path().join("pki").join(file),
            )
            .expect("copy");
        }
        let again = Pki::load_or_create(dir.path(), &[]).expect("loaded");
        assert_ne!(
            std::fs::read_to_string(other.path().join("pki/server.crt")).expect("read"),
            again.server_cert_pem()
        );
        assert_eq!(first.ca_pem(), again.ca_pem());
    }

    #[test]
    fn admin_and_issued_client_certificates_carry_user_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &[]).expect("created");
        let admin = identity_from_certificate(&der(pki.admin_cert_pem())).expect("identity");
        assert_eq!(admin.user, "admin");
        assert_eq!(admin.groups, vec!["system:masters"]);
        let (cert, key) = pki
            .issue_client_cert("system:node:n1", &["system:nodes"])
            .expect("issued");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let node = identity_from_certificate(&der(&cert)).expect("identity");
        assert_eq!(node.user, "system:node:n1");
        assert_eq!(node.groups, vec!["system:nodes"]);
    }

    #[test]
    fn added_tokens_are_valid_at_once_and_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &[]).expect("created");
        let token = pki
            .add_token("system:bootstrap:abc", &["system:bootstrappers"])
            .expect("added");
        assert_eq!(
            pki.token_authenticator()
                .authenticate(&token)
                .map(|i| i.user),
            Some("system:bootstrap:abc".to_string())
        );
        let again = Pki::load_or_create(dir.path(), &[]).expect("loaded");
        let identity = again
            .token_authenticator()
            .authenticate(&token)
            .expect("persisted");
        assert_eq!(identity.groups, vec!["system:bootstrappers"]);
        assert_eq!(again.admin_token(), pki.admin_token());
    }

    #[test]
    fn kubeconfig_embeds_the_ca_and_admin_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &[]).expect("created");
        let path = write_kubeconfig(dir.path(), "https://127.0.0.1:6443", &pki).expect("written");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        let config: serde_json::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        let decode = |v: &serde_json::Value| {
            let b64 = v.as_str().expect("string");
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64"),
            )
            .expect("utf8")
        };
        assert_eq!(config["current-context"], "wasmkube");
        assert_eq!(config["contexts"][0]["context"]["user"], "admin");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            decode(&config["clusters"][0]["cluster"]["certificate-authority-data"]),
            pki.ca_pem()
        );
        assert_eq!(
            decode(&config["users"][0]["user"]["client-certificate-data"]),
            pki.admin_cert_pem()
        );
        let key = decode(&config["users"][0]["user"]["client-key-data"]);
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn a_user_kubeconfig_carries_user_and_groups_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = user_kubeconfig(dir.path(), "alice", &[], None).expect_err("no CA yet");
        assert!(
            err.to_string().contains("start `wasmkube server` once"),
            "{err}"
        );
        let pki = Pki::load_or_create(dir.path(), &["192.0.2.7".to_string()]).expect("created");
        write_kubeconfig(dir.path(), "https://192.0.2.7:6443", &pki).expect("written");
        let server_before = pki.server_cert_pem().to_string();

        let err = user_kubeconfig(dir.path(), "alice", &["devs", "qa"], None).expect_err("two");
        assert!(
            matches!(err, PkiError::TooManyGroups(ref g) if g.len() == 2),
            "{err}"
        );
        let yaml = user_kubeconfig(dir.path(), "alice", &["devs"], None).expect("made");
        let config: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://192.0.2.7:6443"
        );
        assert_eq!(config["contexts"][0]["context"]["user"], "alice");
        let b64 = config["users"][0]["user"]["client-certificate-data"]
            .as_str()
            .expect("certificate");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let identity =
            identity_from_certificate(&der(std::str::from_utf8(&pem).expect("utf8"))).expect("id");
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.groups, vec!["devs"]);
        // The serving certificate (SAN 192.0.2.7) is left alone.
        let on_disk = std::fs::read_to_string(dir.path().join("pki/server.crt")).expect("read");
        assert_eq!(on_disk, server_before);

        let other =
            user_kubeconfig(dir.path(), "bob", &[], Some("https://example:1")).expect("made");
        assert!(other.contains("https://example:1"));
        assert!(user_kubeconfig(dir.path(), "", &[], None).is_err());
    }
}
