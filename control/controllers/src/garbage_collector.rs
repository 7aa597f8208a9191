//! The garbage collector, as kube-controller-manager's (`pkg/controller/garbagecollector`):
//! objects whose owners are gone are deleted, and the `foregroundDeletion` and `orphan`
//! finalizers the apiserver puts on deleted owners are carried out.
//!
//! - [`kinds`]: every listable, watchable, deletable kind found by discovery;
//! - monitors (here): every kind's metadata, from the controller-manager's shared informer
//!   of that kind (the typed one the other controllers read for pods, ReplicaSets, nodes,
//!   ...; a metadata-only one for the rest, [`wasmkube_client::informers`]), feeds the [`graph`]
//!   (owner uid -> dependents, virtual nodes for owners not seen), which says what needs a
//!   look; an object a relist no longer lists is a deletion;
//! - [`collector`]: workers take the [`queue`]'s items once every kind is listed, check
//!   them against the apiserver and [`decide`] what to do:
//!   - *Background*: a dependent all of whose owners are gone (by uid: an object of the
//!     same name with another uid does not count) is deleted, itself in the background;
//!   - *Foreground*: an owner being deleted with `foregroundDeletion` has its dependents
//!     deleted (in the foreground when they have dependents of their own); once no
//!     dependent with `blockOwnerDeletion` is left the finalizer is removed, and the
//!     apiserver removes the owner;
//!   - *Orphan*: an owner being deleted with `orphan` loses its references from every
//!     dependent, then the finalizer.
//!
//! Kubernetes' garbage collector records no Events for this work, and neither does this.

mod collector;
mod decide;
mod graph;
mod kinds;
mod queue;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::Context;
use collector::Collector;
use kinds::Kinds;
use wasmkube_client::informers::{
    Change, HandlerRegistration, MetadataHandler, SharedInformerFactory,
};

/// How long to wait before asking discovery again after a failure.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Runs the garbage collector until the task is aborted, following every kind through
/// `informers` (the typed informers other controllers made, metadata-only ones for the
/// rest).
pub(crate) async fn run(ctx: Arc<Context>, informers: SharedInformerFactory) {
    let kinds = loop {
        match Kinds::discover(&ctx.client).await {
            Ok(kinds) => break kinds,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery failed, retrying");
                tokio::time::sleep(DISCOVERY_RETRY).await;
            }
        }
    };
    tracing::info!(
        kinds = kinds.all().len(),
        "garbage collector: following every deletable kind"
    );
    let collector = Arc::new(Collector::new(ctx.client.clone(), kinds));
    let (synced_tx, synced_rx) = watch::channel(collector.kinds.all().is_empty());
    let monitors = monitor(&collector, &informers, synced_tx);
    let mut tasks = JoinSet::new();
    let workers = usize::from(ctx.config.concurrency).max(1) * 2;
    for _ in 0..workers {
        tasks.spawn(worker(collector.clone(), synced_rx.clone()));
    }
    // The tasks run forever; aborting this task drops the set, which aborts them, and the
    // monitors' registrations.
    while tasks.join_next().await.is_some() {}
    drop(monitors);
}

/// Follows every kind's changes into the graph and queues the work they make; `synced`
/// turns true once every kind was listed. The monitors run while the registrations live.
fn monitor(
    collector: &Arc<Collector>,
    informers: &SharedInformerFactory,
    synced: watch::Sender<bool>,
) -> Vec<HandlerRegistration> {
    let total = collector.kinds.all().len();
    let listed = Arc::new(Mutex::new(HashSet::new()));
    let synced = Arc::new(synced);
    let mut registrations = Vec::with_capacity(total);
    for (i, kind) in collector.kinds.all().iter().enumerate() {
        let collector = collector.clone();
        let listed = listed.clone();
        let synced = synced.clone();
        let handler: MetadataHandler = Arc::new(move |change: &Change<'_, ObjectMeta>| {
            monitor_change(&collector, i, change);
            if matches!(change, Change::Relisted) {
                let mut listed = listed.lock().unwrap_or_else(PoisonError::into_inner);
                if listed.insert(i) && listed.len() == total {
                    tracing::info!(
                        objects = collector.graph().len(),
                        "garbage collector: every kind listed, collecting"
                    );
                    let _ = synced.send(true);
                }
            }
        });
        registrations.push(informers.subscribe_metadata(&kind.resource, handler));
    }
    registrations
}

/// One change of the kind numbered `i`, into the graph.
fn monitor_change(collector: &Collector, i: usize, change: &Change<'_, ObjectMeta>) {
    let Some(kind) = collector.kinds.all().get(i) else {
        return;
    };
    match change {
        Change::Applied { new, .. } => {
            let kinds = &collector.kinds;
            let work = collector.graph().observe(
                &kind.resource.api_version,
                &kind.resource.kind,
                new,
                &|r| kinds.namespaced(&r.api_version, &r.kind),
            );
            collector.enqueue(work);
        }
        Change::Deleted(meta) => {
            if let Some(uid) = meta.uid.as_deref() {
                collector.mark_absent(uid);
                let work = collector.graph().remove(uid);
                collector.enqueue(work);
            }
        }
        Change::Relisted => {}
    }
}

/// Takes items off the queue once the graph is synced, forever.
async fn worker(collector: Arc<Collector>, mut synced: watch::Receiver<bool>) {
    if synced.wait_for(|s| *s).await.is_err() {
        return;
    }
    loop {
        let item = collector.queue.next().await;
        match collector.process(&item).await {
            Ok(()) => collector.queue.forget(&item),
            Err(e) => {
                let delay = collector.queue.retry(item.clone());
                tracing::debug!(?item, error = %e, ?delay, "garbage collector: retrying");
            }
        }
        collector.queue.done(&item);
    }
}
