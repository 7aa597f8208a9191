//! The Recreate strategy (Kubernetes' `recreate.go`): scale every old ReplicaSet to 0,
//! wait until none of their pods may still run (a pod being deleted counts until its phase
//! is `Succeeded`/`Failed` or it is gone: old and new containers never run side by side),
//! then create or scale up the new ReplicaSet to the desired replicas in one step. Pods of the Deployment going away trigger the next sync (see
//! [`super::pod_to_deployment`]).

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;

use super::DeploymentError;
use super::scale::{Resize, active};
use super::status::{actual, deployment_complete};
use super::strategy::desired;
use super::sync::Sync;
use crate::pods::controller_of;

/// Whether any old pod may still run: an old ReplicaSet still counts pods, or a pod of
/// an old ReplicaSet exists that has not finished (Kubernetes' `oldPodsRunning`; a pod in
/// phase `Unknown`, or being deleted, still counts).
pub(crate) fn old_pods_running(
    new: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
    pods: &[Pod],
) -> bool {
    if old.iter().map(|rs| actual(rs)).sum::<i32>() > 0 {
        return true;
    }
    let new_uid = new.and_then(|rs| rs.metadata.uid.as_deref());
    pods.iter().any(|pod| {
        let Some(owner) = controller_of(&pod.metadata) else {
            return false;
        };
        if Some(owner.uid.as_str()) == new_uid {
            return false;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        !matches!(phase, Some("Succeeded") | Some("Failed"))
    })
}

/// One step of a Recreate rollout (Kubernetes' `rolloutRecreate`).
pub(super) async fn rollout(sync: &mut Sync<'_>) -> Result<(), DeploymentError> {
    // No new ReplicaSet yet: it must not start before the old pods are gone.
    sync.sync_revision(false).await?;
    let scale_down: Vec<Resize> = active(sync.old())
        .iter()
        .map(|rs| Resize {
            name: rs.metadata.name.clone().unwrap_or_default(),
            replicas: 0,
            operation: None,
        })
        .collect();
    if sync.apply(scale_down).await? {
        return sync.sync_rollout_status().await;
    }
    let pods = sync.pods().await?;
    if old_pods_running(sync.new_rs(), &sync.old(), &pods) {
        return sync.sync_rollout_status().await;
    }
    if sync.new.is_none() {
        sync.sync_revision(true).await?;
    }
    if let Some(new) = sync.new_rs() {
        let scale_up = Resize {
            name: new.metadata.name.clone().unwrap_or_default(),
            replicas: desired(&sync.d),
            operation: None,
        };
        sync.apply(vec![scale_up]).await?;
    }
    let complete = sync
        .d
        .status
        .as_ref()
        .is_some_and(|s| deployment_complete(&sync.d, s));
    if complete {
        sync.cleanup().await?;
    }
    sync.sync_rollout_status().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::scale::tests::sized;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn with_uid(mut rs: ReplicaSet, uid: &str) -> ReplicaSet {
        rs.metadata.uid = Some(uid.into());
        rs
    }

    fn pod_of(uid: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                owner_references: Some(vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn old_replica_sets_with_pods_count_as_running() {
        let old = with_uid(sized("old", 1, 1, 1, 1), "o");
        assert!(old_pods_running(None, &[&old], &[]));
    }

    #[test]
    fn a_leftover_old_pod_counts_until_it_finishes_but_new_pods_never_do() {
        let old = with_uid(sized("old", 1, 0, 1, 1), "o");
        let new = with_uid(sized("new", 2, 1, 1, 1), "n");
        assert!(!old_pods_running(
            Some(&new),
            &[&old],
            &[pod_of("n", "Running")]
        ));
        assert!(old_pods_running(
            Some(&new),
            &[&old],
            &[pod_of("o", "Running")]
        ));
        assert!(old_pods_running(
            Some(&new),
            &[&old],
            &[pod_of("o", "Unknown")]
        ));
        assert!(!old_pods_running(
            Some(&new),
            &[&old],
            &[pod_of("o", "Succeeded")]
        ));
        assert!(!old_pods_running(None, &[&old], &[pod_of("o", "Failed")]));
    }
}
