//! One shared informer: a watch of one kind feeding one store and every registered
//! handler, in that order (see the [parent module](super) for why and how).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

/// A change to an informer's store, reported to the handlers after the store holds it.
#[derive(Debug)]
pub enum Change<'a, T> {
    /// An object was added (`old` is `None`) or modified; also every object a (re)list
    /// returned, once the relist replaced the store.
    Applied {
        /// The version the store held before, if any.
        old: Option<&'a T>,
        /// The version the store holds now.
        new: &'a T,
    },
    /// An object was deleted (or vanished while the watch was down, found by a relist):
    /// its last known state.
    Deleted(&'a T),
    /// A (re)list finished: the store was replaced, and every listed object was reported
    /// as `Applied` and every vanished one as `Deleted` just before. Also the last change a
    /// handler registered after the first list gets after its replay.
    Relisted,
}

impl<'a, T> Change<'a, T> {
    /// The same change of a part of the object (e.g. its metadata).
    pub fn map<U>(&self, f: impl Fn(&'a T) -> &'a U) -> Change<'a, U> {
        match self {
            Change::Applied { old, new } => Change::Applied {
                old: old.map(&f),
                new: f(*new),
            },
            Change::Deleted(obj) => Change::Deleted(f(*obj)),
            Change::Relisted => Change::Relisted,
        }
    }

    /// The object as it is now (applied) or was last (deleted).
    pub fn object(&self) -> Option<&'a T> {
        match self {
            Change::Applied { new, .. } => Some(*new),
            Change::Deleted(obj) => Some(*obj),
            Change::Relisted => None,
        }
    }
}

/// A handler of an informer of `K`: called on the informer's task, in order, after the store
/// holds each change. It must be quick and must not block (send to a queue, update a map
/// under a short lock), nor register or remove handlers of the same informer.
pub type Handler<K> = Arc<dyn Fn(&Change<'_, Arc<K>>) + Send + Sync>;

/// Edits each object before the store holds it (client-go's `SetTransform`), to keep only
/// what the process reads.
pub type Transform<K> = Arc<dyn Fn(&mut K) + Send + Sync>;

/// The informer's parts shared by its handles, its watch task and its registrations.
struct Shared<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    dyntype: K::DynamicType,
    /// Held while a change is applied to the store and dispatched, and while a handler is
    /// added (and replayed the store) or removed, so a handler sees every change once.
    handlers: Mutex<Handlers<K>>,
    next_id: AtomicU64,
    /// `true` from the first list on. (Not the store's own `wait_until_ready`: its
    /// `DelayedInit` wakes only the last of several tasks waiting at once, and a shared
    /// store has several.)
    synced: watch::Sender<bool>,
    transform: Mutex<Option<Transform<K>>>,
    /// Taken by [`SharedInformer::run`].
    writer: Mutex<Option<Writer<K>>>,
}

type Handlers<K> = Vec<(u64, Handler<K>)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked leaves the list itself consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One watch of a kind, one store of it, and the handlers that follow its changes;
/// cheap to clone (every clone is the same informer). Made by
/// [`SharedInformerFactory`](super::SharedInformerFactory), which runs it.
pub struct SharedInformer<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    shared: Arc<Shared<K>>,
}

impl<K: Resource + Clone + 'static> Clone for SharedInformer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        SharedInformer {
            shared: self.shared.clone(),
        }
    }
}

impl<K> SharedInformer<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// An informer of the kind `dyntype` describes, not running yet (the factory makes
    /// and runs informers; made by hand, it is [`run`](Self::run) or driven through its
    /// [`reflector`](Self::reflector)).
    pub fn new(dyntype: K::DynamicType) -> Self {
        let writer = Writer::new(dyntype.clone());
        SharedInformer {
            shared: Arc::new(Shared {
                store: writer.as_reader(),
                dyntype,
                handlers: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(0),
                synced: watch::Sender::new(false),
                transform: Mutex::new(None),
                writer: Mutex::new(Some(writer)),
            }),
        }
    }

    /// The store (a read handle; every object in it is an `Arc` shared with the handlers).
    pub fn store(&self) -> Store<K> {
        self.shared.store.clone()
    }

    /// Whether the first list is in the store.
    pub fn has_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Waits until the first list is in the store (client-go's `WaitForCacheSync`); any
    /// number of tasks may wait at once. Use this, not the store's `wait_until_ready`.
    pub async fn wait_synced(&self) -> bool {
        self.synced().wait().await
    }

    /// A handle that waits until the first list is in the store.
    pub fn synced(&self) -> Synced {
        Synced(self.shared.synced.subscribe())
    }

    /// Sets the edit applied to each object before the store holds it; only before the
    /// informer runs (afterwards the store would hold objects of both shapes).
    pub fn set_transform(
        &self,
        transform: impl Fn(&mut K) + Send + Sync + 'static,
    ) -> Result<(), AlreadyRunning> {
        if lock(&self.shared.writer).is_none() {
            return Err(AlreadyRunning);
        }
        *lock(&self.shared.transform) = Some(Arc::new(transform));
        Ok(())
    }

    /// Calls `handler` with every change from now on, after the store holds it, until the
    /// registration is dropped. Registered after the first list, the handler is first
    /// replayed the store's objects as `Applied` (with no old version) and a `Relisted`, as
    /// client-go's `AddEventHandler` does.
    pub fn add_handler(
        &self,
        handler: impl Fn(&Change<'_, Arc<K>>) + Send + Sync + 'static,
    ) -> HandlerRegistration {
        let handler: Handler<K> = Arc::new(handler);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut handlers = lock(&self.shared.handlers);
            if self.has_synced() {
                for obj in self.shared.store.state() {
                    handler(&Change::Applied {
                        old: None,
                        new: &obj,
                    });
                }
                handler(&Change::Relisted);
            }
            handlers.push((id, handler));
        }
        let weak: Weak<Shared<K>> = Arc::downgrade(&self.shared);
        HandlerRegistration {
            remove: Some(Box::new(move || {
                if let Some(shared) = weak.upgrade() {
                    lock(&shared.handlers).retain(|(h, _)| *h != id);
                }
            })),
        }
    }

    /// The objects that change (applied: the new version; deleted: the last one), after the
    /// store holds them: a trigger stream for kube-runtime's `Controller`
    /// (`for_shared_stream`, `owns_shared_stream`, `watches_shared_stream`).
    pub fn subscribe(&self) -> Subscription<K> {
        self.subscribe_with(|_| {})
    }

    /// As [`subscribe`](Self::subscribe), calling `observe` with each change (on the
    /// informer's task, as a handler) before the object is yielded, so whatever reads the
    /// object from the stream finds `observe`'s effects (e.g. expectations) done.
    pub fn subscribe_with(
        &self,
        observe: impl Fn(&Change<'_, Arc<K>>) + Send + Sync + 'static,
    ) -> Subscription<K> {
        let (tx, rx) = mpsc::unbounded();
        let registration = self.add_handler(move |change| {
            observe(change);
            if let Some(obj) = change.object() {
                // The receiver is gone only when the subscription is dropped, which also
                // removes this handler.
                let _ = tx.unbounded_send(Arc::clone(obj));
            }
        });
        Subscription {
            rx,
            _registration: registration,
        }
    }

    /// Keeps the store equal to what `events` (a kube-runtime watcher stream) says and
    /// dispatches every change, until the stream ends. Watch errors are logged (the
    /// watcher retries them). Runs once; a second call returns at once.
    pub async fn run<S>(&self, events: S)
    where
        S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    {
        let Some(writer) = lock(&self.shared.writer).take() else {
            tracing::warn!("an informer was run twice");
            return;
        };
        let transform = lock(&self.shared.transform).clone();
        let mut reflector = Reflector {
            shared: self.shared.clone(),
            writer,
            transform,
            relisted: None,
        };
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => reflector.apply(event),
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
            }
        }
    }

    /// Whether `other` is a handle of the same informer.
    #[cfg(test)]
    pub(crate) fn is_same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The writing side of an informer made by hand, to apply watch events to it one by one
    /// (tests; a source other than a watch); `None` once it runs or was taken.
    pub fn reflector(&self) -> Option<Reflector<K>> {
        let writer = lock(&self.shared.writer).take()?;
        Some(Reflector {
            shared: self.shared.clone(),
            writer,
            transform: lock(&self.shared.transform).clone(),
            relisted: None,
        })
    }
}

/// Waits for an informer's first list; cheap to clone.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// Whether the first list is in the store now.
    pub fn has_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the first list is in the store (`false` if the informer is gone).
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|synced| *synced).await.is_ok()
    }
}

/// The informer already runs: its transform can no longer change.
#[derive(Debug, thiserror::Error)]
#[error("the informer already runs; set its transform before the factory starts")]
pub struct AlreadyRunning;

/// Removes a handler when dropped.
#[must_use = "dropping the registration removes the handler"]
pub struct HandlerRegistration {
    remove: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Debug for HandlerRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRegistration")
            .finish_non_exhaustive()
    }
}

impl Drop for HandlerRegistration {
    fn drop(&mut self) {
        if let Some(remove) = self.remove.take() {
            remove();
        }
    }
}

/// The objects an informer's changes concern, as a stream (see
/// [`SharedInformer::subscribe`]); dropping it removes its handler.
pub struct Subscription<K> {
    rx: mpsc::UnboundedReceiver<Arc<K>>,
    _registration: HandlerRegistration,
}

impl<K> Stream for Subscription<K> {
    type Item = Arc<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<K>>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// The writing side of an informer: writes the store, then dispatches (see
/// [`SharedInformer::reflector`]).
pub struct Reflector<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    shared: Arc<Shared<K>>,
    writer: Writer<K>,
    transform: Option<Transform<K>>,
    /// The keys a relist in progress returned so far.
    relisted: Option<Vec<ObjectRef<K>>>,
}

impl<K> Reflector<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn prepare(&self, mut obj: K) -> (ObjectRef<K>, K) {
        // No consumer reads managedFields: they are often the larger half of an object.
        obj.meta_mut().managed_fields = None;
        if let Some(transform) = &self.transform {
            transform(&mut obj);
        }
        (
            ObjectRef::from_obj_with(&obj, self.shared.dyntype.clone()),
            obj,
        )
    }

    /// Applies one watch event to the store, then reports the changes it made.
    pub fn apply(&mut self, event: Event<K>) {
        let store = &self.shared.store;
        match event {
            Event::Apply(obj) => {
                let (key, obj) = self.prepare(obj);
                let handlers = lock(&self.shared.handlers);
                let old = store.get(&key);
                self.writer.apply_watcher_event(&Event::Apply(obj));
                if let Some(new) = store.get(&key) {
                    dispatch(
                        &handlers,
                        &Change::Applied {
                            old: old.as_ref(),
                            new: &new,
                        },
                    );
                }
            }
            Event::Delete(obj) => {
                let (_, obj) = self.prepare(obj);
                let handlers = lock(&self.shared.handlers);
                let event = Event::Delete(obj);
                self.writer.apply_watcher_event(&event);
                if let Event::Delete(obj) = event {
                    dispatch(&handlers, &Change::Deleted(&Arc::new(obj)));
                }
            }
            Event::Init => {
                self.writer.apply_watcher_event(&Event::Init);
                self.relisted = Some(Vec::new());
            }
            Event::InitApply(obj) => {
                let (key, obj) = self.prepare(obj);
                self.writer.apply_watcher_event(&Event::InitApply(obj));
                self.relisted.get_or_insert_with(Vec::new).push(key);
            }
            Event::InitDone => self.relist_done(),
        }
    }

    /// The relist is complete: the store is replaced at once, then every listed object is
    /// reported applied (with the version it replaced) and every vanished one deleted.
    fn relist_done(&mut self) {
        let store = &self.shared.store;
        let handlers = lock(&self.shared.handlers);
        let dyntype = &self.shared.dyntype;
        let before: HashMap<ObjectRef<K>, Arc<K>> = store
            .state()
            .into_iter()
            .map(|obj| (ObjectRef::from_obj_with(&*obj, dyntype.clone()), obj))
            .collect();
        self.writer.apply_watcher_event(&Event::InitDone);
        self.shared.synced.send_replace(true);
        let listed = self.relisted.take().unwrap_or_default();
        for key in &listed {
            if let Some(new) = store.get(key) {
                let old = before.get(key);
                dispatch(&handlers, &Change::Applied { old, new: &new });
            }
        }
        let listed: HashSet<ObjectRef<K>> = listed.into_iter().collect();
        for (key, old) in &before {
            if !listed.contains(key) {
                dispatch(&handlers, &Change::Deleted(old));
            }
        }
        dispatch(&handlers, &Change::Relisted);
    }
}

fn dispatch<K>(handlers: &Handlers<K>, change: &Change<'_, Arc<K>>) {
    for (_, handler) in handlers {
        handler(change);
    }
}

#[cfg(test)]
mod tests;
