//! The run loop the controllers (ReplicaSet, Deployment, Job, DaemonSet) share around
//! kube-runtime's `Controller` or `applier`: [`requeue_failed`]
//! (their error policy, with the per-object back-off of `wasmkube_client::retry`),
//! [`drain`] (driving the reconciles) and [`run_forever`] (restarting a controller whose
//! streams ended).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::controller::Action;
pub(crate) use wasmkube_client::retry::Retries;

/// `namespace/name` of `object`, for logs and errors.
pub(crate) fn object_key<K: ResourceExt>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// An error policy: logs the failed reconcile of `object` (a `kind` such as `job`) — a
/// write conflict (`conflict`: our view of the object was older than our own last write)
/// at debug level, anything else as a warning — and requeues it after its back-off.
pub(crate) fn requeue_failed<K: ResourceExt>(
    retries: &Retries,
    kind: &str,
    object: &K,
    error: &dyn Display,
    conflict: bool,
) -> Action {
    let key = object_key(object);
    if conflict {
        tracing::debug!(kind, object = %key, %error, "sync raced a write; retrying");
    } else {
        tracing::warn!(kind, object = %key, %error, "sync failed");
    }
    Action::requeue(retries.failed(&object.uid().unwrap_or_default(), conflict))
}

/// Drives a controller's stream of reconcile results to its end; failures are logged at
/// debug level (the error policy has reported them).
pub(crate) async fn drain<T, E: Display>(kind: &str, results: impl Stream<Item = Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind, error = %e, "reconcile failed");
            }
        })
        .await;
}

/// Runs the controller `run_once` builds until the task is aborted, restarting it a second
/// after its streams end.
pub(crate) async fn run_forever<F, Fut>(kind: &str, mut run_once: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        run_once().await;
        tracing::warn!(kind, "the controller's streams ended; restarting it");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
