//! Which pods a controller deletes first when it has too many: Kubernetes' `ActivePodsWithRanks`
//! order (`pkg/controller/controller_utils.go`), shared by the ReplicaSet controller and any
//! other controller that scales pods down.
//!
//! Pods that are cheaper to lose come first:
//! 1. unscheduled before scheduled;
//! 2. `Pending` before `Unknown` before `Running`;
//! 3. not ready before ready;
//! 4. lower `controller.kubernetes.io/pod-deletion-cost` before higher;
//! 5. pods sharing their node with more related pods before others (spreads what remains);
//! 6. of two ready pods, the more recently ready first;
//! 7. more container restarts first;
//! 8. newer before older;
//!
//! with times compared on a logarithmic scale (`LogarithmicScaleDown`, on by default), so
//! pods of similar age count as equal and the tie is broken by UID, which spreads deletions
//! pseudo-randomly among equivalent pods. Kubernetes breaks a tie of ready-time buckets by
//! UID straight away and only consults restarts when ready times are exactly equal; that
//! comparison is not a total order (three pods can form a cycle), which Rust's sort may
//! panic on, so here the UID is the last key for every pod: the order is a sort key.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::pods::{is_active, is_ready, ready_since};

/// The annotation whose integer value says how costly deleting the pod is.
pub(crate) const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Where a pod stands in the deletion order; smaller is deleted first.
type RankKey = (
    bool,           // scheduled
    u8,             // phase ordinal
    bool,           // ready
    i32,            // deletion cost
    Reverse<usize>, // related pods on the same node
    Option<i64>,    // ready-time bucket (ready pods only; smaller = more recently ready)
    Reverse<i32>,   // max container restarts
    i64,            // creation bucket (smaller = newer)
    String,         // UID
);

/// The pods to delete to remove `count` of `pods`, in deletion order: the first `count` of
/// `pods` sorted by [`deletion_order`]. `related` are the pods whose placement counts for
/// rule 5 (the owner's pods and its siblings', e.g. all ReplicaSets of one Deployment);
/// they should include `pods`.
pub(crate) fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    count: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    if count == 0 {
        return Vec::new();
    }
    let mut ranked = pods.to_vec();
    if count < ranked.len() {
        deletion_order(&mut ranked, related, now);
    }
    ranked.truncate(count);
    ranked
}

/// Sorts `pods` into Kubernetes' deletion preference order (see the module doc), ranking each
/// pod by how many active `related` pods share its node.
pub(crate) fn deletion_order(pods: &mut [Arc<Pod>], related: &[Arc<Pod>], now: Timestamp) {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node_name(pod)).or_default() += 1;
    }
    pods.sort_by_cached_key(|pod| {
        let colocated = on_node.get(node_name(pod)).copied().unwrap_or(0);
        rank_key(pod, colocated, now)
    });
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn rank_key(pod: &Pod, colocated: usize, now: Timestamp) -> RankKey {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let phase_ordinal = match phase {
        Some("Unknown") => 1,
        Some("Running") => 2,
        // Pending, and anything else (Go's map lookup of a missing phase gives 0).
        _ => 0,
    };
    let ready = is_ready(pod);
    let ready_bucket = if ready {
        let since = ready_since(pod).filter(|t| *t != Timestamp::UNIX_EPOCH);
        Some(since.map_or(i64::MIN, |t| log_bucket(t, now)))
    } else {
        None
    };
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MIN, |t| log_bucket(t.0, now));
    (
        !node_name(pod).is_empty(),
        phase_ordinal,
        ready,
        deletion_cost(pod),
        Reverse(colocated),
        ready_bucket,
        Reverse(max_restarts(pod)),
        created,
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// `floor(log2(now - t))` in nanoseconds, `-1` for times not in the past: pods whose ages
/// differ by less than a factor of two mostly share a bucket.
fn log_bucket(t: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    if nanos <= 0 {
        -1
    } else {
        i64::from(127 - nanos.leading_zeros())
    }
}

/// The pod's deletion cost annotation; 0 when missing or not an int32, as Kubernetes.
pub(crate) fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    const NOW: i64 = 1_000_000;

    /// A pod created `age` seconds before NOW, Running and ready `ready_age` seconds ago
    /// (if any), on `node` ("" for unscheduled).
    fn pod(name: &str, node: &str, phase: &str, ready_age: Option<i64>, age: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(at(NOW - age))),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_age.map(|a| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(NOW - a))),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    fn sorted(mut pods: Vec<Arc<Pod>>) -> Vec<String> {
        let related = pods.clone();
        deletion_order(&mut pods, &related, at(NOW));
        names(&pods)
    }

    #[test]
    fn surplus_pods_prefer_unscheduled_then_pending_then_not_ready() {
        let pods = vec![
            pod("ready", "n1", "Running", Some(100), 200),
            pod("running-not-ready", "n1", "Running", None, 200),
            pod("unknown", "n1", "Unknown", None, 200),
            pod("pending", "n1", "Pending", None, 200),
            pod("unscheduled", "", "Pending", None, 200),
        ];
        assert_eq!(
            sorted(pods),
            [
                "unscheduled",
                "pending",
                "unknown",
                "running-not-ready",
                "ready"
            ]
        );
    }

    #[test]
    fn lower_deletion_cost_goes_first() {
        let mut cheap = (*pod("cheap", "n1", "Running", Some(100), 200)).clone();
        cheap.metadata.annotations =
            Some([(POD_DELETION_COST.to_string(), "-5".to_string())].into());
        let mut dear = (*pod("dear", "n1", "Running", Some(1), 2)).clone();
        dear.metadata.annotations =
            Some([(POD_DELETION_COST.to_string(), "10".to_string())].into());
        let plain = pod("plain", "n1", "Running", Some(1), 2);
        assert_eq!(
            sorted(vec![Arc::new(dear), plain, Arc::new(cheap)]),
            ["cheap", "plain", "dear"]
        );
    }

    #[test]
    fn pods_doubled_up_on_a_node_go_before_lonely_ones() {
        let pods = vec![
            pod("alone", "n1", "Running", Some(100), 200),
            pod("crowded-a", "n2", "Running", Some(100), 200),
            pod("crowded-b", "n2", "Running", Some(100), 200),
        ];
        assert_eq!(sorted(pods)[2], "alone");
    }

    #[test]
    fn more_recently_ready_then_more_restarts_then_newer_go_first() {
        let recent = pod("recently-ready", "n1", "Running", Some(10), 100_000);
        let long = pod("long-ready", "n2", "Running", Some(50_000), 100_000);
        assert_eq!(sorted(vec![long, recent]), ["recently-ready", "long-ready"]);

        let mut restarts = (*pod("restarted", "n1", "Running", None, 100)).clone();
        if let Some(s) = restarts.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus {
                restart_count: 3,
                ..ContainerStatus::default()
            }]);
        }
        let calm = pod("calm", "n2", "Running", None, 100);
        assert_eq!(
            sorted(vec![calm, Arc::new(restarts)]),
            ["restarted", "calm"]
        );

        let new = pod("new", "n1", "Running", None, 10);
        let old = pod("old", "n2", "Running", None, 100_000);
        assert_eq!(sorted(vec![old, new]), ["new", "old"]);
    }

    #[test]
    fn pods_of_similar_age_are_ordered_by_uid() {
        // 1000 s and 1010 s share the log2 bucket: the UID decides, whatever the input order.
        let a = pod("a", "n1", "Running", None, 1010);
        let b = pod("b", "n2", "Running", None, 1000);
        assert_eq!(sorted(vec![b.clone(), a.clone()]), ["a", "b"]);
        assert_eq!(sorted(vec![a, b]), ["a", "b"]);
    }

    #[test]
    fn pods_to_delete_takes_the_first_of_the_order() {
        let pods = vec![
            pod("ready", "n1", "Running", Some(100), 200),
            pod("pending", "n1", "Pending", None, 200),
            pod("unscheduled", "", "Pending", None, 200),
        ];
        let doomed = pods_to_delete(&pods, &pods, 2, at(NOW));
        assert_eq!(names(&doomed), ["unscheduled", "pending"]);
        assert!(pods_to_delete(&pods, &pods, 0, at(NOW)).is_empty());
        assert_eq!(pods_to_delete(&pods, &pods, 5, at(NOW)).len(), 3);
    }

    #[test]
    fn log_buckets_grow_with_age() {
        let now = at(NOW);
        assert_eq!(log_bucket(now, now), -1);
        assert!(log_bucket(at(NOW - 1), now) < log_bucket(at(NOW - 4), now));
        assert_eq!(
            log_bucket(at(NOW - 1000), now),
            log_bucket(at(NOW - 1010), now)
        );
    }
}
