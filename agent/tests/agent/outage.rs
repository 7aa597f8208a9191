//! An apiserver outage: running pods keep running, a status change made meanwhile is
//! written once the apiserver is back, and new pods are picked up again.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::guests;
use crate::harness::{Cluster, container, phase};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_running_through_an_apiserver_outage_and_status_catches_up() {
    let mut cluster = Cluster::start().await;
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/counter:v1",
        guests::COUNTER,
    );
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/sleeper:v1",
        guests::SLEEPER,
    );
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "counter"},
            "spec": {"containers": [{"name": "counter", "image": "wasmkube.test/counter:v1"}]},
        }))
        .await;
    let counter = cluster
        .wait_pod("counter", WAIT, |p| container(p).ready)
        .await;
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "sleeper", "image": "wasmkube.test/sleeper:v1"}],
            },
        }))
        .await;
    let sleeper = cluster
        .wait_pod("sleeper", WAIT, |p| phase(p) == "Running")
        .await;

    cluster.stop_apiserver().await;
    // While the apiserver is away the counter keeps writing its log, and the sleeper ends.
    let log = cluster.log_file(&counter, "counter", 0);
    let size = std::fs::metadata(&log).expect("log").len();
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&log).expect("log").len() <= size + 50 {
        assert!(Instant::now() < deadline, "the counter stopped writing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sleeper_log = cluster.log_file(&sleeper, "sleeper", 0);
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&sleeper_log)
        .unwrap_or_default()
        .contains("stdout F done")
    {
        assert!(Instant::now() < deadline, "the sleeper did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.restart_apiserver().await;
    let sleeper = cluster
        .wait_pod("sleeper", WAIT, |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(
        container(&sleeper)
            .state
            .and_then(|s| s.terminated)
            .map(|t| t.exit_code),
        Some(0)
    );
    let counter = cluster.pods().get("counter").await.expect("counter");
    assert_eq!(container(&counter).restart_count, 0);
    assert_eq!(phase(&counter), "Running");
    // The watch is back: a new pod runs.
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "after"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "sleeper", "image": "wasmkube.test/sleeper:v1"}],
            },
        }))
        .await;
    cluster
        .wait_pod("after", WAIT, |p| phase(p) == "Running")
        .await;
}
