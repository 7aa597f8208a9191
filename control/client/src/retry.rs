//! Per-object retry back-off, as the rate-limited work queues of kube-controller-manager
//! (client-go's `ItemExponentialFailureRateLimiter`): `first` after an object's first
//! failure, doubling per further failure up to `max`, forgotten when the object succeeds.
//! Every object backs off on its own, so one failing object never slows the others.
//!
//! The Job controller's queue backs off from 1 s to a minute ([`Retries::default`], also
//! the DaemonSet controller's); client-go's default limiter, which the ReplicaSet
//! controller uses, from 5 ms to 1000 s ([`Retries::client_go_default`]). A write conflict
//! (409: the caller's view of the object was stale) is retried after a short fixed pause
//! instead ([`CONFLICT_RETRY`]): the watch brings the fresh object at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The Job controller's first retry (Kubernetes' `DefaultJobApiBackOff`).
const FIRST: Duration = Duration::from_secs(1);
/// The Job controller's longest retry (Kubernetes' `MaxJobApiBackOff`).
const MAX: Duration = Duration::from_secs(60);
/// The retry after a write conflict.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// Failure counts per object (by UID or any other stable key).
#[derive(Debug)]
pub struct Retries {
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
    pub fn new(first: Duration, max: Duration) -> Self {
        Retries {
            failures: Mutex::new(HashMap::new()),
            first,
            max,
        }
    }

    /// client-go's `DefaultItemBasedRateLimiter`: 5 ms doubling to 1000 s.
    pub fn client_go_default() -> Self {
        Retries::new(Duration::from_millis(5), Duration::from_secs(1000))
    }

    /// The delay before retrying the object `key` after a failure; `conflict` for 409s
    /// (a fixed [`CONFLICT_RETRY`] that does not count as a failure).
    pub fn failed(&self, key: &str, conflict: bool) -> Duration {
        if conflict {
            return CONFLICT_RETRY;
        }
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = self.first.saturating_mul(1 << (*n).min(30)).min(self.max);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the object's failures after it succeeded.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(key);
    }
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
    }

    #[test]
    fn a_conflict_is_retried_soon_and_does_not_count_as_a_failure() {
        let r = Retries::default();
        assert_eq!(r.failed("b", true), CONFLICT_RETRY);
        assert_eq!(r.failed("b", false), Duration::from_secs(1));
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
