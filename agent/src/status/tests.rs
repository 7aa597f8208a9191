//! Building pod statuses: container states, conditions and their transition times, QoS.

use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::pod::lifecycle::PodLifecycle;
use crate::runtime::Outcome;

fn pod(containers: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Always".into()),
            containers: containers
                .iter()
                .map(|n| Container {
                    name: n.to_string(),
                    image: Some("img".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inputs(pod: &Pod) -> StatusInputs<'_> {
    StatusInputs {
        pod,
        pod_ip: Some("127.1.0.1".into()),
        host_ip: "127.0.0.1".into(),
        start_time: "2024-01-01T00:00:00Z".parse().unwrap(),
        sandbox_ready: true,
        runtime_scheme: "wasmtime://",
        reason: None,
    }
}

fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
}

#[test]
fn a_waiting_pod_is_pending_with_container_creating_and_not_ready() {
    let p = pod(&["a"]);
    let mut lc = PodLifecycle::new(&p);
    let now = Instant::now();
    lc.plan(now, "p", "ns", "u");
    lc.begin_start(0, now).unwrap();
    let s = build(&lc, &inputs(&p), Timestamp::now());
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ContainerCreating")
    );
    let ready = cond(&s, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [a]")
    );
    assert_eq!(cond(&s, "PodScheduled").status, "True");
    assert_eq!(s.pod_ip.as_deref(), Some("127.1.0.1"));
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
}

#[test]
fn a_running_ready_pod_is_ready_and_transition_times_hold_until_status_changes() {
    let mut p = pod(&["a"]);
    let mut lc = PodLifecycle::new(&p);
    let now = Instant::now();
    lc.plan(now, "p", "ns", "u");
    lc.begin_start(0, now).unwrap();
    lc.started(0, Timestamp::now(), "sha256:abc".into())
        .unwrap();
    lc.set_started(0, true);
    lc.set_ready(0, true);
    let t0: Timestamp = "2024-01-01T00:00:05Z".parse().unwrap();
    let s = build(&lc, &inputs(&p), t0);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Ready").status, "True");
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert_eq!(cs.image_id, "sha256:abc");
    assert_eq!(cs.container_id.as_deref(), Some("wasmtime://u/a/0"));

    p.status = Some(s.clone());
    let t1: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
    let again = build(&lc, &inputs(&p), t1);
    assert_eq!(again, s, "nothing changed, so the status is identical");

    lc.set_ready(0, false);
    let later = build(&lc, &inputs(&p), t1);
    assert_eq!(cond(&later, "Ready").last_transition_time, Some(Time(t1)));
    assert_eq!(
        cond(&later, "Initialized").last_transition_time,
        cond(&s, "Initialized").last_transition_time
    );
}

#[test]
fn a_crashed_container_shows_its_last_state_and_restart_count() {
    let p = pod(&["crash"]);
    let mut lc = PodLifecycle::new(&p);
    let now = Instant::now();
    for _ in 0..2 {
        let plan = lc.plan(now, "p", "ns", "u");
        for i in plan.start {
            lc.begin_start(i, now).unwrap();
            lc.started(i, Timestamp::now(), "d".into()).unwrap();
            let t = crate::pod::lifecycle::Termination::from_outcome(
                &Outcome::Exited(1),
                None,
                Timestamp::now(),
            );
            lc.exited(i, t, now).unwrap();
        }
    }
    lc.plan(now, "p", "ns", "u");
    let s = build(&lc, &inputs(&p), Timestamp::now());
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(s.phase.as_deref(), Some("Running"));
}

#[test]
fn the_schedulers_condition_is_kept() {
    let mut p = pod(&["a"]);
    p.status = Some(PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(Time("2023-01-01T00:00:00Z".parse().unwrap())),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let lc = PodLifecycle::new(&p);
    let s = build(&lc, &inputs(&p), Timestamp::now());
    assert_eq!(
        cond(&s, "PodScheduled").last_transition_time,
        Some(Time("2023-01-01T00:00:00Z".parse().unwrap()))
    );
}

#[test]
fn qos_class_follows_requests_and_limits() {
    let with = |limits: &[(&str, &str)], requests: &[(&str, &str)]| {
        let mut p = pod(&["a"]);
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].resources = Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..Default::default()
            });
        }
        qos_class(&p)
    };
    assert_eq!(with(&[], &[]), "BestEffort");
    assert_eq!(with(&[("cpu", "1"), ("memory", "32Mi")], &[]), "Guaranteed");
    assert_eq!(
        with(&[("cpu", "1"), ("memory", "32Mi")], &[("cpu", "1000m")]),
        "Guaranteed"
    );
    assert_eq!(with(&[("memory", "32Mi")], &[]), "Burstable");
    assert_eq!(with(&[], &[("cpu", "100m")]), "Burstable");
}
