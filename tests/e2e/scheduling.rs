//! Placement across several nodes, each a separate `wasmkube agent` process registering with
//! its own labels, taints and allocatable resources: the scheduler's nodeSelector, taints and
//! tolerations, resource fit, unschedulable pods (Pending, `PodScheduled=False`, a
//! FailedScheduling event, retried when room appears) and `kubectl cordon`.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::harness::{NodeSpec, TestCluster, events_of};

/// How long the scheduler may take to bind a pod (or to give up on it).
const SCHEDULE_DEADLINE: Duration = Duration::from_secs(90);

/// A hello pod (the sample image, runs once) called `name` with `spec` merged into its spec.
fn hello_pod(name: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "containers": [{
                "name": "hello",
                "image": "wasmkube.local/samples/hello:v1",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
        },
    });
    if let (Some(target), Value::Object(extra)) = (pod["spec"].as_object_mut(), spec) {
        target.extend(extra);
    }
    pod
}

/// A long-running pod (the counter sample) requesting `cpu` and `memory`: it holds its
/// requests on its node until deleted.
fn requesting(name: &str, cpu: &str, memory: &str) -> Value {
    let mut pod = hello_pod(name, json!({"restartPolicy": "Always"}));
    let container = &mut pod["spec"]["containers"][0];
    container["image"] = json!("wasmkube.local/samples/counter:v1");
    container["resources"] = json!({"requests": {"cpu": cpu, "memory": memory}});
    pod
}

/// The node a pod is bound to.
fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// Waits until pod `name` is bound; returns its node.
async fn wait_bound(cluster: &TestCluster, name: &str) -> Result<String> {
    let pod = cluster
        .wait_pod(name, "bound to a node", SCHEDULE_DEADLINE, |p| {
            node_of(p).is_some()
        })
        .await?;
    Ok(node_of(&pod).unwrap_or_default().to_owned())
}

/// Waits until pod `name` has a FailedScheduling event and `PodScheduled=False`
/// (Unschedulable); checks it is still unbound and returns the event's message.
async fn wait_unschedulable(cluster: &TestCluster, name: &str) -> Result<String> {
    let event = cluster
        .wait_event(name, "FailedScheduling", SCHEDULE_DEADLINE)
        .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let pod = cluster
        .wait_pod(name, "PodScheduled=False", SCHEDULE_DEADLINE, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
        })
        .await?;
    ensure!(
        node_of(&pod).is_none(),
        "{name} is unschedulable yet bound to {:?}",
        node_of(&pod)
    );
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    assert_eq!(phase, Some("Pending"));
    Ok(event.message.unwrap_or_default())
}

#[tokio::test]
async fn node_selectors_and_tolerations_decide_placement() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agent(NodeSpec::named("ssd-node").label("disk", "ssd"))
        .agent(
            NodeSpec::named("gpu-node")
                .label("disk", "hdd")
                .taint("dedicated=gpu:NoSchedule"),
        )
        .start_with_samples("node_selectors_and_tolerations_decide_placement")
        .await?
    else {
        return Ok(());
    };
    let toleration = json!([{
        "key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule",
    }]);
    // No constraints: the tainted node is out, whatever the spreading says.
    for name in ["plain-1", "plain-2", "plain-3"] {
        cluster.apply_json(&hello_pod(name, json!({}))).await?;
    }
    // The node selector picks the tainted node, but without a toleration it may not go there.
    cluster
        .apply_json(&hello_pod(
            "hdd-intolerant",
            json!({"nodeSelector": {"disk": "hdd"}}),
        ))
        .await?;
    // With the toleration it does.
    cluster
        .apply_json(&hello_pod(
            "hdd-tolerant",
            json!({"nodeSelector": {"disk": "hdd"}, "tolerations": toleration}),
        ))
        .await?;
    // Tolerating the taint allows the tainted node; the selector still decides.
    cluster
        .apply_json(&hello_pod(
            "ssd-tolerant",
            json!({"nodeSelector": {"disk": "ssd"}, "tolerations": toleration}),
        ))
        .await?;

    for name in ["plain-1", "plain-2", "plain-3"] {
        assert_eq!(wait_bound(&cluster, name).await?, "ssd-node", "{name}");
    }
    assert_eq!(wait_bound(&cluster, "hdd-tolerant").await?, "gpu-node");
    assert_eq!(wait_bound(&cluster, "ssd-tolerant").await?, "ssd-node");
    let message = wait_unschedulable(&cluster, "hdd-intolerant").await?;
    assert!(
        message.starts_with("0/2 nodes are available:"),
        "FailedScheduling message: {message}"
    );
    assert!(
        message.contains("untolerated taint")
            && message.contains("didn't match Pod's node affinity/selector"),
        "FailedScheduling message: {message}"
    );
    Ok(())
}

#[tokio::test]
async fn resource_requests_must_fit_and_a_pod_too_big_for_every_node_stays_pending() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agent(NodeSpec::named("small").cpu("1").memory("256Mi"))
        .agent(NodeSpec::named("large").cpu("4").memory("4Gi"))
        .start_with_samples(
            "resource_requests_must_fit_and_a_pod_too_big_for_every_node_stays_pending",
        )
        .await?
    else {
        return Ok(());
    };
    let small = cluster.kubectl_json(&["get", "node", "small"]).await?;
    assert_eq!(small["status"]["capacity"]["cpu"], json!("1"));
    assert_eq!(small["status"]["capacity"]["memory"], json!("262144Ki"));

    // Two CPUs or 512Mi fit only the large node, however the scores spread.
    for (name, cpu, memory) in [("two-cpus", "2", "64Mi"), ("much-memory", "100m", "512Mi")] {
        cluster.apply_json(&requesting(name, cpu, memory)).await?;
        assert_eq!(wait_bound(&cluster, name).await?, "large", "{name}");
    }
    // What is bound counts: 2 of the large node's 4 CPUs are taken, so 3 fit nowhere...
    cluster
        .apply_json(&requesting("three-cpus", "3", "64Mi"))
        .await?;
    let message = wait_unschedulable(&cluster, "three-cpus").await?;
    assert!(
        message.contains("0/2 nodes are available: 2 Insufficient cpu"),
        "FailedScheduling message: {message}"
    );
    // ...until the two-CPU pod goes: the scheduler retries when pods change.
    cluster.kubectl_ok(&["delete", "pod", "two-cpus"]).await?;
    assert_eq!(wait_bound(&cluster, "three-cpus").await?, "large");

    // Too big for every node: Pending for good, with the reasons kube-scheduler gives.
    cluster
        .apply_json(&requesting("enormous", "16", "64Mi"))
        .await?;
    let message = wait_unschedulable(&cluster, "enormous").await?;
    assert!(
        message.contains("0/2 nodes are available: 2 Insufficient cpu"),
        "FailedScheduling message: {message}"
    );
    let describe = cluster.kubectl_ok(&["describe", "pod", "enormous"]).await?;
    assert!(describe.contains("FailedScheduling"), "{describe}");
    let table = cluster.kubectl_ok(&["get", "pod", "enormous"]).await?;
    assert!(table.contains("Pending"), "{table}");
    let events = events_of(&cluster.client().await?, "enormous").await?;
    ensure!(
        events
            .iter()
            .all(|e| e.reason.as_deref() != Some("Scheduled")),
        "the enormous pod was scheduled: {events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cordoned_node_gets_no_new_pods() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(2)
        .start_with_samples("a_cordoned_node_gets_no_new_pods")
        .await?
    else {
        return Ok(());
    };
    let first = cluster.agent_node_name(0)?;
    let second = cluster.agent_node_name(1)?;
    let out = cluster.kubectl_ok(&["cordon", &first]).await?;
    assert!(out.contains("cordoned"), "{out}");
    let table = cluster.kubectl_ok(&["get", "node", &first]).await?;
    assert!(table.contains("SchedulingDisabled"), "{table}");
    for i in 0..4 {
        let name = format!("while-cordoned-{i}");
        cluster.apply_json(&hello_pod(&name, json!({}))).await?;
        assert_eq!(wait_bound(&cluster, &name).await?, second, "{name}");
    }

    // The other way round.
    cluster.kubectl_ok(&["uncordon", &first]).await?;
    cluster.kubectl_ok(&["cordon", &second]).await?;
    for i in 0..2 {
        let name = format!("after-swap-{i}");
        cluster.apply_json(&hello_pod(&name, json!({}))).await?;
        assert_eq!(wait_bound(&cluster, &name).await?, first, "{name}");
    }
    // Both cordoned: nowhere to go.
    cluster.kubectl_ok(&["cordon", &first]).await?;
    cluster.apply_json(&hello_pod("nowhere", json!({}))).await?;
    let message = wait_unschedulable(&cluster, "nowhere").await?;
    assert!(
        message.contains("2 node(s) were unschedulable"),
        "FailedScheduling message: {message}"
    );
    // Uncordoning is a node change: the scheduler retries and binds it.
    cluster.kubectl_ok(&["uncordon", &second]).await?;
    assert_eq!(wait_bound(&cluster, "nowhere").await?, second);
    Ok(())
}
