//! `kubectl drain` and the `pods/eviction` subresource end to end: drain cordons a node
//! and evicts its pods through the Eviction API (no PodDisruptionBudgets exist, so every
//! eviction is allowed), the Deployment's controllers replace them on the other node, and
//! `kubectl uncordon` reopens the node; the Eviction API itself answers as Kubernetes'
//! does (404 for a missing pod, 400 for a name other than the URL's, 409 for a failed
//! precondition, dry-run, the `DisruptionTarget` condition, the Eviction's grace period).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{EvictParams, ListParams};
use serde_json::{Value, json};

use crate::harness::{TestCluster, poll_until, raw};

/// How long pods may take to be scheduled, started, and replaced.
const DEADLINE: Duration = Duration::from_secs(120);

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
}

/// Waits until exactly `n` pods of `app` exist, all Running and none terminating, and
/// `accept` holds for them.
async fn wait_running(
    client: &kube::Client,
    app: &str,
    n: usize,
    accept: impl Fn(&[Pod]) -> bool,
) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    poll_until(&format!("{n} running pods of {app}"), DEADLINE, || {
        let api = api.clone();
        let accept = &accept;
        async move {
            let pods = api
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await?
                .items;
            let seen: Vec<String> = pods
                .iter()
                .map(|p| {
                    format!(
                        "{} on {:?} running={}",
                        p.metadata.name.as_deref().unwrap_or(""),
                        node_of(p),
                        is_running(p)
                    )
                })
                .collect();
            if pods.len() == n && pods.iter().all(is_running) && accept(&pods) {
                Ok(Some(pods))
            } else {
                anyhow::bail!("{seen:?}")
            }
        }
    })
    .await
}

async fn unschedulable(client: &kube::Client, node: &str) -> Result<bool> {
    let node = Api::<Node>::all(client.clone()).get(node).await?;
    Ok(node.spec.and_then(|s| s.unschedulable).unwrap_or(false))
}

#[tokio::test]
async fn kubectl_drain_evicts_a_nodes_pods_to_the_other_node_and_uncordon_reopens_it() -> Result<()>
{
    let Some(cluster) = TestCluster::builder()
        .agents(2)
        .start_with_samples(
            "kubectl_drain_evicts_a_nodes_pods_to_the_other_node_and_uncordon_reopens_it",
        )
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&cluster.sample_workload("Deployment", "drained", "counter", 2)?)
        .await?;
    let before = wait_running(&client, "drained", 2, |_| true).await?;
    let node = node_of(&before[0]).to_string();
    let evicted: Vec<String> = before
        .iter()
        .filter(|p| node_of(p) == node)
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let other = cluster
        .node_names()
        .into_iter()
        .find(|n| *n != node)
        .context("a second node")?;

    let out = cluster
        .kubectl(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=90s",
        ])
        .await?;
    let printed = format!("{}{}", out.stdout, out.stderr);
    ensure!(out.status.success(), "kubectl drain failed: {printed}");
    assert!(
        printed.contains(&format!("node/{node} cordoned")),
        "{printed}"
    );
    for name in &evicted {
        assert!(
            printed.contains(&format!("evicting pod default/{name}")),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("pod/{name} evicted")),
            "{printed}"
        );
    }
    assert!(
        printed.contains(&format!("node/{node} drained")),
        "{printed}"
    );
    assert!(
        !printed.contains("deleting pod"),
        "drain used the Eviction API, not deletion: {printed}"
    );
    assert!(unschedulable(&client, &node).await?, "{node} is cordoned");

    // The ReplicaSet replaces the evicted pods; the scheduler keeps off the cordoned node.
    let after = wait_running(&client, "drained", 2, |pods| {
        pods.iter().all(|p| node_of(p) == other)
    })
    .await?;
    for pod in &after {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(!evicted.contains(&name), "{name} was evicted");
    }
    let table = cluster.kubectl_ok(&["get", "node", &node]).await?;
    assert!(table.contains("SchedulingDisabled"), "{table}");

    let out = cluster.kubectl_ok(&["uncordon", &node]).await?;
    assert!(out.contains(&format!("node/{node} uncordoned")), "{out}");
    assert!(
        !unschedulable(&client, &node).await?,
        "{node} is open again"
    );
    Ok(())
}

/// A pod bound to a node no agent runs: deleting it leaves it Terminating, so what an
/// eviction did to it stays visible.
fn bound_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "node-a",
            "runtimeClassName": "wasmtime",
            "containers": [{"name": "c", "image": "wasmkube.local/samples/counter:v1"}],
        },
    })
}

fn eviction(name: &str, delete_options: Value) -> Vec<u8> {
    json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"},
        "deleteOptions": delete_options,
    })
    .to_string()
    .into_bytes()
}

async fn post_eviction(
    client: &kube::Client,
    pod: &str,
    query: &str,
    body: Vec<u8>,
) -> Result<raw::RawResponse> {
    raw::send(
        client,
        http::Method::POST,
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction{query}"),
        Some("application/json"),
        body,
    )
    .await
}

#[tokio::test]
async fn the_eviction_api_checks_the_pod_then_deletes_it_with_its_options() -> Result<()> {
    let cluster = TestCluster::builder().without_controllers().start().await?;
    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    // Discovery lists the subresource as Kubernetes does, and kubectl still reads it all.
    let resources = cluster.kubectl_ok(&["api-resources"]).await?;
    assert!(resources.contains("pods"), "{resources}");
    let list = raw::get(&client, "/api/v1").await?.json()?;
    let entry = list["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "pods/eviction"))
        .cloned()
        .context("pods/eviction in /api/v1")?;
    assert_eq!(
        entry,
        json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
               "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
    );
    let explained = cluster
        .kubectl_ok(&["explain", "pods.spec.nodeName"])
        .await?;
    assert!(explained.contains("nodeName"), "{explained}");

    // A missing pod: 404, through kubectl and kube-rs.
    let out = cluster
        .kubectl_with_stdin(
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/pods/missing/eviction",
                "-f",
                "-",
            ],
            Some(&String::from_utf8_lossy(&eviction("missing", json!({})))),
        )
        .await?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("NotFound") || out.stderr.contains("not found"),
        "{out:?}"
    );
    match pods.evict("missing", &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404, "{status:?}"),
        other => anyhow::bail!("evicting a missing pod: {other:?}"),
    }

    cluster.apply_json(&bound_pod("held")).await?;
    let uid = cluster.pod("held").await?.metadata.uid.unwrap_or_default();

    // The name on the URL and in the body must agree.
    let resp = post_eviction(&client, "held", "", eviction("other", json!({}))).await?;
    assert_eq!(resp.status, 400, "{resp:?}");
    let status = resp.json()?;
    assert_eq!(status["reason"], "BadRequest", "{status}");
    assert_eq!(
        status["message"],
        "name in URL does not match name in Eviction object"
    );

    // A failed precondition is a conflict; dry-run changes nothing.
    let resp = post_eviction(
        &client,
        "held",
        "",
        eviction("held", json!({"preconditions": {"uid": "not-the-uid"}})),
    )
    .await?;
    assert_eq!(resp.status, 409, "{resp:?}");
    let resp = post_eviction(&client, "held", "?dryRun=All", eviction("held", json!({}))).await?;
    assert_eq!(resp.status, 201, "{resp:?}");
    let pod = cluster.pod("held").await?;
    assert!(pod.metadata.deletion_timestamp.is_none(), "{pod:?}");

    // The eviction: 201 Success, the pod marked DisruptionTarget and deleted with the
    // Eviction's grace period.
    let resp = post_eviction(
        &client,
        "held",
        "",
        eviction(
            "held",
            json!({"gracePeriodSeconds": 17, "preconditions": {"uid": uid}}),
        ),
    )
    .await?;
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(
        resp.json()?,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
    );
    let pod = cluster.kubectl_json(&["get", "pod", "held"]).await?;
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 17, "{pod:#}");
    let condition = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget"))
        .cloned()
        .with_context(|| format!("no DisruptionTarget condition: {pod:#}"))?;
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "EvictionByEvictionAPI");
    assert_eq!(condition["message"], "Eviction API: evicting");

    // kube-rs' evict of an unscheduled pod removes it at once.
    let mut pending = bound_pod("pending");
    pending["spec"]
        .as_object_mut()
        .context("spec")?
        .remove("nodeName");
    cluster.apply_json(&pending).await?;
    let status = pods.evict("pending", &EvictParams::default()).await?;
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let gone = pods.get_opt("pending").await?;
    assert!(gone.is_none(), "{gone:?}");
    Ok(())
}
