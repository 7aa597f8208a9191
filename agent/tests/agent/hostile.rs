//! Guests that misbehave end with a clear status and leave the agent healthy; init
//! containers run to completion before the app container.

use std::time::Duration;

use serde_json::json;

use crate::guests;
use crate::harness::{Cluster, container, phase};

const WAIT: Duration = Duration::from_secs(60);

fn terminated(pod: &k8s_openapi::api::core::v1::Pod) -> (i32, String, String) {
    let t = container(pod)
        .state
        .and_then(|s| s.terminated)
        .expect("terminated");
    (
        t.exit_code,
        t.reason.unwrap_or_default(),
        t.message.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsatisfied_import_and_deep_recursion_end_with_clear_reasons() {
    let cluster = Cluster::start().await;
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/unlinkable:v1",
        guests::UNLINKABLE,
    );
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/recurse:v1",
        guests::RECURSE,
    );
    for (name, image) in [
        ("unlinkable", "wasmkube.test/unlinkable:v1"),
        ("recurse", "wasmkube.test/recurse:v1"),
    ] {
        cluster
            .create_pod(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "guest", "image": image}],
                },
            }))
            .await;
    }
    let pod = cluster
        .wait_pod("unlinkable", WAIT, |p| phase(p) == "Failed")
        .await;
    let (code, reason, message) = terminated(&pod);
    assert_eq!((code, reason.as_str()), (128, "StartError"));
    assert!(message.contains("env::missing"), "{message}");

    let pod = cluster
        .wait_pod("recurse", WAIT, |p| phase(p) == "Failed")
        .await;
    let (code, reason, message) = terminated(&pod);
    assert_eq!((code, reason.as_str()), (134, "Error"));
    assert!(message.contains("call stack exhausted"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_complete_before_the_app_container_starts() {
    let cluster = Cluster::start().await;
    guests::import(&cluster.data_dir(), "wasmkube.test/hello:v1", guests::HELLO);
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "staged"},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [
                    {"name": "first", "image": "wasmkube.test/hello:v1"},
                    {"name": "second", "image": "wasmkube.test/hello:v1"},
                ],
                "containers": [{"name": "app", "image": "wasmkube.test/hello:v1"}],
            },
        }))
        .await;
    let pod = cluster
        .wait_pod("staged", WAIT, |p| phase(p) == "Succeeded")
        .await;
    let status = pod.status.clone().unwrap_or_default();
    let inits = status.init_container_statuses.unwrap_or_default();
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    let finished = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
        c.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| (t.exit_code, t.started_at.clone(), t.finished_at.clone()))
            .expect("terminated")
    };
    let (code1, _, end1) = finished(&inits[0]);
    let (code2, start2, end2) = finished(&inits[1]);
    assert_eq!((code1, code2), (0, 0));
    assert!(start2 >= end1);
    let app = container(&pod);
    let (_, app_start, _) = finished(&app);
    assert!(app_start >= end2);
    let initialized = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Initialized")
        .map(|c| c.status);
    assert_eq!(initialized.as_deref(), Some("True"));
    for c in ["first", "second", "app"] {
        assert!(cluster.log_file(&pod, c, 0).exists(), "{c} log");
    }
}
