//! The service-account keys: the private key tokens are signed with and the public keys
//! they are verified with, as kube-apiserver's `--service-account-signing-key-file` and
//! `--service-account-key-file`.
//!
//! A new cluster gets `<data-dir>/pki/sa.key` (ECDSA P-256, PKCS#8, 0600) and `sa.pub`
//! (its public key, SubjectPublicKeyInfo PEM). A signing key of its own may be given instead
//! (PKCS#8 PEM, ECDSA P-256 for ES256 or RSA for RS256, the algorithms Kubernetes signs
//! with); more verification keys come from key files (`PUBLIC KEY` or `PRIVATE KEY` PEM
//! blocks), so tokens of a rotated-out key stay valid while it is listed. Every key's `kid`
//! is Kubernetes' key id: the unpadded base64url SHA-256 of its SubjectPublicKeyInfo DER.

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

/// The OID of an EC public key (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// The OID of the P-256 curve (prime256v1).
const OID_P256: &str = "1.2.840.10045.3.1.7";
/// The OID of an RSA public key (rsaEncryption).
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// Why the service-account keys cannot be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A key file does not hold a usable key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the generated key failed.
    #[error(transparent)]
    Write(crate::pki::PkiError),
    /// Generating the key failed.
    #[error("generating the service-account key: {0}")]
    Generate(#[source] rcgen::Error),
}

/// The key tokens are signed with.
pub struct SigningKey {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The JWS algorithm (`ES256` or `RS256`).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id put in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }
}

/// A public key tokens are verified with.
#[derive(Clone)]
pub struct VerifyingKey {
    key: DecodingKey,
    algorithm: Algorithm,
    kid: String,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The JWS algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// A verifying key from a SubjectPublicKeyInfo DER (ECDSA P-256 or RSA).
    fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| format!("not a public key: {e}"))?;
        let oid = spki.algorithm.algorithm.to_id_string();
        let raw = spki.subject_public_key.data.as_ref();
        let (key, algorithm) = if oid == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            if curve != OID_P256 {
                return Err(format!(
                    "the EC key is on curve {curve}; only P-256 (ES256) is supported"
                ));
            }
            (DecodingKey::from_ec_der(raw), Algorithm::ES256)
        } else if oid == OID_RSA {
            (DecodingKey::from_rsa_der(raw), Algorithm::RS256)
        } else {
            return Err(format!(
                "unsupported key algorithm {oid}: use ECDSA P-256 or RSA"
            ));
        };
        Ok(VerifyingKey {
            key,
            algorithm,
            kid: key_id(der),
        })
    }
}

/// The signing key and every key tokens are verified with.
#[derive(Debug)]
pub struct Keys {
    /// Signs new tokens.
    pub signing: SigningKey,
    /// Verify tokens: the signing key's public key first, then the key files' keys.
    pub verifying: Vec<VerifyingKey>,
}

/// `<data-dir>/pki/sa.key`, the generated signing key.
pub fn default_signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pki").join("sa.key")
}

impl Keys {
    /// Loads the signing key from `signing_key_file`, or from `<data-dir>/pki/sa.key`
    /// (generated on first use, with `sa.pub` beside it), plus the verification keys of
    /// `key_files`.
    pub fn load_or_create(
        data_dir: &Path,
        signing_key_file: Option<&Path>,
        key_files: &[PathBuf],
    ) -> Result<Keys, KeyError> {
        let (path, pem) = match signing_key_file {
            Some(path) => (path.to_path_buf(), read(path)?),
            None => {
                let path = default_signing_key_path(data_dir);
                let pem = match std::fs::read_to_string(&path) {
                    Ok(pem) => pem,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(&path)?,
                    Err(source) => return Err(KeyError::Io { path, source }),
                };
                (path, pem)
            }
        };
        let invalid = |reason: String| KeyError::Invalid {
            path: path.clone(),
            reason,
        };
        let pair = KeyPair::from_pem(&pem)
            .map_err(|e| invalid(format!("not a PKCS#8 private key: {e}")))?;
        let public =
            VerifyingKey::from_spki_der(&pair.subject_public_key_info()).map_err(invalid)?;
        let key = match public.algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .map_err(|e| invalid(e.to_string()))?;
        let signing = SigningKey {
            key,
            algorithm: public.algorithm,
            kid: public.kid.clone(),
        };
        let mut verifying = vec![public];
        for file in key_files {
            for key in verifying_keys(file)? {
                if !verifying.iter().any(|k| k.kid == key.kid) {
                    verifying.push(key);
                }
            }
        }
        Ok(Keys { signing, verifying })
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Every key of a PEM file: `PUBLIC KEY` blocks as they are, `PRIVATE KEY` blocks by their
/// public key.
fn verifying_keys(path: &Path) -> Result<Vec<VerifyingKey>, KeyError> {
    let text = read(path)?;
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let blocks = pem::parse_many(text.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let mut keys = Vec::new();
    for block in blocks {
        let der = match block.tag() {
            "PUBLIC KEY" => block.contents().to_vec(),
            "PRIVATE KEY" => {
                let pair = KeyPair::try_from(block.contents())
                    .map_err(|e| invalid(format!("a PRIVATE KEY block is not usable: {e}")))?;
                pair.subject_public_key_info()
            }
            other => {
                return Err(invalid(format!(
                    "unsupported PEM block {other:?}: use PUBLIC KEY or PKCS#8 PRIVATE KEY"
                )));
            }
        };
        keys.push(VerifyingKey::from_spki_der(&der).map_err(invalid)?);
    }
    if keys.is_empty() {
        return Err(invalid("no key in the file".into()));
    }
    Ok(keys)
}

/// Makes a new ECDSA P-256 key at `path` (0600) and its public key beside it (`.pub`).
fn generate(path: &Path) -> Result<String, KeyError> {
    let pair = KeyPair::generate().map_err(KeyError::Generate)?;
    let pem = pair.serialize_pem();
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KeyError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    crate::pki::write_private_file(path, pem.as_bytes()).map_err(KeyError::Write)?;
    let public = path.with_extension("pub");
    crate::pki::write_public_file(&public, pair.public_key_pem().as_bytes())
        .map_err(KeyError::Write)?;
    tracing::info!(path = %path.display(), "created the service-account signing key");
    Ok(pem)
}

/// Kubernetes' key id: unpadded base64url of the SHA-256 of the SubjectPublicKeyInfo DER.
fn key_id(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cluster_gets_a_private_es256_key_and_reuses_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Keys::load_or_create(dir.path(), None, &[]).expect("created");
        assert_eq!(first.signing.algorithm(), Algorithm::ES256);
        let key = default_signing_key_path(dir.path());
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(key.with_extension("pub").is_file());
        let second = Keys::load_or_create(dir.path(), None, &[]).expect("loaded");
        assert_eq!(first.signing.kid(), second.signing.kid());
        assert_eq!(second.verifying.len(), 1);
        assert_eq!(second.verifying[0].kid(), first.signing.kid());
        assert_eq!(
            first.signing.kid().len(),
            43,
            "unpadded base64url of 32 bytes"
        );
    }

    #[test]
    fn key_files_add_public_and_private_keys_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = KeyPair::generate().expect("key");
        let file = dir.path().join("old.pem");
        std::fs::write(
            &file,
            format!("{}{}", other.public_key_pem(), other.serialize_pem()),
        )
        .expect("write");
        let keys = Keys::load_or_create(dir.path(), None, &[file]).expect("loaded");
        assert_eq!(keys.verifying.len(), 2, "the same key twice counts once");
    }

    #[test]
    fn unusable_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.pem");
        std::fs::write(
            &file,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = Keys::load_or_create(dir.path(), None, std::slice::from_ref(&file))
            .expect_err("refused");
        assert!(err.to_string().contains("unsupported PEM block"), "{err}");
        std::fs::write(&file, "nothing").expect("write");
        let err = Keys::load_or_create(dir.path(), Some(&file), &[]).expect_err("refused");
        assert!(
            err.to_string().contains("not a PKCS#8 private key"),
            "{err}"
        );
    }
}
