//! The ReplicaSet controller: keeps `spec.replicas` active pods that match a ReplicaSet's
//! selector and are controlled by it, as kube-controller-manager's
//! (`pkg/controller/replicaset/replica_set.go`).
//!
//! One sync of a ReplicaSet:
//! 1. reads the pods of its namespace from a watch-fed store (never a LIST per sync);
//! 2. adopts matching orphans and releases pods that stopped matching ([`claim`]);
//! 3. if its [`crate::expectations`] are satisfied (the watch has shown the previous sync's creates
//!    and deletes), creates pods from the template in slow-start batches or deletes the
//!    surplus in [`ranking`] order, at most [`manage::BURST_REPLICAS`] per sync
//!    ([`crate::pod_control`]);
//! 4. writes the [`status`] if it changed, and requeues after `minReadySeconds` while ready
//!    pods are not yet available.
//!
//! A ReplicaSet being deleted creates, deletes, adopts and releases nothing; the garbage
//! collector removes its pods. The watches ([`crate::informer`]) feed the stores and the queue of
//! kube-runtime's `applier`, which never runs two syncs of one ReplicaSet at once.

pub(crate) mod claim;
pub(crate) mod manage;
pub(crate) mod ranking;
pub(crate) mod status;
mod sync;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{ObjectRef, Store};
use wasmkube_api::selector::LabelSelector;

use crate::context::Context;
use crate::expectations::Expectations;
use crate::informer;
use crate::pod_control::PodControl;
use crate::pods::controller_of;
use crate::retry::{Retries, drain, requeue_failed};
use wasmkube_client::informers::{Change, SharedInformerFactory};

/// The `source.component` of the controller's Events.
pub(crate) const COMPONENT: &str = "replicaset-controller";

/// Why a sync failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Creating or deleting pods failed.
    #[error("{0}")]
    Manage(String),
    /// An API call other than creating or deleting pods failed.
    #[error("{context}: {source}")]
    Api {
        /// What the controller was doing.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The sync's task ended without a result (it panicked).
    #[error("the sync task failed: {0}")]
    Task(String),
}

/// The controller's state shared by its syncs.
pub(crate) struct ReplicaSetController {
    client: kube::Client,
    pod_control: PodControl,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    retries: Retries,
}

/// The ReplicaSet controller over the shared pod and ReplicaSet informers; runs until the
/// task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let pods = informers.informer::<Pod>();
    let replicasets = informers.informer::<ReplicaSet>();
    async move {
        let client = ctx.client.clone();
        let expectations = Arc::new(Expectations::default());
        let (queue_tx, queue_rx) = mpsc::unbounded::<ObjectRef<ReplicaSet>>();
        let rs_store = replicasets.store();
        let _rs_handler = {
            let queue = queue_tx.clone();
            let expectations = expectations.clone();
            let store = rs_store.clone();
            replicasets
                .add_handler(move |change| replicaset_event(change, &store, &expectations, &queue))
        };
        let _pod_handler = {
            let expectations = expectations.clone();
            let store = rs_store.clone();
            pods.add_handler(move |change| {
                // Observed first: a sync this change triggers must find it observed.
                informer::observe(&expectations, change);
                for r in pod_triggers(change, &store) {
                    let _ = queue_tx.unbounded_send(r);
                }
            })
        };
        // Like client-go's WaitForCacheSync: a sync that ran before the pods were listed
        // would see none and create them all again.
        if !replicasets.wait_synced().await || !pods.wait_synced().await {
            tracing::error!("ReplicaSet controller: an informer stopped before listing");
            return std::future::pending().await;
        }
        tracing::info!("ReplicaSet controller started");
        let controller = Arc::new(ReplicaSetController {
            pod_control: PodControl::new(client.clone(), ctx.recorder(COMPONENT), expectations),
            client,
            pods: pods.store(),
            replicasets: rs_store.clone(),
            retries: Retries::client_go_default(),
        });
        let config = ApplierConfig::default().concurrency(ctx.config.concurrency);
        let results = kube::runtime::applier(
            |rs, controller: Arc<ReplicaSetController>| {
                SpawnedSync(tokio::spawn(async move { controller.reconcile(rs).await }))
            },
            |rs, error, controller| controller.error_policy(&rs, error),
            controller,
            rs_store,
            queue_rx.map(Ok::<_, Infallible>),
            config,
        );
        drain("replicaset", results).await;
        // The queue only ends if the handlers were removed, which they are not while this
        // task runs; stay up regardless.
        std::future::pending().await
    }
}

/// Queues ReplicaSets as their informer shows them; forgets the expectations of deleted
/// ones, and after a relist those of every ReplicaSet that vanished meanwhile.
fn replicaset_event(
    change: &Change<'_, Arc<ReplicaSet>>,
    store: &Store<ReplicaSet>,
    expectations: &Expectations,
    queue: &mpsc::UnboundedSender<ObjectRef<ReplicaSet>>,
) {
    match change {
        Change::Applied { new, .. } => {
            let _ = queue.unbounded_send(ObjectRef::from_obj(&***new));
        }
        Change::Deleted(rs) => {
            if let Some(uid) = &rs.metadata.uid {
                expectations.forget(uid);
            }
        }
        Change::Relisted => {
            let all = store.state();
            let uids: std::collections::HashSet<&str> = all
                .iter()
                .filter_map(|rs| rs.metadata.uid.as_deref())
                .collect();
            expectations.retain_owners(|uid| uids.contains(uid));
        }
    }
}

/// The ReplicaSets a pod change concerns (Kubernetes' addPod/updatePod/deletePod): the
/// controller before and after the change, and for an orphan whose labels or controller
/// changed, every ReplicaSet whose selector matches it (one of them may adopt it).
fn pod_triggers(
    change: &Change<'_, Arc<Pod>>,
    replicasets: &Store<ReplicaSet>,
) -> Vec<ObjectRef<ReplicaSet>> {
    let (old, new): (Option<&Pod>, &Pod) = match change {
        Change::Applied { old, new } => (old.map(|o| &**o), &***new),
        Change::Deleted(pod) => (None, &***pod),
        Change::Relisted => {
            return replicasets
                .state()
                .iter()
                .map(|rs| ObjectRef::from_obj(&**rs))
                .collect();
        }
    };
    let mut refs = Vec::new();
    for pod in old.into_iter().chain([new]) {
        if let Some(r) = owning_replicaset(pod)
            && !refs.contains(&r)
        {
            refs.push(r);
        }
    }
    if let Change::Applied { .. } = change {
        let orphan = controller_of(&new.metadata).is_none();
        let changed = old.is_none_or(|o| {
            o.metadata.labels != new.metadata.labels || controller_of(&o.metadata).is_some()
        });
        if orphan && changed && new.metadata.deletion_timestamp.is_none() {
            refs.extend(matching_replicasets(new, replicasets));
        }
    }
    refs
}

/// The ReplicaSet named by the pod's controller reference, if a ReplicaSet controls it.
fn owning_replicaset(pod: &Pod) -> Option<ObjectRef<ReplicaSet>> {
    let owner = controller_of(&pod.metadata)?;
    if owner.kind != "ReplicaSet" || !owner.api_version.starts_with("apps/") {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref()?;
    Some(ObjectRef::new(&owner.name).within(namespace))
}

/// The ReplicaSets of the pod's namespace whose selector matches its labels.
fn matching_replicasets(pod: &Pod, replicasets: &Store<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    let Some(labels) = pod.metadata.labels.as_ref() else {
        return Vec::new();
    };
    let namespace = pod.metadata.namespace.as_deref();
    replicasets
        .state()
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == namespace)
        .filter(|rs| {
            rs.spec.as_ref().is_some_and(|s| {
                LabelSelector::from_k8s(&s.selector)
                    .is_ok_and(|sel| !sel.is_empty() && sel.matches(labels))
            })
        })
        .map(|rs| ObjectRef::from_obj(&**rs))
        .collect()
}

impl ReplicaSetController {
    /// Requeues a failed sync with exponential backoff per ReplicaSet (5 ms doubling to
    /// 1000 s, as client-go's default item rate limiter), reset by a successful sync.
    fn error_policy(&self, rs: &ReplicaSet, error: &Error) -> Action {
        requeue_failed(&self.retries, "replicaset", rs, error, false)
    }

    fn sync_succeeded(&self, rs: &ReplicaSet) {
        if let Some(uid) = &rs.metadata.uid {
            self.retries.succeeded(uid);
        }
    }
}

/// A sync spawned on its own task (so syncs of different ReplicaSets use all cores),
/// aborted if the applier drops it.
struct SpawnedSync(tokio::task::JoinHandle<Result<Action, Error>>);

impl std::future::Future for SpawnedSync {
    type Output = Result<Action, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|e| Err(Error::Task(e.to_string()))))
    }
}

impl Drop for SpawnedSync {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as K8sSelector, ObjectMeta, OwnerReference,
    };
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn replicaset(namespace: &str, name: &str, app: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                uid: Some(format!("uid-{namespace}-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                selector: K8sSelector {
                    match_labels: Some([("app".to_string(), app.to_string())].into()),
                    match_expressions: None,
                },
                ..ReplicaSetSpec::default()
            }),
            status: None,
        }
    }

    fn store(replicasets: Vec<ReplicaSet>) -> Store<ReplicaSet> {
        let (reader, mut writer) = reflector::store();
        for rs in replicasets {
            writer.apply_watcher_event(&Event::Apply(rs));
        }
        reader
    }

    fn pod(app: &str, controller: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: controller.map(|name| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: name.into(),
                        uid: format!("uid-default-{name}"),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn names(refs: &[ObjectRef<ReplicaSet>]) -> Vec<String> {
        let mut names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_pod_change_syncs_its_controller_before_and_after() {
        let replicasets = store(vec![]);
        let new = Arc::new(pod("web", Some("web-b")));
        let old = Arc::new(pod("web", Some("web-a")));
        let change = Change::Applied {
            old: Some(&old),
            new: &new,
        };
        assert_eq!(
            names(&pod_triggers(&change, &replicasets)),
            ["web-a", "web-b"]
        );
        let deleted = Arc::new(pod("web", Some("web-a")));
        let refs = pod_triggers(&Change::Deleted(&deleted), &replicasets);
        assert_eq!(names(&refs), ["web-a"]);
        assert_eq!(refs[0].namespace.as_deref(), Some("default"));
    }

    #[test]
    fn a_new_orphan_syncs_every_replicaset_of_its_namespace_that_selects_it() {
        let replicasets = store(vec![
            replicaset("default", "web", "web"),
            replicaset("default", "web-too", "web"),
            replicaset("default", "db", "db"),
            replicaset("other", "web", "web"),
        ]);
        let orphan = Arc::new(pod("web", None));
        let change = Change::Applied {
            old: None,
            new: &orphan,
        };
        let refs = pod_triggers(&change, &replicasets);
        assert_eq!(names(&refs), ["web", "web-too"]);
        assert!(
            refs.iter()
                .all(|r| r.namespace.as_deref() == Some("default"))
        );
    }

    #[test]
    fn an_orphan_whose_labels_did_not_change_syncs_nothing() {
        let replicasets = store(vec![replicaset("default", "web", "web")]);
        let orphan = Arc::new(pod("web", None));
        let change = Change::Applied {
            old: Some(&orphan),
            new: &orphan,
        };
        assert!(pod_triggers(&change, &replicasets).is_empty());
        // A pod just released by its controller is looked at by the others.
        let controlled = Arc::new(pod("web", Some("old")));
        let released = Change::Applied {
            old: Some(&controlled),
            new: &orphan,
        };
        assert_eq!(
            names(&pod_triggers(&released, &replicasets)),
            ["old", "web"]
        );
    }

    #[test]
    fn a_relist_syncs_every_replicaset() {
        let replicasets = store(vec![
            replicaset("default", "web", "web"),
            replicaset("other", "db", "db"),
        ]);
        assert_eq!(
            names(&pod_triggers(&Change::Relisted, &replicasets)),
            ["db", "web"]
        );
    }
}
