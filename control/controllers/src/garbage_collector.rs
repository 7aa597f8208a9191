//! The garbage collector, as kube-controller-manager's (`pkg/controller/garbagecollector`):
//! objects whose owners are gone are deleted, and the `foregroundDeletion` and `orphan`
//! finalizers the apiserver puts on deleted owners are carried out.
//!
//! - [`kinds`]: every listable, watchable, deletable kind found by discovery;
//! - monitors (here): a metadata-only watch per kind feeds the [`graph`] (owner uid ->
//!   dependents, virtual nodes for owners not seen), which says what needs a look;
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
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::Context;
use collector::Collector;
use kinds::Kinds;

/// How long to wait before asking discovery again after a failure.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Runs the garbage collector until the task is aborted.
pub(crate) async fn run(ctx: Arc<Context>) {
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
        "garbage collector: watching every deletable kind"
    );
    let collector = Arc::new(Collector::new(ctx.client.clone(), kinds));
    let (synced_tx, synced_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let workers = usize::from(ctx.config.concurrency).max(1) * 2;
    for _ in 0..workers {
        tasks.spawn(worker(collector.clone(), synced_rx.clone()));
    }
    tasks.spawn(build_graph(collector, synced_tx));
    // The tasks run forever; aborting this task drops the set, which aborts them.
    while tasks.join_next().await.is_some() {}
}

type MetaEvent = Result<Event<PartialObjectMeta<DynamicObject>>, watcher::Error>;

/// Feeds every kind's watch events into the graph and queues the work they make.
async fn build_graph(collector: Arc<Collector>, synced: watch::Sender<bool>) {
    let client = collector.client.clone();
    let streams: Vec<BoxStream<'static, (usize, MetaEvent)>> = collector
        .kinds
        .all()
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let api: Api<PartialObjectMeta<DynamicObject>> =
                Api::all_with(client.clone(), &kind.resource);
            watch_stream(api, watcher::Config::default())
                .default_backoff()
                .map(move |e| (i, e))
                .boxed()
        })
        .collect();
    let total = streams.len();
    let mut listed: HashSet<usize> = HashSet::new();
    // Per kind, the uids seen during a (re)list.
    let mut relisting: Vec<Option<HashSet<String>>> = vec![None; total];
    if total == 0 {
        let _ = synced.send(true);
    }
    let mut events = futures::stream::select_all(streams);
    while let Some((i, event)) = events.next().await {
        let Some(kind) = collector.kinds.all().get(i).cloned() else {
            continue;
        };
        let observe = |obj: &PartialObjectMeta<DynamicObject>| {
            let kinds = &collector.kinds;
            collector.graph().observe(
                i,
                &kind.resource.api_version,
                &kind.resource.kind,
                &obj.metadata,
                &|r| kinds.namespaced(&r.api_version, &r.kind),
            )
        };
        match event {
            Ok(Event::Init) => relisting[i] = Some(HashSet::new()),
            Ok(Event::InitApply(obj)) => {
                if let (Some(seen), Some(uid)) = (relisting[i].as_mut(), obj.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                collector.enqueue(observe(&obj));
            }
            Ok(Event::InitDone) => {
                let seen = relisting[i].take().unwrap_or_default();
                // Objects deleted while the watch was down.
                let gone: Vec<String> = collector
                    .graph()
                    .uids_from(i)
                    .into_iter()
                    .filter(|uid| !seen.contains(uid))
                    .collect();
                for uid in gone {
                    collector.mark_absent(&uid);
                    let work = collector.graph().remove(&uid);
                    collector.enqueue(work);
                }
                if listed.insert(i) && listed.len() == total {
                    tracing::info!(
                        objects = collector.graph().len(),
                        "garbage collector: every kind listed, collecting"
                    );
                    let _ = synced.send(true);
                }
            }
            Ok(Event::Apply(obj)) => collector.enqueue(observe(&obj)),
            Ok(Event::Delete(obj)) => {
                if let Some(uid) = obj.metadata.uid.as_deref() {
                    collector.mark_absent(uid);
                    let work = collector.graph().remove(uid);
                    collector.enqueue(work);
                }
            }
            Err(e) => {
                tracing::debug!(kind = %kind.resource.kind, error = %e, "garbage collector: watch error, retrying");
            }
        }
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
