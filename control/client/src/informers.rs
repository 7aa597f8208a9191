//! Shared informers, as client-go's `SharedInformerFactory`: one watch and one store per
//! kind in a process, feeding every component that needs that kind.
//!
//! A [`SharedInformerFactory`] hands out the [`SharedInformer`] of a kind (typed,
//! cluster-wide; the same one to every caller), runs each informer's watch once
//! [`started`](SharedInformerFactory::start), and stops them all when the last handle is
//! dropped. Components take informers from the factory when they are built (before
//! `start`), read the informer's [`store`](SharedInformer::store), and follow its changes
//! with handlers ([`SharedInformer::add_handler`]) or as a trigger stream for kube-runtime's
//! `Controller` ([`SharedInformer::subscribe`]). A component that only needs metadata
//! (the garbage collector) [subscribes](SharedInformerFactory::subscribe_metadata) to the
//! typed informer of a kind when the process has one, else to a metadata-only informer.
//!
//! ## The ordering guarantee
//! The store holds a change before any handler sees it (as client-go updates its indexer
//! before calling handlers): a pod-owning controller observes its expectations in a handler,
//! and a sync that finds its expectations satisfied must find the pods that satisfied them
//! in the store. Handlers get the version the store held before (`old`) with the new one.
//! A relist (after the watch broke: the watcher's `Init` .. `InitDone`) replaces the store
//! only at `InitDone`, then reports each listed object as applied and each object that
//! vanished during the gap as deleted, then [`Change::Relisted`].
//!
//! ## Why not kube-runtime's shared reflectors
//! kube-runtime (feature `unstable-runtime-subscribe`) shares a reflector's store through
//! `Writer::new_shared` and `ReflectHandle` subscribers, but a subscriber gets only the
//! object *reference* of an applied object and looks the object up when it polls: it gets
//! no deletions (nor the objects a relist dropped), no old version, and a lookup may see a
//! later version than the one that triggered it. Expectations need every deletion, exactly
//! once, in order, after the store holds it; so this is a small factory of our own with
//! client-go-style synchronous handlers, over kube-runtime's watcher, `Writer` and `Store`
//! (kube-runtime's `Controller` still runs the reconciles, fed by [`Subscription`]s).
//!
//! ## Objects held once, compactly
//! Objects are typed (k8s-openapi), one `Arc` per object shared by the store, the handlers
//! and the reconciles. `metadata.managedFields` is dropped from every object, and a
//! [transform](SharedInformer::set_transform) set before the start may drop more of what
//! no consumer in the process reads.

mod informer;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::AbortHandle;

pub use informer::{
    AlreadyRunning, Change, Handler, HandlerRegistration, Reflector, SharedInformer, Subscription,
    Synced, Transform,
};

/// A handler of metadata changes (see [`SharedInformerFactory::subscribe_metadata`]).
pub type MetadataHandler = Arc<dyn Fn(&Change<'_, ObjectMeta>) + Send + Sync>;

/// A metadata-only informer (objects as `PartialObjectMetadata`).
pub type MetadataInformer = SharedInformer<PartialObjectMeta<DynamicObject>>;

/// Hands out one informer per kind and runs them; cheap to clone (every clone is the same
/// factory). The informers' watches stop when the last clone is dropped.
#[derive(Clone)]
pub struct SharedInformerFactory {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    typed: HashMap<TypeId, Typed>,
    metadata: HashMap<GroupKind, MetadataInformer>,
    /// Watches to run at the start.
    pending: Vec<BoxFuture<'static, ()>>,
    running: Vec<AbortHandle>,
}

type GroupKind = (String, String);

/// A typed informer, and how to subscribe to it with a metadata handler.
struct Typed {
    informer: Box<dyn Any + Send + Sync>,
    group_kind: GroupKind,
    subscribe_metadata: Box<dyn Fn(MetadataHandler) -> HandlerRegistration + Send + Sync>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.lock().running {
            task.abort();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Runs `watch` now if the factory started, else at the start.
    fn schedule(&mut self, watch: BoxFuture<'static, ()>) {
        if self.started {
            self.running.push(tokio::spawn(watch).abort_handle());
        } else {
            self.pending.push(watch);
        }
    }
}

impl Debug for SharedInformerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("SharedInformerFactory")
            .field("started", &state.started)
            .field("typed", &state.typed.len())
            .field("metadata", &state.metadata.len())
            .finish()
    }
}

impl SharedInformerFactory {
    /// A factory whose informers watch through `client`.
    pub fn new(client: Client) -> Self {
        SharedInformerFactory {
            inner: Arc::new(Inner {
                client,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The cluster-wide informer of `K`, made on first request. Its watch runs from the
    /// [`start`](Self::start) (at once when the factory already started).
    pub fn informer<K>(&self) -> SharedInformer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut state = self.inner.lock();
        if let Some(existing) = state.typed.get(&TypeId::of::<K>())
            && let Some(informer) = existing.informer.downcast_ref::<SharedInformer<K>>()
        {
            return informer.clone();
        }
        let informer = SharedInformer::<K>::new(());
        let events = watcher::watcher(
            Api::<K>::all(self.inner.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        let run = informer.clone();
        state.schedule(Box::pin(async move { run.run(events).await }));
        let for_metadata = informer.clone();
        state.typed.insert(
            TypeId::of::<K>(),
            Typed {
                informer: Box::new(informer.clone()),
                group_kind: (K::group(&()).into_owned(), K::kind(&()).into_owned()),
                subscribe_metadata: Box::new(move |handler: MetadataHandler| {
                    for_metadata.add_handler(move |change| handler(&change.map(|k| k.meta())))
                }),
            },
        );
        informer
    }

    /// The metadata-only informer of the kind `resource` describes, made on first request.
    pub fn metadata_informer(&self, resource: &ApiResource) -> MetadataInformer {
        let mut state = self.inner.lock();
        let key = (resource.group.clone(), resource.kind.clone());
        if let Some(existing) = state.metadata.get(&key) {
            return existing.clone();
        }
        let informer = MetadataInformer::new(resource.clone());
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.inner.client.clone(), resource);
        // An `Api` of `PartialObjectMeta` makes metadata-only requests.
        let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let run = informer.clone();
        state.schedule(Box::pin(async move { run.run(events).await }));
        state.metadata.insert(key, informer.clone());
        informer
    }

    /// Follows the metadata of every object of the kind `resource` describes: through the
    /// typed informer of that kind when one was made (one watch per kind), else through a
    /// metadata-only informer. Same semantics as [`SharedInformer::add_handler`].
    pub fn subscribe_metadata(
        &self,
        resource: &ApiResource,
        handler: MetadataHandler,
    ) -> HandlerRegistration {
        let key = (resource.group.clone(), resource.kind.clone());
        {
            let state = self.inner.lock();
            if let Some(typed) = state.typed.values().find(|t| t.group_kind == key) {
                return (typed.subscribe_metadata)(handler);
            }
        }
        self.metadata_informer(resource)
            .add_handler(move |change| handler(&change.map(|o| &o.metadata)))
    }

    /// Starts every informer made so far, and every one made from now on at once.
    pub fn start(&self) {
        let mut state = self.inner.lock();
        state.started = true;
        let pending = std::mem::take(&mut state.pending);
        for watch in pending {
            state.running.push(tokio::spawn(watch).abort_handle());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn client() -> Client {
        // Never connected to: the factory is not started.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a valid URL"));
        Client::try_from(config).expect("a client")
    }

    #[tokio::test]
    async fn every_caller_gets_the_same_informer_of_a_kind() {
        let factory = SharedInformerFactory::new(client());
        let a = factory.informer::<Pod>();
        let b = factory.informer::<Pod>();
        assert!(a.is_same(&b));
        let state = factory.inner.lock();
        assert_eq!(state.typed.len(), 1);
        assert_eq!(state.pending.len(), 1, "one watch for the kind");
    }

    #[tokio::test]
    async fn metadata_of_a_kind_with_a_typed_informer_comes_from_it() {
        let factory = SharedInformerFactory::new(client());
        let pods = factory.informer::<Pod>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let _registration = factory.subscribe_metadata(
            &ApiResource::erase::<Pod>(&()),
            Arc::new(move |change| {
                if let Some(meta) = change.object() {
                    record.lock().unwrap().push(meta.name.clone());
                }
            }),
        );
        {
            let state = factory.inner.lock();
            assert!(state.metadata.is_empty(), "no metadata-only pod watch");
            assert_eq!(state.pending.len(), 1);
        }
        let mut reflector = pods.reflector().expect("not running");
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        reflector.apply(kube::runtime::watcher::Event::Apply(pod));
        assert_eq!(*seen.lock().unwrap(), [Some("a".to_string())]);

        // A kind no typed informer covers gets a metadata-only one.
        let _other = factory.subscribe_metadata(
            &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
            Arc::new(|_| {}),
        );
        let state = factory.inner.lock();
        assert_eq!(state.metadata.len(), 1);
        assert_eq!(state.pending.len(), 2);
    }
}
