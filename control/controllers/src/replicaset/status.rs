//! A ReplicaSet's status from the pods it owns, as Kubernetes' `calculateStatus` and
//! `updateReplicaSetStatus`: counts of replicas, fully labelled, ready and available pods,
//! the `ReplicaFailure` condition while creates or deletes fail, and `observedGeneration`.
//! The status is written only when it changed, as a merge patch of the status subresource.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::pods::{is_available, is_ready, ready_since};

/// The condition type set while the controller cannot create or delete pods.
pub(crate) const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Why syncing the pods failed, for the `ReplicaFailure` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ManageFailure {
    /// `FailedCreate` or `FailedDelete`.
    pub(crate) reason: &'static str,
    /// The error, as the apiserver said it.
    pub(crate) message: String,
}

/// The status `rs` should have given its active, owned `pods` and the outcome of this sync's
/// creates/deletes. `observedGeneration` is left as it was (see [`status_patch`]).
pub(crate) fn calculate_status(
    rs: &ReplicaSet,
    pods: &[Arc<Pod>],
    failure: Option<&ManageFailure>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let spec = rs.spec.as_ref();
    let min_ready_seconds = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in pods {
        let labels = pod.metadata.labels.as_ref();
        let fully = template_labels.is_none_or(|want| {
            want.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
        if fully {
            fully_labeled += 1;
        }
        if is_ready(pod) {
            ready += 1;
            if is_available(pod, min_ready_seconds, now) {
                available += 1;
            }
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    status.replicas = count(pods.len());
    status.fully_labeled_replicas = Some(count(fully_labeled));
    status.ready_replicas = Some(count(ready));
    status.available_replicas = Some(count(available));

    let has_failure = status
        .conditions
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == REPLICA_FAILURE));
    match failure {
        Some(f) if !has_failure => {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: REPLICA_FAILURE.into(),
                    status: "True".into(),
                    reason: Some(f.reason.into()),
                    message: Some(f.message.clone()),
                    last_transition_time: Some(Time(now)),
                });
        }
        None if has_failure => {
            if let Some(cs) = status.conditions.as_mut() {
                cs.retain(|c| c.type_ != REPLICA_FAILURE);
            }
        }
        _ => {}
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
    status
}

/// How long until the first of `pods` that is ready but not yet available becomes
/// available, if any is (Kubernetes requeues the ReplicaSet `minReadySeconds` after a pod
/// turns ready; this is the same moment, computed from the store).
pub(crate) fn next_available_in(
    pods: &[Arc<Pod>],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.iter()
        .filter(|p| !is_available(p, min_ready_seconds, now))
        .filter_map(|p| ready_since(p))
        .map(|since| {
            let due = since.as_second() + i64::from(min_ready_seconds);
            let wait = due.saturating_sub(now.as_second()).max(0);
            // Whole seconds, as availability is judged; a little late rather than early.
            Duration::from_secs(wait.unsigned_abs()) + Duration::from_millis(100)
        })
        .min()
}

/// The merge patch that writes `new` (with `observedGeneration` = the ReplicaSet's
/// generation), or `None` when the stored status already says all that. Zero counts and
/// absent conditions are sent as `null`, which removes them, as Kubernetes omits them.
pub(crate) fn status_patch(rs: &ReplicaSet, new: &ReplicaSetStatus) -> Option<Value> {
    let generation = rs.metadata.generation;
    let old = rs.status.clone().unwrap_or_default();
    let zero = |v: Option<i32>| v.unwrap_or(0);
    let unchanged = old.replicas == new.replicas
        && zero(old.fully_labeled_replicas) == zero(new.fully_labeled_replicas)
        && zero(old.ready_replicas) == zero(new.ready_replicas)
        && zero(old.available_replicas) == zero(new.available_replicas)
        && old.observed_generation == generation
        && old.conditions.as_deref().unwrap_or_default()
            == new.conditions.as_deref().unwrap_or_default();
    if unchanged {
        return None;
    }
    let positive = |v: Option<i32>| v.filter(|n| *n != 0).map_or(Value::Null, |n| json!(n));
    Some(json!({
        "status": {
            "replicas": new.replicas,
            "fullyLabeledReplicas": positive(new.fully_labeled_replicas),
            "readyReplicas": positive(new.ready_replicas),
            "availableReplicas": positive(new.available_replicas),
            "observedGeneration": generation,
            "conditions": new.conditions.as_ref().map_or(Value::Null, |c| json!(c)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rs(min_ready_seconds: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(min_ready_seconds),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "web"), ("tier", "front")])),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                ..ReplicaSetSpec::default()
            }),
            status: None,
        }
    }

    fn pod(pod_labels: &[(&str, &str)], ready_at: Option<i64>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(labels(pod_labels)),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(t))),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        })
    }

    #[test]
    fn status_counts_fully_labeled_ready_and_available_pods() {
        let full = [("app", "web"), ("tier", "front")];
        let pods = vec![
            pod(&full, Some(100)),
            pod(&full, Some(108)),
            pod(&[("app", "web")], None),
        ];
        let status = calculate_status(&rs(5), &pods, None, at(110));
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        // Ready at 108 is not yet available with minReadySeconds 5 at 110.
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.conditions, None);
    }

    #[test]
    fn failed_creates_set_replica_failure_until_a_sync_succeeds() {
        let failure = ManageFailure {
            reason: "FailedCreate",
            message: "pods \"web-\" is forbidden: exceeded quota".into(),
        };
        let mut rs = rs(0);
        let status = calculate_status(&rs, &[], Some(&failure), at(10));
        let conditions = status.conditions.clone().unwrap_or_default();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, REPLICA_FAILURE);
        assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));
        assert_eq!(
            conditions[0].message.as_deref(),
            Some(failure.message.as_str())
        );

        // A second failure keeps the first condition (and its transition time).
        rs.status = Some(status.clone());
        let again = calculate_status(&rs, &[], Some(&failure), at(20));
        assert_eq!(again.conditions, status.conditions);

        let healed = calculate_status(&rs, &[], None, at(30));
        assert_eq!(healed.conditions, None);
    }

    #[test]
    fn the_next_check_is_when_the_first_ready_pod_becomes_available() {
        let full = [("app", "web")];
        let pods = vec![
            pod(&full, Some(100)),
            pod(&full, Some(104)),
            pod(&full, None),
        ];
        let wait = next_available_in(&pods, 10, at(106));
        assert_eq!(wait, Some(Duration::from_millis(4_100)));
        // Without minReadySeconds, ready is available: nothing to wait for.
        assert_eq!(next_available_in(&pods, 0, at(106)), None);
        // Every ready pod available already.
        assert_eq!(next_available_in(&pods, 1, at(200)), None);
    }

    #[test]
    fn unchanged_status_is_not_written() {
        let mut rs = rs(0);
        let pods = vec![pod(&[("app", "web"), ("tier", "front")], Some(1))];
        let status = calculate_status(&rs, &pods, None, at(10));
        let patch = status_patch(&rs, &status).unwrap_or_default();
        assert_eq!(patch["status"]["replicas"], 1);
        assert_eq!(patch["status"]["readyReplicas"], 1);
        assert_eq!(patch["status"]["observedGeneration"], 3);
        assert_eq!(patch["status"]["conditions"], Value::Null);

        let mut written = status.clone();
        written.observed_generation = Some(3);
        rs.status = Some(written);
        assert_eq!(status_patch(&rs, &status), None);

        // A new generation alone is worth a write.
        rs.metadata.generation = Some(4);
        assert!(status_patch(&rs, &status).is_some());
    }

    #[test]
    fn zero_counts_are_removed_rather_than_written() {
        let rs = rs(0);
        let status = calculate_status(&rs, &[pod(&[], None)], None, at(10));
        let patch = status_patch(&rs, &status).unwrap_or_default();
        assert_eq!(patch["status"]["replicas"], 1);
        assert_eq!(patch["status"]["readyReplicas"], Value::Null);
        assert_eq!(patch["status"]["fullyLabeledReplicas"], Value::Null);
    }
}
