//! Two per-namespace controllers every pod depends on, as kube-controller-manager's:
//!
//! - the ServiceAccount controller (`serviceaccount`): a `default` ServiceAccount in every
//!   active namespace, created again when deleted (pods run as `default` unless they name
//!   another, and the ServiceAccount admission plugin refuses pods whose account is missing);
//! - the root-CA publisher (`root-ca-cert-publisher`): a `kube-root-ca.crt` ConfigMap in
//!   every active namespace with the cluster CA under `ca.crt`, put back when deleted or
//!   changed (the `kube-api-access-*` volume of every pod projects it, so a guest can verify
//!   the apiserver).
//!
//! Both reconcile namespaces (a kube-runtime `Controller` over the shared Namespace
//! informer), triggered by their namespace and by changes of the objects they keep;
//! terminating namespaces are left alone, and a create that races the namespace's deletion
//! (404, or 403 for a terminating namespace) is not retried.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use wasmkube_client::informers::SharedInformerFactory;
use wasmkube_client::status::{
    is_already_exists, is_conflict, is_namespace_terminating, is_not_found,
};

use crate::context::Context;
use crate::retry::{Retries, drain, requeue_failed, run_forever};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap the root-CA publisher keeps.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its key holding the CA bundle.
pub const ROOT_CA_KEY: &str = "ca.crt";
/// The annotation describing it, and its value (Kubernetes' words).
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Why a namespace could not be synced.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Writing the object failed.
    #[error("{what} in namespace {namespace}: {source}")]
    Api {
        /// What was written.
        what: &'static str,
        /// The namespace.
        namespace: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl SyncError {
    fn is_conflict(&self) -> bool {
        match self {
            SyncError::Api { source, .. } => is_conflict(source),
        }
    }
}

/// Whether a namespace takes new content (neither terminating nor being deleted).
fn is_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Active")
}

/// Whether a create failed because the namespace is gone or terminating (nothing to retry).
fn namespace_gone(e: &kube::Error) -> bool {
    is_not_found(e) || is_namespace_terminating(e)
}

struct State<K: Resource<DynamicType = ()> + Clone + 'static> {
    client: kube::Client,
    /// The kept objects (ServiceAccounts or ConfigMaps), from the shared informer.
    objects: Store<K>,
    retries: Retries,
    root_ca: String,
}

/// The ServiceAccount controller; runs until the task is aborted.
pub(crate) fn run_service_accounts(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let namespaces = informers.informer::<Namespace>();
    let accounts = informers.informer::<ServiceAccount>();
    async move {
        run_forever("serviceaccount", || async {
            let state = Arc::new(State {
                client: ctx.client.clone(),
                objects: accounts.store(),
                retries: Retries::default(),
                root_ca: String::new(),
            });
            let results = Controller::for_shared_stream(namespaces.subscribe(), namespaces.store())
                .watches_shared_stream(accounts.subscribe(), |sa: Arc<ServiceAccount>| {
                    (sa.name_any() == DEFAULT_SERVICE_ACCOUNT)
                        .then(|| sa.namespace().map(|ns| ObjectRef::new(&ns)))
                        .flatten()
                })
                .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                .run(sync_service_account, error_policy, state);
            drain("serviceaccount", results).await;
        })
        .await;
    }
}

/// The root-CA publisher, publishing `root_ca`; runs until the task is aborted.
pub(crate) fn run_root_ca_publisher(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
    root_ca: String,
) -> impl Future<Output = ()> + Send + 'static {
    let namespaces = informers.informer::<Namespace>();
    let config_maps = informers.informer::<ConfigMap>();
    async move {
        run_forever("root-ca-cert-publisher", || async {
            let state = Arc::new(State {
                client: ctx.client.clone(),
                objects: config_maps.store(),
                retries: Retries::default(),
                root_ca: root_ca.clone(),
            });
            let results = Controller::for_shared_stream(namespaces.subscribe(), namespaces.store())
                .watches_shared_stream(config_maps.subscribe(), |cm: Arc<ConfigMap>| {
                    (cm.name_any() == ROOT_CA_CONFIG_MAP)
                        .then(|| cm.namespace().map(|ns| ObjectRef::new(&ns)))
                        .flatten()
                })
                .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                .run(publish_root_ca, error_policy, state);
            drain("root-ca-cert-publisher", results).await;
        })
        .await;
    }
}

fn error_policy<K: Resource<DynamicType = ()> + Clone + 'static>(
    ns: Arc<Namespace>,
    error: &SyncError,
    state: Arc<State<K>>,
) -> Action {
    requeue_failed(
        &state.retries,
        "namespace",
        &*ns,
        error,
        error.is_conflict(),
    )
}

/// Creates the namespace's `default` ServiceAccount when it has none.
async fn sync_service_account(
    ns: Arc<Namespace>,
    state: Arc<State<ServiceAccount>>,
) -> Result<Action, SyncError> {
    let namespace = ns.name_any();
    if !is_active(&ns) {
        return Ok(Action::await_change());
    }
    let key = ObjectRef::new(DEFAULT_SERVICE_ACCOUNT).within(&namespace);
    if state.objects.get(&key).is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.to_string()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(state.client.clone(), &namespace);
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => tracing::debug!(%namespace, "created the default service account"),
        Err(e) if is_already_exists(&e) || namespace_gone(&e) => {}
        Err(source) => {
            return Err(SyncError::Api {
                what: "creating the default service account",
                namespace,
                source,
            });
        }
    }
    state.retries.succeeded(&ns.uid().unwrap_or_default());
    Ok(Action::await_change())
}

/// Makes the namespace's `kube-root-ca.crt` hold the cluster CA, with its description.
async fn publish_root_ca(
    ns: Arc<Namespace>,
    state: Arc<State<ConfigMap>>,
) -> Result<Action, SyncError> {
    let namespace = ns.name_any();
    if !is_active(&ns) {
        return Ok(Action::await_change());
    }
    let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), state.root_ca.clone())]);
    let api: Api<ConfigMap> = Api::namespaced(state.client.clone(), &namespace);
    let key = ObjectRef::new(ROOT_CA_CONFIG_MAP).within(&namespace);
    let result = match state.objects.get(&key) {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIG_MAP.to_string()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_ANNOTATION.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Err(e) if is_already_exists(&e) || namespace_gone(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        }
        Some(current) => {
            let described = current
                .annotations()
                .get(DESCRIPTION_ANNOTATION)
                .is_some_and(|d| !d.is_empty());
            if current.data.as_ref() == Some(&data) && described {
                Ok(())
            } else {
                let mut cm = (*current).clone();
                cm.data = Some(data);
                cm.binary_data = None;
                cm.annotations_mut()
                    .insert(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string());
                match api
                    .replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm)
                    .await
                {
                    Err(e) if is_not_found(&e) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        }
    };
    result.map_err(|source| SyncError::Api {
        what: "publishing kube-root-ca.crt",
        namespace: namespace.clone(),
        source,
    })?;
    state.retries.succeeded(&ns.uid().unwrap_or_default());
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn only_active_namespaces_get_accounts_and_the_ca() {
        let mut ns = Namespace::default();
        assert!(is_active(&ns), "a namespace without a phase yet is active");
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..NamespaceStatus::default()
        });
        assert!(!is_active(&ns));
        let deleting: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gone", "deletionTimestamp": "2025-01-01T00:00:00Z"}
        }))
        .expect("namespace");
        assert!(!is_active(&deleting));
    }
}
