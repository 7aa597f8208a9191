//! A Deployment's numbers: desired replicas and the rolling update's fenceposts
//! (`maxSurge`, `maxUnavailable`), resolved as Kubernetes' `deploymentutil.ResolveFenceposts`:
//! a percentage of the desired replicas, surge rounded up and unavailability rounded down,
//! and never both zero (then one pod may be unavailable).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `spec.strategy.type` of a Deployment that replaces pods gradually.
pub(crate) const ROLLING_UPDATE: &str = "RollingUpdate";
/// `spec.strategy.type` of a Deployment that stops every old pod before starting new ones.
pub(crate) const RECREATE: &str = "Recreate";

/// The Deployment's desired replicas (`spec.replicas`, 1 when unset as the apiserver
/// defaults it).
pub(crate) fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The ReplicaSet's desired replicas (`spec.replicas`, 1 when unset).
pub(crate) fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The strategy type; `RollingUpdate` when unset (the apiserver's default).
pub(crate) fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or(ROLLING_UPDATE)
}

/// Whether the Deployment rolls out gradually.
pub(crate) fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == ROLLING_UPDATE
}

/// `spec.minReadySeconds` (0 when unset).
pub(crate) fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// `spec.paused`.
pub(crate) fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// `spec.progressDeadlineSeconds` when the Deployment reports lack of progress (unset and
/// `MaxInt32` mean never).
pub(crate) fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// `spec.revisionHistoryLimit` when old ReplicaSets are cleaned up (unset and `MaxInt32`
/// keep them all).
pub(crate) fn revision_history_limit(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .filter(|s| *s != i32::MAX)
}

/// The value of an int-or-percent against `total` (`intstr.GetScaledValueFromIntOrPercent`):
/// a percentage is rounded up or down as asked; a string that is not a percentage is
/// `None` (validation rejects it; Kubernetes then treats the fencepost as 0).
pub(crate) fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let percent: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            let scaled = percent * i64::from(total);
            let rounded = if round_up {
                scaled.div_euclid(100) + i64::from(scaled.rem_euclid(100) != 0)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(rounded).ok()
        }
    }
}

/// `(maxSurge, maxUnavailable)` for `desired` replicas: surge rounds up, unavailability
/// down; when both come to 0 one pod may be unavailable, so the rollout can progress.
pub(crate) fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let surge = max_surge
        .and_then(|v| scaled_value(v, desired, true))
        .unwrap_or(0);
    let unavailable = max_unavailable
        .and_then(|v| scaled_value(v, desired, false))
        .unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        desired(d),
    )
}

/// How many pods above the desired count a rolling Deployment may run (0 for Recreate).
pub(crate) fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    fenceposts(d).0
}

/// How many of the desired pods may be unavailable during a rolling update (0 for
/// Recreate and for 0 replicas; never more than the desired replicas).
pub(crate) fn max_unavailable(d: &Deployment) -> i32 {
    let desired = desired(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    /// A rolling Deployment of `replicas` with the given fenceposts.
    pub(crate) fn rolling(
        replicas: i32,
        surge: IntOrString,
        unavailable: IntOrString,
    ) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some(ROLLING_UPDATE.into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        // 25% of 10 = 2.5: surge 3, unavailable 2.
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
            (3, 2)
        );
        // 25% of 3 = 0.75: surge 1, unavailable 0.
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 3),
            (1, 0)
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(1)), 3),
            (2, 1)
        );
    }

    #[test]
    fn fenceposts_that_both_resolve_to_zero_allow_one_unavailable() {
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("1%")), 2),
            (0, 1)
        );
        assert_eq!(resolve_fenceposts(None, None, 5), (0, 1));
    }

    #[test]
    fn strings_that_are_not_percentages_count_as_zero() {
        assert_eq!(scaled_value(&pct("3"), 10, true), None);
        assert_eq!(scaled_value(&pct("x%"), 10, true), None);
        assert_eq!(scaled_value(&pct("100%"), 7, false), Some(7));
    }

    #[test]
    fn max_unavailable_is_capped_at_the_replicas_and_zero_for_recreate() {
        let d = rolling(2, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2);
        assert_eq!(max_surge(&d), 1);
        let mut zero = rolling(0, pct("25%"), pct("25%"));
        assert_eq!(max_unavailable(&zero), 0);
        if let Some(s) = zero.spec.as_mut().and_then(|s| s.strategy.as_mut()) {
            s.type_ = Some(RECREATE.into());
        }
        assert_eq!(max_surge(&zero), 0);
        assert!(!is_rolling_update(&zero));
    }

    #[test]
    fn unset_deadlines_and_limits_and_max_int_mean_none() {
        let mut d = rolling(1, pct("25%"), pct("25%"));
        assert_eq!(progress_deadline(&d), None);
        if let Some(s) = d.spec.as_mut() {
            s.progress_deadline_seconds = Some(i32::MAX);
            s.revision_history_limit = Some(3);
        }
        assert_eq!(progress_deadline(&d), None);
        assert_eq!(revision_history_limit(&d), Some(3));
    }
}
