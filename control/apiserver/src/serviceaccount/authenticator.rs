//! The service-account token authenticator: a token of one of our issuers, signed by one
//! of our keys, in its lifetime and for our audiences ([`super::ServiceAccounts::verify`]),
//! authenticates as its service account only while the account and the pod or secret it is
//! bound to exist with the uids in the token (Kubernetes' `validator.Validate`): deleting
//! the pod or the account revokes it. An object being deleted still counts for a minute
//! after its `deletionTimestamp`, as Kubernetes allows.

use std::sync::Arc;

use serde_json::Value;

use super::claims::ObjectRef;
use super::{ServiceAccounts, Verified, now_seconds};
use crate::authn::{BearerTokenAuthenticator, Identity};
use crate::state::AppState;

/// How long after its `deletionTimestamp` a bound object still validates a token.
const DELETION_GRACE_SECONDS: i64 = 60;

/// The [`BearerTokenAuthenticator`] of service-account tokens.
pub struct ServiceAccountAuthenticator {
    accounts: Arc<ServiceAccounts>,
    state: AppState,
}

impl std::fmt::Debug for ServiceAccountAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAuthenticator")
            .field("issuer", &self.accounts.issuer())
            .finish_non_exhaustive()
    }
}

impl ServiceAccountAuthenticator {
    /// Verifies with `accounts`, looks objects up in `state`'s store.
    pub fn new(accounts: Arc<ServiceAccounts>, state: AppState) -> Self {
        ServiceAccountAuthenticator { accounts, state }
    }

    /// The stored object of core `kind`, if any.
    async fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Value>, String> {
        let rt = self
            .state
            .registry()
            .by_kind("", kind)
            .ok_or_else(|| format!("{kind} is not registered"))?;
        let kv = self
            .state
            .store()
            .get(&rt.key(Some(namespace), name))
            .await
            .map_err(|e| format!("reading {} {namespace}/{name}: {e}", rt.plural))?;
        kv.map(|kv| crate::object::decode(&kv).map_err(|e| e.message))
            .transpose()
    }

    /// Checks that a bound object exists with the uid of `reference` and was not deleted
    /// more than a minute ago.
    async fn check_bound(
        &self,
        kind: &str,
        what: &str,
        namespace: &str,
        reference: &ObjectRef,
        now: i64,
    ) -> Result<(), String> {
        let Some(obj) = self.get(kind, namespace, &reference.name).await? else {
            return Err(format!("{what} {namespace}/{} not found", reference.name));
        };
        let uid = crate::object::meta_str(&obj, "uid").unwrap_or("");
        if uid != reference.uid {
            return Err(format!(
                "{what} UID ({uid}) does not match claim ({})",
                reference.uid
            ));
        }
        let deleted = crate::object::meta_str(&obj, "deletionTimestamp")
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        if deleted.is_some_and(|at| at + DELETION_GRACE_SECONDS < now) {
            return Err(format!(
                "{what} {namespace}/{} has been deleted",
                reference.name
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl BearerTokenAuthenticator for ServiceAccountAuthenticator {
    /// The account of a valid token; `None` for tokens that are not ours and, logged with
    /// the reason, for ours that are not valid (expired, revoked...): the client sees 401.
    async fn authenticate(&self, token: &str) -> Option<Identity> {
        let now = now_seconds();
        let claims = match self.accounts.verify(token, now) {
            Verified::NotMine => return None,
            Verified::Invalid(why) => {
                tracing::debug!(%why, "service-account token refused");
                return None;
            }
            Verified::Valid(claims) => claims,
        };
        let k = &claims.kubernetes;
        let mut checks = vec![("ServiceAccount", "service account", &k.serviceaccount)];
        if let Some(pod) = &k.pod {
            checks.push(("Pod", "pod", pod));
        }
        if let Some(secret) = &k.secret {
            checks.push(("Secret", "secret", secret));
        }
        for (kind, what, reference) in checks {
            if let Err(why) = self
                .check_bound(kind, what, &k.namespace, reference, now)
                .await
            {
                tracing::debug!(%why, subject = %claims.sub, "service-account token refused");
                return None;
            }
        }
        Some(claims.identity())
    }
}
