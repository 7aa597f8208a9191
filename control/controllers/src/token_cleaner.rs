//! The token cleaner (kube-controller-manager's `tokencleaner`): deletes bootstrap tokens
//! (Secrets of type `bootstrap.kubernetes.io/token` in `kube-system`) once their
//! `expiration` has passed, and looks at a token again when it is due to expire. The
//! apiserver already refuses an expired token; this keeps them from piling up. A token
//! whose expiration does not parse counts as expired, as Kubernetes'.
//!
//! It reads the shared Secret informer (the garbage collector follows Secrets' metadata
//! through the same watch) and deletes with a UID precondition, so a token recreated under
//! the same name is never deleted by mistake.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use wasmkube_client::informers::{SharedInformer, SharedInformerFactory};
use wasmkube_client::status::{is_conflict, is_not_found};

use crate::context::Context;
use crate::retry::{Retries, drain, requeue_failed, run_forever};

/// The namespace bootstrap tokens live in.
const NAMESPACE: &str = "kube-system";
/// The Secret type of bootstrap tokens.
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// When a token expires.
#[derive(Debug, PartialEq, Eq)]
enum Expiry {
    /// No expiration: kept forever.
    Never,
    /// Expired (or an unreadable expiration): to be deleted.
    Expired,
    /// Due in this long.
    In(Duration),
}

fn expiry(secret: &Secret, now: jiff::Timestamp) -> Expiry {
    let Some(raw) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .filter(|v| !v.is_empty())
    else {
        return Expiry::Never;
    };
    match raw.parse::<jiff::Timestamp>() {
        Ok(at) if at > now => {
            let left = at.duration_since(now);
            Expiry::In(Duration::try_from(left).unwrap_or(Duration::ZERO))
        }
        Ok(_) => Expiry::Expired,
        Err(e) => {
            tracing::info!(secret = %secret.name_any(), expiration = %raw, error = %e, "a bootstrap token's expiration does not parse: deleting it");
            Expiry::Expired
        }
    }
}

struct Cleaner {
    client: kube::Client,
    retries: Retries,
}

/// The token cleaner over the shared Secret informer; runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let secrets = informers.informer::<Secret>();
    async move {
        run_forever("tokencleaner", || run_controller(&ctx, &secrets)).await;
    }
}

async fn run_controller(ctx: &Arc<Context>, secrets: &SharedInformer<Secret>) {
    let cleaner = Arc::new(Cleaner {
        client: ctx.client.clone(),
        retries: Retries::default(),
    });
    let results = Controller::for_shared_stream(secrets.subscribe(), secrets.store()).run(
        reconcile,
        error_policy,
        cleaner,
    );
    drain("tokencleaner", results).await;
}

fn error_policy(secret: Arc<Secret>, error: &kube::Error, c: Arc<Cleaner>) -> Action {
    requeue_failed(
        &c.retries,
        "tokencleaner",
        &*secret,
        error,
        is_conflict(error),
    )
}

async fn reconcile(secret: Arc<Secret>, c: Arc<Cleaner>) -> Result<Action, kube::Error> {
    if secret.namespace().as_deref() != Some(NAMESPACE)
        || secret.type_.as_deref() != Some(TOKEN_TYPE)
        || secret.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    match expiry(&secret, jiff::Timestamp::now()) {
        Expiry::Never => Ok(Action::await_change()),
        // A little after the expiry, so the token is past it when looked at again.
        Expiry::In(left) => Ok(Action::requeue(left + Duration::from_secs(1))),
        Expiry::Expired => {
            let api: Api<Secret> = Api::namespaced(c.client.clone(), NAMESPACE);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&secret.name_any(), &params).await {
                Ok(_) => {
                    tracing::info!(secret = %secret.name_any(), "deleted an expired bootstrap token");
                    Ok(Action::await_change())
                }
                Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(Action::await_change()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn token(expiration: Option<&str>) -> Secret {
        let mut data = BTreeMap::new();
        if let Some(e) = expiration {
            data.insert("expiration".to_string(), ByteString(e.as_bytes().to_vec()));
        }
        Secret {
            data: Some(data),
            type_: Some(TOKEN_TYPE.into()),
            ..Secret::default()
        }
    }

    #[test]
    fn tokens_expire_at_their_expiration() {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(expiry(&token(None), now), Expiry::Never);
        assert_eq!(
            expiry(&token(Some("2025-01-01T00:01:00Z")), now),
            Expiry::In(Duration::from_secs(60))
        );
        assert_eq!(
            expiry(&token(Some("2024-12-31T23:59:59Z")), now),
            Expiry::Expired
        );
        assert_eq!(expiry(&token(Some("tomorrow")), now), Expiry::Expired);
    }
}
