//! The watches a pod-owning controller reads from, as client-go's shared informers: a
//! kube-runtime watcher keeps a reflector store of every object current, and, for pods, each
//! change is reported to the controller *after* the store holds it, with the version it
//! replaced, and observed in the [`Expectations`] (a new pod is an observed creation of its
//! controller; a pod being or having been deleted an observed deletion).
//!
//! Order matters: a sync that finds its expectations satisfied must also find the pods that
//! satisfied them in the store, so the store is written before the observation (as client-go
//! updates its indexer before calling handlers). A relist (the watch's `Init` .. `InitDone`)
//! replaces the store only at `InitDone`, so its observations wait until then, and pods that
//! vanished during the gap are observed as deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use super::expectations::Expectations;
use crate::pods::controller_of;

/// A change to the pod store, reported after the store holds it.
#[derive(Debug)]
pub(crate) enum PodChange<'a> {
    /// A pod was added (`old` is `None`) or modified.
    Applied {
        /// The version the store held before, if any.
        old: Option<Arc<Pod>>,
        /// The version the store holds now.
        new: &'a Pod,
    },
    /// A pod was deleted.
    Deleted(&'a Pod),
    /// The store was relisted: anything may have changed.
    Relisted,
}

/// Keeps `writer`'s store equal to the pods `api` lists, observes `expectations`, and calls
/// `on_change` for every change. Runs until the task is aborted (watch errors are retried
/// with backoff).
pub(crate) async fn watch_pods<F>(
    api: Api<Pod>,
    mut writer: Writer<Pod>,
    expectations: Arc<Expectations>,
    mut on_change: F,
) where
    F: FnMut(PodChange<'_>) + Send,
{
    let reader = writer.as_reader();
    let mut relist: Option<Vec<Pod>> = None;
    let mut events = std::pin::pin!(watcher(api).default_backoff());
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        match &event {
            Event::Apply(pod) => {
                let old = reader.get(&ObjectRef::from_obj(pod));
                writer.apply_watcher_event(&event);
                observe_applied(&expectations, old.as_deref(), pod);
                on_change(PodChange::Applied { old, new: pod });
            }
            Event::Delete(pod) => {
                writer.apply_watcher_event(&event);
                observe_deleted(&expectations, pod);
                on_change(PodChange::Deleted(pod));
            }
            Event::Init => {
                writer.apply_watcher_event(&event);
                relist = Some(Vec::new());
            }
            Event::InitApply(pod) => {
                writer.apply_watcher_event(&event);
                relist.get_or_insert_with(Vec::new).push(pod.clone());
            }
            Event::InitDone => {
                let before: HashMap<ObjectRef<Pod>, Arc<Pod>> = reader
                    .state()
                    .into_iter()
                    .map(|p| (ObjectRef::from_obj(&*p), p))
                    .collect();
                writer.apply_watcher_event(&event);
                let listed = relist.take().unwrap_or_default();
                let keys: HashSet<ObjectRef<Pod>> =
                    listed.iter().map(ObjectRef::from_obj).collect();
                for pod in &listed {
                    observe_applied(
                        &expectations,
                        before.get(&ObjectRef::from_obj(pod)).map(|p| &**p),
                        pod,
                    );
                }
                for (key, pod) in &before {
                    if !keys.contains(key) {
                        observe_deleted(&expectations, pod);
                    }
                }
                on_change(PodChange::Relisted);
            }
        }
    }
}

/// Keeps `writer`'s store equal to the objects `api` lists and calls `on_event` with every
/// event after the store holds it. Runs until the task is aborted.
pub(crate) async fn watch_objects<K, F>(api: Api<K>, mut writer: Writer<K>, mut on_event: F)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(&Event<K>, &Store<K>) + Send,
{
    let reader = writer.as_reader();
    let mut events = std::pin::pin!(watcher(api).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                on_event(&event, &reader);
            }
            Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying"),
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
}

/// A pod version the store now holds: a creation of its controller if the pod is new (a
/// pod that shows up already being deleted was still created), a deletion if it is being
/// deleted.
fn observe_applied(expectations: &Expectations, old: Option<&Pod>, new: &Pod) {
    let Some(owner) = controller_of(&new.metadata) else {
        return;
    };
    let is_new = old.is_none_or(|o| o.metadata.uid != new.metadata.uid);
    if is_new {
        expectations.creation_observed(&owner.uid);
    }
    if new.metadata.deletion_timestamp.is_some() {
        expectations.deletion_observed(&owner.uid, new.metadata.uid.as_deref().unwrap_or_default());
    }
}

fn observe_deleted(expectations: &Expectations, pod: &Pod) {
    if let Some(owner) = controller_of(&pod.metadata) {
        expectations.deletion_observed(&owner.uid, pod.metadata.uid.as_deref().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    fn owned_pod(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                uid: Some(uid.into()),
                owner_references: Some(vec![OwnerReference {
                    uid: "rs".into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn only_new_pods_count_as_observed_creations() {
        let e = Expectations::default();
        e.expect_creations("rs", 2);
        let pod = owned_pod("a");
        observe_applied(&e, None, &pod);
        // An update of a pod already seen is not another creation.
        observe_applied(&e, Some(&pod), &pod);
        assert!(!e.satisfied("rs"));
        observe_applied(&e, None, &owned_pod("b"));
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn a_deletion_timestamp_or_a_delete_is_an_observed_deletion() {
        let e = Expectations::default();
        e.expect_deletions("rs", ["a".to_string(), "b".to_string()]);
        let a = owned_pod("a");
        let mut deleting = a.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        observe_applied(&e, Some(&a), &deleting);
        observe_deleted(&e, &owned_pod("b"));
        assert!(e.satisfied("rs"));
    }
}
