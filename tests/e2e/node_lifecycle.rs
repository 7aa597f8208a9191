//! Node lifecycle end to end: an agent killed with SIGKILL stops renewing its Lease; after
//! the (shortened, but longer than the agents' 10 s Lease renewals) grace period its Node
//! becomes Ready=Unknown with the unreachable taints,
//! its Deployment pods are evicted after their (shortened) default toleration and replaced
//! on the other node; when the agent comes back the node is Ready again, the taints go,
//! the evicted pods are removed, and at no time did more pods of the Deployment run than
//! it asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::harness::{TestCluster, events_of, poll_until};

/// Generous bounds for each step (grace 15 s, toleration 5 s, agent restart).
const DEADLINE: Duration = Duration::from_secs(90);
const REPLICAS: usize = 2;
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The pods that count against the Deployment's replicas: not terminating, not finished.
fn active(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect()
}

fn condition<'a>(
    node: &'a Node,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

#[tokio::test]
async fn a_killed_node_goes_unknown_its_pods_move_and_it_heals_without_duplicates() -> Result<()> {
    let Some(mut cluster) = TestCluster::builder()
        .agents(2)
        .server_arg("--node-monitor-grace-period")
        .server_arg("15")
        .server_arg("--node-monitor-period")
        .server_arg("1")
        .server_arg("--default-unreachable-toleration-seconds")
        .server_arg("5")
        .server_arg("--default-not-ready-toleration-seconds")
        .server_arg("5")
        .start_with_samples(
            "a_killed_node_goes_unknown_its_pods_move_and_it_heals_without_duplicates",
        )
        .await?
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let by_app = ListParams::default().labels("app=web");

    let spec = cluster.sample_pod("counter")?["spec"].clone();
    cluster
        .apply_json(&json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec},
            },
        }))
        .await?;
    let running = poll_until("the Deployment's pods running", DEADLINE, || async {
        let list = pods.list(&by_app).await?.items;
        let running: Vec<Pod> = list.into_iter().filter(is_running).collect();
        Ok((running.len() == REPLICAS).then_some(running))
    })
    .await?;
    // The DefaultTolerationSeconds admission default, with the server's setting.
    let tolerations = running[0]
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    ensure!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(UNREACHABLE)
                && t.effect.as_deref() == Some("NoExecute")
                && t.toleration_seconds == Some(5)),
        "default unreachable toleration of 5 s: {tolerations:?}"
    );

    // The victim is an agent running at least one of the pods.
    let names = [cluster.agent_node_name(0)?, cluster.agent_node_name(1)?];
    let victim = if running.iter().any(|p| node_of(p) == names[0]) {
        0
    } else {
        1
    };
    let (victim_node, survivor_node) = (names[victim].clone(), names[1 - victim].clone());
    let evicted: Vec<String> = running
        .iter()
        .filter(|p| node_of(p) == victim_node)
        .map(name_of)
        .collect();

    // Watch all along: never more active pods than replicas, and the surviving node
    // (renewing its Lease) never taken for unreachable.
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let survivor_flapped = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, most, flapped) = (stop.clone(), most.clone(), survivor_flapped.clone());
        let (pods, nodes, by_app) = (pods.clone(), nodes.clone(), by_app.clone());
        let survivor = survivor_node.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&by_app).await {
                    most.fetch_max(active(&list.items).len(), Ordering::Relaxed);
                }
                if let Ok(node) = nodes.get(&survivor).await
                    && (condition(&node, "Ready").is_none_or(|c| c.status != "True")
                        || has_taint(&node, UNREACHABLE, "NoExecute"))
                {
                    flapped.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    cluster.kill9_agent(victim).await?;
    let unknown = poll_until(
        "the killed node Ready=Unknown and tainted",
        DEADLINE,
        || async {
            let node = nodes.get(&victim_node).await?;
            let ready = condition(&node, "Ready").map(|c| c.status.as_str());
            let tainted = has_taint(&node, UNREACHABLE, "NoExecute")
                && has_taint(&node, UNREACHABLE, "NoSchedule");
            Ok((ready == Some("Unknown") && tainted).then_some(node))
        },
    )
    .await?;
    let ready = condition(&unknown, "Ready").context("no Ready condition")?;
    ensure!(
        ready.reason.as_deref() == Some("NodeStatusUnknown"),
        "{ready:?}"
    );
    ensure!(
        ready.message.as_deref() == Some("Kubelet stopped posting node status."),
        "{ready:?}"
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        ensure!(
            condition(&unknown, type_).is_some_and(|c| c.status == "Unknown"),
            "{type_} is Unknown too"
        );
    }
    poll_until("a NodeNotReady event on the node", DEADLINE, || async {
        let events = events_of(&client, &victim_node).await?;
        Ok(events
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("NodeNotReady")
                    && e.message.as_deref()
                        == Some(&format!("Node {victim_node} status is now: NodeNotReady"))
            })
            .then_some(()))
    })
    .await?;

    // Evicted after the 5 s toleration, replaced on the other node.
    for name in &evicted {
        poll_until(&format!("pod {name} evicted"), DEADLINE, || async {
            let pod = pods.get(name).await?;
            let events = events_of(&client, name).await?;
            let marked = events.iter().any(|e| {
                e.reason.as_deref() == Some("TaintManagerEviction")
                    && e.message.as_deref()
                        == Some(&format!("Marking for deletion Pod default/{name}"))
            });
            Ok((pod.metadata.deletion_timestamp.is_some() && marked).then_some(()))
        })
        .await?;
    }
    poll_until(
        "replacements running on the surviving node",
        DEADLINE,
        || async {
            let list = pods.list(&by_app).await?.items;
            let ok = active(&list)
                .iter()
                .filter(|p| is_running(p) && node_of(p) == survivor_node)
                .count()
                == REPLICAS;
            Ok(ok.then_some(()))
        },
    )
    .await?;

    // The agent comes back: Ready, untainted, the evicted pods confirmed gone.
    cluster.restart_agent(victim).await?;
    poll_until(
        "the node Ready again without the taints",
        DEADLINE,
        || async {
            let node = nodes.get(&victim_node).await?;
            let ready = condition(&node, "Ready").is_some_and(|c| c.status == "True");
            let clean = !has_taint(&node, UNREACHABLE, "NoExecute")
                && !has_taint(&node, UNREACHABLE, "NoSchedule")
                && !has_taint(&node, "node.kubernetes.io/not-ready", "NoExecute");
            Ok((ready && clean).then_some(()))
        },
    )
    .await?;
    poll_until("the evicted pods removed", DEADLINE, || async {
        let list = pods.list(&by_app).await?.items;
        let left = list.iter().any(|p| evicted.contains(&name_of(p)));
        Ok((!left && list.len() == REPLICAS && list.iter().all(is_running)).then_some(()))
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    ensure!(
        !survivor_flapped.load(Ordering::Relaxed),
        "the surviving node was marked not ready or unreachable"
    );
    let most = most.load(Ordering::Relaxed);
    ensure!(
        most <= REPLICAS,
        "at some point {most} pods of a {REPLICAS}-replica Deployment were active"
    );
    Ok(())
}
