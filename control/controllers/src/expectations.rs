//! Expectations: what a controller waits to see in its pod watch before it acts again, as
//! Kubernetes' `ControllerExpectations` / `UIDTrackingControllerExpectations`.
//!
//! A controller that creates pods reads the pods it owns from a watch-fed store, which lags
//! behind its own writes. Without a guard, a sync that runs before the watch has delivered
//! the previous sync's creates would count too few pods and create them again. So before
//! creating `n` pods the controller *expects* `n` creations, and before deleting pods it
//! expects the deletion of those pods (by UID); the pod watch *observes* them after the store
//! holds them ([`crate::informer`]); a sync reads its expectations *before* its pods and
//! only creates or deletes while its owner's expectations are satisfied. Creates and
//! deletes that fail or are skipped are observed at once by [`crate::pod_control`] (the
//! watch will never show them).
//!
//! Entries are keyed by the owner's UID, so a deleted owner recreated under the same name
//! starts clean, and one tracker serves any kind of owner (the ReplicaSet, Job and DaemonSet
//! controllers each keep one). An entry older than
//! [`EXPECTATIONS_TIMEOUT`] counts as satisfied, as in Kubernetes, so a lost watch event
//! delays a sync by at most that long instead of forever. Reconciles of different owners
//! run concurrently and touch different entries; one owner is never reconciled twice at
//! once (kube-runtime's applier), so an entry is never raised twice concurrently.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long expectations hold before they are considered stale and satisfied
/// (Kubernetes' `ExpectationsTimeout`, 5 minutes).
pub(crate) const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Per-owner expected creations (a count) and deletions (pod UIDs).
#[derive(Debug)]
pub(crate) struct Expectations {
    entries: Mutex<HashMap<String, Entry>>,
    timeout: Duration,
}

#[derive(Debug)]
struct Entry {
    creations: i64,
    deletions: HashSet<String>,
    since: Instant,
}

impl Entry {
    fn new() -> Self {
        Entry {
            creations: 0,
            deletions: HashSet::new(),
            since: Instant::now(),
        }
    }

    fn fulfilled(&self) -> bool {
        self.creations <= 0 && self.deletions.is_empty()
    }
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations::new(EXPECTATIONS_TIMEOUT)
    }
}

impl Expectations {
    /// A tracker whose entries expire after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        Expectations {
            entries: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself
        // is always in a consistent state between statements.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the owner may create or delete again: everything it expected was observed,
    /// or its expectations expired, or it never expected anything.
    pub(crate) fn satisfied(&self, owner_uid: &str) -> bool {
        let mut entries = self.lock();
        match entries.get(owner_uid) {
            None => true,
            Some(e) if e.fulfilled() => {
                entries.remove(owner_uid);
                true
            }
            Some(e) if e.since.elapsed() >= self.timeout => {
                tracing::debug!(owner_uid, "expectations expired");
                entries.remove(owner_uid);
                true
            }
            Some(_) => false,
        }
    }

    /// How long until the owner's pending expectations expire (`None` when satisfied).
    pub(crate) fn pending_for(&self, owner_uid: &str) -> Option<Duration> {
        let entries = self.lock();
        let e = entries.get(owner_uid)?;
        if e.fulfilled() {
            return None;
        }
        self.timeout.checked_sub(e.since.elapsed())
    }

    /// The owner is about to create `count` pods. Surplus observations from an earlier round
    /// (a negative count) do not absorb these.
    pub(crate) fn expect_creations(&self, owner_uid: &str, count: usize) {
        if count == 0 {
            return;
        }
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let mut entries = self.lock();
        let e = entries
            .entry(owner_uid.to_string())
            .or_insert_with(Entry::new);
        e.creations = e.creations.max(0).saturating_add(count);
        e.since = Instant::now();
    }

    /// The owner is about to delete the pods with these UIDs. Deleting pods already expected
    /// again does not postpone the expiry.
    pub(crate) fn expect_deletions<I>(&self, owner_uid: &str, pod_uids: I)
    where
        I: IntoIterator<Item = String>,
    {
        let mut entries = self.lock();
        let e = entries
            .entry(owner_uid.to_string())
            .or_insert_with(Entry::new);
        let before = e.deletions.len();
        e.deletions.extend(pod_uids);
        if e.deletions.len() != before {
            e.since = Instant::now();
        }
    }

    /// A pod created by the owner was observed (or a create will never be observed).
    pub(crate) fn creation_observed(&self, owner_uid: &str) {
        if let Some(e) = self.lock().get_mut(owner_uid) {
            e.creations -= 1;
        }
    }

    /// The deletion of the owner's pod `pod_uid` was observed (or will never be).
    pub(crate) fn deletion_observed(&self, owner_uid: &str, pod_uid: &str) {
        if let Some(e) = self.lock().get_mut(owner_uid) {
            e.deletions.remove(pod_uid);
        }
    }

    /// The owner is gone: drop its entry.
    pub(crate) fn forget(&self, owner_uid: &str) {
        self.lock().remove(owner_uid);
    }

    /// Drops the entries of owners `exists` says are gone (after a relist of the owners,
    /// whose deletions during the watch's gap were never seen).
    pub(crate) fn retain_owners(&self, exists: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| exists(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_without_expectations_are_satisfied() {
        let e = Expectations::default();
        assert!(e.satisfied("rs"));
        assert_eq!(e.pending_for("rs"), None);
    }

    #[test]
    fn creations_are_satisfied_once_every_create_is_observed() {
        let e = Expectations::default();
        e.expect_creations("rs", 2);
        assert!(!e.satisfied("rs"));
        e.creation_observed("rs");
        assert!(!e.satisfied("rs"));
        assert!(e.pending_for("rs").is_some());
        e.creation_observed("rs");
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn creations_seen_before_they_were_expected_still_balance() {
        let e = Expectations::default();
        e.expect_creations("j", 1);
        e.creation_observed("j");
        e.creation_observed("j");
        assert!(e.satisfied("j"));
        // A surplus from an earlier round does not absorb the next round's creations.
        e.expect_creations("j", 1);
        e.creation_observed("j");
        e.creation_observed("j");
        e.expect_creations("j", 1);
        assert!(!e.satisfied("j"));
    }

    #[test]
    fn deletions_are_tracked_by_pod_uid_and_observed_once() {
        let e = Expectations::default();
        e.expect_deletions("rs", ["p1".to_string(), "p2".to_string()]);
        e.deletion_observed("rs", "p1");
        // The same pod observed twice (deletionTimestamp, then the delete) counts once.
        e.deletion_observed("rs", "p1");
        assert!(!e.satisfied("rs"));
        e.deletion_observed("rs", "p2");
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn observations_for_other_owners_do_not_count() {
        let e = Expectations::default();
        e.expect_creations("rs-a", 1);
        e.creation_observed("rs-b");
        assert!(!e.satisfied("rs-a"));
        assert!(e.satisfied("rs-b"));
    }

    #[test]
    fn stale_expectations_expire() {
        let e = Expectations::new(Duration::ZERO);
        e.expect_creations("rs", 5);
        assert!(e.satisfied("rs"));
    }

    #[test]
    fn owners_gone_after_a_relist_are_forgotten() {
        let e = Expectations::default();
        e.expect_creations("kept", 1);
        e.expect_creations("gone", 1);
        e.retain_owners(|uid| uid == "kept");
        assert!(!e.satisfied("kept"));
        assert!(e.satisfied("gone"));
    }

    #[test]
    fn forgotten_owners_are_satisfied() {
        let e = Expectations::default();
        e.expect_creations("rs", 1);
        e.forget("rs");
        assert!(e.satisfied("rs"));
    }
}
