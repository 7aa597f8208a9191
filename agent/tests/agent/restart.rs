//! The agent restarting: its pods are taken over from the API, restarted once, never doubled.

use std::time::Duration;

use serde_json::json;

use crate::guests;
use crate::harness::{Cluster, container, phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_agent_restart_running_pods_run_again_once_with_a_higher_restart_count() {
    let mut cluster = Cluster::start().await;
    guests::import(
        &cluster.data_dir(),
        "wasmkube.test/counter:v1",
        guests::COUNTER,
    );
    guests::import(&cluster.data_dir(), "wasmkube.test/hello:v1", guests::HELLO);
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "counter"},
            "spec": {"containers": [{"name": "counter", "image": "wasmkube.test/counter:v1"}]},
        }))
        .await;
    cluster
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "done"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "hello", "image": "wasmkube.test/hello:v1"}],
            },
        }))
        .await;
    let before = cluster
        .wait_pod("counter", Duration::from_secs(60), |p| container(p).ready)
        .await;
    cluster
        .wait_pod("done", Duration::from_secs(60), |p| phase(p) == "Succeeded")
        .await;
    let ip_before = before.status.as_ref().and_then(|s| s.pod_ip.clone());

    cluster.stop_agent().await;
    let log0 = cluster.log_file(&before, "counter", 0);
    let size = std::fs::metadata(&log0).expect("log").len();
    // Nothing writes the old instance's log once the agent has stopped.
    tokio::task::yield_now().await;
    assert_eq!(std::fs::metadata(&log0).expect("log").len(), size);

    cluster.start_agent().await;
    let after = cluster
        .wait_pod("counter", Duration::from_secs(60), |p| {
            let cs = container(p);
            cs.restart_count == 1 && cs.state.and_then(|s| s.running).is_some()
        })
        .await;
    let last = container(&after)
        .last_state
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!(last.exit_code, 137);
    assert_eq!(
        after.status.as_ref().and_then(|s| s.pod_ip.clone()),
        ip_before
    );
    assert!(cluster.log_file(&after, "counter", 1).exists());
    // The finished pod stays finished: it does not run again.
    let done = cluster.pods().get("done").await.expect("done");
    assert_eq!(phase(&done), "Succeeded");
    assert_eq!(container(&done).restart_count, 0);
    assert!(!cluster.log_file(&done, "hello", 1).exists());
}
