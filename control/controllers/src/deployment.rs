//! The Deployment controller, as kube-controller-manager's (`pkg/controller/deployment`):
//! a Deployment's pods are run by ReplicaSets, one per pod template
//! (`<deployment>-<pod-template-hash>`), and rolling out a new template means moving
//! replicas from the old ReplicaSets to the new one. The ReplicaSet controller turns
//! ReplicaSets into pods and reports their readiness in the ReplicaSets' status, which
//! drives the rollout's next step.
//!
//! A kube-runtime `Controller` over the controller-manager's shared Deployment, ReplicaSet
//! and pod informers ([`wasmkube_client::informers`]) reconciles each Deployment when it, a
//! ReplicaSet it owns, or (for Recreate) one of its pods being deleted changes; failed
//! syncs are retried with the per-Deployment back-off of [`crate::retry`]. Each reconcile reads the
//! Deployment and its namespace's ReplicaSets fresh, then does what Kubernetes'
//! `syncDeployment` does:
//! 1. claim ReplicaSets ([`sync::claim_replica_sets`]);
//! 2. a Deployment being deleted only gets its status;
//! 3. `spec.paused` is recorded in the `Progressing` condition; a paused Deployment, and
//!    a changed `spec.replicas` ([`scale::is_scaling_event`]), is scaled without rolling
//!    out ([`scale`], proportionally during a rollout);
//! 4. otherwise one step of the strategy: [`rolling`] or [`recreate`].
//!
//! The pieces: [`hash`] (template hash, which ReplicaSet is "new"), [`strategy`] (replicas
//! and fenceposts), [`history`] (revision annotations, cleanup), [`status`] (counts and
//! conditions), [`sync`] (the writes). `kubectl rollout undo` needs nothing here: kubectl
//! 1.32 copies an old ReplicaSet's template into the Deployment, which then finds that
//! ReplicaSet as its new one and renumbers it.

mod hash;
mod history;
mod recreate;
mod rolling;
mod scale;
mod status;
mod strategy;
mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use wasmkube_client::status::is_conflict;

use crate::context::{Context, Recorder, WARNING};
use crate::pods::controller_of;
use crate::retry::{Retries, drain, requeue_failed, run_forever};
use wasmkube_client::informers::SharedInformerFactory;

/// Why a sync of a Deployment failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeploymentError {
    /// A request to the apiserver failed (a conflict means the sync read stale data).
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The Deployment's selector cannot be used.
    #[error("invalid selector: {0}")]
    Selector(#[from] wasmkube_api::SelectorError),
    /// The ReplicaSet name for the template is taken by another template;
    /// `collisionCount` was raised so the next sync picks another name.
    #[error("hash collision: replica set {name} exists with another template")]
    HashCollision {
        /// The taken name.
        name: String,
    },
}

/// What every sync shares.
pub(crate) struct State {
    client: kube::Client,
    recorder: Recorder,
    retries: Retries,
}

/// How long to wait before looking at a Deployment again when nothing changes: a safety
/// net, as Kubernetes' informer resync.
const RESYNC: Duration = Duration::from_secs(300);

/// The first retry of a failed sync; doubling per consecutive failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest retry of a failed sync.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The Deployment controller over the shared Deployment, ReplicaSet and pod informers;
/// runs until the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let deployments = informers.informer::<Deployment>();
    let replicasets = informers.informer::<ReplicaSet>();
    let pods = informers.informer::<Pod>();
    async move {
        let state = Arc::new(State {
            client: ctx.client.clone(),
            recorder: ctx.recorder("deployment-controller"),
            retries: Retries::new(FIRST_RETRY, MAX_RETRY),
        });
        run_forever("deployment", || {
            let store = deployments.store();
            let recreate = store.clone();
            let results = Controller::for_shared_stream(deployments.subscribe(), store)
                .owns_shared_stream(replicasets.subscribe())
                .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
                    pod_to_deployment(&pod).filter(|d| {
                        recreate
                            .get(d)
                            .is_some_and(|d| strategy::strategy_type(&d) == strategy::RECREATE)
                    })
                })
                .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
                .run(reconcile, error_policy, state.clone());
            drain("deployment", results)
        })
        .await;
    }
}

/// The Deployment whose pod is being deleted, so a Recreate rollout sees its old pods go
/// (the controller keeps only Recreate Deployments). The pod's ReplicaSet is
/// `<deployment>-<pod-template-hash>`; only pods with a `deletionTimestamp` are of interest
/// (the final delete event carries it too), and their phase changes as they stop.
fn pod_to_deployment(pod: &Pod) -> Option<ObjectRef<Deployment>> {
    pod.metadata.deletion_timestamp.as_ref()?;
    let owner = controller_of(&pod.metadata)?;
    if owner.kind != "ReplicaSet" {
        return None;
    }
    let hash = pod.labels().get(hash::POD_TEMPLATE_HASH)?;
    let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// Requeues a failed sync after its back-off (100 ms doubling to 30 s per Deployment, reset
/// by a successful sync; a write conflict after a short pause).
fn error_policy(d: Arc<Deployment>, error: &DeploymentError, state: Arc<State>) -> Action {
    let conflict = matches!(error, DeploymentError::Api(e) if is_conflict(e));
    requeue_failed(&state.retries, "deployment", &*d, error, conflict)
}

async fn reconcile(d: Arc<Deployment>, state: Arc<State>) -> Result<Action, DeploymentError> {
    let action = sync_deployment(&d, &state).await?;
    state.retries.succeeded(&d.uid().unwrap_or_default());
    Ok(action)
}

/// One sync of one Deployment (Kubernetes' `syncDeployment`).
async fn sync_deployment(cached: &Deployment, state: &State) -> Result<Action, DeploymentError> {
    let namespace = cached.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(state.client.clone(), &namespace);
    // Fresh: the cache may not show this controller's own last writes yet.
    let Some(d) = deployments.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let selector = &spec.selector;
    let selects_all = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    if selects_all {
        state.recorder.publish(
            &d,
            WARNING,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        let generation = d.metadata.generation;
        let observed = d.status.as_ref().and_then(|s| s.observed_generation);
        if generation > observed {
            let mut updated = d.clone();
            updated
                .status
                .get_or_insert_with(Default::default)
                .observed_generation = generation;
            deployments
                .replace_status(&d.name_any(), &PostParams::default(), &updated)
                .await?;
        }
        return Ok(Action::await_change());
    }

    let replica_sets: Api<ReplicaSet> = Api::namespaced(state.client.clone(), &namespace);
    let listed = replica_sets.list(&ListParams::default()).await?.items;
    let rss = sync::claim_replica_sets(state, &d, listed).await?;
    let mut sync = sync::Sync::new(state, d, rss);

    if sync.d.metadata.deletion_timestamp.is_some() {
        sync.sync_status_only().await?;
        return Ok(Action::await_change());
    }
    sync.check_paused_conditions().await?;
    if strategy::is_paused(&sync.d) {
        sync.sync().await?;
        return Ok(Action::requeue(RESYNC));
    }
    sync.sync_revision(false).await?;
    if scale::is_scaling_event(&sync.d, &sync.all()) {
        sync.sync().await?;
        return Ok(Action::requeue(RESYNC));
    }
    match strategy::strategy_type(&sync.d) {
        strategy::RECREATE => recreate::rollout(&mut sync).await?,
        _ => rolling::rollout(&mut sync).await?,
    }
    Ok(Action::requeue(sync.requeue.unwrap_or(RESYNC).min(RESYNC)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    fn pod(owner_kind: &str, owner: &str, hash: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{owner}-x1")),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([(
                    hash::POD_TEMPLATE_HASH.into(),
                    hash.into(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    kind: owner_kind.into(),
                    name: owner.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_deleted_pod_maps_to_the_deployment_of_its_replica_set() {
        let r = pod_to_deployment(&pod("ReplicaSet", "web-api-5d8f9", "5d8f9", true));
        assert_eq!(r, Some(ObjectRef::new("web-api").within("default")));
    }

    #[test]
    fn other_pods_map_to_nothing() {
        assert_eq!(
            pod_to_deployment(&pod("ReplicaSet", "web-5d8f9", "5d8f9", false)),
            None
        );
        assert_eq!(
            pod_to_deployment(&pod("Job", "web-5d8f9", "5d8f9", true)),
            None
        );
        assert_eq!(
            pod_to_deployment(&pod("ReplicaSet", "plain", "5d8f9", true)),
            None
        );
    }
}
