//! Unit tests of [`super::plan`]: Jobs and pods built by hand, one sync at a time.

use super::*;
use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodSpec, PodStatus,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn job(spec: JobSpec) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("default".into()),
            uid: Some("job-uid".into()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    ..PodSpec::default()
                }),
            },
            backoff_limit: spec.backoff_limit.or(Some(6)),
            parallelism: spec.parallelism.or(Some(1)),
            ..spec
        }),
        status: None,
    }
}

fn pod(name: &str, phase: &str, finished: i64) -> Pod {
    let terminated = matches!(phase, "Succeeded" | "Failed").then(|| ContainerStateTerminated {
        exit_code: if phase == "Failed" { 1 } else { 0 },
        finished_at: Some(Time(at(finished))),
        ..ContainerStateTerminated::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("{name}-uid")),
            creation_timestamp: Some(Time(at(finished - 5))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                state: Some(ContainerState {
                    terminated,
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn ready(mut p: Pod) -> Pod {
    if let Some(s) = p.status.as_mut() {
        s.conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]);
    }
    p
}

fn indexed(mut p: Pod, index: u32) -> Pod {
    p.metadata.annotations =
        Some([(COMPLETION_INDEX_ANNOTATION.to_string(), index.to_string())].into());
    p
}

fn types(status: &JobStatus) -> Vec<&str> {
    status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect()
}

fn with_status(mut j: Job, plan: &Plan) -> Job {
    j.status = Some(plan.status.clone());
    j
}

#[test]
fn a_new_job_creates_parallelism_pods_and_sets_its_start_time() {
    let j = job(JobSpec {
        completions: Some(5),
        parallelism: Some(2),
        ..JobSpec::default()
    });
    let plan = plan(&j, &[], at(100), true);
    assert_eq!(plan.create, vec![None, None]);
    assert_eq!(plan.status.active, Some(2));
    assert_eq!(plan.status.start_time, Some(Time(at(100))));
    assert!(plan.status.conditions.unwrap_or_default().is_empty());
}

#[test]
fn creations_never_exceed_the_remaining_completions() {
    let j = job(JobSpec {
        completions: Some(5),
        parallelism: Some(2),
        ..JobSpec::default()
    });
    let done: Vec<Pod> = (0..4)
        .map(|i| pod(&format!("p{i}"), "Succeeded", 50))
        .collect();
    let refs: Vec<&Pod> = done.iter().collect();
    let plan = plan(&j, &refs, at(100), true);
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.status.succeeded, Some(4));
}

#[test]
fn unsatisfied_expectations_create_nothing() {
    let j = job(JobSpec {
        completions: Some(5),
        parallelism: Some(2),
        ..JobSpec::default()
    });
    let plan = plan(&j, &[], at(100), false);
    assert!(plan.create.is_empty());
    assert_eq!(plan.status.active, Some(0));
}

#[test]
fn enough_successes_complete_the_job_with_both_conditions_and_an_event() {
    let j = job(JobSpec {
        completions: Some(2),
        parallelism: Some(2),
        ..JobSpec::default()
    });
    let pods = [pod("a", "Succeeded", 50), pod("b", "Succeeded", 60)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let plan = plan(&j, &refs, at(100), true);
    assert_eq!(types(&plan.status), vec!["SuccessCriteriaMet", "Complete"]);
    let complete = &plan.status.conditions.clone().unwrap_or_default()[1];
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(plan.status.completion_time, Some(Time(at(100))));
    assert_eq!(plan.events, vec![JobEvent::Completed]);
    assert!(plan.create.is_empty());
}

#[test]
fn without_completions_one_success_stops_new_pods_and_completes_when_the_rest_finish() {
    let j = job(JobSpec {
        parallelism: Some(3),
        ..JobSpec::default()
    });
    let pods = [pod("a", "Succeeded", 50), pod("b", "Running", 60)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let running = plan(&j, &refs, at(100), true);
    assert!(running.create.is_empty() && running.delete.is_empty());
    assert!(types(&running.status).is_empty());
    let pods = [pod("a", "Succeeded", 50), pod("b", "Succeeded", 60)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let done = plan(&j, &refs, at(100), true);
    assert_eq!(types(&done.status), vec!["SuccessCriteriaMet", "Complete"]);
}

#[test]
fn failures_beyond_the_backoff_limit_fail_the_job() {
    let j = job(JobSpec {
        backoff_limit: Some(2),
        ..JobSpec::default()
    });
    let pods = [
        pod("a", "Failed", 10),
        pod("b", "Failed", 30),
        pod("c", "Failed", 70),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let plan = plan(&j, &refs, at(100), true);
    assert_eq!(types(&plan.status), vec!["FailureTarget", "Failed"]);
    let failed = &plan.status.conditions.clone().unwrap_or_default()[1];
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failed.message.as_deref(), Some(BACKOFF_LIMIT_MESSAGE));
    assert_eq!(plan.status.failed, Some(3));
    assert!(plan.create.is_empty());
    assert!(matches!(
        &plan.events[..],
        [JobEvent::Failed {
            reason: "BackoffLimitExceeded",
            ..
        }]
    ));
}

#[test]
fn a_failure_delays_the_replacement_by_the_pod_failure_back_off() {
    let j = job(JobSpec {
        backoff_limit: Some(3),
        ..JobSpec::default()
    });
    let pods = [pod("a", "Failed", 100), pod("b", "Failed", 110)];
    let refs: Vec<&Pod> = pods.iter().collect();
    // Two failures: 20 s after the last one.
    let waiting = plan(&j, &refs, at(115), true);
    assert!(waiting.create.is_empty());
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(15)));
    let later = plan(&j, &refs, at(131), true);
    assert_eq!(later.create, vec![None]);
}

#[test]
fn an_expired_active_deadline_deletes_active_pods_and_fails_after_they_are_gone() {
    let mut j = job(JobSpec {
        parallelism: Some(2),
        completions: Some(4),
        active_deadline_seconds: Some(30),
        ..JobSpec::default()
    });
    j.status = Some(JobStatus {
        start_time: Some(Time(at(0))),
        ..JobStatus::default()
    });
    let pods = [ready(pod("a", "Running", 10)), pod("b", "Running", 10)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let early = plan(&j, &refs, at(20), true);
    assert_eq!(early.requeue_after, Some(Duration::from_secs(10)));
    let first = plan(&j, &refs, at(31), true);
    assert_eq!(first.delete.len(), 2);
    assert_eq!(types(&first.status), vec!["FailureTarget"]);
    assert_eq!(first.status.terminating, Some(2));
    assert!(first.events.is_empty());
    let j = with_status(j, &first);
    let gone = plan(&j, &[], at(32), true);
    assert_eq!(types(&gone.status), vec!["FailureTarget", "Failed"]);
    let failed = &gone.status.conditions.clone().unwrap_or_default()[1];
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(matches!(
        &gone.events[..],
        [JobEvent::Failed {
            reason: "DeadlineExceeded",
            ..
        }]
    ));
}

#[test]
fn indexed_jobs_create_the_lowest_pending_indexes_and_record_completed_ones() {
    let j = job(JobSpec {
        completions: Some(4),
        parallelism: Some(2),
        completion_mode: Some("Indexed".into()),
        ..JobSpec::default()
    });
    let pods = [
        indexed(pod("a", "Succeeded", 10), 0),
        indexed(pod("b", "Running", 10), 1),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let plan = plan(&j, &refs, at(20), true);
    assert_eq!(plan.create, vec![Some(2)]);
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(plan.status.succeeded, Some(1));
}

#[test]
fn duplicate_indexes_are_deleted_keeping_the_most_advanced_pod() {
    let j = job(JobSpec {
        completions: Some(3),
        parallelism: Some(3),
        completion_mode: Some("Indexed".into()),
        ..JobSpec::default()
    });
    let pods = [
        indexed(ready(pod("old", "Running", 10)), 1),
        indexed(pod("dup", "Pending", 20), 1),
        indexed(pod("out", "Running", 20), 7),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let plan = plan(&j, &refs, at(30), true);
    let mut names: Vec<&str> = plan.delete.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["dup", "out"]);
    assert!(
        plan.create.is_empty(),
        "deletions and creations are never mixed in one sync"
    );
}

#[test]
fn counters_never_go_down_when_finished_pods_disappear() {
    let mut j = job(JobSpec {
        completions: Some(5),
        parallelism: Some(1),
        ..JobSpec::default()
    });
    j.status = Some(JobStatus {
        succeeded: Some(3),
        failed: Some(1),
        ..JobStatus::default()
    });
    let pods = [pod("a", "Succeeded", 10)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let plan = plan(&j, &refs, at(20), true);
    assert_eq!(
        (plan.status.succeeded, plan.status.failed),
        (Some(3), Some(1))
    );
}

#[test]
fn restarts_under_on_failure_count_against_the_backoff_limit() {
    let mut j = job(JobSpec {
        backoff_limit: Some(2),
        ..JobSpec::default()
    });
    if let Some(t) = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        t.restart_policy = Some("OnFailure".into());
    }
    let mut p = pod("a", "Running", 10);
    if let Some(cs) = p
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
    {
        cs[0].restart_count = 2;
    }
    let plan = plan(&j, &[&p], at(20), true);
    assert_eq!(plan.delete.len(), 1);
    assert_eq!(types(&plan.status), vec!["FailureTarget"]);
}

#[test]
fn suspending_deletes_active_pods_and_resuming_restarts_the_clock() {
    let mut j = job(JobSpec {
        completions: Some(2),
        suspend: Some(true),
        ..JobSpec::default()
    });
    let pods = [pod("a", "Running", 10)];
    let refs: Vec<&Pod> = pods.iter().collect();
    let suspended = plan(&j, &refs, at(20), true);
    assert_eq!(suspended.delete.len(), 1);
    assert_eq!(types(&suspended.status), vec!["Suspended"]);
    assert_eq!(suspended.events, vec![JobEvent::Suspended]);
    j = with_status(j, &suspended);
    if let Some(s) = j.spec.as_mut() {
        s.suspend = Some(false);
    }
    let resumed = plan(&j, &[], at(400), true);
    assert_eq!(resumed.events, vec![JobEvent::Resumed]);
    assert_eq!(resumed.status.start_time, Some(Time(at(400))));
    let condition = &resumed.status.conditions.clone().unwrap_or_default()[0];
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
}
