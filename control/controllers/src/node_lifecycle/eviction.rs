//! Taint-based eviction, as Kubernetes' taint eviction controller decides it: a pod on a
//! node with NoExecute taints is evicted at once when one of them is not tolerated, after
//! the shortest `tolerationSeconds` of the tolerations used (counted from the taint's
//! `timeAdded`) when all are, and never when those tolerate forever. Pure functions; which
//! toleration tolerates a taint is `wasmkube_api::scheduling::tolerates`, as the scheduler
//! decides it.

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use wasmkube_api::scheduling::tolerates;

/// When a pod with `tolerations` on a node with `taints` is to be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// It tolerates every NoExecute taint forever (or there is none).
    Never,
    /// At this time (now or in the past: at once).
    At(Timestamp),
}

/// Decides for one pod. Taints without `timeAdded` count from `now`.
pub(crate) fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    now: Timestamp,
) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let Some(used) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::At(now);
        };
        let Some(seconds) = used.toleration_seconds else {
            continue;
        };
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = added
            .checked_add(SignedDuration::from_secs(seconds.max(0)))
            .unwrap_or(added);
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, effect: &str, added_secs: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: added_secs.map(|s| Time(at(s))),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH
            .checked_add(SignedDuration::from_secs(secs))
            .unwrap()
    }

    fn toleration(key: &str, operator: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(operator.into()),
            value: None,
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: seconds,
        }
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

    #[test]
    fn tolerations_match_by_key_operator_value_and_effect() {
        let t = Taint {
            value: Some("a".into()),
            ..taint("k", "NoExecute", None)
        };
        assert!(tolerates(&toleration("", "Exists", "", None), &t));
        assert!(tolerates(&toleration("k", "Exists", "NoExecute", None), &t));
        assert!(!tolerates(
            &toleration("k", "Exists", "NoSchedule", None),
            &t
        ));
        assert!(!tolerates(&toleration("other", "Exists", "", None), &t));
        let equal = Toleration {
            value: Some("a".into()),
            ..toleration("k", "Equal", "", None)
        };
        assert!(tolerates(&equal, &t));
        assert!(!tolerates(&toleration("k", "Equal", "", None), &t));
        assert!(!tolerates(&toleration("", "Equal", "", None), &t));
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_at_once() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(10))];
        assert_eq!(eviction_time(&taints, &[], at(11)), Eviction::At(at(11)));
        // NoSchedule taints never evict.
        let soft = [taint(UNREACHABLE, "NoSchedule", None)];
        assert_eq!(eviction_time(&soft, &[], at(11)), Eviction::Never);
    }

    #[test]
    fn toleration_seconds_count_from_the_taints_time_added() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(100))];
        let tols = [toleration(UNREACHABLE, "Exists", "NoExecute", Some(300))];
        assert_eq!(
            eviction_time(&taints, &tols, at(101)),
            Eviction::At(at(400))
        );
        let forever = [toleration(UNREACHABLE, "Exists", "NoExecute", None)];
        assert_eq!(eviction_time(&taints, &forever, at(101)), Eviction::Never);
        // Zero or negative seconds: at the time the taint was added.
        let zero = [toleration(UNREACHABLE, "Exists", "NoExecute", Some(-5))];
        assert_eq!(
            eviction_time(&taints, &zero, at(101)),
            Eviction::At(at(100))
        );
    }

    #[test]
    fn the_shortest_toleration_over_all_taints_wins() {
        let taints = [
            taint(UNREACHABLE, "NoExecute", Some(100)),
            taint("maintenance", "NoExecute", Some(150)),
        ];
        let tols = [
            toleration(UNREACHABLE, "Exists", "NoExecute", Some(300)),
            toleration("maintenance", "Exists", "", Some(60)),
        ];
        assert_eq!(
            eviction_time(&taints, &tols, at(151)),
            Eviction::At(at(210))
        );
    }
}
