//! A Deployment's status, computed from its ReplicaSets' (Kubernetes' `calculateStatus`,
//! `syncRolloutStatus` and `checkPausedConditions`): the replica counts `kubectl rollout
//! status` waits on, the `Available` condition (`MinimumReplicasAvailable` /
//! `MinimumReplicasUnavailable`) and the `Progressing` condition that records the rollout's
//! last progress (`NewReplicaSetCreated`, `FoundNewReplicaSet`, `ReplicaSetUpdated`,
//! `NewReplicaSetAvailable`) or its failure (`ProgressDeadlineExceeded`, status `False`)
//! once no progress was seen for `progressDeadlineSeconds`.
//!
//! Everything here is pure: the current time is a parameter.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::strategy::{desired, is_paused, max_unavailable, progress_deadline, rs_replicas};

/// Condition type: enough pods are available.
pub(crate) const AVAILABLE: &str = "Available";
/// Condition type: how the rollout is going.
pub(crate) const PROGRESSING: &str = "Progressing";
/// Condition type: a ReplicaSet could not create or delete pods.
pub(crate) const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Progressing reason: one of the ReplicaSets was scaled during the rollout.
pub(crate) const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
/// Progressing reason: creating the new ReplicaSet failed.
pub(crate) const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
/// Progressing reason: the new ReplicaSet was created.
pub(crate) const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
/// Progressing reason: the new ReplicaSet already existed.
pub(crate) const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
/// Progressing reason: the rollout finished.
pub(crate) const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Progressing reason: no progress within `progressDeadlineSeconds`.
pub(crate) const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// Progressing reason: `spec.paused` became true.
pub(crate) const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";
/// Progressing reason: `spec.paused` became false.
pub(crate) const DEPLOYMENT_RESUMED: &str = "DeploymentResumed";

/// A ReplicaSet's observed pods (`status.replicas`).
pub(crate) fn actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// A ReplicaSet's available pods.
pub(crate) fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// `None` for 0, as Go's `omitempty` leaves zero counts out of the stored status.
fn nz(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn count(n: Option<i32>) -> i32 {
    n.unwrap_or(0)
}

/// `now` to the second, the precision stored times have.
pub(crate) fn truncate(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A condition stamped `now` (update and transition time).
pub(crate) fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    let now = Some(Time(truncate(now)));
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

/// The condition of `type_`, if any.
pub(crate) fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Removes the condition of `type_`.
pub(crate) fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

/// Sets `condition` unless one of its type with the same status and reason exists; a
/// condition whose status does not change keeps its `lastTransitionTime`.
pub(crate) fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

/// The status the ReplicaSets `all` (with the new one, `new`) give the Deployment, with its
/// `Available` condition (Kubernetes' `calculateStatus`).
pub(crate) fn calculate_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available_replicas: i32 = all.iter().map(|rs| available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let unavailable = (total - available_replicas).max(0);
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(all.iter().map(|rs| actual(rs)).sum()),
        updated_replicas: nz(new.map(actual).unwrap_or(0)),
        ready_replicas: nz(all.iter().map(|rs| ready(rs)).sum()),
        available_replicas: nz(available_replicas),
        unavailable_replicas: nz(unavailable),
        collision_count: current.collision_count,
        conditions: current.conditions,
        terminating_replicas: None,
    };
    if available_replicas >= desired(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

/// All desired replicas are updated and available, no old pods remain, and the latest
/// spec has been observed.
pub(crate) fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = desired(d);
    count(status.updated_replicas) == desired
        && count(status.replicas) == desired
        && count(status.available_replicas) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's current status: more updated, ready
/// or available pods, or fewer old ones.
pub(crate) fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// Whether the rollout has made no progress for `progressDeadlineSeconds` since the
/// `Progressing` condition was last updated (or has already timed out).
pub(crate) fn deployment_timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = get_condition(new, PROGRESSING) else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(NEW_REPLICA_SET_AVAILABLE) => false,
        Some(PROGRESS_DEADLINE_EXCEEDED) => true,
        _ => {
            let Some(from) = condition.last_update_time.as_ref() else {
                return false;
            };
            from.0.as_second() + i64::from(deadline) < now.as_second()
        }
    }
}

fn rs_name(new: Option<&ReplicaSet>) -> Option<&str> {
    new.and_then(|rs| rs.metadata.name.as_deref())
}

/// The status to write during a rollout (Kubernetes' `syncRolloutStatus`): the counts,
/// `Available`, the `Progressing` condition moved on by what happened since the current
/// status, and the ReplicaSets' `ReplicaFailure` condition promoted.
pub(crate) fn rollout_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(all, new, d, now);
    let name = d.metadata.name.as_deref().unwrap_or_default();
    if progress_deadline(d).is_none() {
        remove_condition(&mut status, PROGRESSING);
    }
    let current = d.status.clone().unwrap_or_default();
    let current_cond = get_condition(&current, PROGRESSING).cloned();
    let complete_before = count(status.replicas) == count(status.updated_replicas)
        && current_cond
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(NEW_REPLICA_SET_AVAILABLE));
    if progress_deadline(d).is_some() && !complete_before {
        if deployment_complete(d, &status) {
            let message = match rs_name(new) {
                Some(rs) => format!("ReplicaSet \"{rs}\" has successfully progressed."),
                None => format!("Deployment \"{name}\" has successfully progressed."),
            };
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "True", NEW_REPLICA_SET_AVAILABLE, message, now),
            );
        } else if deployment_progressing(d, &status) {
            let message = match rs_name(new) {
                Some(rs) => format!("ReplicaSet \"{rs}\" is progressing."),
                None => format!("Deployment \"{name}\" is progressing."),
            };
            let mut condition =
                new_condition(PROGRESSING, "True", REPLICA_SET_UPDATED, message, now);
            // Progress moves lastUpdateTime even when the reason stays the same.
            if let Some(current) = &current_cond {
                if current.status == "True" {
                    condition
                        .last_transition_time
                        .clone_from(&current.last_transition_time);
                }
                remove_condition(&mut status, PROGRESSING);
            }
            set_condition(&mut status, condition);
        } else if deployment_timed_out(d, &status, now) {
            let message = match rs_name(new) {
                Some(rs) => format!("ReplicaSet \"{rs}\" has timed out progressing."),
                None => format!("Deployment \"{name}\" has timed out progressing."),
            };
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "False",
                    PROGRESS_DEADLINE_EXCEEDED,
                    message,
                    now,
                ),
            );
        }
    }
    match replica_failure(all, new) {
        Some(failure) => set_condition(&mut status, failure),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    status
}

/// The first `ReplicaFailure` condition of the new ReplicaSet, else of any ReplicaSet.
fn replica_failure(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    new.into_iter()
        .chain(all.iter().copied())
        .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
        .find(|c| c.type_ == REPLICA_FAILURE)
        .map(|c| DeploymentCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_update_time: c.last_transition_time.clone(),
            last_transition_time: c.last_transition_time.clone(),
        })
}

/// When to look again for a rollout that has not finished nor timed out: when its
/// progress deadline would pass (Kubernetes' `requeueStuckDeployment`).
pub(crate) fn progress_check_after(
    d: &Deployment,
    new: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let current = d.status.clone().unwrap_or_default();
    let condition = get_condition(&current, PROGRESSING)?;
    if deployment_complete(d, new)
        || condition.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
    {
        return None;
    }
    let updated = condition.last_update_time.as_ref()?.0.as_second();
    let remaining = updated + i64::from(deadline) - now.as_second();
    // One second more, so the check lands after the deadline, not on it.
    Some(Duration::from_secs(
        u64::try_from(remaining.max(0)).unwrap_or(0) + 1,
    ))
}

/// The status with the `Progressing` condition that pausing or resuming sets, when it
/// changes (Kubernetes' `checkPausedConditions`): a paused Deployment must not time out.
pub(crate) fn paused_condition(d: &Deployment, now: Timestamp) -> Option<DeploymentStatus> {
    progress_deadline(d)?;
    let mut status = d.status.clone().unwrap_or_default();
    let current = get_condition(&status, PROGRESSING);
    let reason = current.and_then(|c| c.reason.as_deref());
    if reason == Some(PROGRESS_DEADLINE_EXCEEDED) {
        return None;
    }
    let paused_set = reason == Some(DEPLOYMENT_PAUSED);
    let condition = if is_paused(d) && !paused_set {
        new_condition(
            PROGRESSING,
            "Unknown",
            DEPLOYMENT_PAUSED,
            "Deployment is paused".into(),
            now,
        )
    } else if !is_paused(d) && paused_set {
        new_condition(
            PROGRESSING,
            "Unknown",
            DEPLOYMENT_RESUMED,
            "Deployment is resumed".into(),
            now,
        )
    } else {
        return None;
    };
    set_condition(&mut status, condition);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::strategy::tests::rolling;
    use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn rs(name: &str, replicas: i32, actual: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..ReplicaSetStatus::default()
            }),
        }
    }

    fn deployment(replicas: i32) -> Deployment {
        let mut d = rolling(replicas, IntOrString::Int(1), IntOrString::Int(1));
        d.metadata.name = Some("web".into());
        d.metadata.generation = Some(2);
        if let Some(s) = d.spec.as_mut() {
            s.progress_deadline_seconds = Some(600);
        }
        d
    }

    fn reason(status: &DeploymentStatus, type_: &str) -> Option<String> {
        get_condition(status, type_).and_then(|c| c.reason.clone())
    }

    #[test]
    fn counts_come_from_the_replica_sets_and_zero_is_left_out() {
        let d = deployment(3);
        let old = rs("web-old", 1, 1, 1);
        let new = rs("web-new", 3, 2, 1);
        let s = calculate_status(&[&old, &new], Some(&new), &d, at(10));
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.unavailable_replicas, Some(2));
        assert_eq!(s.observed_generation, Some(2));
        // 2 available >= 3 - maxUnavailable 1.
        assert_eq!(
            reason(&s, AVAILABLE).as_deref(),
            Some("MinimumReplicasAvailable")
        );
        let empty = rs("web-new", 0, 0, 0);
        let s = calculate_status(&[&empty], Some(&empty), &deployment(0), at(10));
        assert_eq!((s.replicas, s.unavailable_replicas), (None, None));
    }

    #[test]
    fn too_few_available_pods_make_the_deployment_unavailable() {
        let d = deployment(3);
        let new = rs("web-new", 3, 3, 1);
        let s = calculate_status(&[&new], Some(&new), &d, at(10));
        let c = get_condition(&s, AVAILABLE).cloned().unwrap_or_default();
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("MinimumReplicasUnavailable"));
    }

    #[test]
    fn a_condition_with_the_same_status_keeps_its_transition_time() {
        let mut s = DeploymentStatus::default();
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "True", "A", "a".into(), at(1)),
        );
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "True", "B", "b".into(), at(5)),
        );
        let c = get_condition(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some("B"));
        assert_eq!(c.last_transition_time, Some(Time(at(1))));
        assert_eq!(c.last_update_time, Some(Time(at(5))));
        // Same status and reason: nothing changes.
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "True", "B", "c".into(), at(9)),
        );
        let c = get_condition(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.message.as_deref(), Some("b"));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn progress_then_completion_then_nothing_more() {
        let mut d = deployment(2);
        let old = rs("web-old", 1, 2, 2);
        let new = rs("web-new", 2, 1, 0);
        let s = rollout_status(&[&old, &new], Some(&new), &d, at(100));
        // From an empty status, one updated pod is progress.
        let c = get_condition(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some(REPLICA_SET_UPDATED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-new\" is progressing.")
        );
        d.status = Some(s);
        let done_old = rs("web-old", 0, 0, 0);
        let done_new = rs("web-new", 2, 2, 2);
        let s = rollout_status(&[&done_old, &done_new], Some(&done_new), &d, at(200));
        let c = get_condition(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some(NEW_REPLICA_SET_AVAILABLE));
        assert_eq!(c.last_transition_time, Some(Time(at(100))));
        assert!(deployment_complete(&d, &s));
        assert_eq!(progress_check_after(&d, &s, at(200)), None);
        d.status = Some(s.clone());
        let again = rollout_status(&[&done_old, &done_new], Some(&done_new), &d, at(5000));
        assert_eq!(again, s, "a finished rollout never times out");
    }

    #[test]
    fn no_progress_past_the_deadline_times_out_with_status_false() {
        let mut d = deployment(2);
        let new = rs("web-new", 2, 2, 0);
        d.status = Some(calculate_status(&[&new], Some(&new), &d, at(0)));
        if let Some(s) = d.status.as_mut() {
            set_condition(
                s,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_REPLICA_SET_CREATED,
                    "c".into(),
                    at(0),
                ),
            );
        }
        let s = rollout_status(&[&new], Some(&new), &d, at(300));
        assert_eq!(
            reason(&s, PROGRESSING).as_deref(),
            Some(NEW_REPLICA_SET_CREATED)
        );
        assert_eq!(
            progress_check_after(&d, &s, at(300)),
            Some(Duration::from_secs(301))
        );
        let s = rollout_status(&[&new], Some(&new), &d, at(601));
        let c = get_condition(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some(PROGRESS_DEADLINE_EXCEEDED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-new\" has timed out progressing.")
        );
    }

    #[test]
    fn pausing_and_resuming_set_an_unknown_progressing_condition() {
        let mut d = deployment(1);
        if let Some(s) = d.spec.as_mut() {
            s.paused = Some(true);
        }
        let s = paused_condition(&d, at(1)).unwrap_or_default();
        let c = get_condition(&s, PROGRESSING).cloned().unwrap_or_default();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("Unknown", Some(DEPLOYMENT_PAUSED))
        );
        d.status = Some(s);
        assert_eq!(paused_condition(&d, at(2)), None, "already paused");
        if let Some(s) = d.spec.as_mut() {
            s.paused = Some(false);
        }
        let s = paused_condition(&d, at(3)).unwrap_or_default();
        assert_eq!(reason(&s, PROGRESSING).as_deref(), Some(DEPLOYMENT_RESUMED));
    }

    #[test]
    fn replica_failures_of_replica_sets_are_promoted() {
        let d = deployment(1);
        let mut new = rs("web-new", 1, 0, 0);
        if let Some(s) = new.status.as_mut() {
            s.conditions = Some(vec![ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                ..ReplicaSetCondition::default()
            }]);
        }
        let s = rollout_status(&[&new], Some(&new), &d, at(1));
        assert_eq!(reason(&s, REPLICA_FAILURE).as_deref(), Some("FailedCreate"));
    }
}
