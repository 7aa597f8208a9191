//! The Job controller (`job-controller`): runs pods until enough of them succeed, as
//! kube-controller-manager's Job controller and TTL-after-finished controller do.
//!
//! A kube-runtime `Controller` over Jobs, triggered by the Job's own changes and by its pods
//! (through their controller `ownerReference`), reconciles one Job at a time:
//! - reads the Job's pods from a pod reflector store (no LIST per reconcile);
//! - [`plan::plan`] decides, purely, which pods to create (with their completion index for
//!   Indexed Jobs), which to delete, the new status and conditions
//!   (`SuccessCriteriaMet`/`FailureTarget`, then `Complete`/`Failed` with
//!   `CompletionsReached`, `BackoffLimitExceeded` or `DeadlineExceeded`), suspension, the pod
//!   failure back-off and the active deadline;
//! - [`crate::pod_control::PodControl`] creates and deletes with [`crate::expectations`], so nothing is
//!   created twice before the pod watch catches up, and records the pod Events;
//! - the status is written with the Job's `resourceVersion` (a stale view is a 409 and a
//!   quick retry, as Kubernetes' `UpdateStatus`);
//! - a finished Job with `ttlSecondsAfterFinished` is deleted (propagation Background) once
//!   the TTL has passed.
//!
//! How finished pods are counted (no `job-tracking` finalizer) is described in [`plan`].
//!
//! Modules: [`plan`] (the sync), [`indexes`] (completed index intervals), [`template`] (the
//! pods). The Job and pod stores are the controller-manager's shared informers'
//! ([`wasmkube_client::informers`]); the pod expectations come from [`crate::informer`].

mod indexes;
mod plan;
mod template;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use wasmkube_client::status::{is_conflict, is_not_found};

use crate::context::{Context, NORMAL, Recorder, WARNING};
use crate::informer::{owned_pod_informer, owned_pods, synced};
use crate::pod_control::PodControl;
use crate::retry::{Retries, drain, object_key, requeue_failed, run_forever};
use plan::JobEvent;
use wasmkube_client::informers::{SharedInformer, SharedInformerFactory, Synced};

/// The Events' component, as kube-controller-manager's Job controller names itself.
const COMPONENT: &str = "job-controller";
/// `spec.managedBy` of Jobs this controller syncs (or none).
const MANAGED_BY_US: &str = "kubernetes.io/job-controller";

/// Why a Job reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// Creating the Job's pods failed.
    #[error("creating pods of job {job}: {source}")]
    CreatePods {
        /// `namespace/name`.
        job: String,
        /// The first failure.
        #[source]
        source: kube::Error,
    },
    /// Deleting the Job's pods failed.
    #[error("deleting pods of job {job}: {source}")]
    DeletePods {
        /// `namespace/name`.
        job: String,
        /// The first failure.
        #[source]
        source: kube::Error,
    },
    /// Writing the Job's status failed.
    #[error("writing the status of job {job}: {source}")]
    Status {
        /// `namespace/name`.
        job: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// Deleting a Job whose TTL after finishing expired failed.
    #[error("deleting finished job {job}: {source}")]
    DeleteJob {
        /// `namespace/name`.
        job: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The pod watch has not listed yet.
    #[error("the pod cache is not synced yet")]
    NotSynced,
}

impl JobError {
    fn is_conflict(&self) -> bool {
        match self {
            JobError::CreatePods { source, .. }
            | JobError::DeletePods { source, .. }
            | JobError::Status { source, .. }
            | JobError::DeleteJob { source, .. } => is_conflict(source),
            JobError::NotSynced => false,
        }
    }
}

/// What every reconcile of this controller shares.
struct JobController {
    client: kube::Client,
    /// Deletes Jobs whose TTL after finishing passed: Kubernetes' TTL-after-finished
    /// controller's identity (the Job controller's may not delete Jobs).
    ttl_client: kube::Client,
    pods: Store<Pod>,
    pods_synced: Synced,
    pod_control: PodControl,
    recorder: Recorder,
    retries: Retries,
}

/// The Job controller over the shared Job and pod informers; runs until the task is
/// aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let jobs = informers.informer::<Job>();
    let pods = informers.informer::<Pod>();
    async move {
        let recorder = ctx.recorder(COMPONENT);
        run_forever("job", || run_controller(&ctx, &recorder, &jobs, &pods)).await;
    }
}

async fn run_controller(
    ctx: &Arc<Context>,
    recorder: &Recorder,
    jobs: &SharedInformer<Job>,
    pods: &SharedInformer<Pod>,
) {
    let client = ctx.client.clone();
    let pods_synced = pods.synced();
    let (pods, pod_control, pod_events) = owned_pod_informer(pods, &client, recorder.clone());
    let controller = Arc::new(JobController {
        client,
        ttl_client: ctx.client_as(crate::TTL_AFTER_FINISHED_ACCOUNT),
        pods,
        pods_synced,
        pod_control,
        recorder: recorder.clone(),
        retries: Retries::default(),
    });
    let results = Controller::for_shared_stream(jobs.subscribe(), jobs.store())
        .owns_shared_stream(pod_events)
        .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
        .run(reconcile, error_policy, controller);
    drain("job", results).await;
}

fn key(job: &Job) -> String {
    object_key(job)
}

fn error_policy(job: Arc<Job>, error: &JobError, c: Arc<JobController>) -> Action {
    requeue_failed(&c.retries, "job", &*job, error, error.is_conflict())
}

async fn reconcile(job: Arc<Job>, c: Arc<JobController>) -> Result<Action, JobError> {
    let uid = job.uid().unwrap_or_default();
    let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
    if managed_by.is_some_and(|m| m != MANAGED_BY_US) {
        return Ok(Action::await_change());
    }
    // Before the pod watch has listed, "no pods" would mean "create them all".
    if !synced(c.pods_synced.wait()).await {
        return Err(JobError::NotSynced);
    }
    let action = if plan::is_finished(&job) {
        c.after_finished(&job).await?
    } else {
        c.sync(&job).await?
    };
    c.retries.succeeded(&uid);
    Ok(action)
}

/// The status fields Kubernetes omits when zero (`omitempty` counters).
const OMITTED_WHEN_ZERO: &[&str] = &["active", "succeeded", "failed"];

/// The status as the apiserver should store it: counters of zero removed, as Kubernetes'
/// `omitempty` leaves them out (null removes them in a merge patch).
fn status_value(status: &k8s_openapi::api::batch::v1::JobStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        for field in OMITTED_WHEN_ZERO {
            if fields.get(*field) == Some(&json!(0)) {
                fields.insert((*field).to_string(), Value::Null);
            }
        }
    }
    value
}

/// `value`'s object fields without the null ones (a null in a merge patch removes a field,
/// so `{"active": null}` and `{}` are the same status).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl JobController {
    /// One sync of an unfinished Job.
    async fn sync(&self, job: &Job) -> Result<Action, JobError> {
        let namespace = job.namespace().unwrap_or_default();
        let uid = job.uid().unwrap_or_default();
        // Read the expectations before the pods: whatever satisfied them is in the store.
        let satisfied = self.pod_control.expectations().satisfied(&uid);
        let owned = owned_pods(&self.pods, &namespace, &uid);
        let pods: Vec<&Pod> = owned.iter().map(Arc::as_ref).collect();
        let mut plan = plan::plan(job, &pods, Timestamp::now(), satisfied);

        let deleted = self.pod_control.delete(job, &namespace, &plan.delete).await;
        if let Err(source) = deleted {
            // The status would claim the deletions; retry the whole sync instead.
            return Err(JobError::DeletePods {
                job: key(job),
                source,
            });
        }
        let new_pods: Vec<Pod> = plan
            .create
            .iter()
            .map(|index| template::pod_for(job, *index))
            .collect();
        let created = self.pod_control.create(job, &namespace, new_pods).await;
        if created.failed > 0 {
            let active = plan.status.active.unwrap_or(0);
            let failed = i32::try_from(created.failed).unwrap_or(i32::MAX);
            plan.status.active = Some(active.saturating_sub(failed).max(0));
        }

        self.write_status(job, &plan.status).await?;
        for event in &plan.events {
            self.record(job, event);
        }
        if let Some(source) = created.error {
            return Err(JobError::CreatePods {
                job: key(job),
                source,
            });
        }
        let finished_now = plan
            .events
            .iter()
            .any(|e| matches!(e, JobEvent::Completed | JobEvent::Failed { .. }));
        let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
        let requeue = match (finished_now, ttl) {
            (true, Some(ttl)) => Some(Duration::from_secs(u64::from(ttl.unsigned_abs()))),
            _ => plan.requeue_after,
        };
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    }

    /// Writes `status` unless it is what the Job already has, guarded by the Job's
    /// `resourceVersion`.
    async fn write_status(
        &self,
        job: &Job,
        status: &k8s_openapi::api::batch::v1::JobStatus,
    ) -> Result<(), JobError> {
        let new = status_value(status);
        let old = job.status.as_ref().map(status_value).unwrap_or(Value::Null);
        if without_nulls(&new) == without_nulls(&old) {
            return Ok(());
        }
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let patch = json!({
            "metadata": {"resourceVersion": job.resource_version()},
            "status": new,
        });
        match api
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(JobError::Status {
                job: key(job),
                source,
            }),
        }
    }

    fn record(&self, job: &Job, event: &JobEvent) {
        match event {
            JobEvent::Completed => {
                self.recorder
                    .publish(job, NORMAL, "Completed", "Job completed".to_string());
            }
            JobEvent::Failed { reason, message } => {
                self.recorder.publish(job, WARNING, reason, message.clone());
            }
            JobEvent::Suspended => {
                self.recorder
                    .publish(job, NORMAL, "Suspended", "Job suspended".to_string());
            }
            JobEvent::Resumed => {
                self.recorder
                    .publish(job, NORMAL, "Resumed", "Job resumed".to_string());
            }
        }
    }

    /// A finished Job: deleted once `ttlSecondsAfterFinished` has passed since it finished
    /// (Kubernetes' TTL-after-finished controller), with propagation Background so the
    /// garbage collector removes its pods.
    async fn after_finished(&self, job: &Job) -> Result<Action, JobError> {
        let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
        let (Some(ttl), Some(finished)) = (ttl, plan::finished_at(job)) else {
            return Ok(Action::await_change());
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let expires = finished.as_millisecond() + i64::from(ttl) * 1000;
        let left = expires - Timestamp::now().as_millisecond();
        if left > 0 {
            return Ok(Action::requeue(Duration::from_millis(left.unsigned_abs())));
        }
        let api: Api<Job> = Api::namespaced(
            self.ttl_client.clone(),
            &job.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        tracing::info!(job = %key(job), "deleting the job: its ttlSecondsAfterFinished expired");
        match api.delete(&job.name_any(), &params).await {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if is_not_found(&e) => Ok(Action::await_change()),
            Err(source) => Err(JobError::DeleteJob {
                job: key(job),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobStatus;

    #[test]
    fn zero_counters_are_omitted_and_compare_equal_to_absent_ones() {
        let status = JobStatus {
            active: Some(0),
            succeeded: Some(2),
            ready: Some(0),
            ..JobStatus::default()
        };
        let value = status_value(&status);
        assert_eq!(value["active"], Value::Null);
        assert_eq!(value["succeeded"], json!(2));
        assert_eq!(
            value["ready"],
            json!(0),
            "ready is a pointer in Kubernetes: 0 is kept"
        );
        let stored = JobStatus {
            succeeded: Some(2),
            ready: Some(0),
            ..JobStatus::default()
        };
        assert_eq!(without_nulls(&value), without_nulls(&status_value(&stored)));
    }
}
