//! Expectations, as kube-controller-manager's `ControllerExpectations`: what a controller
//! has asked the apiserver to do and has not yet seen in its pod watch.
//!
//! A controller reads pods from a reflector store that lags behind its own writes. Without
//! expectations, a reconcile that runs between a pod create and the watch event of that
//! create counts too few pods and creates another. So before creating `n` pods the
//! controller calls [`Expectations::expect_creations`]; the pod watch calls
//! [`Expectations::observe`] for every event *before* the store applies it, which counts
//! each pod the store did not have yet as an observed creation; a failed create is
//! observed by the controller itself. Deletions are expected by pod UID and are observed
//! once the pod is gone or has a `deletionTimestamp`. While any are outstanding the owner
//! is not "satisfied" and its controller creates and deletes nothing. Expectations expire
//! after [`EXPECTATIONS_TIMEOUT`] (Kubernetes' 5 minutes) so a lost event cannot wedge an
//! owner forever. Owners are keyed by UID.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::pods::controller_of;

/// How long expectations are trusted before the owner is synced regardless.
pub(crate) const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Pending {
    creates: i64,
    deletes: HashSet<String>,
    since: Instant,
}

/// Per-owner outstanding pod creations and deletions. Shared between a controller's
/// reconciles and its pod watch.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    owners: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> R) -> R {
        // A panic elsewhere while holding the lock leaves the map usable.
        let mut owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut owners)
    }

    /// Records that the owner `owner_uid` is about to create `n` pods.
    pub(crate) fn expect_creations(&self, owner_uid: &str, n: usize) {
        if n == 0 {
            return;
        }
        self.with(|owners| {
            let pending = owners.entry(owner_uid.to_string()).or_insert(Pending {
                creates: 0,
                deletes: HashSet::new(),
                since: Instant::now(),
            });
            // Surplus observations from an earlier round must not absorb these creations.
            pending.creates = pending.creates.max(0) + i64::try_from(n).unwrap_or(i64::MAX);
            pending.since = Instant::now();
        });
    }

    /// Records that one expected creation happened (seen in the watch) or will never happen
    /// (the create failed).
    pub(crate) fn creation_observed(&self, owner_uid: &str) {
        self.with(|owners| {
            if let Some(pending) = owners.get_mut(owner_uid) {
                pending.creates -= 1;
            }
        });
    }

    /// Records that the owner is about to delete the pods with `pod_uids`.
    pub(crate) fn expect_deletions<'a>(
        &self,
        owner_uid: &str,
        pod_uids: impl IntoIterator<Item = &'a str>,
    ) {
        self.with(|owners| {
            let pending = owners.entry(owner_uid.to_string()).or_insert(Pending {
                creates: 0,
                deletes: HashSet::new(),
                since: Instant::now(),
            });
            let before = pending.deletes.len();
            pending
                .deletes
                .extend(pod_uids.into_iter().map(str::to_string));
            if pending.deletes.len() != before {
                pending.since = Instant::now();
            }
        });
    }

    /// Records that a pod deletion is done (observed, or the delete failed).
    pub(crate) fn deletion_observed(&self, owner_uid: &str, pod_uid: &str) {
        self.with(|owners| {
            if let Some(pending) = owners.get_mut(owner_uid) {
                pending.deletes.remove(pod_uid);
            }
        });
    }

    /// Whether the owner may act: every expected creation was observed, and every pod it
    /// deleted is gone or terminating. `live_pod_uids` are the UIDs of the owner's pods in
    /// the store without a `deletionTimestamp`; expected deletions not among them count as
    /// observed (this also covers deletions missed while the watch relisted).
    pub(crate) fn satisfied(&self, owner_uid: &str, live_pod_uids: &HashSet<&str>) -> bool {
        self.with(|owners| {
            let Some(pending) = owners.get_mut(owner_uid) else {
                return true;
            };
            pending
                .deletes
                .retain(|uid| live_pod_uids.contains(uid.as_str()));
            let done = pending.creates <= 0 && pending.deletes.is_empty();
            if done || pending.since.elapsed() >= EXPECTATIONS_TIMEOUT {
                owners.remove(owner_uid);
                return true;
            }
            false
        })
    }

    /// Accounts for one pod watch event; call it before the event reaches `store`. A pod the
    /// store does not hold yet is an observed creation for its controller; a deleted or
    /// terminating pod is an observed deletion.
    pub(crate) fn observe(&self, event: &watcher::Event<Pod>, store: &Store<Pod>) {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let Some(owner) = controller_of(&pod.metadata) else {
                    return;
                };
                let known = store
                    .get(&ObjectRef::from_obj(pod))
                    .is_some_and(|old| old.metadata.uid == pod.metadata.uid);
                if !known {
                    self.creation_observed(&owner.uid);
                }
                if pod.metadata.deletion_timestamp.is_some()
                    && let Some(uid) = &pod.metadata.uid
                {
                    self.deletion_observed(&owner.uid, uid);
                }
            }
            watcher::Event::Delete(pod) => {
                if let (Some(owner), Some(uid)) = (controller_of(&pod.metadata), &pod.metadata.uid)
                {
                    self.deletion_observed(&owner.uid, uid);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live<'a>(uids: &[&'a str]) -> HashSet<&'a str> {
        uids.iter().copied().collect()
    }

    #[test]
    fn an_owner_is_satisfied_once_every_expected_creation_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("rs", &live(&[])));
        e.expect_creations("rs", 2);
        assert!(!e.satisfied("rs", &live(&[])));
        e.creation_observed("rs");
        assert!(!e.satisfied("rs", &live(&[])));
        e.creation_observed("rs");
        assert!(e.satisfied("rs", &live(&[])));
    }

    #[test]
    fn creations_seen_before_they_were_expected_still_balance() {
        let e = Expectations::default();
        e.expect_creations("j", 1);
        e.creation_observed("j");
        e.creation_observed("j");
        assert!(e.satisfied("j", &live(&[])));
    }

    #[test]
    fn deletions_are_observed_when_the_pod_leaves_the_live_set() {
        let e = Expectations::default();
        e.expect_deletions("ds", ["p1", "p2"]);
        assert!(!e.satisfied("ds", &live(&["p1", "p2", "p3"])));
        e.deletion_observed("ds", "p1");
        assert!(!e.satisfied("ds", &live(&["p2", "p3"])));
        assert!(e.satisfied("ds", &live(&["p3"])));
    }
}
