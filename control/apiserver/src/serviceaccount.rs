//! Service-account tokens: JWTs the apiserver signs for a ServiceAccount (the TokenRequest
//! API, `POST .../serviceaccounts/NAME/token`) and accepts as bearer tokens, as
//! kube-apiserver's `--service-account-*` flags configure it.
//!
//! - [`keys`]: the signing key (generated into `<data-dir>/pki/sa.key` for a new cluster)
//!   and the verification keys.
//! - [`claims`]: the claims Kubernetes puts in a token and the checks on them alone.
//! - [`ServiceAccounts`]: issues tokens ([`ServiceAccounts::issue`]) and verifies one's
//!   signature, issuer, times, audiences and subject ([`ServiceAccounts::verify`]).
//! - [`authenticator`]: the bearer authenticator of the chain, which also checks that the
//!   service account and the bound pod or secret still exist with the uids in the token.
//! - [`token_request`]: the `serviceaccounts/token` subresource.
//!
//! Differences from Kubernetes: no legacy (Secret-based) tokens, no
//! `--service-account-max-token-expiration`, and pod-bound tokens of 3607 s are not
//! extended to a year (`--service-account-extend-token-expiration`): a token expires when
//! it says, and the node agent refreshes it before.

pub mod authenticator;
pub mod claims;
pub mod keys;
pub mod token_request;

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Header, Validation};

pub use authenticator::ServiceAccountAuthenticator;
pub use claims::{Claims, ObjectRef, TokenSpec};
pub use keys::{KeyError, Keys};

/// The issuer of a cluster that sets none (kubeadm's and k3s' default).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The service-account settings of the apiserver.
#[derive(Clone, Debug, Default)]
pub struct ServiceAccountConfig {
    /// Issuers (`--service-account-issuer`): the first is put in new tokens, all are
    /// accepted. Empty: [`DEFAULT_ISSUER`].
    pub issuers: Vec<String>,
    /// The signing key (`--service-account-signing-key-file`); `None`: `<data-dir>/pki/sa.key`,
    /// generated on first start.
    pub signing_key_file: Option<PathBuf>,
    /// More keys tokens are verified with (`--service-account-key-file`).
    pub key_files: Vec<PathBuf>,
    /// What a token must be meant for to be accepted (`--api-audiences`). Empty: the
    /// issuers.
    pub api_audiences: Vec<String>,
}

/// The outcome of [`ServiceAccounts::verify`].
#[derive(Debug)]
pub enum Verified {
    /// Not a JWT of one of our issuers: another authenticator may know it.
    NotMine,
    /// One of ours, but not valid (why, for the log; clients only see 401).
    Invalid(String),
    /// Signed by one of our keys, in its lifetime, for our audiences.
    Valid(Box<Claims>),
}

/// Issues and verifies service-account tokens.
#[derive(Debug)]
pub struct ServiceAccounts {
    issuers: Vec<String>,
    api_audiences: Vec<String>,
    keys: Keys,
}

impl ServiceAccounts {
    /// Loads (or, for a new cluster, creates) the keys of `config`.
    pub fn load(config: &ServiceAccountConfig, data_dir: &Path) -> Result<Self, KeyError> {
        let keys = Keys::load_or_create(
            data_dir,
            config.signing_key_file.as_deref(),
            &config.key_files,
        )?;
        Ok(Self::new(config, keys))
    }

    /// Over already loaded keys.
    pub fn new(config: &ServiceAccountConfig, keys: Keys) -> Self {
        let issuers = if config.issuers.is_empty() {
            vec![DEFAULT_ISSUER.to_string()]
        } else {
            config.issuers.clone()
        };
        let api_audiences = if config.api_audiences.is_empty() {
            issuers.clone()
        } else {
            config.api_audiences.clone()
        };
        ServiceAccounts {
            issuers,
            api_audiences,
            keys,
        }
    }

    /// The issuer new tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuers[0]
    }

    /// The audiences of the apiserver: a TokenRequest without audiences gets these.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// Signs a token of `spec` issued at `now` (seconds since the epoch).
    pub fn issue(
        &self,
        spec: &TokenSpec<'_>,
        now: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(&spec.claims(now))
    }

    /// Signs `claims` as they are.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let signing = &self.keys.signing;
        let mut header = Header::new(signing.algorithm());
        header.kid = Some(signing.kid().to_string());
        jsonwebtoken::encode(&header, claims, signing.encoding_key())
    }

    /// Verifies a bearer token at `now`: issuer, signature, times, audiences and subject
    /// (not yet whether its objects exist: [`authenticator`]).
    pub fn verify(&self, token: &str, now: i64) -> Verified {
        let Some(issuer) = unverified_issuer(token) else {
            return Verified::NotMine;
        };
        if !self.issuers.contains(&issuer) {
            return Verified::NotMine;
        }
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        // The key named by the token first, then the others (a kid is only a hint).
        let mut keys: Vec<_> = self.keys.verifying.iter().collect();
        keys.sort_by_key(|k| Some(k.kid()) != kid.as_deref());
        let mut errors = Vec::new();
        let mut claims = None;
        for key in keys {
            let mut validation = Validation::new(key.algorithm());
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            match jsonwebtoken::decode::<Claims>(token, key.decoding_key(), &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let Some(claims) = claims else {
            return Verified::Invalid(errors.join(", "));
        };
        let checked = claims
            .check_times(now)
            .and_then(|()| claims.check_audiences(&self.api_audiences).map(|_| ()))
            .and_then(|()| claims.check_subject());
        match checked {
            Ok(()) => Verified::Valid(Box::new(claims)),
            Err(why) => Verified::Invalid(why),
        }
    }
}

/// The `iss` claim of what looks like a JWT, read without verifying anything (to tell
/// our tokens from other authenticators').
fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_string)
}

/// Seconds since the epoch.
pub fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(dir: &Path) -> ServiceAccounts {
        ServiceAccounts::load(&ServiceAccountConfig::default(), dir).expect("keys")
    }

    fn spec() -> TokenSpec<'static> {
        TokenSpec {
            issuer: DEFAULT_ISSUER,
            audiences: vec![DEFAULT_ISSUER.to_string()],
            namespace: "default",
            service_account: ObjectRef::new("default", "sa-uid"),
            pod: None,
            secret: None,
            node: None,
            expiration_seconds: 600,
        }
    }

    #[test]
    fn an_issued_token_verifies_and_carries_its_claims() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sa = accounts(dir.path());
        let token = sa.issue(&spec(), 1_000_000).expect("signed");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        assert!(header.kid.is_some());
        match sa.verify(&token, 1_000_100) {
            Verified::Valid(claims) => {
                assert_eq!(claims.sub, "system:serviceaccount:default:default");
                assert_eq!(claims.exp, 1_000_600);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expired_foreign_tampered_and_misaudienced_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sa = accounts(dir.path());
        let token = sa.issue(&spec(), 1_000_000).expect("signed");
        assert!(
            matches!(sa.verify(&token, 1_000_000 + 600 + 61), Verified::Invalid(why) if why.contains("expired"))
        );

        // Another cluster's key, same issuer: a signature error.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = accounts(other_dir.path());
        let forged = other.issue(&spec(), 1_000_000).expect("signed");
        assert!(matches!(
            sa.verify(&forged, 1_000_000),
            Verified::Invalid(_)
        ));

        // A changed payload breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims = spec().claims(1_000_000);
        claims.kubernetes.serviceaccount.name = "admin".into();
        claims.sub = "system:serviceaccount:default:admin".into();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).expect("json"));
        assert!(matches!(
            sa.verify(&parts.join("."), 1_000_000),
            Verified::Invalid(_)
        ));

        let mut vault = spec();
        vault.audiences = vec!["vault".into()];
        let token = sa.issue(&vault, 1_000_000).expect("signed");
        assert!(
            matches!(sa.verify(&token, 1_000_000), Verified::Invalid(why) if why.contains("audiences"))
        );
    }

    #[test]
    fn tokens_of_other_issuers_and_non_jwts_are_left_to_other_authenticators() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sa = accounts(dir.path());
        let mut spec = spec();
        spec.issuer = "https://elsewhere.example";
        let token = sa.issue(&spec, 1_000_000).expect("signed");
        assert!(matches!(sa.verify(&token, 1_000_000), Verified::NotMine));
        assert!(matches!(
            sa.verify("static-token", 1_000_000),
            Verified::NotMine
        ));
        assert!(matches!(sa.verify("a.b.c", 1_000_000), Verified::NotMine));
    }

    #[test]
    fn a_token_signed_by_a_listed_old_key_still_verifies() {
        let old_dir = tempfile::tempdir().expect("tempdir");
        let old = accounts(old_dir.path());
        let token = old.issue(&spec(), 1_000_000).expect("signed");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ServiceAccountConfig {
            key_files: vec![keys::default_signing_key_path(old_dir.path()).with_extension("pub")],
            ..ServiceAccountConfig::default()
        };
        let rotated = ServiceAccounts::load(&config, dir.path()).expect("keys");
        assert!(matches!(
            rotated.verify(&token, 1_000_000),
            Verified::Valid(_)
        ));
    }
}
