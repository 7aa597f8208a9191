//! Scaling a Deployment that is not rolling out (Kubernetes' `sync` and `scale`): a scale
//! of a finished or paused Deployment resizes its one active ReplicaSet; a scale in the
//! middle of a rollout spreads the added (or removed) replicas over the active ReplicaSets
//! in proportion to their sizes, so neither the old nor the new template gains ground by
//! the scaling ("proportional scaling"). The `max-replicas` annotation records the size
//! the proportions were last computed against.
//!
//! [`plan_scale`] is pure: it returns the resizes to make, in order.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::hash::by_creation;
use super::history::{desired_replicas_annotation, max_replicas_annotation};
use super::status::available;
use super::strategy::{desired, is_rolling_update, max_surge, rs_replicas};

/// One ReplicaSet to resize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resize {
    /// The ReplicaSet's name.
    pub(crate) name: String,
    /// Its new `spec.replicas`.
    pub(crate) replicas: i32,
    /// `Some("up" | "down")`: write even if only the replicas annotations change (the
    /// proportional path); `None`: write only if the size changes.
    pub(crate) operation: Option<&'static str>,
}

impl Resize {
    fn to(rs: &ReplicaSet, replicas: i32) -> Resize {
        Resize {
            name: name(rs),
            replicas,
            operation: None,
        }
    }
}

fn name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

/// ReplicaSets that want pods.
pub(crate) fn active<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> Vec<&'a ReplicaSet> {
    rss.into_iter().filter(|rs| rs_replicas(rs) > 0).collect()
}

/// The one active ReplicaSet, or the newest when none is active; `None` when several are
/// active (Kubernetes' `FindActiveOrLatest`).
pub(crate) fn find_active_or_latest<'a>(
    new: Option<&'a ReplicaSet>,
    old: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let mut old = old.to_vec();
    old.sort_by(|a, b| by_creation(b, a));
    let all = active(old.iter().copied().chain(new));
    match all.len() {
        0 => new.or_else(|| old.first().copied()),
        1 => all.first().copied(),
        _ => None,
    }
}

/// Whether the new ReplicaSet has all the desired replicas, believes so itself (its
/// `desired-replicas` annotation) and all of them are available.
pub(crate) fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else {
        return false;
    };
    let desired = desired(d);
    desired_replicas_annotation(rs) == Some(desired)
        && rs_replicas(rs) == desired
        && available(rs) == desired
}

/// Go's `integer.RoundToInt32`: halves away from zero.
fn round(x: f64) -> i32 {
    // Replica counts are far inside i32.
    #[allow(clippy::cast_possible_truncation)]
    let r = if x < 0.0 {
        (x - 0.5) as i32
    } else {
        (x + 0.5) as i32
    };
    r
}

/// The share of a resize `rs` should take: its size scaled from the Deployment size it was
/// last sized for (`max-replicas`) to the new one (`replicas + maxSurge`).
fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let size = rs_replicas(rs);
    if desired(d) == 0 {
        return -size;
    }
    let deployment_replicas = desired(d) + max_surge(d);
    let annotated = max_replicas_annotation(rs).unwrap_or_else(|| {
        d.status
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or_default()
    });
    if annotated == 0 {
        return 0;
    }
    let scaled = f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated);
    round(scaled) - size
}

/// How many replicas to add to (or remove from, negative) `rs`, given how many the whole
/// Deployment adds and how many were already handed out (Kubernetes' `GetProportion`).
pub(crate) fn get_proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Larger first; equal sizes newer first when scaling up, older first when scaling down.
fn by_size(a: &ReplicaSet, b: &ReplicaSet, newer_first: bool) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
        if newer_first {
            by_creation(b, a)
        } else {
            by_creation(a, b)
        }
    })
}

/// The resizes that scale the Deployment to `spec.replicas` without rolling it out.
pub(crate) fn plan_scale(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
) -> Vec<Resize> {
    let desired = desired(d);
    if let Some(only) = find_active_or_latest(new, old) {
        if rs_replicas(only) == desired {
            return Vec::new();
        }
        return vec![Resize::to(only, desired)];
    }
    if is_saturated(d, new) {
        return active(old.iter().copied())
            .into_iter()
            .map(|rs| Resize::to(rs, 0))
            .collect();
    }
    if !is_rolling_update(d) {
        return Vec::new();
    }
    let mut all = active(old.iter().copied().chain(new));
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let allowed = if desired > 0 {
        desired + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - total;
    let operation = match to_add.cmp(&0) {
        Ordering::Greater => {
            all.sort_by(|a, b| by_size(a, b, true));
            "up"
        }
        Ordering::Less => {
            all.sort_by(|a, b| by_size(a, b, false));
            "down"
        }
        Ordering::Equal => "",
    };
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
    for rs in &all {
        let proportion = get_proportion(rs, d, to_add, added);
        sizes.push(rs_replicas(rs) + proportion);
        added += proportion;
    }
    // Leftovers go to the largest ReplicaSet.
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        *first = (*first + to_add - added).max(0);
    }
    all.iter()
        .zip(sizes)
        .map(|(rs, replicas)| Resize {
            name: name(rs),
            replicas,
            operation: Some(operation),
        })
        .collect()
}

/// Whether `spec.replicas` changed since the active ReplicaSets were sized (their
/// `desired-replicas` annotation differs): then the Deployment is scaled, not rolled out.
pub(crate) fn is_scaling_event(d: &Deployment, all: &[&ReplicaSet]) -> bool {
    let desired = desired(d);
    active(all.iter().copied())
        .iter()
        .filter_map(|rs| desired_replicas_annotation(rs))
        .any(|annotated| annotated != desired)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deployment::history::{DESIRED_REPLICAS, MAX_REPLICAS};
    use crate::deployment::strategy::tests::rolling;
    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    /// A ReplicaSet created at second `created` with `replicas` (all available) sized for
    /// a Deployment of `desired` replicas and `max` with surge.
    pub(crate) fn sized(
        name: &str,
        created: i64,
        replicas: i32,
        desired: i32,
        max: i32,
    ) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Timestamp::from_second(created).ok().map(Time),
                annotations: Some(BTreeMap::from([
                    (DESIRED_REPLICAS.into(), desired.to_string()),
                    (MAX_REPLICAS.into(), max.to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(replicas),
                ..ReplicaSetStatus::default()
            }),
        }
    }

    fn sizes(plan: &[Resize]) -> Vec<(&str, i32)> {
        plan.iter().map(|r| (r.name.as_str(), r.replicas)).collect()
    }

    #[test]
    fn a_single_active_replica_set_takes_the_whole_scale() {
        let d = rolling(10, IntOrString::Int(1), IntOrString::Int(0));
        let new = sized("new", 2, 3, 3, 4);
        let old = sized("old", 1, 0, 3, 4);
        assert_eq!(
            sizes(&plan_scale(&d, Some(&new), &[&old])),
            vec![("new", 10)]
        );
        // Nothing active: the newest takes it.
        let idle = sized("new", 2, 0, 0, 0);
        assert_eq!(
            sizes(&plan_scale(&d, Some(&idle), &[&old])),
            vec![("new", 10)]
        );
        assert_eq!(
            find_active_or_latest(None, &[&old]).map(name),
            Some("old".into())
        );
    }

    #[test]
    fn scaling_mid_rollout_spreads_replicas_in_proportion() {
        // 10 replicas, surge 3: old has 8, new has 5 (13 = 10 + 3). Scale to 20 (+10 -> 23).
        let d = rolling(20, IntOrString::Int(3), IntOrString::Int(2));
        let old = sized("old", 1, 8, 10, 13);
        let new = sized("new", 2, 5, 10, 13);
        let plan = plan_scale(&d, Some(&new), &[&old]);
        // old: 8 * 23 / 13 = 14.15 -> 14 (+6); new: 5 * 23 / 13 = 8.8 -> 9 (+4).
        assert_eq!(sizes(&plan), vec![("old", 14), ("new", 9)]);
        assert!(plan.iter().all(|r| r.operation == Some("up")));
        let total: i32 = plan.iter().map(|r| r.replicas).sum();
        assert_eq!(total, 23);
    }

    #[test]
    fn scaling_down_mid_rollout_takes_from_the_larger_and_older_first() {
        let d = rolling(4, IntOrString::Int(1), IntOrString::Int(0));
        let old = sized("old", 1, 5, 10, 11);
        let new = sized("new", 2, 6, 10, 11);
        let plan = plan_scale(&d, Some(&new), &[&old]);
        // allowed 5, total 11: remove 6. new: 6 * 5 / 11 = 2.7 -> 3 (-3); old: 5*5/11=2.27 -> 2 (-3).
        assert_eq!(sizes(&plan), vec![("new", 3), ("old", 2)]);
        assert!(plan.iter().all(|r| r.operation == Some("down")));
    }

    #[test]
    fn scaling_to_zero_empties_every_replica_set() {
        let d = rolling(0, IntOrString::Int(1), IntOrString::Int(0));
        let old = sized("old", 1, 2, 3, 4);
        let new = sized("new", 2, 2, 3, 4);
        let plan = plan_scale(&d, Some(&new), &[&old]);
        assert_eq!(sizes(&plan), vec![("old", 0), ("new", 0)]);
    }

    #[test]
    fn a_saturated_new_replica_set_scales_the_old_ones_to_zero() {
        let d = rolling(3, IntOrString::Int(1), IntOrString::Int(0));
        let new = sized("new", 2, 3, 3, 4);
        let old = sized("old", 1, 1, 3, 4);
        let plan = plan_scale(&d, Some(&new), &[&old]);
        assert_eq!(sizes(&plan), vec![("old", 0)]);
        assert_eq!(plan[0].operation, None);
    }

    #[test]
    fn a_changed_replica_count_is_a_scaling_event() {
        let d = rolling(5, IntOrString::Int(1), IntOrString::Int(0));
        let same = sized("a", 1, 5, 5, 6);
        let stale = sized("b", 1, 3, 3, 4);
        let inactive = sized("c", 1, 0, 3, 4);
        assert!(!is_scaling_event(&d, &[&same, &inactive]));
        assert!(is_scaling_event(&d, &[&same, &stale]));
    }
}
