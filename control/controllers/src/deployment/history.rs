//! Revision history: the annotations a Deployment keeps on its ReplicaSets
//! (`deployment.kubernetes.io/revision`, `revision-history`, `desired-replicas`,
//! `max-replicas`, and the Deployment's own annotations such as `kubernetes.io/change-cause`
//! copied over), how revisions are numbered (the new ReplicaSet gets the highest old
//! revision + 1, so a rollback to an old template renumbers that ReplicaSet), and which old
//! ReplicaSets `revisionHistoryLimit` lets go. `kubectl rollout history` and `undo` read
//! exactly these annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::hash::by_creation;
use super::strategy::{desired, max_surge, revision_history_limit, rs_replicas};

/// The revision of a ReplicaSet (and of the Deployment: its new ReplicaSet's).
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
/// The earlier revisions a ReplicaSet served (set when a rollback renumbers it).
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last sized.
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last sized (proportional scaling).
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The most characters `revision-history` may hold.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations of the Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

fn annotations(rs: &ReplicaSet) -> Option<&BTreeMap<String, String>> {
    rs.metadata.annotations.as_ref()
}

/// The revision of `rs`: 0 when it has none, `None` when the annotation is not a number
/// (such ReplicaSets are skipped when numbering).
pub(crate) fn revision(rs: &ReplicaSet) -> Option<i64> {
    match annotations(rs).and_then(|a| a.get(REVISION)) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// The highest revision among `rss`.
pub(crate) fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter()
        .filter_map(revision)
        .max()
        .unwrap_or(0)
        .max(0)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotations(rs)?.get(key)?.parse().ok()
}

/// The `desired-replicas` annotation.
pub(crate) fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS)
}

/// The `max-replicas` annotation.
pub(crate) fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, MAX_REPLICAS)
}

/// The `desired-replicas` and `max-replicas` values the Deployment wants on its
/// ReplicaSets now.
pub(crate) fn replicas_annotations_for(d: &Deployment) -> (i32, i32) {
    let desired = desired(d);
    (desired, desired + max_surge(d))
}

/// Whether `rs` lacks the current `desired-replicas`/`max-replicas` values.
pub(crate) fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    desired_replicas_annotation(rs) != Some(desired) || max_replicas_annotation(rs) != Some(max)
}

/// Sets `desired-replicas` and `max-replicas`; whether anything changed.
pub(crate) fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if a.get(key) != Some(&value) {
            a.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's annotations (all but [`NOT_COPIED`]) to `rs`; whether anything
/// changed.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Brings the new ReplicaSet's annotations up to date (Kubernetes'
/// `SetNewReplicaSetAnnotations`): the Deployment's annotations, revision `new_revision`
/// unless it already has a higher one (a renumbered ReplicaSet remembers its old revision in
/// `revision-history`), and, for one about to be created, the replicas annotations. Returns
/// whether anything changed.
pub(crate) fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = a.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            // Kubernetes leaves a ReplicaSet with a garbled revision alone.
            Err(_) => return changed,
        },
    };
    if old_revision < new_revision {
        a.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.to_string(), old);
            } else {
                let mut entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    entries.drain(..start);
                    entries.push(&old);
                    let joined = entries.join(",");
                    a.insert(REVISION_HISTORY.to_string(), joined);
                }
            }
        }
    }
    if !exists {
        let (desired, max) = replicas_annotations_for(d);
        changed |= set_replicas_annotations(rs, desired, max);
    }
    changed
}

/// The old ReplicaSets `revisionHistoryLimit` no longer keeps, lowest revision first:
/// only those scaled to 0 with no pods left and their latest spec observed, never one
/// being deleted (Kubernetes' `cleanupDeployment`).
pub(crate) fn cleanup_candidates<'a>(
    d: &Deployment,
    old: &[&'a ReplicaSet],
) -> Vec<&'a ReplicaSet> {
    let Some(limit) = revision_history_limit(d) else {
        return Vec::new();
    };
    let mut alive: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = alive.len() as i64 - i64::from(limit);
    if excess <= 0 {
        return Vec::new();
    }
    alive.sort_by(|a, b| {
        let rev = |rs: &ReplicaSet| revision(rs).unwrap_or(0);
        rev(a).cmp(&rev(b)).then_with(|| by_creation(a, b))
    });
    alive
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(0))
        .filter(|rs| {
            let status = rs.status.as_ref();
            let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
            status.map(|s| s.replicas).unwrap_or(0) == 0
                && rs_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rs(name: &str, revision: Option<&str>, replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                generation: Some(1),
                annotations: revision.map(|r| BTreeMap::from([(REVISION.into(), r.into())])),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                observed_generation: Some(1),
                ..ReplicaSetStatus::default()
            }),
        }
    }

    fn deployment(annotations: &[(&str, &str)]) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(4),
                revision_history_limit: Some(1),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn the_highest_revision_skips_garbled_ones_and_counts_missing_as_zero() {
        let rss = [
            rs("a", Some("3"), 0),
            rs("b", Some("x"), 0),
            rs("c", None, 0),
        ];
        assert_eq!(max_revision(&rss), 3);
        assert_eq!(max_revision(&[]), 0);
        assert_eq!(revision(&rss[1]), None);
        assert_eq!(revision(&rss[2]), Some(0));
    }

    #[test]
    fn a_new_replica_set_gets_the_next_revision_change_cause_and_replicas_annotations() {
        let d = deployment(&[
            ("kubernetes.io/change-cause", "set image"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            (REVISION, "7"),
        ]);
        let mut new = rs("web-abc", None, 0);
        assert!(set_new_replica_set_annotations(&d, &mut new, 2, false));
        let a = new.metadata.annotations.unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("2"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("set image")
        );
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        // maxSurge of a Deployment without a strategy type is resolved as rolling 0/0 -> 0.
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert!(!a.contains_key(REVISION_HISTORY));
    }

    #[test]
    fn a_rolled_back_replica_set_is_renumbered_and_remembers_its_old_revisions() {
        let d = deployment(&[]);
        let mut old = rs("web-abc", Some("1"), 0);
        assert!(set_new_replica_set_annotations(&d, &mut old, 3, true));
        let a = old.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert!(
            !a.contains_key(DESIRED_REPLICAS),
            "existing sets keep theirs"
        );
        assert!(set_new_replica_set_annotations(&d, &mut old, 5, true));
        let a = old.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
        // Already newest: nothing to do.
        assert!(!set_new_replica_set_annotations(&d, &mut old, 4, true));
    }

    #[test]
    fn replicas_annotations_report_whether_they_changed() {
        let mut r = rs("a", None, 1);
        assert!(replicas_annotations_need_update(&r, 3, 4));
        assert!(set_replicas_annotations(&mut r, 3, 4));
        assert!(!replicas_annotations_need_update(&r, 3, 4));
        assert!(!set_replicas_annotations(&mut r, 3, 4));
        assert_eq!(desired_replicas_annotation(&r), Some(3));
        assert_eq!(max_replicas_annotation(&r), Some(4));
    }

    #[test]
    fn cleanup_removes_the_oldest_empty_revisions_beyond_the_limit() {
        let d = deployment(&[]);
        let r1 = rs("r1", Some("1"), 0);
        let r2 = rs("r2", Some("2"), 0);
        let busy = rs("r0", Some("0"), 2);
        let old = [&r2, &busy, &r1];
        let names: Vec<_> = cleanup_candidates(&d, &old)
            .iter()
            .filter_map(|rs| rs.metadata.name.clone())
            .collect();
        // Limit 1 of 3: the two lowest revisions go, but r0 still has replicas.
        assert_eq!(names, vec!["r1".to_string()]);
        let mut unlimited = deployment(&[]);
        if let Some(s) = unlimited.spec.as_mut() {
            s.revision_history_limit = None;
        }
        assert!(cleanup_candidates(&unlimited, &old).is_empty());
    }
}
