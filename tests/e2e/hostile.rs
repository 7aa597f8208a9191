//! Hostile guests: modules written at test time (WAT, or hand-encoded for the big one),
//! packaged as OCI wasm artifacts and imported into a node agent running as its own process.
//! Each must end with a clear status reason a user can read in `kubectl get`/`describe`, and
//! none may take the agent down: its node Lease keeps being renewed and other pods still run.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use serde_json::{Value, json};

use crate::harness::{TestCluster, WasmImage, container_status, module_with_data_segment};

/// How long a pod may take to reach the state a test waits for.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long a node lease may take to be renewed (every 10 s, on a busy machine).
const LEASE_DEADLINE: Duration = Duration::from_secs(60);

/// Spins forever without calling the host.
const INFINITE_LOOP: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $spin (br $spin))))
"#;

/// Grows memory one page at a time and never stops, whatever `memory.grow` answers.
const MEMORY_GROW_BOMB: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (drop (memory.grow (i32.const 1)))
      (br $grow))))
"#;

/// Recurses without end.
const DEEP_RECURSION: &str = r#"
(module
  (memory (export "memory") 1)
  (func $down (param i32) (result i32)
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "_start") (drop (call $down (i32.const 0)))))
"#;

/// Imports a function no runtime provides.
const UNSATISFIED_IMPORT: &str = r#"
(module
  (import "env" "launch_missiles" (func $launch))
  (memory (export "memory") 1)
  (func (export "_start") (call $launch)))
"#;

/// A pod running `image` once, with a memory limit.
fn pod(name: &str, image: &str, memory_limit: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "guest",
                "image": image,
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"memory": memory_limit},
                },
            }],
        },
    })
}

/// A one-node cluster (a separate agent process) with `images` imported.
async fn cluster_with(images: &[&WasmImage]) -> Result<TestCluster> {
    let cluster = TestCluster::builder().agents(1).start().await?;
    for image in images {
        cluster.import_image(image.path()).await?;
    }
    Ok(cluster)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The terminated state of the pod's container.
fn terminated(pod: &Pod) -> Result<ContainerStateTerminated> {
    container_status(pod)
        .and_then(|s| s.state)
        .and_then(|s| s.terminated)
        .with_context(|| format!("the container is not terminated: {:?}", pod.status))
}

/// Runs `pod` to phase Failed and returns its container's termination.
async fn run_to_failure(cluster: &TestCluster, pod: &Value) -> Result<ContainerStateTerminated> {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    cluster.apply_json(pod).await?;
    let pod = cluster
        .wait_pod(&name, "phase Failed", DEADLINE, |p| phase(p) == "Failed")
        .await?;
    terminated(&pod)
}

/// Waits until the agent renews its node lease twice more: it is alive and not blocked.
async fn lease_keeps_renewing(cluster: &TestCluster) -> Result<()> {
    let node = cluster.agent_node_name(0)?;
    let first = cluster
        .lease_renew_time(&node)
        .await?
        .context("the node has no lease")?;
    let second = cluster
        .wait_lease_renewed(&node, first, LEASE_DEADLINE)
        .await?;
    cluster
        .wait_lease_renewed(&node, second, LEASE_DEADLINE)
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_infinite_loop_runs_until_deleted_while_the_agent_stays_responsive() -> Result<()> {
    let spin = WasmImage::from_wat("wasmkube.test/hostile/spin:v1", INFINITE_LOOP)?;
    let hello = WasmImage::from_wat(
        "wasmkube.test/hostile/exit0:v1",
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    )?;
    let cluster = cluster_with(&[&spin, &hello]).await?;
    cluster
        .apply_json(&pod("spin", spin.name(), "32Mi"))
        .await?;
    cluster
        .wait_pod("spin", "running", DEADLINE, |p| {
            phase(p) == "Running"
                && container_status(p)
                    .and_then(|s| s.state)
                    .is_some_and(|s| s.running.is_some())
        })
        .await?;
    // While it spins, the agent renews its lease and runs other pods.
    lease_keeps_renewing(&cluster).await?;
    cluster
        .apply_json(&pod("neighbour", hello.name(), "32Mi"))
        .await?;
    cluster
        .wait_pod("neighbour", "phase Succeeded", DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    // A guest that never yields is still stopped by a deletion.
    let out = cluster.kubectl_ok(&["delete", "pod", "spin"]).await?;
    assert!(out.contains("deleted"), "{out}");
    cluster.wait_pod_gone("spin", DEADLINE).await?;
    let killing = cluster
        .wait_event("spin", "Killing", Duration::from_secs(30))
        .await?;
    assert!(
        killing
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Stopping container guest")),
        "{killing:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_memory_grow_bomb_is_oom_killed_at_its_limit() -> Result<()> {
    let bomb = WasmImage::from_wat("wasmkube.test/hostile/grow:v1", MEMORY_GROW_BOMB)?;
    let cluster = cluster_with(&[&bomb]).await?;
    let end = run_to_failure(&cluster, &pod("grow", bomb.name(), "32Mi")).await?;
    assert_eq!(end.reason.as_deref(), Some("OOMKilled"), "{end:?}");
    assert_eq!(end.exit_code, 137, "{end:?}");
    lease_keeps_renewing(&cluster).await?;
    Ok(())
}

#[tokio::test]
async fn deep_recursion_ends_with_a_stack_exhaustion_message() -> Result<()> {
    let recurse = WasmImage::from_wat("wasmkube.test/hostile/recurse:v1", DEEP_RECURSION)?;
    let cluster = cluster_with(&[&recurse]).await?;
    let end = run_to_failure(&cluster, &pod("recurse", recurse.name(), "32Mi")).await?;
    assert_eq!(end.reason.as_deref(), Some("Error"), "{end:?}");
    assert_ne!(end.exit_code, 0);
    let message = end.message.unwrap_or_default();
    assert!(message.contains("call stack exhausted"), "{message}");
    let describe = cluster.kubectl_ok(&["describe", "pod", "recurse"]).await?;
    assert!(describe.contains("call stack exhausted"), "{describe}");
    lease_keeps_renewing(&cluster).await?;
    Ok(())
}

#[tokio::test]
async fn an_unsatisfied_import_ends_with_a_start_error_naming_it() -> Result<()> {
    let unlinkable =
        WasmImage::from_wat("wasmkube.test/hostile/unlinkable:v1", UNSATISFIED_IMPORT)?;
    let cluster = cluster_with(&[&unlinkable]).await?;
    let end = run_to_failure(&cluster, &pod("unlinkable", unlinkable.name(), "32Mi")).await?;
    assert_eq!(end.reason.as_deref(), Some("StartError"), "{end:?}");
    assert_ne!(end.exit_code, 0);
    let message = end.message.unwrap_or_default();
    assert!(message.contains("env::launch_missiles"), "{message}");
    let table = cluster.kubectl_ok(&["get", "pod", "unlinkable"]).await?;
    assert!(table.contains("StartError"), "{table}");
    lease_keeps_renewing(&cluster).await?;
    Ok(())
}

#[tokio::test]
async fn a_50_mb_module_ends_with_a_clear_status_and_the_agent_keeps_renewing_its_lease()
-> Result<()> {
    let big = WasmImage::from_wasm(
        "wasmkube.test/hostile/big:v1",
        &module_with_data_segment(50 << 20),
    )?;
    let cluster = cluster_with(&[&big]).await?;
    // Room for its 50 MB of initial memory: it compiles, instantiates and exits 0.
    cluster.apply_json(&pod("big", big.name(), "128Mi")).await?;
    // Too little room: its initial memory alone is over the limit.
    cluster
        .apply_json(&pod("big-cramped", big.name(), "32Mi"))
        .await?;
    let pod = cluster
        .wait_pod("big", "phase Succeeded", DEADLINE, |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    assert_eq!(terminated(&pod)?.exit_code, 0);
    let pod = cluster
        .wait_pod("big-cramped", "phase Failed", DEADLINE, |p| {
            phase(p) == "Failed"
        })
        .await?;
    let end = terminated(&pod)?;
    assert_eq!(end.reason.as_deref(), Some("OOMKilled"), "{end:?}");
    lease_keeps_renewing(&cluster).await?;
    Ok(())
}
