//! The DaemonSet controller (`daemonset-controller`): one pod of each DaemonSet on every
//! eligible node, as kube-controller-manager's DaemonSet controller.
//!
//! A kube-runtime `Controller` over DaemonSets, triggered by the DaemonSet, by its pods
//! (controller `ownerReference`) and by every Node change (a node joining, relabelled,
//! tainted or removed may change where daemon pods belong; all DaemonSets are enqueued).
//! Pods and nodes are read from reflector stores. Each reconcile:
//! - computes the template's revision hash ([`hash`], the `controller-revision-hash` label);
//! - [`plan::plan`] decides, purely, the nodes to create a pod on, the pods to delete
//!   (ineligible nodes, failed or duplicate pods, vanished nodes, and the rolling update's old
//!   pods within `maxUnavailable`) and the status that `kubectl rollout status ds/x` reads;
//! - creates pods pinned to their node by a required node affinity on the node's
//!   `metadata.name` (the scheduler binds them, as in Kubernetes, so resource fit and
//!   binding stay the scheduler's), with the daemon tolerations ([`eligibility`]);
//! - keeps one ControllerRevision per template ([`revisions`]) for `kubectl rollout
//!   history` and `undo`;
//! - writes the status when it changed.
//!
//! The stores are the controller-manager's shared informers' ([`wasmkube_client::informers`]); the
//! pod expectations come from [`crate::informer`], pod creation and deletion (with their
//! Events) from [`crate::pod_control`].

mod eligibility;
mod hash;
mod plan;
mod revisions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;
use wasmkube_client::status::{is_conflict, is_not_found};

use crate::context::{Context, Recorder, WARNING};
use crate::informer::{owned_pod_informer, owned_pods, synced};
use crate::pod_control::PodControl;
use crate::pods::{controller_ref, generate_name_prefix, is_controlled_by, pod_from_template};
use crate::retry::{Retries, drain, object_key, requeue_failed, run_forever};
use hash::REVISION_HASH_LABEL;
use wasmkube_client::informers::{SharedInformer, SharedInformerFactory, Synced};

/// The Events' component, as kube-controller-manager's DaemonSet controller names itself.
const COMPONENT: &str = "daemonset-controller";

/// Why a DaemonSet reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonSetError {
    /// Creating or deleting the DaemonSet's pods failed.
    #[error("{action} pods of daemonset {daemonset}: {source}")]
    Pods {
        /// `creating` or `deleting`.
        action: &'static str,
        /// `namespace/name`.
        daemonset: String,
        /// The first failure.
        #[source]
        source: kube::Error,
    },
    /// Writing the DaemonSet's status failed.
    #[error("writing the status of daemonset {daemonset}: {source}")]
    Status {
        /// `namespace/name`.
        daemonset: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The pod or node watch has not listed yet.
    #[error("the pod and node caches are not synced yet")]
    NotSynced,
}

impl DaemonSetError {
    fn is_conflict(&self) -> bool {
        match self {
            DaemonSetError::Pods { source, .. } | DaemonSetError::Status { source, .. } => {
                is_conflict(source)
            }
            DaemonSetError::NotSynced => false,
        }
    }
}

struct DaemonSetController {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// The pod and node informers' first lists.
    synced: [Synced; 2],
    revisions: Store<ControllerRevision>,
    pod_control: PodControl,
    recorder: Recorder,
    retries: Retries,
}

/// The shared informers the DaemonSet controller reads.
#[derive(Clone)]
struct Informers {
    daemonsets: SharedInformer<DaemonSet>,
    pods: SharedInformer<Pod>,
    nodes: SharedInformer<Node>,
    revisions: SharedInformer<ControllerRevision>,
}

/// The DaemonSet controller over the shared DaemonSet, pod, node and ControllerRevision
/// informers; runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let informers = Informers {
        daemonsets: informers.informer(),
        pods: informers.informer(),
        nodes: informers.informer(),
        revisions: informers.informer(),
    };
    async move {
        let recorder = ctx.recorder(COMPONENT);
        run_forever("daemonset", || run_controller(&ctx, &recorder, &informers)).await;
    }
}

async fn run_controller(ctx: &Arc<Context>, recorder: &Recorder, informers: &Informers) {
    let client = ctx.client.clone();
    let (pods, pod_control, pod_events) =
        owned_pod_informer(&informers.pods, &client, recorder.clone());
    let daemonsets = informers.daemonsets.store();
    let state = Arc::new(DaemonSetController {
        client,
        pods,
        nodes: informers.nodes.store(),
        synced: [informers.pods.synced(), informers.nodes.synced()],
        revisions: informers.revisions.store(),
        pod_control,
        recorder: recorder.clone(),
        retries: Retries::default(),
    });
    let results =
        Controller::for_shared_stream(informers.daemonsets.subscribe(), daemonsets.clone())
            .owns_shared_stream(pod_events)
            .owns_shared_stream(informers.revisions.subscribe())
            .watches_shared_stream(informers.nodes.subscribe(), move |_node: Arc<Node>| {
                daemonsets
                    .state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            })
            .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
            .run(reconcile, error_policy, state);
    drain("daemonset", results).await;
}

fn key(ds: &DaemonSet) -> String {
    object_key(ds)
}

fn error_policy(ds: Arc<DaemonSet>, error: &DaemonSetError, c: Arc<DaemonSetController>) -> Action {
    requeue_failed(&c.retries, "daemonset", &*ds, error, error.is_conflict())
}

async fn reconcile(
    ds: Arc<DaemonSet>,
    c: Arc<DaemonSetController>,
) -> Result<Action, DaemonSetError> {
    let ready = async { c.synced[0].wait().await && c.synced[1].wait().await };
    if !synced(ready).await {
        return Err(DaemonSetError::NotSynced);
    }
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let action = c.sync(&ds).await?;
    c.retries.succeeded(&ds.uid().unwrap_or_default());
    Ok(action)
}

/// The pod to create for `ds` on `node` with template revision `hash`.
fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(REVISION_HASH_LABEL.to_string(), hash.to_string());
    let spec = template.spec.get_or_insert_with(Default::default);
    eligibility::add_daemon_tolerations(spec);
    eligibility::pin_to_node(spec, node);
    pod_from_template(
        &template,
        &ds.namespace().unwrap_or_default(),
        &generate_name_prefix(&ds.name_any()),
        controller_ref(ds),
    )
}

impl DaemonSetController {
    async fn sync(&self, ds: &DaemonSet) -> Result<Action, DaemonSetError> {
        let namespace = ds.namespace().unwrap_or_default();
        let uid = ds.uid().unwrap_or_default();
        // Read the expectations before the pods: whatever satisfied them is in the store.
        let satisfied = self.pod_control.expectations().satisfied(&uid);
        let owned = owned_pods(&self.pods, &namespace, &uid);
        let nodes = self.nodes.state();
        let node_refs: Vec<&Node> = nodes.iter().map(Arc::as_ref).collect();
        let pod_refs: Vec<&Pod> = owned.iter().map(Arc::as_ref).collect();
        let hash = hash::template_hash(ds);
        self.sync_history(ds, &hash, &pod_refs, satisfied).await;
        let plan = plan::plan(
            ds,
            &node_refs,
            &pod_refs,
            &hash,
            Timestamp::now(),
            satisfied,
        );

        for message in &plan.failed_pod_messages {
            self.recorder
                .publish(ds, WARNING, "FailedDaemonPod", message.clone());
        }
        let deleted = self.pod_control.delete(ds, &namespace, &plan.delete).await;
        let new_pods: Vec<Pod> = plan
            .create
            .iter()
            .map(|node| pod_for(ds, node, &hash))
            .collect();
        let created = self.pod_control.create(ds, &namespace, new_pods).await;
        self.write_status(ds, &plan.status).await?;
        if let Err(source) = deleted {
            return Err(DaemonSetError::Pods {
                action: "deleting",
                daemonset: key(ds),
                source,
            });
        }
        if let Some(source) = created.error {
            return Err(DaemonSetError::Pods {
                action: "creating",
                daemonset: key(ds),
                source,
            });
        }
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if plan.recheck_availability && min_ready > 0 {
            return Ok(Action::requeue(Duration::from_secs(u64::from(
                min_ready.unsigned_abs(),
            ))));
        }
        Ok(Action::await_change())
    }

    /// Keeps the DaemonSet's ControllerRevisions ([`revisions`]). Failures are logged, not
    /// fatal: the history serves `kubectl rollout history/undo`, not the pods (and an
    /// apiserver without ControllerRevisions must not stop DaemonSets).
    async fn sync_history(&self, ds: &DaemonSet, hash: &str, pods: &[&Pod], satisfied: bool) {
        let namespace = ds.namespace().unwrap_or_default();
        let uid = ds.uid().unwrap_or_default();
        let existing: Vec<Arc<ControllerRevision>> = self
            .revisions
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|r| is_controlled_by(&r.metadata, &uid))
            .collect();
        let refs: Vec<&ControllerRevision> = existing.iter().map(Arc::as_ref).collect();
        let live_hashes = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.labels().get(REVISION_HASH_LABEL).cloned())
            .collect();
        let plan = revisions::plan_revisions(ds, hash, &refs, &live_hashes);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &namespace);
        if let Some(revision) = &plan.create {
            match api.create(&PostParams::default(), revision).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(error) => {
                    tracing::warn!(daemonset = %key(ds), %error, "creating a controller revision failed");
                }
            }
        }
        if let Some((name, number)) = &plan.renumber {
            let patch = json!({ "revision": number });
            if let Err(error) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(daemonset = %key(ds), %error, "renumbering a controller revision failed");
            }
        }
        if !satisfied {
            return;
        }
        for name in &plan.delete {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(error) => {
                    tracing::warn!(daemonset = %key(ds), %error, "deleting an old controller revision failed");
                }
            }
        }
    }

    /// Writes `status` unless the DaemonSet already has it.
    async fn write_status(
        &self,
        ds: &DaemonSet,
        status: &DaemonSetStatus,
    ) -> Result<(), DaemonSetError> {
        if ds.status.as_ref() == Some(status) {
            return Ok(());
        }
        let api: Api<DaemonSet> =
            Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
        // Not guarded by resourceVersion: the status is computed from pods and nodes only, and
        // our view of the DaemonSet never goes back in time, so a write from a slightly stale
        // view is still the newest status (and observedGeneration never regresses).
        let patch = json!({ "status": status });
        match api
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DaemonSetError::Status {
                daemonset: key(ds),
                source,
            }),
        }
    }
}
