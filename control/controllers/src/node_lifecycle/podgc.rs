//! Pod garbage collection of pods no agent will ever finish, as Kubernetes' PodGC
//! controller (`gcOrphaned`, `gcTerminating`): pods bound to a node that does not exist
//! (checked with a fresh GET, never on a cache miss alone), and terminating pods on a
//! not-ready node tainted `node.kubernetes.io/out-of-service`, are marked Failed with a
//! `DisruptionTarget` condition and deleted at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::POD_GC_PERIOD;
use crate::context::Context;

/// The taint an administrator puts on a node that is down for good.
const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Why a pod is collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Collect {
    /// Its node does not exist (by the cache; confirmed before acting).
    Orphaned,
    /// Terminating on an out-of-service node.
    TerminatingOutOfService,
}

/// Decides for one pod given its node (None: not in the cache).
pub(crate) fn should_collect(pod: &Pod, node: Option<&Node>) -> Option<Collect> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let Some(node) = node else {
        return Some(Collect::Orphaned);
    };
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let out_of_service = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
    (terminating && !ready && out_of_service).then_some(Collect::TerminatingOutOfService)
}

/// Runs pod GC every [`POD_GC_PERIOD`], forever.
pub(crate) async fn run(ctx: Arc<Context>, nodes: Store<Node>, pods: Store<Pod>) {
    let mut ticker = tokio::time::interval(POD_GC_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    loop {
        ticker.tick().await;
        for pod in pods.state() {
            let node_name = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let node = nodes.get(&ObjectRef::new(&node_name));
            let Some(why) = should_collect(&pod, node.as_deref()) else {
                continue;
            };
            if why == Collect::Orphaned {
                match node_api.get_opt(&node_name).await {
                    Ok(None) => {}
                    // It exists (the cache lags) or the apiserver cannot say: leave it.
                    Ok(Some(_)) | Err(_) => continue,
                }
            }
            force_delete(&ctx, &pod, why).await;
        }
    }
}

/// Marks the pod Failed with a DisruptionTarget condition and deletes it with grace 0.
async fn force_delete(ctx: &Context, pod: &Pod, why: Collect) {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return;
    };
    tracing::info!(pod = %format!("{ns}/{name}"), ?why, "pod GC: force deleting a pod no node will finish");
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if !matches!(phase, Some("Succeeded" | "Failed")) {
        let mut conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        let (reason, message) = match why {
            Collect::Orphaned => ("DeletionByPodGC", "PodGC: node no longer exists"),
            Collect::TerminatingOutOfService => {
                ("DeletionByPodGC", "PodGC: node is out of service")
            }
        };
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        });
        let patch = json!({
            "metadata": {"uid": pod.metadata.uid},
            "status": {"phase": "Failed", "conditions": conditions},
        });
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "pod GC: marking the pod failed did not work");
        }
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = api.delete(name, &params).await {
        tracing::debug!(pod = %name, error = %e, "pod GC: deleting the pod failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec, Taint};

    fn pod(node: &str, terminating: bool) -> Pod {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        if terminating {
            p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        p
    }

    fn node(ready: &str, taints: &[&str]) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|k| Taint {
                            key: k.to_string(),
                            effect: "NoExecute".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_of_missing_nodes_are_orphans_and_unscheduled_pods_are_not() {
        assert_eq!(
            should_collect(&pod("gone", false), None),
            Some(Collect::Orphaned)
        );
        assert_eq!(should_collect(&pod("", false), None), None);
    }

    #[test]
    fn terminating_pods_are_collected_only_on_not_ready_out_of_service_nodes() {
        let oos = node("Unknown", &[OUT_OF_SERVICE_TAINT]);
        assert_eq!(
            should_collect(&pod("a", true), Some(&oos)),
            Some(Collect::TerminatingOutOfService)
        );
        assert_eq!(should_collect(&pod("a", false), Some(&oos)), None);
        let unreachable = node("Unknown", &["node.kubernetes.io/unreachable"]);
        assert_eq!(should_collect(&pod("a", true), Some(&unreachable)), None);
        let ready = node("True", &[OUT_OF_SERVICE_TAINT]);
        assert_eq!(should_collect(&pod("a", true), Some(&ready)), None);
    }
}
