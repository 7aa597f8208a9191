//! Transitions of the pod lifecycle: restart policies, init containers, back-off, adoption.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::*;
use crate::runtime::Outcome;

fn pod(policy: &str, init: &[&str], apps: &[&str]) -> Pod {
    let c = |n: &&str| Container {
        name: n.to_string(),
        image: Some(format!("{n}:latest")),
        ..Default::default()
    };
    Pod {
        spec: Some(PodSpec {
            restart_policy: Some(policy.into()),
            init_containers: Some(init.iter().map(c).collect()),
            containers: apps.iter().map(c).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plan(l: &mut PodLifecycle, now: Instant) -> Plan {
    l.plan(now, "p", "ns", "uid")
}

/// Starts container `i` and marks it running.
fn run(l: &mut PodLifecycle, i: usize, now: Instant) {
    l.begin_start(i, now).unwrap();
    l.started(i, Timestamp::now(), "sha256:x".into()).unwrap();
}

fn exit(l: &mut PodLifecycle, i: usize, outcome: Outcome, now: Instant) {
    let t = Termination::from_outcome(&outcome, Some(Timestamp::now()), Timestamp::now());
    l.exited(i, t, now).unwrap();
}

#[test]
fn a_command_that_exits_zero_with_policy_never_makes_the_pod_succeed() {
    let mut l = PodLifecycle::new(&pod("Never", &[], &["hello"]));
    let now = Instant::now();
    assert_eq!(l.phase(), Phase::Pending);
    assert_eq!(plan(&mut l, now).start, vec![0]);
    run(&mut l, 0, now);
    assert_eq!(l.phase(), Phase::Running);
    exit(&mut l, 0, Outcome::Exited(0), now);
    let p = plan(&mut l, now);
    assert!(p.start.is_empty());
    assert_eq!(l.stage, PodStage::Finished(Phase::Succeeded));
    assert_eq!(l.containers[0].restart_count, 0);
}

#[test]
fn a_failing_command_with_policy_never_makes_the_pod_fail() {
    let mut l = PodLifecycle::new(&pod("Never", &[], &["crash"]));
    let now = Instant::now();
    plan(&mut l, now);
    run(&mut l, 0, now);
    exit(&mut l, 0, Outcome::Exited(1), now);
    plan(&mut l, now);
    assert_eq!(l.phase(), Phase::Failed);
    let ContainerState::Terminated(t) = &l.containers[0].state else {
        panic!("not terminated: {:?}", l.containers[0].state);
    };
    assert_eq!((t.exit_code, t.reason.as_str()), (1, "Error"));
}

#[test]
fn policy_always_restarts_at_once_then_backs_off_with_crash_loop_reason() {
    let mut l = PodLifecycle::new(&pod("Always", &[], &["crash"]));
    let t0 = Instant::now();
    plan(&mut l, t0);
    run(&mut l, 0, t0);
    exit(&mut l, 0, Outcome::Exited(1), t0);
    // First restart: immediate.
    assert_eq!(plan(&mut l, t0).start, vec![0]);
    run(&mut l, 0, t0);
    assert_eq!(l.containers[0].restart_count, 1);
    let t1 = t0 + Duration::from_secs(1);
    exit(&mut l, 0, Outcome::Exited(1), t1);
    let p = plan(&mut l, t1);
    assert!(p.start.is_empty());
    assert_eq!(p.wake_at, Some(t1 + Duration::from_secs(10)));
    assert_eq!(p.backing_off, vec![(0, Duration::from_secs(10))]);
    let ContainerState::Waiting {
        reason, message, ..
    } = &l.containers[0].state
    else {
        panic!("not waiting");
    };
    assert_eq!(reason, "CrashLoopBackOff");
    assert_eq!(
        message.as_deref(),
        Some("back-off 10s restarting failed container=crash pod=p_ns(uid)")
    );
    assert_eq!(l.phase(), Phase::Running);
    assert_eq!(
        l.containers[0]
            .last_termination
            .as_ref()
            .map(|t| t.exit_code),
        Some(1)
    );
    // Nothing starts early; at the deadline it does, and the next wait doubles.
    assert!(plan(&mut l, t1 + Duration::from_secs(5)).start.is_empty());
    let t2 = t1 + Duration::from_secs(10);
    assert_eq!(plan(&mut l, t2).start, vec![0]);
    run(&mut l, 0, t2);
    assert_eq!(l.containers[0].restart_count, 2);
    exit(&mut l, 0, Outcome::Exited(1), t2);
    assert_eq!(
        plan(&mut l, t2).backing_off,
        vec![(0, Duration::from_secs(20))]
    );
}

#[test]
fn policy_on_failure_restarts_failures_but_not_successes() {
    let mut l = PodLifecycle::new(&pod("OnFailure", &[], &["a", "b"]));
    let now = Instant::now();
    assert_eq!(plan(&mut l, now).start, vec![0, 1]);
    run(&mut l, 0, now);
    run(&mut l, 1, now);
    exit(&mut l, 0, Outcome::Exited(0), now);
    exit(&mut l, 1, Outcome::OutOfMemory, now);
    assert_eq!(plan(&mut l, now).start, vec![1]);
    assert!(l.containers[0].completed());
    assert_eq!(l.phase(), Phase::Running);
    run(&mut l, 1, now);
    exit(&mut l, 1, Outcome::Exited(0), now);
    plan(&mut l, now);
    assert_eq!(l.stage, PodStage::Finished(Phase::Succeeded));
}

#[test]
fn out_of_memory_is_oom_killed_with_exit_code_137() {
    let t = Termination::from_outcome(&Outcome::OutOfMemory, None, Timestamp::now());
    assert_eq!((t.exit_code, t.reason.as_str()), (137, "OOMKilled"));
    let t = Termination::from_outcome(
        &Outcome::Trapped {
            message: "wasm trap: call stack exhausted".into(),
        },
        None,
        Timestamp::now(),
    );
    assert_eq!(t.reason, "Error");
    assert_eq!(
        t.message.as_deref(),
        Some("wasm trap: call stack exhausted")
    );
}

#[test]
fn init_containers_run_in_order_before_app_containers() {
    let mut l = PodLifecycle::new(&pod("Always", &["i1", "i2"], &["app"]));
    let now = Instant::now();
    assert_eq!(l.stage, PodStage::Initializing);
    assert_eq!(plan(&mut l, now).start, vec![0]);
    run(&mut l, 0, now);
    assert!(plan(&mut l, now).start.is_empty());
    exit(&mut l, 0, Outcome::Exited(0), now);
    assert_eq!(plan(&mut l, now).start, vec![1]);
    assert!(!l.initialized());
    run(&mut l, 1, now);
    exit(&mut l, 1, Outcome::Exited(0), now);
    assert_eq!(plan(&mut l, now).start, vec![2]);
    assert!(l.initialized());
    assert_eq!(l.stage, PodStage::Running);
}

#[test]
fn a_failed_init_container_fails_the_pod_with_policy_never_and_retries_otherwise() {
    let mut l = PodLifecycle::new(&pod("Never", &["init"], &["app"]));
    let now = Instant::now();
    plan(&mut l, now);
    run(&mut l, 0, now);
    exit(&mut l, 0, Outcome::Exited(2), now);
    assert!(plan(&mut l, now).start.is_empty());
    assert_eq!(l.stage, PodStage::Finished(Phase::Failed));

    let mut l = PodLifecycle::new(&pod("OnFailure", &["init"], &["app"]));
    plan(&mut l, now);
    run(&mut l, 0, now);
    exit(&mut l, 0, Outcome::Exited(2), now);
    assert_eq!(plan(&mut l, now).start, vec![0]);
    assert_eq!(l.phase(), Phase::Pending);
}

#[test]
fn sidecars_start_before_apps_and_stop_when_apps_finish() {
    let mut p = pod("Never", &["proxy"], &["job"]);
    if let Some(init) = p.spec.as_mut().and_then(|s| s.init_containers.as_mut()) {
        init[0].restart_policy = Some("Always".into());
    }
    let mut l = PodLifecycle::new(&p);
    let now = Instant::now();
    assert_eq!(plan(&mut l, now).start, vec![0]);
    run(&mut l, 0, now);
    l.set_started(0, true);
    assert_eq!(plan(&mut l, now).start, vec![1]);
    run(&mut l, 1, now);
    exit(&mut l, 1, Outcome::Exited(0), now);
    let p = plan(&mut l, now);
    assert_eq!(p.stop, vec![0]);
    assert_eq!(l.stage, PodStage::Terminating);
    exit(&mut l, 0, Outcome::Stopped, now);
    plan(&mut l, now);
    assert_eq!(l.stage, PodStage::Finished(Phase::Succeeded));
}

#[test]
fn image_errors_retry_with_growing_delay_whatever_the_policy() {
    let mut l = PodLifecycle::new(&pod("Never", &[], &["app"]));
    let now = Instant::now();
    plan(&mut l, now);
    l.begin_start(0, now).unwrap();
    l.start_failed(0, StartFailure::Image("not found".into()), now)
        .unwrap();
    let p = plan(&mut l, now);
    assert!(p.start.is_empty());
    assert_eq!(p.wake_at, Some(now + Duration::from_secs(10)));
    assert!(matches!(&l.containers[0].state,
        ContainerState::Waiting { reason, .. } if reason == "ErrImagePull"));
    let later = now + Duration::from_secs(10);
    assert_eq!(plan(&mut l, later).start, vec![0]);
    l.begin_start(0, later).unwrap();
    l.start_failed(0, StartFailure::Image("not found".into()), later)
        .unwrap();
    assert_eq!(
        plan(&mut l, later).wake_at,
        Some(later + Duration::from_secs(20))
    );
    assert!(matches!(&l.containers[0].state,
        ContainerState::Waiting { reason, .. } if reason == "ImagePullBackOff"));
    assert_eq!(l.containers[0].restart_count, 0);
    assert_eq!(l.phase(), Phase::Pending);
}

#[test]
fn a_refused_signature_waits_as_signature_validation_failed_then_backs_off_like_a_pull() {
    let mut l = PodLifecycle::new(&pod("Never", &[], &["app"]));
    let now = Instant::now();
    plan(&mut l, now);
    l.begin_start(0, now).unwrap();
    l.start_failed(0, StartFailure::Signature("not signed".into()), now)
        .unwrap();
    assert_eq!(
        plan(&mut l, now).wake_at,
        Some(now + Duration::from_secs(10))
    );
    assert!(matches!(&l.containers[0].state,
        ContainerState::Waiting { reason, message, .. }
            if reason == "SignatureValidationFailed" && message.as_deref() == Some("not signed")));
    let later = now + Duration::from_secs(10);
    assert_eq!(plan(&mut l, later).start, vec![0]);
    l.begin_start(0, later).unwrap();
    l.start_failed(0, StartFailure::Signature("not signed".into()), later)
        .unwrap();
    assert_eq!(
        plan(&mut l, later).wake_at,
        Some(later + Duration::from_secs(20))
    );
    assert!(matches!(&l.containers[0].state,
        ContainerState::Waiting { reason, .. } if reason == "ImagePullBackOff"));
}

#[test]
fn an_absent_image_with_pull_policy_never_stays_err_image_never_pull() {
    let mut l = PodLifecycle::new(&pod("Never", &[], &["app"]));
    let mut now = Instant::now();
    let never = || StartFailure::ImageNeverPull("not present".into());
    for _ in 0..3 {
        plan(&mut l, now);
        l.begin_start(0, now).unwrap();
        l.start_failed(0, never(), now).unwrap();
        assert!(matches!(&l.containers[0].state,
            ContainerState::Waiting { reason, .. } if reason == "ErrImageNeverPull"));
        let wake_at = plan(&mut l, now).wake_at.expect("retried later");
        assert_eq!(
            wake_at,
            now + Duration::from_secs(10),
            "no growing back-off"
        );
        now = wake_at;
    }
    assert_eq!(l.phase(), Phase::Pending);
}

#[test]
fn termination_stops_everything_and_nothing_restarts() {
    let mut l = PodLifecycle::new(&pod("Always", &[], &["a", "b"]));
    let now = Instant::now();
    plan(&mut l, now);
    run(&mut l, 0, now);
    run(&mut l, 1, now);
    l.set_ready(0, true);
    assert_eq!(l.terminate(), vec![0, 1]);
    assert!(!l.containers[0].ready);
    exit(&mut l, 0, Outcome::Exited(0), now);
    assert!(plan(&mut l, now).start.is_empty());
    assert_eq!(l.stage, PodStage::Terminating);
    exit(&mut l, 1, Outcome::Stopped, now);
    plan(&mut l, now);
    assert_eq!(l.stage, PodStage::Finished(Phase::Failed));
}

#[test]
fn illegal_transitions_are_refused() {
    let mut l = PodLifecycle::new(&pod("Always", &[], &["a"]));
    let now = Instant::now();
    assert!(l.started(0, Timestamp::now(), String::new()).is_err());
    let t = Termination::from_outcome(&Outcome::Exited(0), None, Timestamp::now());
    assert!(l.exited(0, t, now).is_err());
    run(&mut l, 0, now);
    assert!(l.begin_start(0, now).is_err());
    assert!(l.begin_start(7, now).is_err());
}

#[test]
fn adopting_a_running_pod_restarts_its_containers_once_with_a_higher_count() {
    let mut p = pod("Always", &[], &["counter"]);
    p.status = Some(
        serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "containerStatuses": [{
                "name": "counter", "image": "counter:latest", "imageID": "sha256:x",
                "ready": true, "restartCount": 3,
                "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}
            }]
        }))
        .unwrap(),
    );
    let mut l = PodLifecycle::new(&p);
    let now = Instant::now();
    l.adopt(p.status.as_ref().unwrap(), now);
    assert_eq!(plan(&mut l, now).start, vec![0]);
    run(&mut l, 0, now);
    assert_eq!(l.containers[0].restart_count, 4);
    let last = l.containers[0].last_termination.clone().unwrap();
    assert_eq!(last.exit_code, 137);
}

#[test]
fn adopting_a_finished_pod_runs_nothing() {
    let mut p = pod("Never", &[], &["hello"]);
    p.status = Some(
        serde_json::from_value(serde_json::json!({
            "phase": "Succeeded",
            "containerStatuses": [{
                "name": "hello", "image": "hello", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]
        }))
        .unwrap(),
    );
    let mut l = PodLifecycle::new(&p);
    let now = Instant::now();
    l.adopt(p.status.as_ref().unwrap(), now);
    assert!(plan(&mut l, now).start.is_empty());
    assert_eq!(l.phase(), Phase::Succeeded);
}

#[test]
fn adopting_a_running_container_with_policy_never_fails_it_instead_of_running_it_twice() {
    let mut p = pod("Never", &[], &["job"]);
    p.status = Some(
        serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "job", "image": "job", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}
            }]
        }))
        .unwrap(),
    );
    let mut l = PodLifecycle::new(&p);
    let now = Instant::now();
    l.adopt(p.status.as_ref().unwrap(), now);
    assert!(plan(&mut l, now).start.is_empty());
    assert_eq!(l.phase(), Phase::Failed);
}
