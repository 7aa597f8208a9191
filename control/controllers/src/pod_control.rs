//! Creating and deleting a controller's pods, as Kubernetes' `RealPodControl` with
//! expectations, shared by the ReplicaSet, Job and DaemonSet controllers:
//! - creations are expected before they are sent and sent in slow-start batches
//!   (Kubernetes' `slowStartBatch`: 1, 2, 4, ... run concurrently, stopping at the first
//!   batch with a failure, so a template the apiserver rejects costs one failed call, not
//!   hundreds); the creates that failed or never started are observed at once;
//! - deletions are expected by pod UID and sent with a UID precondition, so a pod replaced
//!   by another of the same name is never deleted by mistake;
//! - every outcome is an Event on the owner (`SuccessfulCreate` "Created pod: x",
//!   `FailedCreate` "Error creating: ...", `SuccessfulDelete` "Deleted pod: x",
//!   `FailedDelete` "Error deleting: ..."), except a create refused because the namespace is
//!   being deleted, which is no failure (as Kubernetes: every create would fail the same way
//!   and the namespace's deletion removes the owner anyway).

use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource};
use wasmkube_client::status::{api_message, is_conflict, is_namespace_terminating, is_not_found};

use crate::context::{NORMAL, Recorder, WARNING};
use crate::expectations::Expectations;

/// The first slow-start batch (Kubernetes' `SlowStartInitialBatchSize`).
pub(crate) const SLOW_START_INITIAL_BATCH: usize = 1;

/// A pod a sync deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodToDelete {
    /// The pod's name.
    pub(crate) name: String,
    /// The pod's UID (the delete's precondition and the expectation key).
    pub(crate) uid: String,
}

impl PodToDelete {
    /// The name and UID of `pod`.
    pub(crate) fn of(pod: &Pod) -> Self {
        PodToDelete {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// What a batch of creations achieved.
#[derive(Debug, Default)]
pub(crate) struct Created {
    /// How many were not created (failed, or skipped after a failed batch); a pod refused
    /// in a terminating namespace counts as created.
    pub(crate) failed: usize,
    /// The first error.
    pub(crate) error: Option<kube::Error>,
}

/// Creates and deletes the pods of one kind of owner.
#[derive(Clone)]
pub(crate) struct PodControl {
    client: kube::Client,
    recorder: Recorder,
    expectations: Arc<Expectations>,
}

impl PodControl {
    /// Pod control writing with `client`, recording Events with `recorder`.
    pub(crate) fn new(
        client: kube::Client,
        recorder: Recorder,
        expectations: Arc<Expectations>,
    ) -> Self {
        PodControl {
            client,
            recorder,
            expectations,
        }
    }

    /// The expectations this pod control records into.
    pub(crate) fn expectations(&self) -> &Expectations {
        &self.expectations
    }

    /// Creates `pods` (in `namespace`) for `owner`, expecting them first, in slow-start
    /// batches.
    pub(crate) async fn create<K>(&self, owner: &K, namespace: &str, pods: Vec<Pod>) -> Created
    where
        K: Resource<DynamicType = ()>,
    {
        if pods.is_empty() {
            return Created::default();
        }
        let owner_uid = owner.meta().uid.clone().unwrap_or_default();
        let count = pods.len();
        self.expectations.expect_creations(&owner_uid, count);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let (done, error) = slow_start(count, SLOW_START_INITIAL_BATCH, |i| {
            self.create_one(owner, &owner_uid, &api, &pods[i])
        })
        .await;
        // The watch will never show the creates that failed or never started.
        let failed = count - done.len();
        for _ in 0..failed {
            self.expectations.creation_observed(&owner_uid);
        }
        Created { failed, error }
    }

    /// Creates one pod with an Event either way. A namespace being deleted is no failure
    /// (the create is observed at once: the watch will not show it).
    async fn create_one<K>(
        &self,
        owner: &K,
        owner_uid: &str,
        api: &Api<Pod>,
        pod: &Pod,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>,
    {
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                self.recorder.publish(
                    owner,
                    NORMAL,
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                );
                Ok(())
            }
            Err(e) if is_namespace_terminating(&e) => {
                self.expectations.creation_observed(owner_uid);
                Ok(())
            }
            Err(e) => {
                self.recorder.publish(
                    owner,
                    WARNING,
                    "FailedCreate",
                    format!("Error creating: {}", api_message(&e)),
                );
                Err(e)
            }
        }
    }

    /// Deletes the pods of `owner` in `namespace`, expecting the deletions
    /// first. A pod already gone (404) or replaced by another of the same name (409 on the
    /// UID precondition) counts as deleted.
    pub(crate) async fn delete<K>(
        &self,
        owner: &K,
        namespace: &str,
        pods: &[PodToDelete],
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>,
    {
        if pods.is_empty() {
            return Ok(());
        }
        let owner_uid = owner.meta().uid.clone().unwrap_or_default();
        self.expectations
            .expect_deletions(&owner_uid, pods.iter().map(|p| p.uid.clone()));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let outcomes = join_all(pods.iter().map(|PodToDelete { name, uid }| {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            async move { (name, uid, api.delete(name, &params).await) }
        }))
        .await;
        let mut first_error = None;
        for (name, uid, outcome) in outcomes {
            match outcome {
                Ok(_) => self.recorder.publish(
                    owner,
                    NORMAL,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) if is_not_found(&e) || is_conflict(&e) => {
                    self.expectations.deletion_observed(&owner_uid, uid);
                }
                Err(e) => {
                    self.expectations.deletion_observed(&owner_uid, uid);
                    self.recorder.publish(
                        owner,
                        WARNING,
                        "FailedDelete",
                        format!("Error deleting: {}", api_message(&e)),
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The batch sizes slow start uses for `count` operations: `initial`, then doubling, the last
/// one cut to what remains.
pub(crate) fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = initial.max(1).min(remaining);
    while remaining > 0 {
        batches.push(size);
        remaining -= size;
        size = (size * 2).min(remaining);
    }
    batches
}

/// Runs `op(i)` for `i` in `0..count` in slow-start batches, each batch concurrently. Stops
/// after the first batch in which an `op` failed. Returns the results of the operations that
/// succeeded and the first error; the caller treats all of `count - successes` as not done
/// (Kubernetes lowers its expectations by that much).
pub(crate) async fn slow_start<F, Fut, T, E>(
    count: usize,
    initial: usize,
    op: F,
) -> (Vec<T>, Option<E>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut done = Vec::new();
    let mut next = 0;
    for size in slow_start_batches(count, initial) {
        let results = join_all((next..next + size).map(&op)).await;
        next += size;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(value) => done.push(value),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (done, first_error);
        }
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn slow_start_batches_double_from_one() {
        assert_eq!(slow_start_batches(0, 1), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1, 1), [1]);
        assert_eq!(slow_start_batches(7, 1), [1, 2, 4]);
        assert_eq!(slow_start_batches(10, 1), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(500, 1).iter().sum::<usize>(), 500);
        assert_eq!(slow_start_batches(5, 2), [2, 3]);
    }

    #[tokio::test]
    async fn slow_start_runs_everything_when_nothing_fails() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(10, 1, |i| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<usize, String>(i) }
        })
        .await;
        assert_eq!(err, None);
        assert_eq!(ok, (0..10).collect::<Vec<_>>(), "every item once, in order");
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn slow_start_stops_after_the_first_failing_batch() {
        let calls = AtomicUsize::new(0);
        // The 4th call fails: batches 1 and 2 succeed (3 calls), batch 3 (4 calls) has the
        // failure, batch 4 never runs.
        let (ok, err) = slow_start(20, 1, |i| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 3 {
                    Err(format!("call {i} failed"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(ok.len(), 6);
        assert_eq!(err.as_deref(), Some("call 3 failed"));
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
}
