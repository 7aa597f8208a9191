//! The garbage collector's workers: each [`Work`] item is checked against the apiserver
//! (a fresh GET of the object and of each owner: the graph can be stale, and nothing is
//! deleted because of a cache miss) and acted upon: delete a dependent whose owners are
//! gone, delete the dependents of a foreground deletion and then remove its finalizer,
//! orphan the dependents of an `orphan` deletion and then remove its finalizer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use serde_json::{Value, json};
use wasmkube_client::status::{is_conflict, is_not_found};

use super::decide::{Decision, OwnerState, Policy, decide};
use super::graph::{FOREGROUND_FINALIZER, Graph, Identity, ORPHAN_FINALIZER, Uid, Work};
use super::kinds::Kinds;
use super::queue::WorkQueue;

/// Uids remembered as gone (deleted objects never come back under the same uid); the
/// set is cleared when it grows past this.
const MAX_ABSENT: usize = 100_000;

/// Why an item could not be processed now (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GcError {
    /// An owner reference names a kind the apiserver does not serve (or not yet).
    #[error("cannot resolve the kind {kind} of {api_version}")]
    UnknownKind {
        /// The reference's `apiVersion`.
        api_version: String,
        /// The reference's `kind`.
        kind: String,
    },
    /// An API request failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// A virtual owner exists but the watch has not delivered it yet.
    #[error("{0} exists but is not observed yet")]
    NotObservedYet(Identity),
}

/// The state the workers share with the graph builder.
pub(crate) struct Collector {
    pub(crate) client: Client,
    pub(crate) kinds: Kinds,
    pub(crate) graph: Mutex<Graph>,
    pub(crate) queue: Arc<WorkQueue<Work>>,
    absent: Mutex<HashSet<Uid>>,
}

impl Collector {
    /// A collector over the watched `kinds`, with an empty graph.
    pub(crate) fn new(client: Client, kinds: Kinds) -> Self {
        Collector {
            client,
            kinds,
            graph: Mutex::new(Graph::default()),
            queue: WorkQueue::new(),
            absent: Mutex::new(HashSet::new()),
        }
    }

    /// The graph (never held across an await).
    pub(crate) fn graph(&self) -> MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues what a change of the graph asks for.
    pub(crate) fn enqueue(&self, work: Vec<Work>) {
        for w in work {
            self.queue.add(w);
        }
    }

    /// Remembers that `uid` is gone.
    pub(crate) fn mark_absent(&self, uid: &str) {
        let mut absent = self.absent.lock().unwrap_or_else(PoisonError::into_inner);
        if absent.len() >= MAX_ABSENT {
            absent.clear();
        }
        absent.insert(uid.to_string());
    }

    fn is_absent(&self, uid: &str) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uid)
    }

    /// Processes one item.
    pub(crate) async fn process(&self, work: &Work) -> Result<(), GcError> {
        match work {
            Work::AttemptToDelete(uid) => self.attempt_to_delete(uid).await,
            Work::AttemptToOrphan(uid) => self.attempt_to_orphan(uid).await,
        }
    }

    /// The current object behind `identity`, if it still has that uid.
    async fn get_latest(&self, identity: &Identity) -> Result<Option<DynamicObject>, GcError> {
        let kind = self.resolve(&identity.api_version, &identity.kind)?;
        let api = kind.api(&self.client, identity.namespace.as_deref());
        let found = api.get_opt(&identity.name).await?;
        Ok(found.filter(|o| o.metadata.uid.as_deref() == Some(identity.uid.as_str())))
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Result<&super::kinds::Kind, GcError> {
        self.kinds
            .resolve(api_version, kind)
            .ok_or_else(|| GcError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }

    async fn attempt_to_delete(&self, uid: &str) -> Result<(), GcError> {
        let Some(node) = self.graph().node(uid).cloned() else {
            return Ok(());
        };
        if node.being_deleted && !node.deleting_dependents {
            return Ok(());
        }
        let Some(latest) = self.get_latest(&node.identity).await? else {
            // Gone (or replaced under the same name): as a delete event would.
            tracing::debug!(object = %node.identity, "garbage collector: object is gone");
            self.mark_absent(uid);
            let work = self.graph().remove(uid);
            self.enqueue(work);
            return Ok(());
        };
        if node.deleting_dependents {
            return self.process_deleting_dependents(&node.identity).await;
        }
        if node.is_virtual {
            return Err(GcError::NotObservedYet(node.identity));
        }
        let refs = latest.metadata.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(());
        }
        let mut owners = Vec::with_capacity(refs.len());
        for r in &refs {
            let state = self
                .owner_state(r, node.identity.namespace.as_deref())
                .await?;
            owners.push((r.uid.clone(), state));
        }
        let (has_dependents, cycle) = {
            let graph = self.graph();
            let deps = graph.dependents(uid);
            (!deps.is_empty(), deps.iter().any(|d| d.deleting_dependents))
        };
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        match decide(&owners, &finalizers, has_dependents, cycle) {
            Decision::Keep => Ok(()),
            Decision::RemoveOwnerReferences(uids) => {
                tracing::info!(object = %node.identity, owners = ?uids, "garbage collector: removing references to owners that are gone or deleting");
                self.edit_owner_references(&node.identity, |r| {
                    (!uids.contains(&r.uid)).then(|| r.clone())
                })
                .await
            }
            Decision::UnblockOwnerReferences(uids) => {
                self.edit_owner_references(&node.identity, |r| {
                    let mut r = r.clone();
                    if uids.contains(&r.uid) {
                        r.block_owner_deletion = Some(false);
                    }
                    Some(r)
                })
                .await
            }
            Decision::Delete(policy) => {
                tracing::info!(object = %node.identity, ?policy, "garbage collector: deleting a dependent whose owners are gone");
                self.delete(&node.identity, policy).await
            }
        }
    }

    /// What the apiserver says about one owner of a dependent in `namespace`.
    async fn owner_state(
        &self,
        r: &OwnerReference,
        namespace: Option<&str>,
    ) -> Result<OwnerState, GcError> {
        if self.is_absent(&r.uid) {
            return Ok(OwnerState::Dangling);
        }
        let kind = self.resolve(&r.api_version, &r.kind)?;
        let owner_namespace = match (kind.namespaced, namespace) {
            (true, Some(ns)) => Some(ns.to_string()),
            // A cluster-scoped dependent cannot be owned by a namespaced object.
            (true, None) => return Ok(OwnerState::Dangling),
            (false, _) => None,
        };
        let identity = Identity {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: owner_namespace,
            name: r.name.clone(),
            uid: r.uid.clone(),
        };
        let Some(owner) = self.get_latest(&identity).await? else {
            self.mark_absent(&r.uid);
            return Ok(OwnerState::Dangling);
        };
        let foreground = owner.metadata.deletion_timestamp.is_some()
            && owner
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == FOREGROUND_FINALIZER);
        Ok(if foreground {
            OwnerState::WaitingForDependentsDeletion
        } else {
            OwnerState::Solid
        })
    }

    /// An owner deleting in the foreground: its blocking dependents are deleted; once
    /// none is left, its `foregroundDeletion` finalizer goes.
    async fn process_deleting_dependents(&self, owner: &Identity) -> Result<(), GcError> {
        let blocking: Vec<(Uid, bool)> = self
            .graph()
            .blocking_dependents(&owner.uid)
            .iter()
            .map(|d| (d.identity.uid.clone(), d.deleting_dependents))
            .collect();
        if blocking.is_empty() {
            tracing::info!(object = %owner, "garbage collector: no blocking dependents left, removing the foregroundDeletion finalizer");
            return self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
        }
        for (uid, deleting_dependents) in blocking {
            if !deleting_dependents {
                self.queue.add(Work::AttemptToDelete(uid));
            }
        }
        Ok(())
    }

    /// An owner deleted with the `orphan` finalizer: its dependents lose their
    /// references to it, then it loses the finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<(), GcError> {
        let Some((owner, dependents)) = ({
            let graph = self.graph();
            graph.node(uid).map(|n| {
                (
                    n.identity.clone(),
                    graph
                        .dependents(uid)
                        .iter()
                        .map(|d| d.identity.clone())
                        .collect::<Vec<_>>(),
                )
            })
        }) else {
            return Ok(());
        };
        for dependent in &dependents {
            self.edit_owner_references(dependent, |r| (r.uid != uid).then(|| r.clone()))
                .await?;
        }
        tracing::info!(object = %owner, orphaned = dependents.len(), "garbage collector: dependents orphaned, removing the orphan finalizer");
        self.remove_finalizer(&owner, ORPHAN_FINALIZER).await
    }

    /// Rewrites the owner references of `identity` with `edit` (None drops one); a
    /// conflicting write is retried on a fresh read.
    async fn edit_owner_references(
        &self,
        identity: &Identity,
        edit: impl Fn(&OwnerReference) -> Option<OwnerReference>,
    ) -> Result<(), GcError> {
        self.edit_metadata(identity, "ownerReferences", |latest| {
            let refs = latest.metadata.owner_references.clone().unwrap_or_default();
            let new: Vec<OwnerReference> = refs.iter().filter_map(&edit).collect();
            if new == refs {
                return None;
            }
            Some(if new.is_empty() {
                Value::Null
            } else {
                serde_json::to_value(&new).unwrap_or(Value::Null)
            })
        })
        .await
    }

    /// Removes `finalizer` from `identity` (the apiserver then removes the object when
    /// it was the last one).
    async fn remove_finalizer(&self, identity: &Identity, finalizer: &str) -> Result<(), GcError> {
        self.edit_metadata(identity, "finalizers", |latest| {
            let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return None;
            }
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            Some(if kept.is_empty() {
                Value::Null
            } else {
                json!(kept)
            })
        })
        .await
    }

    /// Sets `metadata.<field>` of `identity` to what `edit` computes from a fresh read
    /// (None: nothing to change), with a merge patch that carries the read's
    /// resourceVersion; a conflict is retried on a new read, a vanished object is done.
    async fn edit_metadata(
        &self,
        identity: &Identity,
        field: &str,
        edit: impl Fn(&DynamicObject) -> Option<Value>,
    ) -> Result<(), GcError> {
        let kind = self.resolve(&identity.api_version, &identity.kind)?;
        let api = kind.api(&self.client, identity.namespace.as_deref());
        for _ in 0..5 {
            let Some(latest) = self.get_latest(identity).await? else {
                return Ok(());
            };
            let Some(value) = edit(&latest) else {
                return Ok(());
            };
            let patch = json!({"metadata": {
                "resourceVersion": latest.metadata.resource_version,
                field: value,
            }});
            match api
                .patch(
                    &identity.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(GcError::Api(kube::Error::Service(
            format!("metadata.{field} kept changing").into(),
        )))
    }

    /// Deletes `identity` (only that uid) with `policy`.
    async fn delete(&self, identity: &Identity, policy: Policy) -> Result<(), GcError> {
        let kind = self.resolve(&identity.api_version, &identity.kind)?;
        let api = kind.api(&self.client, identity.namespace.as_deref());
        let params = DeleteParams {
            propagation_policy: Some(match policy {
                Policy::Background => PropagationPolicy::Background,
                Policy::Foreground => PropagationPolicy::Foreground,
                Policy::Orphan => PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(identity.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&identity.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or another object took the name.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
