//! Cascading deletion end to end: the garbage collector inside `wasmkube server` deletes
//! dependents of deleted owners in the background, deletes them first in the foreground,
//! or orphans them, as `kubectl delete --cascade=background|foreground|orphan` asks; the
//! same for a Deployment with its ReplicaSet and pods; and a deleted namespace is emptied
//! and removed.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use crate::harness::{TestCluster, poll_until};

/// How long the garbage collector may take to act.
const DEADLINE: Duration = Duration::from_secs(60);

/// An owner reference to the ConfigMap `name` with `uid`.
fn owner_ref(name: &str, uid: &str, block: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid,
        "blockOwnerDeletion": block,
    })
}

/// Creates the ConfigMap `name` with these owner references and finalizers; its uid.
async fn configmap(
    api: &Api<ConfigMap>,
    name: &str,
    owners: Vec<Value>,
    finalizers: &[&str],
) -> Result<String> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers},
        "data": {"k": "v"},
    }))?;
    let created = api
        .create(&PostParams::default(), &cm)
        .await
        .with_context(|| format!("creating configmap {name}"))?;
    created.metadata.uid.context("no uid")
}

async fn wait_gone(api: &Api<ConfigMap>, name: &str) -> Result<()> {
    poll_until(&format!("configmap {name} deleted"), DEADLINE, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

fn owner_uids(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .map(|r| r.uid.clone())
        .collect()
}

#[tokio::test]
async fn kubectl_sends_the_propagation_policy_of_each_cascade_mode() -> Result<()> {
    let cluster = TestCluster::builder().start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await?);
    for (cascade, policy) in [
        ("background", "Background"),
        ("foreground", "Foreground"),
        ("orphan", "Orphan"),
    ] {
        let name = format!("verbose-{cascade}");
        configmap(&api, &name, vec![], &[]).await?;
        let out = cluster
            .kubectl(&[
                "delete",
                "configmap",
                &name,
                &format!("--cascade={cascade}"),
                "-v=8",
            ])
            .await?;
        ensure!(
            out.status.success(),
            "kubectl delete failed: {}",
            out.stderr
        );
        let body = format!("\"propagationPolicy\":\"{policy}\"");
        ensure!(
            out.stderr.contains(&body),
            "kubectl --cascade={cascade} did not send {body}: {}",
            out.stderr
        );
        // No dependents: every mode ends with the object gone.
        wait_gone(&api, &name).await?;
    }
    Ok(())
}

#[tokio::test]
async fn background_deletion_removes_dependents_whose_owners_are_all_gone() -> Result<()> {
    let cluster = TestCluster::builder().start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await?);
    let owner = configmap(&api, "bg-owner", vec![], &[]).await?;
    let keeper = configmap(&api, "bg-keeper", vec![], &[]).await?;
    configmap(
        &api,
        "bg-dep-1",
        vec![owner_ref("bg-owner", &owner, true)],
        &[],
    )
    .await?;
    configmap(
        &api,
        "bg-dep-2",
        vec![owner_ref("bg-owner", &owner, false)],
        &[],
    )
    .await?;
    configmap(
        &api,
        "bg-shared",
        vec![
            owner_ref("bg-owner", &owner, false),
            owner_ref("bg-keeper", &keeper, false),
        ],
        &[],
    )
    .await?;
    // An owner of that name exists, but with another uid: it counts as gone.
    configmap(
        &api,
        "bg-stale",
        vec![owner_ref(
            "bg-keeper",
            "00000000-0000-0000-0000-000000000001",
            false,
        )],
        &[],
    )
    .await?;

    cluster
        .kubectl_ok(&["delete", "configmap", "bg-owner"])
        .await?;
    for name in ["bg-dep-1", "bg-dep-2", "bg-stale"] {
        wait_gone(&api, name).await?;
    }
    let shared = poll_until("bg-shared loses its gone owner", DEADLINE, || async {
        let cm = api.get("bg-shared").await?;
        Ok((owner_uids(&cm) == [keeper.clone()]).then_some(cm))
    })
    .await?;
    ensure!(shared.metadata.deletion_timestamp.is_none());
    ensure!(api.get_opt("bg-keeper").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn foreground_deletion_keeps_the_owner_until_its_blocking_dependents_are_gone() -> Result<()>
{
    let cluster = TestCluster::builder().start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await?);
    let owner = configmap(&api, "fg-owner", vec![], &[]).await?;
    // The dependent's own finalizer holds it (as a terminating pod would be held).
    configmap(
        &api,
        "fg-dep",
        vec![owner_ref("fg-owner", &owner, true)],
        &["example.com/hold"],
    )
    .await?;
    configmap(
        &api,
        "fg-loose",
        vec![owner_ref("fg-owner", &owner, false)],
        &[],
    )
    .await?;

    cluster
        .kubectl_ok(&[
            "delete",
            "configmap",
            "fg-owner",
            "--cascade=foreground",
            "--wait=false",
        ])
        .await?;
    poll_until("fg-dep marked for deletion", DEADLINE, || async {
        let dep = api.get("fg-dep").await?;
        Ok(dep.metadata.deletion_timestamp.is_some().then_some(()))
    })
    .await?;
    wait_gone(&api, "fg-loose").await?;
    let held = api.get("fg-owner").await?;
    ensure!(
        held.metadata.deletion_timestamp.is_some()
            && held.metadata.finalizers == Some(vec!["foregroundDeletion".to_string()]),
        "the owner waits with deletionTimestamp and foregroundDeletion: {:?}",
        held.metadata
    );
    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "fg-dep",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])
        .await?;
    wait_gone(&api, "fg-dep").await?;
    wait_gone(&api, "fg-owner").await?;
    Ok(())
}

#[tokio::test]
async fn orphan_deletion_removes_the_owner_and_keeps_its_dependents_without_the_reference()
-> Result<()> {
    let cluster = TestCluster::builder().start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await?);
    let owner = configmap(&api, "or-owner", vec![], &[]).await?;
    let other = configmap(&api, "or-other", vec![], &[]).await?;
    configmap(
        &api,
        "or-dep",
        vec![owner_ref("or-owner", &owner, true)],
        &[],
    )
    .await?;
    configmap(
        &api,
        "or-both",
        vec![
            owner_ref("or-owner", &owner, true),
            owner_ref("or-other", &other, false),
        ],
        &[],
    )
    .await?;

    cluster
        .kubectl_ok(&["delete", "configmap", "or-owner", "--cascade=orphan"])
        .await?;
    wait_gone(&api, "or-owner").await?;
    let dep = api.get("or-dep").await?;
    ensure!(
        dep.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty()),
        "or-dep still has owner references: {:?}",
        dep.metadata.owner_references
    );
    ensure!(dep.metadata.deletion_timestamp.is_none());
    ensure!(owner_uids(&api.get("or-both").await?) == [other]);
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_empties_and_removes_it() -> Result<()> {
    let cluster = TestCluster::builder().start().await?;
    let client = cluster.client().await?;
    cluster
        .kubectl_ok(&["create", "namespace", "doomed"])
        .await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let owner = configmap(&api, "a", vec![], &[]).await?;
    configmap(&api, "b", vec![owner_ref("a", &owner, true)], &[]).await?;
    cluster
        .kubectl_ok(&[
            "create",
            "deployment",
            "web",
            "-n",
            "doomed",
            "--image=wasmkube.local/samples/counter:v1",
        ])
        .await?;
    cluster
        .kubectl_ok(&["delete", "namespace", "doomed"])
        .await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    poll_until("namespace doomed removed", DEADLINE, || async {
        Ok(namespaces.get_opt("doomed").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(api.list(&ListParams::default()).await?.items.is_empty());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "doomed");
    ensure!(
        deployments
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    let pods: Api<Pod> = Api::namespaced(client, "doomed");
    ensure!(pods.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

/// The Deployment's ReplicaSets and pods (by its `app` label).
async fn workload(client: &kube::Client, app: &str) -> Result<(Vec<ReplicaSet>, Vec<Pod>)> {
    let selector = ListParams::default().labels(&format!("app={app}"));
    let rs: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    Ok((
        rs.list(&selector).await?.items,
        pods.list(&selector).await?.items,
    ))
}

/// Applies the Deployment and waits for `replicas` running pods owned by its ReplicaSet.
async fn running_deployment(
    cluster: &TestCluster,
    name: &str,
    replicas: usize,
    finalizers: &[&str],
) -> Result<()> {
    let client = cluster.client().await?;
    let mut deployment =
        cluster.sample_workload("Deployment", name, "counter", i32::try_from(replicas)?)?;
    deployment["spec"]["template"]["metadata"]["finalizers"] = json!(finalizers);
    cluster.apply_json(&deployment).await?;
    poll_until(
        &format!("deployment {name} running"),
        Duration::from_secs(120),
        || async {
            let (rs, pods) = workload(&client, name).await?;
            let running = pods
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok((rs.len() == 1 && running == replicas).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn deployments_cascade_in_the_background_and_foreground_and_are_orphaned_on_request()
-> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(1)
        .start_with_samples(
            "deployments_cascade_in_the_background_and_foreground_and_are_orphaned_on_request",
        )
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());

    // Background (kubectl's default): the Deployment goes at once, then its ReplicaSet
    // and pods.
    running_deployment(&cluster, "web-bg", 2, &[]).await?;
    cluster
        .kubectl_ok(&["delete", "deployment", "web-bg"])
        .await?;
    ensure!(deployments.get_opt("web-bg").await?.is_none());
    poll_until("web-bg's ReplicaSet and pods deleted", DEADLINE, || async {
        let (rs, pods) = workload(&client, "web-bg").await?;
        Ok((rs.is_empty() && pods.is_empty()).then_some(()))
    })
    .await?;

    // Orphan: the ReplicaSet and pods stay, the ReplicaSet without its owner.
    running_deployment(&cluster, "web-or", 2, &[]).await?;
    cluster
        .kubectl_ok(&["delete", "deployment", "web-or", "--cascade=orphan"])
        .await?;
    poll_until("web-or deleted", DEADLINE, || async {
        Ok(deployments.get_opt("web-or").await?.is_none().then_some(()))
    })
    .await?;
    let (rs, pods) = workload(&client, "web-or").await?;
    ensure!(rs.len() == 1, "the orphaned ReplicaSet stays: {}", rs.len());
    ensure!(
        rs[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty()),
        "the orphaned ReplicaSet lost its owner reference: {:?}",
        rs[0].metadata.owner_references
    );
    ensure!(pods.len() == 2, "its pods stay: {}", pods.len());
    let rs_uid = rs[0].metadata.uid.clone().unwrap_or_default();
    ensure!(pods.iter().all(|p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == rs_uid)
    }));

    // Foreground: the Deployment waits, marked for deletion, until its pods (held here by
    // a finalizer from the template) and its ReplicaSet are gone.
    running_deployment(&cluster, "web-fg", 2, &["example.com/hold"]).await?;
    cluster
        .kubectl_ok(&[
            "delete",
            "deployment",
            "web-fg",
            "--cascade=foreground",
            "--wait=false",
        ])
        .await?;
    poll_until("web-fg's pods marked for deletion", DEADLINE, || async {
        let (_, pods) = workload(&client, "web-fg").await?;
        Ok(
            (pods.len() == 2 && pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()))
                .then_some(()),
        )
    })
    .await?;
    let waiting = deployments.get("web-fg").await?;
    ensure!(
        waiting.metadata.deletion_timestamp.is_some()
            && waiting.metadata.finalizers == Some(vec!["foregroundDeletion".to_string()]),
        "web-fg waits for its dependents: {:?}",
        waiting.metadata
    );
    let (rs, _) = workload(&client, "web-fg").await?;
    ensure!(rs.len() == 1 && rs[0].metadata.deletion_timestamp.is_some());
    let pod_names: Vec<String> = workload(&client, "web-fg")
        .await?
        .1
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for name in &pod_names {
        cluster
            .kubectl_ok(&[
                "patch",
                "pod",
                name,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ])
            .await?;
    }
    poll_until(
        "web-fg and all its dependents deleted",
        DEADLINE,
        || async {
            let (rs, pods) = workload(&client, "web-fg").await?;
            let gone = deployments.get_opt("web-fg").await?.is_none();
            Ok((gone && rs.is_empty() && pods.is_empty()).then_some(()))
        },
    )
    .await?;
    Ok(())
}
