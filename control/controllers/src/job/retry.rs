//! Per-object retry back-off for a controller's error policy: 1 s after the first failed
//! reconcile of an object, doubling up to a minute, reset when a reconcile succeeds (as the
//! rate-limited work queues of kube-controller-manager do). A write conflict (409, our view
//! of the object was stale) is retried after a short fixed pause instead: the watch brings
//! the fresh object at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);
const CONFLICT: Duration = Duration::from_millis(200);

/// Failure counts per object UID.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
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
        let delay = FIRST.saturating_mul(1 << (*n).min(6)).min(MAX);
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
}
