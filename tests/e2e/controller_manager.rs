//! The controller-manager on its own: `wasmkube controllers --kubeconfig` processes against a
//! server started with `--disable-controllers`, as a user runs them for high availability.
//! Two of them run at once; the Lease `kube-system/wasmkube-controller-manager` makes one act,
//! and when that one is killed the other takes over.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::process::Child;

use crate::harness::{TestCluster, poll_until, spawn_wasmkube};

/// How long a controller-manager may take to act: a successor waits for the killed leader's
/// 15 s Lease to expire first.
const DEADLINE: Duration = Duration::from_secs(90);

/// Starts `wasmkube controllers --kubeconfig <the cluster's>`, its output in the data dir.
fn spawn_controllers(cluster: &TestCluster, n: usize) -> Result<Child> {
    let args = [
        "controllers".to_string(),
        "--kubeconfig".to_string(),
        cluster.kubeconfig_path().display().to_string(),
    ];
    spawn_wasmkube(
        &args,
        &cluster.data_dir().join(format!("controllers-{n}.log")),
    )
}

/// The pods the ReplicaSet `uid` controls.
async fn owned_pods(pods: &Api<Pod>, uid: &str) -> Result<usize> {
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .count())
}

/// Waits until the ReplicaSet reports `replicas` pods, then checks that exactly that many
/// exist (two acting controller-managers would have created more).
async fn expect_replicas(
    rs: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    uid: &str,
    want: i32,
) -> Result<()> {
    poll_until(
        &format!("the ReplicaSet to report {want} replicas"),
        DEADLINE,
        || async {
            let current = rs.get("web").await?;
            let status = current.status.unwrap_or_default();
            let observed = status.observed_generation == current.metadata.generation;
            Ok((observed && status.replicas == want).then_some(()))
        },
    )
    .await?;
    let count = owned_pods(pods, uid).await?;
    ensure!(
        count == usize::try_from(want)?,
        "{count} pods are owned by the ReplicaSet, want {want}"
    );
    Ok(())
}

#[tokio::test]
async fn standalone_controller_managers_elect_one_leader_and_fail_over() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let mut first = spawn_controllers(&cluster, 1)?;
    let mut second = spawn_controllers(&cluster, 2)?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let holder = poll_until(
        "a controller-manager to take the Lease",
        DEADLINE,
        || async {
            let lease = leases.get_opt("wasmkube-controller-manager").await?;
            Ok(lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()))
        },
    )
    .await?;

    // No node runs the pods: they stay Pending, which is all the ReplicaSet needs to count them.
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = rs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "example.com/web:1"}]},
                    },
                },
            }))?,
        )
        .await?;
    let uid = created.metadata.uid.context("the ReplicaSet has no uid")?;
    expect_replicas(&rs, &pods, &uid, 3).await?;

    // Kill both processes one after the other, the leader first: the other must take over.
    let lease = leases.get("wasmkube-controller-manager").await?;
    ensure!(
        lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(holder.as_str()),
        "the Lease changed hands while both controller-managers ran"
    );
    // Which process holds it is not visible from outside; kill the first, and if the Lease
    // does not move, the second was the leader: kill that one and restart the first.
    first
        .start_kill()
        .context("killing the first controller-manager")?;
    first.wait().await?;
    let moved = poll_until(
        "the Lease to move or stay",
        Duration::from_secs(40),
        || async {
            let lease = leases.get("wasmkube-controller-manager").await?;
            let now = lease
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            Ok((now != holder).then_some(now))
        },
    )
    .await;
    let survivor = match moved {
        Ok(_) => second,
        Err(_) => {
            second
                .start_kill()
                .context("killing the second controller-manager")?;
            second.wait().await?;
            spawn_controllers(&cluster, 3)?
        }
    };
    rs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await?;
    expect_replicas(&rs, &pods, &uid, 5).await?;
    drop(survivor);
    Ok(())
}
