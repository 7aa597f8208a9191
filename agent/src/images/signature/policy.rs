//! The agent's image signature policy (`--image-signature-policy FILE`): which namespaces
//! run only images signed by which keys.
//!
//! ```yaml
//! rules:
//!   - namespaces: [prod, payments]   # or ["*"]: every namespace no other rule names
//!     keys: [/etc/wasmkube/cosign.pub, team-b.pub]   # PEM public keys; relative to this file
//! ```
//! A namespace is in at most one rule. A pod in a restricted namespace starts only when the
//! image digest it runs carries a signature that one of its rule's keys verifies
//! ([`super::check`]); otherwise its container waits with `SignatureValidationFailed` (then
//! `ImagePullBackOff`) and is retried with the pull back-off, so a signature pushed later
//! lets it start. A digest once verified for a rule stays verified while the agent runs
//! (like an image once pulled), so restarts do not ask the registry again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use super::{PublicKey, Refusal, Verified, check, remote};
use crate::images::Reference;
use crate::images::registry::{Registries, RegistryAuth};

/// The namespace pattern that matches every namespace no other rule names.
pub const ALL_NAMESPACES: &str = "*";

/// Why a policy file is refused; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("cannot read the image signature policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a policy.
    #[error("the image signature policy {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    namespaces: Vec<String>,
    keys: Vec<PathBuf>,
}

/// One rule: namespaces and the keys their images must be signed by.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Namespace names, or [`ALL_NAMESPACES`].
    pub namespaces: Vec<String>,
    /// The trusted keys (one valid signature by any of them suffices).
    pub keys: Vec<PublicKey>,
    /// Where the keys came from, for messages.
    pub key_files: Vec<PathBuf>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct SignaturePolicy {
    rules: Vec<Rule>,
}

impl SignaturePolicy {
    /// Reads and validates the policy file `path` (YAML or JSON); key paths are relative to
    /// its directory.
    pub fn load(path: &Path) -> Result<SignaturePolicy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        SignaturePolicy::parse(&text, base, |key| std::fs::read(key)).map_err(|message| {
            PolicyError::Invalid {
                path: path.to_path_buf(),
                message,
            }
        })
    }

    /// Parses `text`, reading each key with `read` (paths joined to `base`).
    fn parse(
        text: &str,
        base: &Path,
        read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<SignaturePolicy, String> {
        let file: PolicyFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if file.rules.is_empty() {
            return Err(
                "rules: at least one rule is required (without a policy, no namespace \
                        needs signatures)"
                    .into(),
            );
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut rules = Vec::new();
        for (i, rule) in file.rules.iter().enumerate() {
            if rule.namespaces.is_empty() {
                return Err(format!(
                    "rules[{i}].namespaces: at least one namespace (or \"*\") is required"
                ));
            }
            for (j, namespace) in rule.namespaces.iter().enumerate() {
                if namespace != ALL_NAMESPACES {
                    let problems = wasmkube_api::validate::is_dns1123_label(namespace);
                    if !problems.is_empty() {
                        return Err(format!(
                            "rules[{i}].namespaces[{j}]: {namespace:?} is not a namespace name \
                             or \"*\": {}",
                            problems.join("; ")
                        ));
                    }
                }
                if !seen.insert(namespace) {
                    return Err(format!(
                        "rules[{i}].namespaces[{j}]: {namespace:?} is already in an earlier rule \
                         (a namespace is in at most one rule)"
                    ));
                }
            }
            if rule.keys.is_empty() {
                return Err(format!(
                    "rules[{i}].keys: at least one public key file is required"
                ));
            }
            let mut keys = Vec::new();
            let mut key_files = Vec::new();
            for (j, key) in rule.keys.iter().enumerate() {
                let path = base.join(key);
                let pem = read(&path)
                    .map_err(|e| format!("rules[{i}].keys[{j}]: {}: {e}", path.display()))?;
                let public = PublicKey::from_pem(&pem)
                    .map_err(|e| format!("rules[{i}].keys[{j}]: {}: {e}", path.display()))?;
                keys.push(public);
                key_files.push(path);
            }
            rules.push(Rule {
                namespaces: rule.namespaces.clone(),
                keys,
                key_files,
            });
        }
        Ok(SignaturePolicy { rules })
    }

    /// The rule for `namespace` (its own, else the `*` rule), with its index.
    pub fn rule_for(&self, namespace: &str) -> Option<(usize, &Rule)> {
        let named = |pattern: &str| {
            self.rules
                .iter()
                .enumerate()
                .find(|(_, r)| r.namespaces.iter().any(|n| n == pattern))
        };
        named(namespace).or_else(|| named(ALL_NAMESPACES))
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// The agent's enforcement: the policy and the digests it has verified.
#[derive(Debug, Default)]
pub struct SignatureVerifier {
    policy: Option<SignaturePolicy>,
    /// (rule index, digest) pairs that passed.
    verified: Mutex<HashSet<(usize, String)>>,
}

impl SignatureVerifier {
    /// Enforces `policy` (none: every image runs).
    pub fn new(policy: Option<SignaturePolicy>) -> SignatureVerifier {
        SignatureVerifier {
            policy,
            verified: Mutex::default(),
        }
    }

    /// Whether pods in `namespace` need signed images.
    pub fn restricts(&self, namespace: &str) -> bool {
        self.policy
            .as_ref()
            .is_some_and(|p| p.rule_for(namespace).is_some())
    }

    /// Judges the image a pod in `namespace` named `image_ref` (its `image:`) and that
    /// resolved to manifest `digest`: `Ok(None)` when the namespace needs no signature,
    /// `Ok(Some(_))` when a trusted signature vouches for the digest. The signatures are
    /// read from the image's repository with `auth` (the pod's pull credentials).
    pub async fn verify(
        &self,
        registries: &Registries,
        namespace: &str,
        image_ref: &str,
        digest: &str,
        auth: &RegistryAuth,
    ) -> Result<Option<Verified>, Refusal> {
        let Some((index, rule)) = self.policy.as_ref().and_then(|p| p.rule_for(namespace)) else {
            return Ok(None);
        };
        let unavailable = |message: String| Refusal::Unavailable {
            digest: digest.to_string(),
            message,
        };
        let reference = match Reference::parse(image_ref) {
            Ok(r) if !crate::images::reference::is_bare_digest(image_ref) => r,
            _ => {
                return Err(unavailable(format!(
                    "{image_ref:?} names no registry repository to find its signatures in"
                )));
            }
        };
        let key = (index, digest.to_string());
        let done = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&key);
        let found = remote::fetch_signatures(registries, &reference, digest, auth)
            .await
            .map_err(unavailable);
        let found = match (found, done) {
            (Ok(found), _) => found,
            // Verified before and the registry is away now: what runs is unchanged.
            (Err(_), true) => {
                return Ok(Some(Verified {
                    digest: digest.to_string(),
                    docker_reference: reference.repository(),
                    key: String::new(),
                }));
            }
            (Err(e), false) => return Err(e),
        };
        let verified = check(&reference.repository(), digest, &found, &rule.keys)?;
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
        Ok(Some(verified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::signature::PrivateKey;

    fn parse(text: &str) -> Result<SignaturePolicy, String> {
        let pem = PrivateKey::generate().unwrap().public_key().to_pem();
        SignaturePolicy::parse(text, Path::new("/etc/wasmkube"), |path| {
            match path.to_str() {
                Some("/etc/wasmkube/a.pub" | "/keys/b.pub") => Ok(pem.clone().into_bytes()),
                Some("/etc/wasmkube/private.key") => Ok(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAA==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n".to_vec()),
                _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
            }
        })
    }

    #[test]
    fn a_namespace_takes_its_own_rule_else_the_star_rule_else_none() {
        let policy = parse(
            "rules:\n- namespaces: [prod, payments]\n  keys: [a.pub]\n- namespaces: ['*']\n  keys: [/keys/b.pub, a.pub]\n",
        )
        .unwrap();
        assert_eq!(policy.rule_for("prod").map(|(i, _)| i), Some(0));
        assert_eq!(
            policy.rule_for("dev").map(|(i, r)| (i, r.keys.len())),
            Some((1, 2))
        );
        assert_eq!(
            policy.rules()[1].key_files,
            [
                PathBuf::from("/keys/b.pub"),
                PathBuf::from("/etc/wasmkube/a.pub")
            ]
        );
        let only = parse(r#"{"rules": [{"namespaces": ["prod"], "keys": ["a.pub"]}]}"#).unwrap();
        assert!(only.rule_for("dev").is_none());
        let verifier = SignatureVerifier::new(Some(only));
        assert!(verifier.restricts("prod") && !verifier.restricts("dev"));
        assert!(!SignatureVerifier::new(None).restricts("prod"));
    }

    #[test]
    fn a_bad_policy_is_refused_naming_the_field() {
        for (text, says) in [
            ("rules: []", "rules: at least one rule"),
            (
                "rules:\n- namespaces: []\n  keys: [a.pub]",
                "rules[0].namespaces: at least one",
            ),
            (
                "rules:\n- namespaces: [Prod]\n  keys: [a.pub]",
                "rules[0].namespaces[0]: \"Prod\"",
            ),
            (
                "rules:\n- namespaces: [a]\n  keys: []",
                "rules[0].keys: at least one",
            ),
            (
                "rules:\n- namespaces: [a]\n  keys: [missing.pub]",
                "rules[0].keys[0]: /etc/wasmkube/missing.pub",
            ),
            (
                "rules:\n- namespaces: [a]\n  keys: [private.key]",
                "rules[0].keys[0]: /etc/wasmkube/private.key: a PEM block of type",
            ),
            (
                "rules:\n- namespaces: [a]\n  keys: [a.pub]\n- namespaces: [b, a]\n  keys: [a.pub]",
                "rules[1].namespaces[1]: \"a\" is already",
            ),
            (
                "rules:\n- namespaces: [a]\n  key: [a.pub]",
                "unknown field `key`",
            ),
            ("rule: []", "unknown field `rule`"),
            ("- not a map", "invalid type"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
