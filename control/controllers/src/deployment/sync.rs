//! One sync of one Deployment: the writes. [`Sync`] holds the Deployment (fresh from the
//! apiserver) and the ReplicaSets it controls, and does what Kubernetes' `sync.go` does
//! through the API: claims ReplicaSets (adopts matching orphans, releases those that stop
//! matching), finds or creates the new ReplicaSet and keeps revisions in step, resizes
//! ReplicaSets with a `ScalingReplicaSet` Event, deletes old ReplicaSets beyond
//! `revisionHistoryLimit` and writes the status. Each write replaces the local copy with
//! the apiserver's answer, so later steps of the same sync see it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use wasmkube_api::{LabelSelector, pod_template_hash};
use wasmkube_client::status::{
    is_already_exists, is_conflict, is_namespace_terminating, is_not_found,
};

use super::hash::{POD_TEMPLATE_HASH, equal_ignore_hash, find_new};
use super::history::{
    REVISION, cleanup_candidates, max_revision, replicas_annotations_for,
    replicas_annotations_need_update, set_new_replica_set_annotations,
};
use super::rolling::new_rs_new_replicas;
use super::scale::{Resize, plan_scale};
use super::status::{
    FAILED_RS_CREATE, FOUND_NEW_REPLICA_SET, NEW_REPLICA_SET_CREATED, PROGRESSING,
    calculate_status, get_condition, new_condition, paused_condition, progress_check_after,
    rollout_status, set_condition,
};
use super::strategy::{is_paused, min_ready_seconds, progress_deadline, rs_replicas};
use super::{DeploymentError, State};
use crate::context::{NORMAL, WARNING};
use crate::pods::{controller_of, controller_ref, is_controlled_by};

/// One sync of one Deployment.
pub(super) struct Sync<'a> {
    state: &'a State,
    /// The Deployment, updated by every write of this sync.
    pub(super) d: Deployment,
    /// The ReplicaSets the Deployment controls.
    pub(super) rss: Vec<ReplicaSet>,
    /// The index in `rss` of the new ReplicaSet (the current template's), once found.
    pub(super) new: Option<usize>,
    /// The time this sync computes conditions with.
    pub(super) now: Timestamp,
    /// When to sync again even if nothing changes (a progress deadline to check).
    pub(super) requeue: Option<Duration>,
}

impl<'a> Sync<'a> {
    /// A sync of `d` over the ReplicaSets it controls.
    pub(super) fn new(state: &'a State, d: Deployment, rss: Vec<ReplicaSet>) -> Self {
        Sync {
            state,
            d,
            rss,
            new: None,
            now: Timestamp::now(),
            requeue: None,
        }
    }

    fn namespace(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }

    fn name(&self) -> String {
        self.d.name_any()
    }

    fn replica_sets(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.state.client.clone(), &self.namespace())
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.state.client.clone(), &self.namespace())
    }

    /// The new ReplicaSet, if found or created.
    pub(super) fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new.and_then(|i| self.rss.get(i))
    }

    /// Every ReplicaSet but the new one.
    pub(super) fn old(&self) -> Vec<&ReplicaSet> {
        self.rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.new)
            .map(|(_, rs)| rs)
            .collect()
    }

    /// Every ReplicaSet, the new one last.
    pub(super) fn all(&self) -> Vec<&ReplicaSet> {
        let mut all = self.old();
        all.extend(self.new_rs());
        all
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.rss
            .iter()
            .position(|rs| rs.metadata.name.as_deref() == Some(name))
    }

    /// Finds the new ReplicaSet (creating it when `create` and there is none) and keeps
    /// the revisions in step: the new ReplicaSet's is the highest old one + 1, and the
    /// Deployment's is the new ReplicaSet's (Kubernetes' `getAllReplicaSetsAndSyncRevision`).
    pub(super) async fn sync_revision(&mut self, create: bool) -> Result<(), DeploymentError> {
        self.new = find_new(&self.d, &self.rss);
        let new_revision = max_revision(self.old()) + 1;
        let Some(i) = self.new else {
            if create {
                self.create_new_replica_set(new_revision).await?;
            }
            return Ok(());
        };
        let mut copy = self.rss[i].clone();
        let annotations_changed =
            set_new_replica_set_annotations(&self.d, &mut copy, new_revision, true);
        let min_ready = min_ready_seconds(&self.d);
        let min_ready_changed = copy
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
            != min_ready;
        if annotations_changed || min_ready_changed {
            let patch = json!({
                "metadata": {"annotations": copy.metadata.annotations},
                "spec": {"minReadySeconds": min_ready},
            });
            self.rss[i] = self
                .replica_sets()
                .patch(
                    &copy.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        let revision = self.rss[i]
            .annotations()
            .get(REVISION)
            .cloned()
            .unwrap_or_default();
        self.set_deployment_revision(&revision).await?;
        let mut status = self.d.status.clone().unwrap_or_default();
        if progress_deadline(&self.d).is_some() && get_condition(&status, PROGRESSING).is_none() {
            let message = format!("Found new replica set \"{}\"", self.rss[i].name_any());
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    FOUND_NEW_REPLICA_SET,
                    message,
                    self.now,
                ),
            );
            self.write_status(status).await?;
        }
        Ok(())
    }

    /// Sets the Deployment's `deployment.kubernetes.io/revision`.
    async fn set_deployment_revision(&mut self, revision: &str) -> Result<(), DeploymentError> {
        if revision.is_empty()
            || self.d.annotations().get(REVISION).map(String::as_str) == Some(revision)
        {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let updated = self
            .deployments()
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // Keep the status this sync may have changed; take the rest from the answer.
        let status = self.d.status.take();
        self.d = updated;
        self.d.status = status.or(self.d.status.take());
        Ok(())
    }

    /// Creates the ReplicaSet of the current template, `<deployment>-<hash>`, sized by the
    /// strategy; a name taken by another template is a hash collision: `collisionCount`
    /// goes up and the next sync tries another name.
    async fn create_new_replica_set(&mut self, new_revision: i64) -> Result<(), DeploymentError> {
        let Some(spec) = self.d.spec.as_ref() else {
            return Ok(());
        };
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace()),
                owner_references: Some(vec![controller_ref(&self.d)]),
                labels,
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready_seconds(&self.d)),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all = self.old();
        all.push(&rs);
        let replicas = new_rs_new_replicas(&self.d, &all, &rs);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(replicas);
        }
        set_new_replica_set_annotations(&self.d, &mut rs, new_revision, false);
        let (created, already_existed) = match self
            .replica_sets()
            .create(&PostParams::default(), &rs)
            .await
        {
            Ok(created) => (created, false),
            Err(e) if is_already_exists(&e) => {
                let existing = self.replica_sets().get(&name).await?;
                let ours = self
                    .d
                    .metadata
                    .uid
                    .as_deref()
                    .is_some_and(|uid| is_controlled_by(&existing.metadata, uid));
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    (existing, true)
                } else {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    status.collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
                    self.write_status(status).await?;
                    return Err(DeploymentError::HashCollision { name });
                }
            }
            Err(e) if is_namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let message = format!("Failed to create new replica set \"{name}\": {e}");
                if progress_deadline(&self.d).is_some() {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            FAILED_RS_CREATE,
                            message.clone(),
                            self.now,
                        ),
                    );
                    let _ = self.write_status(status).await;
                }
                self.state
                    .recorder
                    .publish(&self.d, WARNING, FAILED_RS_CREATE, message);
                return Err(e.into());
            }
        };
        if !already_existed && replicas > 0 {
            self.state.recorder.publish(
                &self.d,
                NORMAL,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
        }
        self.rss.push(created);
        self.new = Some(self.rss.len() - 1);
        self.set_deployment_revision(&new_revision.to_string())
            .await?;
        if !already_existed && progress_deadline(&self.d).is_some() {
            let mut status = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_REPLICA_SET_CREATED,
                    format!("Created new replica set \"{name}\""),
                    self.now,
                ),
            );
            self.write_status(status).await?;
        }
        Ok(())
    }

    /// Applies `resizes` in order; whether any changed a size.
    pub(super) async fn apply(&mut self, resizes: Vec<Resize>) -> Result<bool, DeploymentError> {
        let mut scaled = false;
        for resize in resizes {
            scaled |= self.scale_replica_set(&resize).await?;
        }
        Ok(scaled)
    }

    /// Resizes one ReplicaSet (and brings its replicas annotations up to date), recording
    /// a `ScalingReplicaSet` Event when the size changes.
    async fn scale_replica_set(&mut self, resize: &Resize) -> Result<bool, DeploymentError> {
        let Some(i) = self.index_of(&resize.name) else {
            return Ok(false);
        };
        let current = rs_replicas(&self.rss[i]);
        let operation = match resize.operation {
            Some(op) => op,
            None if current == resize.replicas => return Ok(false),
            None if current < resize.replicas => "up",
            None => "down",
        };
        let (desired, max) = replicas_annotations_for(&self.d);
        let size_changes = current != resize.replicas;
        tracing::debug!(
            deployment = %self.name(),
            replicaset = %resize.name,
            from = current,
            to = resize.replicas,
            "scaling a replica set"
        );
        if !size_changes && !replicas_annotations_need_update(&self.rss[i], desired, max) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"annotations": {
                super::history::DESIRED_REPLICAS: desired.to_string(),
                super::history::MAX_REPLICAS: max.to_string(),
            }},
            "spec": {"replicas": resize.replicas},
        });
        self.rss[i] = self
            .replica_sets()
            .patch(&resize.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if size_changes {
            self.state.recorder.publish(
                &self.d,
                NORMAL,
                "ScalingReplicaSet",
                format!(
                    "Scaled {operation} replica set {} to {} from {current}",
                    resize.name, resize.replicas
                ),
            );
        }
        Ok(size_changes)
    }

    /// Deletes the old ReplicaSets `revisionHistoryLimit` no longer keeps.
    pub(super) async fn cleanup(&mut self) -> Result<(), DeploymentError> {
        let old = self.old();
        let doomed: Vec<String> = cleanup_candidates(&self.d, &old)
            .iter()
            .map(|rs| rs.name_any())
            .collect();
        for name in doomed {
            tracing::debug!(deployment = %self.name(), replicaset = %name, "deleting an old replica set");
            match self
                .replica_sets()
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(i) = self.index_of(&name) {
                self.rss.remove(i);
                self.new = find_new(&self.d, &self.rss);
            }
        }
        Ok(())
    }

    /// Writes `status` unless it is the current one.
    pub(super) async fn write_status(
        &mut self,
        status: DeploymentStatus,
    ) -> Result<(), DeploymentError> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.d.status = Some(status);
        self.d = self
            .deployments()
            .replace_status(&self.name(), &PostParams::default(), &self.d)
            .await?;
        Ok(())
    }

    /// The status from the ReplicaSets, no rollout progress (Kubernetes'
    /// `syncDeploymentStatus`).
    pub(super) async fn sync_deployment_status(&mut self) -> Result<(), DeploymentError> {
        let status = calculate_status(&self.all(), self.new_rs(), &self.d, self.now);
        self.write_status(status).await
    }

    /// The status during a rollout, with the `Progressing` condition moved on (Kubernetes'
    /// `syncRolloutStatus`); remembers when to check the progress deadline.
    pub(super) async fn sync_rollout_status(&mut self) -> Result<(), DeploymentError> {
        let status = rollout_status(&self.all(), self.new_rs(), &self.d, self.now);
        if self.d.status.as_ref() == Some(&status) {
            self.requeue = progress_check_after(&self.d, &status, self.now);
            return Ok(());
        }
        self.write_status(status).await
    }

    /// Records pausing or resuming in the `Progressing` condition.
    pub(super) async fn check_paused_conditions(&mut self) -> Result<(), DeploymentError> {
        match paused_condition(&self.d, self.now) {
            Some(status) => self.write_status(status).await,
            None => Ok(()),
        }
    }

    /// A scale or a paused Deployment: resize without rolling out (Kubernetes' `sync`).
    pub(super) async fn sync(&mut self) -> Result<(), DeploymentError> {
        self.sync_revision(false).await?;
        let plan = plan_scale(&self.d, self.new_rs(), &self.old());
        self.apply(plan).await?;
        if is_paused(&self.d) {
            self.cleanup().await?;
        }
        self.sync_deployment_status().await
    }

    /// A Deployment being deleted: only its status.
    pub(super) async fn sync_status_only(&mut self) -> Result<(), DeploymentError> {
        self.sync_revision(false).await?;
        self.sync_deployment_status().await
    }

    /// The pods of the Deployment's ReplicaSets (by the Deployment's selector and their
    /// controller), listed fresh.
    pub(super) async fn pods(&self) -> Result<Vec<Pod>, DeploymentError> {
        let Some(spec) = self.d.spec.as_ref() else {
            return Ok(Vec::new());
        };
        let selector = LabelSelector::from_k8s(&spec.selector)?;
        let pods: Api<Pod> = Api::namespaced(self.state.client.clone(), &self.namespace());
        let listed = pods
            .list(&ListParams::default().labels(&selector.to_string()))
            .await?;
        let uids: Vec<&str> = self
            .rss
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        Ok(listed
            .items
            .into_iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str())))
            .collect())
    }
}

/// The ReplicaSets of namespace `rss` that `d` controls after claiming: orphans matching
/// its selector are adopted (unless it is being deleted), and ReplicaSets it controls that
/// no longer match are released (Kubernetes' `ClaimReplicaSets`).
pub(super) async fn claim_replica_sets(
    state: &State,
    d: &Deployment,
    rss: Vec<ReplicaSet>,
) -> Result<Vec<ReplicaSet>, DeploymentError> {
    let Some(uid) = d.metadata.uid.as_deref() else {
        return Ok(Vec::new());
    };
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let selector = LabelSelector::from_k8s(&spec.selector)?;
    let api: Api<ReplicaSet> =
        Api::namespaced(state.client.clone(), &d.namespace().unwrap_or_default());
    let mut claimed = Vec::new();
    for rs in rss {
        let labels = rs.metadata.labels.clone().unwrap_or_default();
        let matches = selector.matches(&labels);
        match controller_of(&rs.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches || rs.metadata.deletion_timestamp.is_some() {
                    claimed.push(rs);
                } else {
                    let refs: Vec<_> = rs
                        .owner_references()
                        .iter()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    let patch =
                        json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                    match api
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Some(_) => {}
            None => {
                if !matches
                    || rs.metadata.deletion_timestamp.is_some()
                    || d.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let mut refs = rs.owner_references().to_vec();
                refs.push(controller_ref(d));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                match api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => claimed.push(adopted),
                    Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(claimed)
}
