//! One sync of a Job as a pure function (Kubernetes' `syncJob` + `manageJob`): from the Job
//! and its pods at an instant, the pods to create and delete, the new status, the Events to
//! record once the status is written, and when to look again.
//!
//! Counting: Kubernetes counts finished pods exactly once with the
//! `batch.kubernetes.io/job-tracking` finalizer and `status.uncountedTerminatedPods`. We keep
//! finished pods (as Kubernetes does; only the Job's deletion removes them) and count from the
//! pods that exist, with the status counters as a floor that never goes down:
//! `succeeded = max(status.succeeded, succeeded pods)`, likewise `failed`; an Indexed Job's
//! `completedIndexes` is the union of the recorded indexes and those of succeeded pods, so it
//! is exact. The cost: if someone deletes finished pods of a running NonIndexed Job by hand,
//! later finishes may be under-counted by as many. No finalizers means a stopped
//! controller-manager never blocks pod deletion.
//!
//! Conditions follow Kubernetes 1.33: `SuccessCriteriaMet` / `FailureTarget` as soon as the
//! outcome is known, then `Complete` / `Failed` once no pod of the Job is terminating.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::indexes::Indexes;
use crate::pod_control::PodToDelete;
use crate::pods::{is_active, is_ready, ready_since};

/// The annotation (and label) with a pod's completion index.
pub(crate) const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// Pod creation back-off after the first failure (Kubernetes' `DefaultJobPodFailureBackOff`).
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest pod creation back-off (`MaxJobPodFailureBackOff`).
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// At most this many pods are created or deleted per sync (`MaxPodCreateDeletePerSync`).
pub(crate) const MAX_POD_CHANGES_PER_SYNC: usize = 500;

/// The message of `SuccessCriteriaMet` and `Complete`.
const COMPLETIONS_REACHED_MESSAGE: &str = "Reached expected number of succeeded pods";
/// The message of a Job failed by its backoff limit.
pub(crate) const BACKOFF_LIMIT_MESSAGE: &str = "Job has reached the specified backoff limit";
/// The message of a Job failed by its active deadline.
pub(crate) const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";

/// What the Job's status write announces, as an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobEvent {
    /// `Complete` was added: `Completed`, "Job completed".
    Completed,
    /// `Failed` was added with this reason and message (a Warning).
    Failed {
        /// `BackoffLimitExceeded` or `DeadlineExceeded`.
        reason: &'static str,
        /// The condition's message.
        message: String,
    },
    /// `Suspended=True` was set.
    Suspended,
    /// `Suspended=False` was set.
    Resumed,
}

/// The outcome of one sync.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// The status to write (assumes every create and delete succeeds).
    pub(crate) status: JobStatus,
    /// Pods to create: the completion index of each (`None` for NonIndexed Jobs).
    pub(crate) create: Vec<Option<u32>>,
    /// Pods to delete.
    pub(crate) delete: Vec<PodToDelete>,
    /// Events to record once the status is written.
    pub(crate) events: Vec<JobEvent>,
    /// Sync again after this long even if nothing changes (back-off, deadline).
    pub(crate) requeue_after: Option<Duration>,
}

/// Whether the Job has finished: a `Complete` or `Failed` condition that is `True`.
pub(crate) fn is_finished(job: &Job) -> bool {
    finished_at(job).is_some()
}

/// When the Job finished (the `Complete`/`Failed` condition's transition time).
pub(crate) fn finished_at(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
}

/// The completion index of a pod, from its annotation.
pub(crate) fn completion_index(pod: &Pod) -> Option<u32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX_ANNOTATION)?
        .parse()
        .ok()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn new_condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// When a finished pod finished (Kubernetes' `getFinishedTime`): its containers' last
/// `finishedAt`, else when it stopped being ready, else its deletion, else its creation.
fn finish_time(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let from_containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    let ready_false = || {
        status?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    };
    from_containers
        .or_else(ready_false)
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Whether the pod counts as a failure (Kubernetes' `isPodFailed`): it failed, or, unless
/// the Job only replaces failed pods, it is being deleted without having succeeded.
fn is_failed(pod: &Pod, only_replace_failed: bool) -> bool {
    match phase(pod) {
        "Failed" => true,
        "Succeeded" => false,
        _ => !only_replace_failed && pod.metadata.deletion_timestamp.is_some(),
    }
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// How long pod creation still waits after the failures since the last success: 10 s after
/// the first, doubling per failure, at most 10 minutes (Kubernetes' pod failure back-off).
fn backoff_remaining(pods: &[&Pod], only_replace_failed: bool, now: Timestamp) -> Option<Duration> {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .map(|p| millis(finish_time(p)))
        .max();
    let failures: Vec<i64> = pods
        .iter()
        .filter(|p| is_failed(p, only_replace_failed))
        .map(|p| millis(finish_time(p)))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last_failure = *failures.iter().max()?;
    let doublings = u32::try_from(failures.len() - 1)
        .unwrap_or(u32::MAX)
        .min(16);
    let backoff = POD_FAILURE_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_POD_FAILURE_BACKOFF);
    let backoff_ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
    let remaining = last_failure.saturating_add(backoff_ms) - millis(now);
    (remaining > 0).then(|| Duration::from_millis(remaining.unsigned_abs()))
}

/// With `restartPolicy: OnFailure` container restarts are the failures
/// (`pastBackoffLimitOnFailure`): the restarts of running and pending pods reach the limit.
fn past_backoff_limit_on_failure(job: &Job, pods: &[&Pod], backoff_limit: i32) -> bool {
    let restart_policy = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref());
    if restart_policy != Some("OnFailure") {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            let init = s.init_container_statuses.iter().flatten();
            init.chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum();
    if backoff_limit == 0 {
        restarts > 0
    } else {
        restarts >= i64::from(backoff_limit)
    }
}

/// Orders active pods so that the ones to delete first come first (Kubernetes'
/// `controller.ActivePods`): unscheduled, then pending, then not ready, then ready for the
/// shortest time, then most restarted, then youngest.
fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let restarts = |p: &Pod| -> i64 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// The active pods to delete: for Indexed Jobs first those without a valid index and all
/// but one of each duplicated index; then, in [`deletion_order`], enough to delete at least
/// `at_least`.
fn active_pods_for_removal<'a>(
    active: &[&'a Pod],
    indexed_completions: Option<u32>,
    at_least: usize,
) -> Vec<&'a Pod> {
    let mut remove = Vec::new();
    let mut left = Vec::new();
    match indexed_completions {
        Some(completions) => {
            let mut by_index: BTreeMap<u32, Vec<&Pod>> = BTreeMap::new();
            for pod in active {
                match completion_index(pod).filter(|i| *i < completions) {
                    Some(i) => by_index.entry(i).or_default().push(pod),
                    None => remove.push(*pod),
                }
            }
            for (_, mut pods) in by_index {
                pods.sort_by(|a, b| deletion_order(a, b));
                let keep = pods.pop();
                remove.extend(pods);
                left.extend(keep);
            }
        }
        None => left.extend(active.iter().copied()),
    }
    if remove.len() < at_least {
        left.sort_by(|a, b| deletion_order(a, b));
        let more = (at_least - remove.len()).min(left.len());
        remove.extend(left.into_iter().take(more));
    }
    remove
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Sets the `Suspended` condition like Kubernetes' `ensureJobConditionStatus`: an existing
/// condition changes status, a missing one is only added as `True`. Returns whether it changed.
fn ensure_suspended_condition(status: &mut JobStatus, suspended: bool, now: Timestamp) -> bool {
    let (value, reason, message) = if suspended {
        ("True", "JobSuspended", "Job suspended")
    } else {
        ("False", "JobResumed", "Job resumed")
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Suspended") {
        Some(c) if c.status == value => false,
        Some(c) => {
            c.status = value.to_string();
            c.reason = Some(reason.to_string());
            c.message = Some(message.to_string());
            c.last_probe_time = Some(Time(now));
            c.last_transition_time = Some(Time(now));
            true
        }
        None if suspended => {
            conditions.push(new_condition("Suspended", reason, message, now));
            true
        }
        None => false,
    }
}

/// How the Job ends, once known.
#[derive(Clone, Debug)]
enum Outcome {
    Success,
    Failure {
        reason: &'static str,
        message: String,
    },
}

/// Syncs `job` whose pods (those it controls) are `pods`, at `now`. `satisfied` says whether
/// the pod creations and deletions of earlier syncs have all been observed; if not, no pods
/// are created or deleted (except the deletions of a finishing Job).
pub(crate) fn plan(job: &Job, pods: &[&Pod], now: Timestamp, satisfied: bool) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = job.spec.as_ref() else {
        return plan;
    };
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
    let suspended = spec.suspend == Some(true);
    let only_replace_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let completions = spec.completions.map(|c| c.max(0));
    let indexed_completions = match spec.completion_mode.as_deref() {
        Some("Indexed") => completions.map(i32::unsigned_abs),
        _ => None,
    };

    let active: Vec<&Pod> = pods.iter().copied().filter(|p| is_active(p)).collect();
    let mut terminating = pods.iter().filter(|p| is_terminating(p)).count();
    let mut ready = active.iter().filter(|p| is_ready(p)).count();
    let succeeded_pods = pods.iter().filter(|p| phase(p) == "Succeeded");
    let failed_pods = pods
        .iter()
        .filter(|p| is_failed(p, only_replace_failed))
        .count();
    let mut completed = None;
    let succeeded = match indexed_completions {
        Some(n) => {
            let mut done = Indexes::parse(old.completed_indexes.as_deref().unwrap_or(""), n);
            for i in succeeded_pods.filter_map(|p| completion_index(p)) {
                if i < n {
                    done.insert(i);
                }
            }
            let total = count(usize::try_from(done.total()).unwrap_or(usize::MAX));
            completed = Some(done);
            total
        }
        None => old
            .succeeded
            .unwrap_or(0)
            .max(count(succeeded_pods.count())),
    };
    let failed = old.failed.unwrap_or(0).max(count(failed_pods));
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    let mut outcome = None;
    if condition(&old, "SuccessCriteriaMet").is_some() {
        outcome = Some(Outcome::Success);
    } else if let Some(target) = condition(&old, "FailureTarget") {
        let reason = match target.reason.as_deref() {
            Some("DeadlineExceeded") => "DeadlineExceeded",
            _ => "BackoffLimitExceeded",
        };
        outcome = Some(Outcome::Failure {
            reason,
            message: target.message.clone().unwrap_or_default(),
        });
    } else if failed > backoff_limit || past_backoff_limit_on_failure(job, &active, backoff_limit) {
        outcome = Some(Outcome::Failure {
            reason: "BackoffLimitExceeded",
            message: BACKOFF_LIMIT_MESSAGE.to_string(),
        });
    } else if let (Some(deadline), Some(start), false) = (
        spec.active_deadline_seconds,
        status.start_time.as_ref(),
        suspended,
    ) {
        let ends = millis(start.0).saturating_add(deadline.saturating_mul(1000));
        let left = ends - millis(now);
        if left <= 0 {
            outcome = Some(Outcome::Failure {
                reason: "DeadlineExceeded",
                message: DEADLINE_MESSAGE.to_string(),
            });
        } else {
            plan.requeue_after = Some(Duration::from_millis(left.unsigned_abs()));
        }
    }

    let mut active_count = active.len();
    let mut may_finish = true;
    if outcome.is_some() {
        // A finishing Job deletes every active pod, then waits for them to go.
        plan.delete
            .extend(active.iter().map(|p| PodToDelete::of(p)));
        terminating += active.len();
        active_count = 0;
        ready = 0;
        may_finish = satisfied;
    } else {
        let manage = satisfied && job.metadata.deletion_timestamp.is_none();
        if manage {
            if suspended {
                let mut doomed = active.clone();
                doomed.sort_by(|a, b| deletion_order(a, b));
                plan.delete
                    .extend(doomed.iter().map(|p| PodToDelete::of(p)));
                terminating += doomed.len();
                active_count = 0;
                ready = 0;
            } else {
                let active_i32 = count(active_count);
                let want = match completions {
                    None if succeeded > 0 => active_i32,
                    None => parallelism,
                    Some(c) => (c - succeeded).clamp(0, parallelism),
                };
                let surplus = usize::try_from(active_i32 - want).unwrap_or(0);
                let mut doomed = active_pods_for_removal(&active, indexed_completions, surplus);
                doomed.truncate(MAX_POD_CHANGES_PER_SYNC);
                if !doomed.is_empty() {
                    ready -= doomed.iter().filter(|p| is_ready(p)).count();
                    plan.delete
                        .extend(doomed.iter().map(|p| PodToDelete::of(p)));
                    terminating += doomed.len();
                    active_count -= doomed.len();
                } else {
                    let mut missing = want - active_i32;
                    if only_replace_failed {
                        missing -= count(terminating);
                    }
                    let missing = usize::try_from(missing)
                        .unwrap_or(0)
                        .min(MAX_POD_CHANGES_PER_SYNC);
                    if missing > 0 {
                        match backoff_remaining(pods, only_replace_failed, now) {
                            Some(wait) => {
                                plan.requeue_after =
                                    Some(plan.requeue_after.map_or(wait, |r| r.min(wait)));
                            }
                            None => {
                                match (&completed, indexed_completions) {
                                    (Some(done), Some(n)) => {
                                        let busy: BTreeSet<u32> = active
                                            .iter()
                                            .filter_map(|p| completion_index(p))
                                            .collect();
                                        plan.create = done
                                            .first_pending(&busy, missing, n)
                                            .into_iter()
                                            .map(Some)
                                            .collect();
                                    }
                                    _ => plan.create = vec![None; missing],
                                }
                                active_count += plan.create.len();
                            }
                        }
                    }
                }
            }
        }
        let complete = match completions {
            None => succeeded > 0 && active_count == 0,
            Some(c) => succeeded >= c && active_count == 0,
        };
        if complete {
            outcome = Some(Outcome::Success);
        } else if manage && ensure_suspended_condition(&mut status, suspended, now) {
            if suspended {
                plan.events.push(JobEvent::Suspended);
            } else {
                plan.events.push(JobEvent::Resumed);
                // A resumed Job's deadline counts from its resumption.
                status.start_time = Some(Time(now));
            }
        }
    }

    if let (Some(outcome), true) = (outcome, may_finish) {
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let (interim, last, reason, message) = match &outcome {
            Outcome::Success => (
                "SuccessCriteriaMet",
                "Complete",
                "CompletionsReached",
                COMPLETIONS_REACHED_MESSAGE.to_string(),
            ),
            Outcome::Failure { reason, message } => {
                ("FailureTarget", "Failed", *reason, message.clone())
            }
        };
        if !conditions
            .iter()
            .any(|c| c.type_ == interim && c.status == "True")
        {
            conditions.push(new_condition(interim, reason, &message, now));
        }
        if terminating == 0 {
            conditions.push(new_condition(last, reason, &message, now));
            match outcome {
                Outcome::Success => {
                    status.completion_time = Some(Time(now));
                    plan.events.push(JobEvent::Completed);
                }
                Outcome::Failure { reason, message } => {
                    plan.events.push(JobEvent::Failed { reason, message });
                }
            }
        }
    }

    status.active = Some(count(active_count));
    status.ready = Some(count(ready));
    status.terminating = Some(count(terminating));
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    if let Some(done) = completed {
        status.completed_indexes = Some(done.to_string());
    }
    plan.status = status;
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
