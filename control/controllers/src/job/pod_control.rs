//! Creating and deleting a controller's pods, as Kubernetes' `RealPodControl` with
//! expectations: creations are expected before they are sent and sent in slow-start
//! batches (1, 2, 4, ... so a quota or admission error fails once, not a thousand times);
//! every outcome is an Event on the owner (`SuccessfulCreate` "Created pod: x",
//! `FailedCreate` "Error creating: ...", `SuccessfulDelete` "Deleted pod: x",
//! `FailedDelete` "Error deleting: ...").

use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource};

use crate::context::{NORMAL, Recorder, WARNING};
use crate::expectations::Expectations;
use crate::retry::{is_conflict, is_not_found};

/// What a batch of creations achieved.
#[derive(Debug, Default)]
pub(crate) struct Created {
    /// Names of the pods created.
    pub(crate) names: Vec<String>,
    /// How many were not created (failed, or skipped after a failed batch).
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

    /// Creates `pods` (in `namespace`) for `owner`, expecting them first.
    pub(crate) async fn create<K>(&self, owner: &K, namespace: &str, pods: Vec<Pod>) -> Created
    where
        K: Resource<DynamicType = ()>,
    {
        let mut result = Created::default();
        if pods.is_empty() {
            return result;
        }
        let owner_uid = owner.meta().uid.clone().unwrap_or_default();
        self.expectations.expect_creations(&owner_uid, pods.len());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams::default();
        let mut pending = pods.into_iter();
        let mut batch_size = 1;
        loop {
            let batch: Vec<Pod> = pending.by_ref().take(batch_size).collect();
            if batch.is_empty() {
                break;
            }
            let outcomes = join_all(batch.iter().map(|pod| api.create(&params, pod))).await;
            let mut batch_failed = false;
            for outcome in outcomes {
                match outcome {
                    Ok(pod) => {
                        let name = pod.metadata.name.unwrap_or_default();
                        self.recorder.publish(
                            owner,
                            NORMAL,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                        result.names.push(name);
                    }
                    Err(e) => {
                        batch_failed = true;
                        self.expectations.creation_observed(&owner_uid);
                        result.failed += 1;
                        self.recorder.publish(
                            owner,
                            WARNING,
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        );
                        result.error.get_or_insert(e);
                    }
                }
            }
            if batch_failed {
                for _ in pending.by_ref() {
                    self.expectations.creation_observed(&owner_uid);
                    result.failed += 1;
                }
                break;
            }
            batch_size *= 2;
        }
        result
    }

    /// Deletes the pods `(name, uid)` of `owner` in `namespace`, expecting the deletions
    /// first. A pod already gone (404) or replaced by another of the same name (409 on the
    /// UID precondition) counts as deleted.
    pub(crate) async fn delete<K>(
        &self,
        owner: &K,
        namespace: &str,
        pods: &[(String, String)],
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>,
    {
        if pods.is_empty() {
            return Ok(());
        }
        let owner_uid = owner.meta().uid.clone().unwrap_or_default();
        self.expectations
            .expect_deletions(&owner_uid, pods.iter().map(|(_, uid)| uid.clone()));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let outcomes = join_all(pods.iter().map(|(name, uid)| {
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
                        format!("Error deleting: {e}"),
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
