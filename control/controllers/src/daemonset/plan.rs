//! One sync of a DaemonSet as a pure function (Kubernetes' `manage`, `podsShouldBeOnNode`,
//! `rollingUpdate` with `maxSurge` 0, and `updateDaemonSetStatus`): from the DaemonSet, the
//! nodes and its pods at an instant, the nodes to create a pod on, the pods to delete, the
//! new status and the Events.
//!
//! Per node: create a pod where one should run and none exists (a terminating pod still
//! counts, so a node never runs two); delete pods where none may stay; delete failed and
//! succeeded pods (the next sync replaces them); keep the oldest when there are several.
//! Pods for nodes that no longer exist are deleted. When nothing else is to be done and the
//! strategy is `RollingUpdate`, old pods (another `controller-revision-hash`) are deleted,
//! not-available ones first, as long as no more than `maxUnavailable` nodes lack an
//! available up-to-date pod.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::eligibility::{eligibility, target_node};
use super::hash::REVISION_HASH_LABEL;
use crate::pod_control::PodToDelete;
use crate::pods::{is_available, is_ready};

/// The outcome of one sync.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// Nodes to create a daemon pod on.
    pub(crate) create: Vec<String>,
    /// Pods to delete.
    pub(crate) delete: Vec<PodToDelete>,
    /// The status, computed from the pods as observed (before this sync's changes).
    pub(crate) status: DaemonSetStatus,
    /// `FailedDaemonPod` warnings: one message per failed pod deleted.
    pub(crate) failed_pod_messages: Vec<String>,
    /// Some pods are ready but not yet available for `minReadySeconds`: sync again then.
    pub(crate) recheck_availability: bool,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .is_some_and(|h| h == hash)
}

/// Oldest first, running before not running at equal age (`podByCreationTimestampAndPhase`).
fn oldest_first(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let not_running = |p: &Pod| phase(p) != "Running";
    created(a)
        .cmp(&created(b))
        .then(not_running(a).cmp(&not_running(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// `maxUnavailable` of a rolling update against `desired` nodes: an int, or a percentage
/// rounded up; at least 1 (maxSurge is always 0 here).
pub(crate) fn max_unavailable(ds: &DaemonSet, desired: usize) -> usize {
    let value = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone());
    let n = match value {
        None => 1,
        Some(IntOrString::Int(i)) => usize::try_from(i).unwrap_or(0),
        Some(IntOrString::String(s)) => match s.strip_suffix('%').map(str::parse::<usize>) {
            Some(Ok(percent)) => (desired * percent).div_ceil(100),
            _ => s.parse().unwrap_or(1),
        },
    };
    n.max(1)
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// The old pods a rolling update deletes now (`rollingUpdate` without surge).
fn rolling_update<'a>(
    by_node: &BTreeMap<String, Vec<&'a Pod>>,
    hash: &str,
    max_unavailable: usize,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Vec<&'a Pod> {
    let mut unavailable = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for pods in by_node.values() {
        let live: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let (new, old): (Vec<&Pod>, Vec<&Pod>) = live.iter().partition(|p| is_updated(p, hash));
        match (new.as_slice(), old.as_slice()) {
            ([new], []) => {
                if !is_available(new, min_ready_seconds, now) {
                    unavailable += 1;
                }
            }
            ([], [old]) => {
                if !is_available(old, min_ready_seconds, now) {
                    replace_now.push(*old);
                } else if unavailable < max_unavailable {
                    candidates.push(*old);
                }
            }
            // Nothing, both, or duplicates: the per-node sync sorts it out; count it unavailable.
            _ => unavailable += 1,
        }
    }
    let room = max_unavailable
        .saturating_sub(unavailable)
        .min(candidates.len());
    replace_now.extend(candidates.into_iter().take(room));
    replace_now
}

/// Syncs `ds` with revision `hash` against `nodes` and its `pods` at `now`. Without
/// `satisfied` expectations only the status is computed.
pub(crate) fn plan(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &[&Pod],
    hash: &str,
    now: Timestamp,
    satisfied: bool,
) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = ds.spec.as_ref() else {
        return plan;
    };
    let template = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = target_node(pod) {
            by_node.entry(node.to_string()).or_default().push(pod);
        }
    }
    for list in by_node.values_mut() {
        list.sort_by(|a, b| oldest_first(a, b));
    }
    let node_names: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();

    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..DaemonSetStatus::default()
    };
    let (mut desired, mut scheduled, mut misscheduled) = (0usize, 0usize, 0usize);
    let (mut ready, mut available, mut updated) = (0usize, 0usize, 0usize);
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let e = eligibility(&template, node);
        let on_node = by_node.get(name).map(Vec::as_slice).unwrap_or(&[]);
        if e.should_run {
            desired += 1;
            if let Some(first) = on_node.first() {
                scheduled += 1;
                if is_ready(first) {
                    ready += 1;
                    if is_available(first, min_ready, now) {
                        available += 1;
                    } else {
                        plan.recheck_availability = true;
                    }
                }
                if is_updated(first, hash) {
                    updated += 1;
                }
            }
        } else if !on_node.is_empty() {
            misscheduled += 1;
        }
        if !satisfied {
            continue;
        }
        let live = on_node
            .iter()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none());
        if !e.should_run && !e.should_continue_running {
            plan.delete.extend(live.map(PodToDelete::of));
        } else if e.should_run && on_node.is_empty() {
            plan.create.push(name.to_string());
        } else if e.should_continue_running {
            let mut running = Vec::new();
            for pod in live {
                match phase(pod) {
                    "Failed" => {
                        plan.failed_pod_messages.push(format!(
                            "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                            pod.metadata.namespace.as_deref().unwrap_or(""),
                            pod.metadata.name.as_deref().unwrap_or("")
                        ));
                        plan.delete.push(PodToDelete::of(pod));
                    }
                    "Succeeded" => plan.delete.push(PodToDelete::of(pod)),
                    _ => running.push(pod),
                }
            }
            plan.delete
                .extend(running.iter().skip(1).map(|p| PodToDelete::of(p)));
        } else {
            plan.delete.extend(live.map(PodToDelete::of));
        }
    }
    if satisfied {
        // Pods for nodes that are gone.
        for (node, list) in &by_node {
            if !node_names.contains(node.as_str()) {
                let live = list
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none());
                plan.delete.extend(live.map(|p| PodToDelete::of(p)));
            }
        }
        if plan.create.is_empty() && plan.delete.is_empty() && is_rolling_update(ds) {
            let eligible: BTreeMap<String, Vec<&Pod>> = by_node
                .iter()
                .filter(|(node, _)| node_names.contains(node.as_str()))
                .map(|(node, list)| (node.clone(), list.clone()))
                .collect();
            let limit = max_unavailable(ds, desired);
            let old = rolling_update(&eligible, hash, limit, min_ready, now);
            plan.delete.extend(old.into_iter().map(PodToDelete::of));
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    status.desired_number_scheduled = count(desired);
    status.current_number_scheduled = count(scheduled);
    status.number_misscheduled = count(misscheduled);
    status.number_ready = count(ready);
    status.number_available = Some(count(available));
    status.updated_number_scheduled = Some(count(updated));
    status.number_unavailable = Some(count(desired.saturating_sub(available)));
    plan.status = status;
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
