//! Pods through their lifecycle: success, crash loops, memory limits, graceful deletion.

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;

use crate::guests;
use crate::harness::{Cluster, container, phase};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_succeeds_with_exit_code_zero_and_its_output_in_the_log_file() {
    let cluster = Cluster::start().await;
    guests::import(&cluster.data_dir(), "wasmkube.test/hello:v1", guests::HELLO);
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hello", "labels": {"app": "greeter"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "hello",
                    "image": "wasmkube.test/hello:v1",
                    "args": ["first", "$(WHO)"],
                    "env": [
                        {"name": "WHO", "value": "world"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    ],
                    "resources": {"limits": {"memory": "64Mi"}},
                }],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("hello", WAIT, |p| phase(p) == "Succeeded")
        .await;
    let status = pod.status.clone().unwrap_or_default();
    let cs = container(&pod);
    let terminated = cs
        .state
        .and_then(|s| s.terminated)
        .expect("terminated state");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert!(terminated.started_at.is_some() && terminated.finished_at.is_some());
    assert_eq!(cs.restart_count, 0);
    assert!(cs.image_id.starts_with("sha256:"), "{}", cs.image_id);
    let pod_ip = status.pod_ip.clone().expect("pod IP");
    assert!(pod_ip.starts_with("127.1."), "{pod_ip}");
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
    let conditions = status.conditions.unwrap_or_default();
    let get = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
    assert_eq!(
        get("Initialized").map(|c| c.status).as_deref(),
        Some("True")
    );
    let ready = get("Ready").expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    assert!(ready.last_transition_time.is_some());
    assert!(get("PodScheduled").is_some());

    let log = std::fs::read_to_string(cluster.log_file(&pod, "hello", 0)).expect("log file");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].ends_with(" stdout F hello from wasm"),
        "CRI format: {log}"
    );
    for expected in [
        "stdout F hello",
        "stdout F first",
        "stdout F world",
        "stdout F POD_NAME=hello",
        "stdout F APP=greeter",
        "stdout F MEM=64",
    ] {
        assert!(
            lines.iter().any(|l| l.ends_with(expected)),
            "missing {expected:?} in {log}"
        );
    }
    let events = cluster.wait_event("hello", "Started", WAIT).await;
    for reason in ["Pulled", "Created", "Started"] {
        let e = events
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .unwrap_or_else(|| panic!("no {reason} event"));
        assert_eq!(
            e.source.as_ref().and_then(|s| s.component.as_deref()),
            Some("kubelet")
        );
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{hello}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_with_policy_always_restarts_into_crash_loop_back_off() {
    let cluster = Cluster::start().await;
    guests::import(&cluster.data_dir(), "wasmkube.test/crash:v1", guests::CRASH);
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "crash"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [{"name": "crash", "image": "wasmkube.test/crash:v1"}],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("crash", WAIT, |p| {
            let cs = container(p);
            let waiting = cs.state.and_then(|s| s.waiting).and_then(|w| w.reason);
            cs.restart_count >= 2 && waiting.as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    assert_eq!(phase(&pod), "Running");
    let cs = container(&pod);
    let last = cs
        .last_state
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let message = cs
        .state
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(
        message.starts_with("back-off 20s restarting failed container=crash pod=crash_default("),
        "{message}"
    );
    let events = cluster.wait_event("crash", "BackOff", WAIT).await;
    let backoff = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("BackOff"))
        .expect("BackOff event");
    assert!(
        backoff
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("Back-off restarting failed container crash in pod crash_default("),
        "{backoff:?}"
    );
    // The previous instance's log is kept beside the current one.
    let previous = std::fs::read_to_string(cluster.log_file(&pod, "crash", 1)).expect("log");
    assert!(previous.contains(" stderr F crash"), "{previous}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memhog_with_a_32mi_limit_is_oom_killed_and_a_neighbour_keeps_running() {
    let cluster = Cluster::start().await;
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/memhog:v1",
        guests::MEMHOG,
    );
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/counter:v1",
        guests::COUNTER,
    );
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "neighbour"},
            "spec": {"containers": [{"name": "counter", "image": "wasmkube.test/counter:v1"}]},
        }))
        .await;
    cluster
        .wait_pod("neighbour", WAIT, |p| phase(p) == "Running")
        .await;
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "memhog"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "memhog", "image": "wasmkube.test/memhog:v1",
                    "resources": {"limits": {"memory": "32Mi"}},
                }],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("memhog", WAIT, |p| phase(p) == "Failed")
        .await;
    let terminated = container(&pod)
        .state
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(terminated.exit_code, 137);
    let neighbour = cluster.pods().get("neighbour").await.expect("neighbour");
    assert_eq!(phase(&neighbour), "Running");
    let cs = container(&neighbour);
    assert_eq!(cs.restart_count, 0);
    assert!(cs.state.and_then(|s| s.running).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_pod_stops_it_and_the_object_goes_away() {
    let cluster = Cluster::start().await;
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/counter:v1",
        guests::COUNTER,
    );
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "counter"},
            "spec": {
                "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "counter", "image": "wasmkube.test/counter:v1"}],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("counter", WAIT, |p| {
            phase(p) == "Running" && container(p).ready
        })
        .await;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    assert_eq!(ready.as_deref(), Some("True"));
    let log = cluster.log_file(&pod, "counter", 0);
    cluster
        .pods()
        .delete("counter", &DeleteParams::default())
        .await
        .expect("delete");
    // The agent stops the instance and confirms: the object disappears well before the 30 s
    // grace period would force it.
    cluster.wait_gone("counter", Duration::from_secs(25)).await;
    cluster.wait_event("counter", "Killing", WAIT).await;
    assert!(!log.exists(), "the pod's files are removed with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_past_its_active_deadline_is_stopped_and_fails() {
    let cluster = Cluster::start().await;
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/counter:v1",
        guests::COUNTER,
    );
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bounded"},
            "spec": {
                "activeDeadlineSeconds": 2,
                "containers": [{"name": "counter", "image": "wasmkube.test/counter:v1"}],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("bounded", WAIT, |p| phase(p) == "Failed")
        .await;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert!(container(&pod).state.and_then(|s| s.terminated).is_some());
    assert_eq!(container(&pod).restart_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_are_aggregated_into_one_with_a_count() {
    let cluster = Cluster::start().await;
    guests::import(&cluster.data_dir(), "wasmkube.test/crash:v1", guests::CRASH);
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "repeat"},
            "spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "crash", "image": "wasmkube.test/crash:v1"}],
            },
        }))
        .await;
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(cluster.client.clone(), "default");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = events
            .list(&kube::api::ListParams::default().fields("involvedObject.name=repeat"))
            .await
            .expect("events");
        let started: Vec<_> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Started"))
            .collect();
        if let [only] = started.as_slice()
            && only.count.unwrap_or(0) >= 2
        {
            assert!(
                only.last_timestamp.as_ref().map(|t| t.0)
                    >= only.first_timestamp.as_ref().map(|t| t.0)
            );
            break;
        }
        assert!(
            started.len() <= 1,
            "one Started event, counted: {started:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no repeated Started event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
