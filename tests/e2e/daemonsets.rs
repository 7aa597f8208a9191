//! DaemonSets end to end: the controller-manager inside `wasmkube server` puts one pod of a
//! DaemonSet on every eligible `wasmkube agent` node (the scheduler binds it to the node its
//! node affinity names), follows nodes that join, keeps pods off nodes with untolerated
//! taints, and rolls a template change out node by node until `kubectl rollout status`
//! says it is done. Each test fails, naming `samples/build --oci`, when the sample images are
//! not built.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::harness::{NodeSpec, TestCluster, events_of, poll_until};

/// How long daemon pods may take to be created, bound and running on new nodes.
const SPREAD_DEADLINE: Duration = Duration::from_secs(120);

/// A DaemonSet of the `counter` sample (runs forever) labelled `app=<name>`, with
/// `tolerations` on its pods.
fn daemonset_manifest(name: &str, tolerations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": tolerations,
                    "containers": [{
                        "name": "main",
                        "image": "wasmkube.local/samples/counter:v1",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }],
                },
            },
        },
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The live (not terminating) pods labelled `app=<name>`, by the node they are bound to.
async fn pods_by_node(client: &kube::Client, name: &str) -> Result<BTreeMap<String, Vec<Pod>>> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await?
        .items
    {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(pod);
    }
    Ok(by_node)
}

/// What a pod watch saw during a rolling update.
#[derive(Debug, Default)]
struct RolloutWatch {
    /// The most live (not terminating) pods one node had at once.
    max_live_per_node: usize,
    /// The fewest ready, live pods at any time.
    min_ready: Option<usize>,
}

/// The node a daemon pod is for: bound, or named by its node affinity.
fn pod_node(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    if let Some(node) = spec.and_then(|s| s.node_name.clone()) {
        return node;
    }
    spec.and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .and_then(|r| r.node_selector_terms.first())
        .and_then(|t| {
            t.match_fields
                .as_ref()?
                .first()?
                .values
                .as_ref()?
                .first()
                .cloned()
        })
        .unwrap_or_default()
}

/// Watches the pods labelled `app=<name>` and records [`RolloutWatch`].
fn watch_rollout(
    client: &kube::Client,
    name: &str,
) -> (Arc<Mutex<RolloutWatch>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(RolloutWatch::default()));
    let record = seen.clone();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().labels(&format!("app={name}"));
    let task = tokio::spawn(async move {
        let mut state: BTreeMap<String, Pod> = BTreeMap::new();
        // Counted from the end of the initial list on, which arrives one pod at a time.
        let mut listed = false;
        let mut stream = std::pin::pin!(watcher(pods, config));
        while let Ok(Some(event)) = stream.try_next().await {
            match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    state.insert(p.name_any(), p);
                }
                watcher::Event::Delete(p) => {
                    state.remove(&p.name_any());
                }
                watcher::Event::InitDone => listed = true,
                watcher::Event::Init => continue,
            }
            if !listed {
                continue;
            }
            let live: Vec<&Pod> = state
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for pod in &live {
                *per_node.entry(pod_node(pod)).or_default() += 1;
            }
            let ready = live.iter().filter(|p| is_ready(p)).count();
            if let Ok(mut r) = record.lock() {
                r.max_live_per_node = r
                    .max_live_per_node
                    .max(per_node.values().copied().max().unwrap_or(0));
                r.min_ready = Some(r.min_ready.map_or(ready, |m| m.min(ready)));
            }
        }
    });
    (seen, task)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls until exactly one running pod of `name` is on each of `nodes` and on no other node.
async fn wait_one_running_pod_per_node(
    cluster: &TestCluster,
    name: &str,
    nodes: &[String],
) -> Result<BTreeMap<String, Vec<Pod>>> {
    let client = cluster.client().await?;
    let want: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    let result = poll_until(
        &format!("one running pod of {name} on each of {nodes:?}"),
        SPREAD_DEADLINE,
        || async {
            let by_node = pods_by_node(&client, name).await?;
            let on: BTreeSet<&str> = by_node.keys().map(String::as_str).collect();
            let one_running_each = by_node
                .values()
                .all(|pods| pods.len() == 1 && phase(&pods[0]) == "Running");
            Ok((on == want && one_running_each).then_some(by_node.clone()))
        },
    )
    .await;
    match result {
        Ok(by_node) => Ok(by_node),
        Err(e) => anyhow::bail!("{e:#}\n{}", cluster.logs_tail(30)),
    }
}

#[tokio::test]
async fn a_daemonset_runs_one_pod_per_eligible_node_and_follows_nodes_that_join() -> Result<()> {
    let Some(mut cluster) = TestCluster::builder()
        .agents(2)
        .start_with_samples(
            "a_daemonset_runs_one_pod_per_eligible_node_and_follows_nodes_that_join",
        )
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&daemonset_manifest("ticker", json!([])))
        .await?;
    let mut nodes = cluster.node_names();
    let by_node = wait_one_running_pod_per_node(&cluster, "ticker", &nodes).await?;
    for (node, pods) in &by_node {
        let pod = &pods[0];
        assert!(pod.labels().contains_key("controller-revision-hash"));
        let pinned = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| serde_json::to_value(&r.node_selector_terms))
            .transpose()?;
        assert_eq!(
            pinned,
            Some(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}])
            ),
            "the pod is pinned to its node by a matchFields node affinity"
        );
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        assert!(tolerations.iter().any(|t| t.key.as_deref()
            == Some("node.kubernetes.io/unschedulable")
            && t.effect.as_deref() == Some("NoSchedule")));
    }
    let rollout = cluster
        .kubectl(&["rollout", "status", "ds/ticker", "--timeout=80s"])
        .await?;
    ensure!(
        rollout.status.success(),
        "kubectl rollout status failed: {}{}",
        rollout.stdout,
        rollout.stderr
    );
    assert!(
        rollout.stdout.contains("successfully rolled out"),
        "{}",
        rollout.stdout
    );

    // A third node joins: a pod appears there.
    cluster.join_agent(NodeSpec::named("third")).await?;
    nodes.push("third".to_owned());
    wait_one_running_pod_per_node(&cluster, "ticker", &nodes).await?;

    // A tainted node: only a DaemonSet that tolerates the taint gets a pod there.
    cluster
        .join_agent(NodeSpec::named("infra").taint("dedicated=infra:NoSchedule"))
        .await?;
    cluster
        .apply_json(&daemonset_manifest(
            "infra-agent",
            json!([{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]),
        ))
        .await?;
    let mut all_nodes = nodes.clone();
    all_nodes.push("infra".to_owned());
    wait_one_running_pod_per_node(&cluster, "infra-agent", &all_nodes).await?;
    let ticker = pods_by_node(&client, "ticker").await?;
    assert!(
        !ticker.contains_key("infra"),
        "ticker got a pod on the tainted node"
    );
    assert_eq!(ticker.len(), 3);

    let daemonsets: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let status = poll_until(
        "ticker's status counts 3 available",
        SPREAD_DEADLINE,
        || async {
            let status = daemonsets.get("ticker").await?.status;
            Ok(status.filter(|s| s.number_available == Some(3)))
        },
    )
    .await?;
    assert_eq!(status.desired_number_scheduled, 3);
    assert_eq!(status.current_number_scheduled, 3);
    assert_eq!(status.number_misscheduled, 0);
    assert_eq!(status.updated_number_scheduled, Some(3));

    let events = events_of(&client, "ticker").await?;
    let creates: i32 = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .filter(|e| {
            e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("daemonset-controller")
        })
        .map(|e| e.count.unwrap_or(1))
        .sum();
    assert_eq!(creates, 3, "one SuccessfulCreate per node: {events:?}");
    Ok(())
}

#[tokio::test]
async fn a_template_change_rolls_out_to_every_node() -> Result<()> {
    let Some(cluster) = TestCluster::builder()
        .agents(2)
        .start_with_samples("a_template_change_rolls_out_to_every_node")
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    cluster
        .apply_json(&daemonset_manifest("roller", json!([])))
        .await?;
    let nodes = cluster.node_names();
    let before = wait_one_running_pod_per_node(&cluster, "roller", &nodes).await?;
    cluster
        .kubectl_ok(&["rollout", "status", "ds/roller", "--timeout=80s"])
        .await?;
    let old_hash = before
        .values()
        .next()
        .and_then(|p| p[0].labels().get("controller-revision-hash").cloned())
        .context("no revision hash")?;

    let (watched, watch) = watch_rollout(&client, "roller");
    poll_until("the rollout watch has listed", SPREAD_DEADLINE, || async {
        Ok(watched.lock().ok().and_then(|w| w.min_ready).map(|_| ()))
    })
    .await?;
    cluster
        .kubectl_ok(&[
            "patch",
            "ds",
            "roller",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#,
        ])
        .await?;
    let rollout = cluster
        .kubectl(&["rollout", "status", "ds/roller", "--timeout=80s"])
        .await?;
    ensure!(
        rollout.status.success(),
        "kubectl rollout status failed: {}{}\n{}",
        rollout.stdout,
        rollout.stderr,
        cluster.logs_tail(30)
    );
    let after = wait_one_running_pod_per_node(&cluster, "roller", &nodes).await?;
    watch.abort();
    let watched = watched
        .lock()
        .map(|w| (w.max_live_per_node, w.min_ready))
        .unwrap_or_default();
    assert_eq!(
        watched.0, 1,
        "a node ran two live pods at once (maxSurge is 0)"
    );
    assert!(
        watched.1.is_some_and(|m| m + 1 >= nodes.len()),
        "more than maxUnavailable (1) pods were unavailable at once: {watched:?}"
    );
    for (node, pods) in &after {
        let pod = &pods[0];
        let hash = pod.labels().get("controller-revision-hash").cloned();
        assert_ne!(
            hash.as_deref(),
            Some(old_hash.as_str()),
            "{node} still runs the old template"
        );
        assert_eq!(pod.annotations().get("rev").map(String::as_str), Some("2"));
        let old_uid = before.get(node).and_then(|p| p[0].uid());
        assert_ne!(pod.uid(), old_uid);
    }
    let ds: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let ds = ds.get("roller").await?;
    assert_eq!(
        ds.status.as_ref().and_then(|s| s.observed_generation),
        ds.metadata.generation
    );
    let events = events_of(&client, "roller").await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulDelete")),
        "no SuccessfulDelete event: {events:?}"
    );

    // Each template is a ControllerRevision: `rollout history` lists both, `rollout undo`
    // brings the first template back (as revision 3) and rolls it out.
    let history = cluster
        .kubectl_ok(&["rollout", "history", "ds/roller"])
        .await?;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, vec!["1", "2"], "{history}");
    cluster
        .kubectl_ok(&["rollout", "undo", "ds/roller"])
        .await?;
    cluster
        .kubectl_ok(&["rollout", "status", "ds/roller", "--timeout=80s"])
        .await?;
    let undone = wait_one_running_pod_per_node(&cluster, "roller", &nodes).await?;
    for pods in undone.values() {
        let hash = pods[0].labels().get("controller-revision-hash").cloned();
        assert_eq!(
            hash.as_deref(),
            Some(old_hash.as_str()),
            "undo did not bring the first template back"
        );
        assert!(!pods[0].annotations().contains_key("rev"));
    }
    let history = cluster
        .kubectl_ok(&["rollout", "history", "ds/roller"])
        .await?;
    assert!(
        history.lines().any(|l| l.trim_start().starts_with('3')),
        "{history}"
    );
    Ok(())
}
