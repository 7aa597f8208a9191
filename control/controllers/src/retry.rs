//! Per-object retry back-off for a controller's error policy, as the rate-limited work
//! queues of kube-controller-manager (`ItemExponentialFailureRateLimiter`): `first` after
//! the first failed reconcile of an object, doubling up to `max`, reset when a reconcile
//! succeeds. The Job controller's queue backs off from 1 s to a minute ([`Retries::default`],
//! also used by the DaemonSet controller); client-go's default limiter, which the
//! ReplicaSet controller uses, from 5 ms to 1000 s ([`Retries::client_go_default`]). A
//! write conflict (409, our view of the object was stale) is retried after a short fixed
//! pause instead: the watch brings the fresh object at once.
//!
//! Also what the Job and DaemonSet controllers share around kube-runtime's `Controller`:
//! [`requeue_failed`] (their error policy), [`drain`] (driving the reconciles) and
//! [`run_forever`] (restarting a controller whose streams ended).

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::controller::Action;

/// The Job controller's first retry (Kubernetes' `DefaultJobApiBackOff`).
const FIRST: Duration = Duration::from_secs(1);
/// The Job controller's longest retry (Kubernetes' `MaxJobApiBackOff`).
const MAX: Duration = Duration::from_secs(60);
/// The retry after a write conflict.
const CONFLICT: Duration = Duration::from_millis(200);

/// Failure counts per object UID.
#[derive(Debug)]
pub(crate) struct Retries {
    failures: Mutex<HashMap<String, u32>>,
    first: Duration,
    max: Duration,
}

impl Default for Retries {
    /// 1 s doubling to 60 s.
    fn default() -> Self {
        Retries::new(FIRST, MAX)
    }
}

impl Retries {
    /// Back-off from `first`, doubling up to `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Retries {
            failures: Mutex::new(HashMap::new()),
            first,
            max,
        }
    }

    /// client-go's `DefaultItemBasedRateLimiter`: 5 ms doubling to 1000 s.
    pub(crate) fn client_go_default() -> Self {
        Retries::new(Duration::from_millis(5), Duration::from_secs(1000))
    }

    /// The delay before retrying the object `uid` after a failure; `conflict` for 409s.
    pub(crate) fn failed(&self, uid: &str, conflict: bool) -> Duration {
        if conflict {
            return CONFLICT;
        }
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(uid.to_string()).or_insert(0);
        let delay = self.first.saturating_mul(1 << (*n).min(30)).min(self.max);
        *n = n.saturating_add(1);
        delay
    }

    /// Resets the object's back-off after a successful reconcile.
    pub(crate) fn succeeded(&self, uid: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(uid);
    }
}

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

/// Whether `error` is the apiserver's 409 Conflict.
pub(crate) fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether `error` is the apiserver's 404 Not Found.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_and_reset_on_success() {
        let r = Retries::default();
        assert_eq!(r.failed("a", false), Duration::from_secs(1));
        assert_eq!(r.failed("a", false), Duration::from_secs(2));
        assert_eq!(r.failed("a", false), Duration::from_secs(4));
        for _ in 0..10 {
            r.failed("a", false);
        }
        assert_eq!(r.failed("a", false), MAX);
        r.succeeded("a");
        assert_eq!(r.failed("a", false), Duration::from_secs(1));
        assert_eq!(r.failed("b", true), CONFLICT);
    }

    #[test]
    fn client_go_default_backs_off_from_5_ms_to_1000_s_per_object() {
        let r = Retries::client_go_default();
        assert_eq!(r.failed("rs", false), Duration::from_millis(5));
        assert_eq!(r.failed("rs", false), Duration::from_millis(10));
        assert_eq!(r.failed("other", false), Duration::from_millis(5));
        for _ in 0..40 {
            r.failed("rs", false);
        }
        assert_eq!(r.failed("rs", false), Duration::from_secs(1000));
        r.succeeded("rs");
        assert_eq!(r.failed("rs", false), Duration::from_millis(5));
    }
}
