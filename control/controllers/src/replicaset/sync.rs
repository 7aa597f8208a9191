//! One sync of one ReplicaSet (Kubernetes' `syncReplicaSet` and `manageReplicas`): claim,
//! create or delete, write the status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use wasmkube_api::selector::LabelSelector;
use wasmkube_client::status::{api_message, is_conflict, is_invalid, is_not_found};

use super::claim::{self, claim_pods};
use super::manage::{self, BURST_REPLICAS, Plan};
use super::ranking::pods_to_delete;
use super::status::{self, ManageFailure};
use super::{Error, ReplicaSetController};
use crate::pod_control::PodToDelete;
use crate::pods::{
    controller_of, controller_ref, generate_name_prefix, is_active, pod_from_template,
};

impl ReplicaSetController {
    /// Syncs one ReplicaSet from the stores.
    pub(super) async fn reconcile(&self, rs: Arc<ReplicaSet>) -> Result<Action, Error> {
        let started = std::time::Instant::now();
        let result = self.sync(&rs).await;
        tracing::debug!(
            namespace = rs.metadata.namespace.as_deref().unwrap_or_default(),
            replicaset = rs.metadata.name.as_deref().unwrap_or_default(),
            elapsed = ?started.elapsed(),
            ok = result.is_ok(),
            "synced ReplicaSet"
        );
        result
    }

    async fn sync(&self, rs: &Arc<ReplicaSet>) -> Result<Action, Error> {
        let (Some(namespace), Some(name), Some(uid)) = (
            rs.metadata.namespace.clone(),
            rs.metadata.name.clone(),
            rs.metadata.uid.clone(),
        ) else {
            return Ok(Action::await_change());
        };
        // Read the expectations before the pods: whatever satisfied them is in the store.
        let needs_sync = self.pod_control.expectations().satisfied(&uid);
        let Some(spec) = rs.spec.as_ref() else {
            return Ok(Action::await_change());
        };
        let selector = match LabelSelector::from_k8s(&spec.selector) {
            Ok(s) => s,
            Err(e) => {
                // Validation makes this unreachable; retrying would not help.
                tracing::warn!(%namespace, %name, error = %e, "ReplicaSet has an invalid selector");
                return Ok(Action::await_change());
            }
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()) && is_active(p))
            .collect();
        let claim = claim_pods(rs, &selector, &pods);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut owned = claim.owned;
        owned.extend(self.adopt(rs, &pods_api, &claim.adopt).await?);
        self.release(rs, &pods_api, &claim.release).await?;

        let failure = if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            self.manage_replicas(rs, &owned).await
        } else {
            None
        };
        let now = Timestamp::now();
        let new_status = status::calculate_status(rs, &owned, failure.as_ref(), now);
        if let Some(patch) = status::status_patch(rs, &new_status) {
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Deleted meanwhile: nothing left to report.
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(Error::Api {
                        context: format!("updating the status of ReplicaSet {namespace}/{name}"),
                        source,
                    });
                }
            }
        }
        if let Some(f) = failure {
            return Err(Error::Manage(f.message));
        }
        self.sync_succeeded(rs);

        // Ready pods become available with time alone, which no watch event announces.
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let availability = status::next_available_in(&owned, min_ready, now);
        // Normally the watch brings the next sync; this only bounds a lost event.
        let expectations = self
            .pod_control
            .expectations()
            .pending_for(&uid)
            .map(|left| left + Duration::from_secs(1));
        Ok(match availability.into_iter().chain(expectations).min() {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }

    /// Creates or deletes pods so that `owned` becomes `spec.replicas` (at most
    /// [`BURST_REPLICAS`] at a time). Returns what failed, for the status.
    async fn manage_replicas(&self, rs: &ReplicaSet, owned: &[Arc<Pod>]) -> Option<ManageFailure> {
        let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        match manage::plan(owned.len(), replicas, BURST_REPLICAS) {
            Plan::Nothing => None,
            Plan::Create(count) => {
                let name = rs.metadata.name.as_deref().unwrap_or_default();
                let template = rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.clone())
                    .unwrap_or_default();
                let pod = pod_from_template(
                    &template,
                    namespace,
                    &generate_name_prefix(name),
                    controller_ref(rs),
                );
                let created = self
                    .pod_control
                    .create(rs, namespace, vec![pod; count])
                    .await;
                created.error.map(|e| ManageFailure {
                    reason: "FailedCreate",
                    message: api_message(&e),
                })
            }
            Plan::Delete(count) => {
                let related = self.related_pods(rs);
                let doomed: Vec<PodToDelete> =
                    pods_to_delete(owned, &related, count, Timestamp::now())
                        .iter()
                        .map(|p| PodToDelete::of(p))
                        .collect();
                let deleted = self.pod_control.delete(rs, namespace, &doomed).await;
                deleted.err().map(|e| ManageFailure {
                    reason: "FailedDelete",
                    message: api_message(&e),
                })
            }
        }
    }

    /// Adopts orphans (Kubernetes' `AdoptPod`), after checking with a fresh read that the
    /// ReplicaSet is not being deleted. Returns the pods adopted.
    async fn adopt(
        &self,
        rs: &ReplicaSet,
        pods_api: &Api<Pod>,
        orphans: &[Arc<Pod>],
    ) -> Result<Vec<Arc<Pod>>, Error> {
        if orphans.is_empty() {
            return Ok(Vec::new());
        }
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let fresh = api.get_opt(name).await.map_err(|source| Error::Api {
            context: format!("reading ReplicaSet {namespace}/{name} before adopting pods"),
            source,
        })?;
        let can_adopt = fresh.is_some_and(|f| {
            f.metadata.uid == rs.metadata.uid && f.metadata.deletion_timestamp.is_none()
        });
        if !can_adopt {
            return Ok(Vec::new());
        }
        let mut adopted = Vec::new();
        for pod in orphans {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let patch = claim::adopt_patch(rs, pod);
            match pods_api
                .patch(pod_name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(p) => {
                    if controller_of(&p.metadata).map(|r| r.uid.as_str())
                        == rs.metadata.uid.as_deref()
                    {
                        tracing::info!(%namespace, replicaset = %name, pod = %pod_name, "adopted pod");
                        adopted.push(Arc::new(p));
                    }
                }
                // Gone or changed meanwhile: the watch brings another sync.
                Err(e) if is_not_found(&e) || is_conflict(&e) || is_invalid(&e) => {}
                Err(source) => {
                    return Err(Error::Api {
                        context: format!("adopting pod {namespace}/{pod_name}"),
                        source,
                    });
                }
            }
        }
        Ok(adopted)
    }

    /// Releases pods that no longer match (Kubernetes' `ReleasePod`).
    async fn release(
        &self,
        rs: &ReplicaSet,
        pods_api: &Api<Pod>,
        pods: &[Arc<Pod>],
    ) -> Result<(), Error> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        for pod in pods {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let patch = claim::release_patch(rs, pod);
            match pods_api
                .patch(pod_name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => tracing::info!(
                    %namespace,
                    replicaset = %rs.metadata.name.as_deref().unwrap_or_default(),
                    pod = %pod_name,
                    "released pod"
                ),
                Err(e) if is_not_found(&e) || is_invalid(&e) => {}
                Err(source) => {
                    return Err(Error::Api {
                        context: format!("releasing pod {namespace}/{pod_name}"),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The pods whose placement counts when choosing which to delete (Kubernetes'
    /// `getIndirectlyRelatedPods`): those of every ReplicaSet with the same controller (a
    /// Deployment's old and new ReplicaSets), or of this ReplicaSet alone.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let namespace = rs.metadata.namespace.as_deref();
        let mut owners: Vec<String> = rs.metadata.uid.iter().cloned().collect();
        if let Some(parent) = controller_of(&rs.metadata) {
            owners.extend(
                self.replicasets
                    .state()
                    .iter()
                    .filter(|s| s.metadata.namespace.as_deref() == namespace)
                    .filter(|s| controller_of(&s.metadata).is_some_and(|c| c.uid == parent.uid))
                    .filter_map(|s| s.metadata.uid.clone()),
            );
        }
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == namespace)
            .filter(|p| controller_of(&p.metadata).is_some_and(|c| owners.contains(&c.uid)))
            .collect()
    }
}
