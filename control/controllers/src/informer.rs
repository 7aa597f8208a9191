//! The watches a pod-owning controller reads from, as client-go's shared informers: a
//! kube-runtime watcher keeps a reflector store of every object current, and, for pods, each
//! change is reported to the controller *after* the store holds it, with the version it
//! replaced, and observed in the [`Expectations`] (a new pod is an observed creation of its
//! controller; a pod being or having been deleted an observed deletion).
//!
//! Order matters: a sync that finds its expectations satisfied must also find the pods that
//! satisfied them in the store, so the store is written before the observation (as client-go
//! updates its indexer before calling handlers), and a sync reads its expectations before its
//! pods. A relist (the watch's `Init` .. `InitDone`) replaces the store only at `InitDone`, so
//! its observations wait until then, and pods that vanished during the gap are observed as
//! deleted.
//!
//! The ReplicaSet controller handles the changes itself ([`watch_pods`], [`watch_objects`]);
//! controllers built on kube-runtime's `Controller` take [`pod_triggers`] as their
//! `owns_stream` ([`owned_pod_informer`] makes the store, triggers and pod control together).

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

use crate::context::Recorder;
use crate::expectations::Expectations;
use crate::pod_control::PodControl;
use crate::pods::{controller_of, is_controlled_by};

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
    writer: Writer<Pod>,
    expectations: Arc<Expectations>,
    mut on_change: F,
) where
    F: FnMut(PodChange<'_>) + Send,
{
    let mut cache = PodCache::new(writer, expectations);
    let mut events = std::pin::pin!(watcher(api).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => cache.apply(&event, &mut on_change),
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}

/// The pods whose changes trigger a kube-runtime `Controller`'s reconciles of their owners
/// (its `owns_stream`): [`watch_pods`] runs as part of this stream, so the store is written
/// and the expectations observed before the pod is yielded; a relist yields every pod.
pub(crate) fn pod_triggers(
    api: Api<Pod>,
    writer: Writer<Pod>,
    expectations: Arc<Expectations>,
) -> impl futures::Stream<Item = Result<Pod, watcher::Error>> + Send + 'static {
    let reader = writer.as_reader();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Pod>();
    let watch = watch_pods(api, writer, expectations, move |change| match change {
        PodChange::Applied { new, .. } => {
            let _ = tx.unbounded_send(new.clone());
        }
        PodChange::Deleted(pod) => {
            let _ = tx.unbounded_send(pod.clone());
        }
        PodChange::Relisted => {
            for pod in reader.state() {
                let _ = tx.unbounded_send(Pod::clone(&pod));
            }
        }
    });
    // The watch never ends; it runs whenever the controller polls for triggers.
    futures::stream::select(
        rx.map(Ok),
        futures::stream::once(watch).filter_map(|()| async { None }),
    )
}

/// What a kube-runtime `Controller` that owns pods is built from: the pod store it reads,
/// the pod control that creates and deletes with the expectations the store's watch
/// observes, and the pod triggers for its `owns_stream`.
pub(crate) fn owned_pod_informer(
    client: &kube::Client,
    recorder: Recorder,
) -> (
    Store<Pod>,
    PodControl,
    impl futures::Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
) {
    let (pods, writer) = kube::runtime::reflector::store::<Pod>();
    let expectations = Arc::new(Expectations::default());
    let triggers = pod_triggers(Api::all(client.clone()), writer, expectations.clone());
    let control = PodControl::new(client.clone(), recorder, expectations);
    (pods, control, triggers)
}

/// How long a reconcile waits for its stores' first list.
const STORES_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the stores `ready` waits for have listed within 30 s (client-go's
/// `WaitForCacheSync`: before the pod watch has listed, "no pods" would mean "create them
/// all"). `ready` is `true` once every store is ready.
pub(crate) async fn synced(ready: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(STORES_READY_TIMEOUT, ready).await == Ok(true)
}

/// The pods in `store` of `namespace` controlled by the owner `owner_uid`.
pub(crate) fn owned_pods(store: &Store<Pod>, namespace: &str, owner_uid: &str) -> Vec<Arc<Pod>> {
    store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| is_controlled_by(&p.metadata, owner_uid))
        .collect()
}

/// The pod store's writer, the expectations it observes and the relist in progress.
struct PodCache {
    writer: Writer<Pod>,
    reader: Store<Pod>,
    expectations: Arc<Expectations>,
    relist: Option<Vec<Pod>>,
}

impl PodCache {
    fn new(writer: Writer<Pod>, expectations: Arc<Expectations>) -> Self {
        PodCache {
            reader: writer.as_reader(),
            writer,
            expectations,
            relist: None,
        }
    }

    /// Applies one watch event: writes the store, then observes, then reports the change.
    fn apply<F>(&mut self, event: &Event<Pod>, on_change: &mut F)
    where
        F: FnMut(PodChange<'_>),
    {
        let expectations = &*self.expectations;
        match event {
            Event::Apply(pod) => {
                let old = self.reader.get(&ObjectRef::from_obj(pod));
                self.writer.apply_watcher_event(event);
                observe_applied(expectations, old.as_deref(), pod);
                on_change(PodChange::Applied { old, new: pod });
            }
            Event::Delete(pod) => {
                self.writer.apply_watcher_event(event);
                observe_deleted(expectations, pod);
                on_change(PodChange::Deleted(pod));
            }
            Event::Init => {
                self.writer.apply_watcher_event(event);
                self.relist = Some(Vec::new());
            }
            Event::InitApply(pod) => {
                self.writer.apply_watcher_event(event);
                self.relist.get_or_insert_with(Vec::new).push(pod.clone());
            }
            Event::InitDone => {
                let before: HashMap<ObjectRef<Pod>, Arc<Pod>> = self
                    .reader
                    .state()
                    .into_iter()
                    .map(|p| (ObjectRef::from_obj(&*p), p))
                    .collect();
                self.writer.apply_watcher_event(event);
                let listed = self.relist.take().unwrap_or_default();
                let keys: HashSet<ObjectRef<Pod>> =
                    listed.iter().map(ObjectRef::from_obj).collect();
                for pod in &listed {
                    observe_applied(
                        expectations,
                        before.get(&ObjectRef::from_obj(pod)).map(|p| &**p),
                        pod,
                    );
                }
                for (key, pod) in &before {
                    if !keys.contains(key) {
                        observe_deleted(expectations, pod);
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
    use kube::ResourceExt;
    use kube::runtime::reflector;

    fn owned_pod(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                namespace: Some("default".into()),
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
    fn a_pod_listed_by_a_relist_counts_only_once_the_store_holds_it() {
        let (reader, writer) = reflector::store::<Pod>();
        let e = Arc::new(Expectations::default());
        let mut cache = PodCache::new(writer, e.clone());
        let mut relisted = 0;
        e.expect_creations("rs", 1);
        cache.apply(&Event::Init, &mut |_| {});
        cache.apply(&Event::InitApply(owned_pod("a")), &mut |_| {});
        // A sync now would read no pod "a": it must not find its expectations satisfied.
        assert!(reader.state().is_empty());
        assert!(!e.satisfied("rs"));
        cache.apply(&Event::InitDone, &mut |change| {
            if matches!(change, PodChange::Relisted) {
                relisted += 1;
            }
        });
        assert_eq!(reader.state().len(), 1);
        assert!(e.satisfied("rs"));
        assert_eq!(relisted, 1);
    }

    #[test]
    fn a_pod_gone_after_a_relist_is_an_observed_deletion() {
        let (reader, writer) = reflector::store::<Pod>();
        let e = Arc::new(Expectations::default());
        let mut cache = PodCache::new(writer, e.clone());
        for uid in ["a", "b"] {
            cache.apply(&Event::Apply(owned_pod(uid)), &mut |_| {});
        }
        e.expect_deletions("rs", ["b".to_string()]);
        // The watch broke; "b" was deleted during the gap and the relist lists only "a".
        cache.apply(&Event::Init, &mut |_| {});
        cache.apply(&Event::InitApply(owned_pod("a")), &mut |_| {});
        assert!(!e.satisfied("rs"));
        cache.apply(&Event::InitDone, &mut |_| {});
        assert!(e.satisfied("rs"));
        let names: Vec<String> = reader.state().iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["p-a"]);
    }

    #[test]
    fn a_change_is_reported_after_the_store_holds_it() {
        let (reader, writer) = reflector::store::<Pod>();
        let mut cache = PodCache::new(writer, Arc::new(Expectations::default()));
        let pod = owned_pod("a");
        let mut seen = Vec::new();
        cache.apply(&Event::Apply(pod.clone()), &mut |change| {
            if let PodChange::Applied { old, new } = change {
                seen.push((
                    old.is_none(),
                    reader.get(&ObjectRef::from_obj(new)).is_some(),
                ));
            }
        });
        cache.apply(&Event::Delete(pod), &mut |change| {
            if let PodChange::Deleted(p) = change {
                seen.push((true, reader.get(&ObjectRef::from_obj(p)).is_some()));
            }
        });
        assert_eq!(seen, [(true, true), (true, false)]);
    }

    #[test]
    fn owned_pods_are_those_of_the_namespace_the_owner_controls() {
        let (reader, mut writer) = reflector::store::<Pod>();
        let mut other_ns = owned_pod("b");
        other_ns.metadata.namespace = Some("other".into());
        let mut orphan = owned_pod("c");
        orphan.metadata.owner_references = None;
        for pod in [owned_pod("a"), other_ns, orphan] {
            writer.apply_watcher_event(&Event::Apply(pod));
        }
        let owned = owned_pods(&reader, "default", "rs");
        let names: Vec<String> = owned.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["p-a"]);
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
