//! The RollingUpdate strategy (Kubernetes' `rolling.go`): each sync either scales the new
//! ReplicaSet up, as far as `replicas + maxSurge` pods in total allow, or scales old
//! ReplicaSets down, as far as `replicas - maxUnavailable` available pods allow — first
//! the old pods that are not available anyway (they cost no availability), oldest
//! ReplicaSet first. Pods becoming available (the ReplicaSet controller's status) trigger
//! the next step.
//!
//! [`new_rs_new_replicas`] and [`plan_old_scale_down`] are the pure step computations;
//! [`rollout`] applies them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::DeploymentError;
use super::hash::by_creation;
use super::scale::{Resize, active};
use super::status::{actual, available, deployment_complete};
use super::strategy::{
    ROLLING_UPDATE, desired, max_surge, max_unavailable, rs_replicas, strategy_type,
};
use super::sync::Sync;

/// The size the new ReplicaSet may grow to now: for RollingUpdate, up to the desired
/// replicas but no more than `replicas + maxSurge` pods over all ReplicaSets; for Recreate,
/// the desired replicas (Kubernetes' `NewRSNewReplicas`).
///
/// Unlike Kubernetes, which counts only the ReplicaSets' `spec.replicas`, a ReplicaSet
/// counts here with the pods it still has (`status.replicas`) when that is more: an old
/// ReplicaSet just scaled down keeps its surplus pods until the ReplicaSet controller
/// deletes them, and waiting for that keeps the pods that actually run, not only the
/// sizes asked for, within `replicas + maxSurge`.
pub(crate) fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let desired = desired(d);
    let current = rs_replicas(new);
    if strategy_type(d) != ROLLING_UPDATE {
        return desired;
    }
    let total: i32 = all.iter().map(|rs| rs_replicas(rs).max(actual(rs))).sum();
    let max_total = desired + max_surge(d);
    if total >= max_total {
        return current;
    }
    current + (max_total - total).min(desired - current)
}

/// The scale-downs of old ReplicaSets that keep at least `replicas - maxUnavailable` pods
/// available (Kubernetes' `reconcileOldReplicaSets`): unhealthy old replicas first, as far
/// as the new ReplicaSet's own unavailable pods leave room, then available ones, oldest
/// ReplicaSet first. `old` is every old ReplicaSet.
///
/// A ReplicaSet counts at most `spec.replicas` available pods: one just scaled down still
/// reports the pods it is about to delete as available, and counting them would let the
/// next step remove available pods twice (Kubernetes stops the step instead when it meets
/// such a ReplicaSet among the unhealthy ones).
pub(crate) fn plan_old_scale_down(
    d: &Deployment,
    old: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Vec<Resize> {
    let mut active_old = active(old.iter().copied());
    let old_pods: i32 = active_old.iter().map(|rs| rs_replicas(rs)).sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let all_pods: i32 = old.iter().map(|rs| rs_replicas(rs)).sum::<i32>() + rs_replicas(new);
    let min_available = desired(d) - max_unavailable(d);
    let new_unavailable = (rs_replicas(new) - available(new)).max(0);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    active_old.sort_by(|a, b| by_creation(a, b));
    // (name, replicas, available) as the plan goes.
    let mut sets: Vec<(String, i32, i32)> = active_old
        .iter()
        .map(|rs| {
            (
                rs.metadata.name.clone().unwrap_or_default(),
                rs_replicas(rs),
                available(rs).min(rs_replicas(rs)),
            )
        })
        .collect();
    let mut plan = Vec::new();

    // Unhealthy replicas first: removing them costs no availability.
    let mut cleaned = 0;
    for (name, replicas, available) in &mut sets {
        if cleaned >= max_scaled_down {
            break;
        }
        if *replicas == 0 || *replicas == *available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(*replicas - *available);
        *replicas -= down;
        cleaned += down;
        plan.push(Resize {
            name: name.clone(),
            replicas: *replicas,
            operation: None,
        });
    }

    // Then available ones, as far as maxUnavailable allows.
    let available_pods: i32 =
        sets.iter().map(|s| s.2).sum::<i32>() + available(new).min(rs_replicas(new));
    if available_pods <= min_available {
        return plan;
    }
    let to_scale_down = available_pods - min_available;
    let mut scaled = 0;
    for (name, replicas, _) in &mut sets {
        if scaled >= to_scale_down {
            break;
        }
        if *replicas == 0 {
            continue;
        }
        let down = (*replicas).min(to_scale_down - scaled);
        *replicas -= down;
        scaled += down;
        plan.push(Resize {
            name: name.clone(),
            replicas: *replicas,
            operation: None,
        });
    }
    plan
}

/// One step of a rolling update (Kubernetes' `rolloutRolling`).
pub(super) async fn rollout(sync: &mut Sync<'_>) -> Result<(), DeploymentError> {
    sync.sync_revision(true).await?;
    let Some(new) = sync.new_rs() else {
        return sync.sync_rollout_status().await;
    };
    let name = new.metadata.name.clone().unwrap_or_default();
    let current = rs_replicas(new);
    let desired = desired(&sync.d);
    let target = if current > desired {
        desired
    } else {
        new_rs_new_replicas(&sync.d, &sync.all(), new)
    };
    let scale_new = Resize {
        name,
        replicas: target,
        operation: None,
    };
    if sync.apply(vec![scale_new]).await? {
        return sync.sync_rollout_status().await;
    }
    let plan = match sync.new_rs() {
        Some(new) => plan_old_scale_down(&sync.d, &sync.old(), new),
        None => Vec::new(),
    };
    if sync.apply(plan).await? {
        return sync.sync_rollout_status().await;
    }
    let complete = sync
        .d
        .status
        .as_ref()
        .is_some_and(|s| deployment_complete(&sync.d, s));
    if complete {
        sync.cleanup().await?;
    }
    sync.sync_rollout_status().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::scale::tests::sized;
    use crate::deployment::strategy::tests::rolling;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn with_available(mut rs: ReplicaSet, available: i32) -> ReplicaSet {
        if let Some(s) = rs.status.as_mut() {
            s.available_replicas = Some(available);
        }
        rs
    }

    fn sizes(plan: &[Resize]) -> Vec<(&str, i32)> {
        plan.iter().map(|r| (r.name.as_str(), r.replicas)).collect()
    }

    #[test]
    fn the_new_replica_set_grows_by_the_surge_and_never_past_the_desired_count() {
        let d = rolling(10, IntOrString::Int(3), IntOrString::Int(2));
        let old = sized("old", 1, 10, 10, 13);
        let new = sized("new", 2, 0, 10, 13);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
        let full = sized("new", 2, 3, 10, 13);
        assert_eq!(
            new_rs_new_replicas(&d, &[&old, &full], &full),
            3,
            "at 13 pods"
        );
        let old = sized("old", 1, 2, 10, 13);
        let nearly = sized("new", 2, 9, 10, 13);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &nearly], &nearly), 10);
    }

    #[test]
    fn pods_an_old_replica_set_has_not_deleted_yet_still_count_against_the_surge() {
        let d = rolling(4, IntOrString::Int(1), IntOrString::Int(1));
        // Old scaled 4 -> 3 but still has 4 pods: the new one may not grow yet.
        let mut old = sized("old", 1, 3, 4, 5);
        if let Some(s) = old.status.as_mut() {
            s.replicas = 4;
        }
        let new = sized("new", 2, 1, 4, 5);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
        if let Some(s) = old.status.as_mut() {
            s.replicas = 3;
        }
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 2);
    }

    #[test]
    fn recreate_sizes_the_new_replica_set_to_the_desired_count_at_once() {
        let mut d = rolling(4, IntOrString::Int(1), IntOrString::Int(1));
        if let Some(s) = d.spec.as_mut().and_then(|s| s.strategy.as_mut()) {
            s.type_ = Some(super::super::strategy::RECREATE.into());
        }
        let new = sized("new", 2, 0, 4, 4);
        assert_eq!(new_rs_new_replicas(&d, &[&new], &new), 4);
    }

    #[test]
    fn old_pods_go_only_as_far_as_availability_allows() {
        // 3 replicas, surge 1, unavailable 0 (the kubectl defaults for 3 replicas).
        let d = rolling(
            3,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        let old = sized("old", 1, 3, 3, 4);
        let new = with_available(sized("new", 2, 1, 3, 4), 0);
        // 4 pods, 3 available, the new one not yet: nothing may go.
        assert!(plan_old_scale_down(&d, &[&old], &new).is_empty());
        let new = sized("new", 2, 1, 3, 4);
        assert_eq!(
            sizes(&plan_old_scale_down(&d, &[&old], &new)),
            vec![("old", 2)]
        );
    }

    #[test]
    fn unhealthy_old_pods_are_removed_first() {
        // 10 replicas, unavailable 2, surge 3: old has 8 of which 2 unavailable, new 5 all
        // unavailable: 13 - 8 - 5 = 0, nothing goes.
        let d = rolling(10, IntOrString::Int(3), IntOrString::Int(2));
        let old = with_available(sized("old", 1, 8, 10, 13), 6);
        let new = with_available(sized("new", 2, 5, 10, 13), 0);
        assert!(plan_old_scale_down(&d, &[&old], &new).is_empty());
        // With 4 new pods available: 13 - 8 - 1 = 4 may go; the 2 unhealthy old go first,
        // then 6 + 4 - 8 = 2 available ones.
        let new = with_available(sized("new", 2, 5, 10, 13), 4);
        assert_eq!(
            sizes(&plan_old_scale_down(&d, &[&old], &new)),
            vec![("old", 6), ("old", 4)]
        );
    }

    #[test]
    fn pods_a_replica_set_is_about_to_delete_neither_count_as_available_nor_come_back() {
        // maxUnavailable 1 of 4: old was scaled 3 -> 2 but still reports 3 available.
        let d = rolling(4, IntOrString::Int(1), IntOrString::Int(1));
        let mut old = sized("old", 1, 2, 4, 5);
        if let Some(s) = old.status.as_mut() {
            s.replicas = 3;
            s.available_replicas = Some(3);
        }
        let new = sized("new", 2, 2, 4, 5);
        // Available: 2 (old, capped) + 2 (new) = 4; min 3: one more may go, never up.
        let plan = plan_old_scale_down(&d, &[&old], &new);
        assert_eq!(sizes(&plan), vec![("old", 1)]);
    }

    #[test]
    fn the_oldest_replica_sets_are_scaled_down_first_and_empty_ones_are_skipped() {
        let d = rolling(4, IntOrString::Int(1), IntOrString::Int(1));
        let oldest = sized("oldest", 1, 1, 4, 5);
        let empty = sized("empty", 0, 0, 4, 5);
        let older = sized("older", 2, 2, 4, 5);
        let new = sized("new", 3, 2, 4, 5);
        // 5 available, min 3: two go, the oldest's one then one of the older's.
        assert_eq!(
            sizes(&plan_old_scale_down(&d, &[&older, &empty, &oldest], &new)),
            vec![("oldest", 0), ("older", 1)]
        );
    }
}
