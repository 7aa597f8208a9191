//! What the EndpointSlice controller wrote and its informer has not shown yet (Kubernetes'
//! `EndpointSliceTracker`): a sync that plans from a view without its own last creates would
//! create those slices again, and one without its deletes would delete them twice.
//!
//! Each write records the slice's new resourceVersion (deletes: that it is gone); a sync of
//! the Service is stale while its informer's slices are older than that. The apiserver's
//! resourceVersions are store revisions, so "older" is a number comparison. An expectation
//! the informer never meets (another client deleted the slice just after our write) lapses
//! after [`EXPIRY`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

/// How long an expectation holds syncs back at most.
const EXPIRY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// The slice at this resourceVersion or later.
    AtLeast(u64),
    /// The slice gone.
    Gone,
}

/// A Service's expectations: slice name -> what and since when.
type ServiceExpectations = HashMap<String, (Expected, Instant)>;

/// Expectations per Service uid.
#[derive(Default)]
pub(crate) struct SliceTracker {
    expected: Mutex<HashMap<String, ServiceExpectations>>,
}

fn revision(slice: &EndpointSlice) -> Option<u64> {
    slice.resource_version()?.parse().ok()
}

impl SliceTracker {
    /// Records a create or update the apiserver answered with `slice`.
    pub(crate) fn wrote(&self, service_uid: &str, slice: &EndpointSlice) {
        if let Some(rv) = revision(slice) {
            self.expect(service_uid, &slice.name_any(), Expected::AtLeast(rv));
        }
    }

    /// Records a delete.
    pub(crate) fn deleted(&self, service_uid: &str, name: &str) {
        self.expect(service_uid, name, Expected::Gone);
    }

    fn expect(&self, service_uid: &str, name: &str, expected: Expected) {
        let mut all = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(service_uid.to_string())
            .or_default()
            .insert(name.to_string(), (expected, Instant::now()));
    }

    /// Whether the informer's `slices` of the Service are older than its last writes;
    /// forgets the expectations they meet.
    pub(crate) fn stale(&self, service_uid: &str, slices: &[Arc<EndpointSlice>]) -> bool {
        let mut all = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(expected) = all.get_mut(service_uid) else {
            return false;
        };
        expected.retain(|name, (want, since)| {
            let seen = slices
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name));
            let met = match (want, seen) {
                (Expected::Gone, None) => true,
                (Expected::Gone, Some(_)) => false,
                (Expected::AtLeast(_), None) => false,
                (Expected::AtLeast(rv), Some(s)) => revision(s).is_none_or(|seen| seen >= *rv),
            };
            !met && since.elapsed() < EXPIRY
        });
        let stale = !expected.is_empty();
        if !stale {
            all.remove(service_uid);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(name: &str, rv: u64) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                ..ObjectMeta::default()
            },
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn a_sync_is_stale_until_the_informer_shows_its_writes() {
        let tracker = SliceTracker::default();
        assert!(!tracker.stale("svc", &[]));
        tracker.wrote("svc", &slice("web-a", 10));
        tracker.deleted("svc", "web-b");
        let old = Arc::new(slice("web-a", 9));
        let b = Arc::new(slice("web-b", 5));
        assert!(tracker.stale("svc", &[old, b.clone()]));
        let new = Arc::new(slice("web-a", 10));
        assert!(tracker.stale("svc", &[new.clone(), b]));
        assert!(!tracker.stale("svc", std::slice::from_ref(&new)));
        // Met expectations are forgotten; other Services are not concerned.
        assert!(!tracker.stale("svc", &[]));
        tracker.wrote("other", &slice("db-a", 3));
        assert!(!tracker.stale("svc", &[new]));
    }
}
