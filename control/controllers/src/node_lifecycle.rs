//! The node lifecycle controller, as kube-controller-manager's node lifecycle, taint
//! eviction and pod GC controllers together:
//!
//! - every `node_monitor_period`, each Node's heartbeat (its Lease in `kube-node-lease`,
//!   or its Ready condition's `lastHeartbeatTime`) is checked; one not seen to change for
//!   `node_monitor_grace_period` (measured on this process's clock, as client-go does)
//!   gets Ready, MemoryPressure, DiskPressure and PIDPressure `Unknown`
//!   (`NodeStatusUnknown`, "Kubelet stopped posting node status."); a `NodeNotReady` Event,
//!   and its pods' Ready condition set False, mark the transition;
//! - the node's taints follow its conditions ([`health::desired_taints`]):
//!   `node.kubernetes.io/unreachable` (Ready Unknown) or `not-ready` (Ready False) as
//!   NoExecute and NoSchedule, removed when the agent reports Ready again;
//! - every second, pods on nodes with NoExecute taints they do not tolerate are evicted
//!   ([`eviction::eviction_time`]): a `TaintManagerEviction` Event, the `DisruptionTarget`
//!   condition, and a graceful delete (the agent confirms it when it comes back; the
//!   ReplicaSet controller replaces terminating pods meanwhile);
//! - pod GC: pods bound to nodes that no longer exist, and terminating pods on not-ready
//!   nodes tainted `node.kubernetes.io/out-of-service`, are marked Failed and deleted at
//!   once (no agent will ever confirm them).

mod eviction;
mod health;
mod podgc;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use serde_json::json;
use tokio::task::JoinSet;
use wasmkube_client::status::{is_conflict, is_not_found};

use crate::context::{Context, NORMAL, Recorder};
use eviction::Eviction;
use health::Heartbeat;
use wasmkube_client::informers::SharedInformerFactory;

/// The namespace of the nodes' Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often pods on NoExecute-tainted nodes are checked.
const EVICTION_PERIOD: Duration = Duration::from_secs(1);
/// How often pod GC runs (Kubernetes' `gcCheckPeriod`).
const POD_GC_PERIOD: Duration = Duration::from_secs(20);

/// The node lifecycle controller over the shared node, Lease and pod informers; runs until
/// the task is aborted.
pub(crate) fn run(
    ctx: Arc<Context>,
    informers: &SharedInformerFactory,
) -> impl Future<Output = ()> + Send + 'static {
    let nodes = informers.informer::<Node>();
    let leases = informers.informer::<Lease>();
    let pods = informers.informer::<Pod>();
    async move {
        if !(nodes.wait_synced().await && leases.wait_synced().await && pods.wait_synced().await) {
            return;
        }
        let caches = Caches {
            nodes: nodes.store(),
            leases: leases.store(),
            pods: pods.store(),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(monitor_nodes(
            ctx.clone(),
            caches.clone(),
            ctx.recorder("node-controller"),
        ));
        tasks.spawn(evict_pods(
            ctx.clone(),
            caches.clone(),
            ctx.recorder("taint-eviction-controller"),
        ));
        tasks.spawn(podgc::run(
            ctx.clone(),
            caches.nodes.clone(),
            caches.pods.clone(),
        ));
        while tasks.join_next().await.is_some() {}
    }
}

/// The stores read (the shared informers'; Leases of every namespace, of which the nodes'
/// are in `kube-node-lease`).
#[derive(Clone)]
struct Caches {
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
}

/// What the monitor remembers of one node.
struct Tracked {
    heartbeat: Heartbeat,
    /// The Ready status last observed (to report transitions once).
    ready: Option<String>,
    /// Pods still to be marked not ready after a failed attempt.
    mark_pods_pending: bool,
}

/// Checks every node's health every `node_monitor_period`, forever.
async fn monitor_nodes(ctx: Arc<Context>, caches: Caches, recorder: Recorder) {
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut ticker = tokio::time::interval(ctx.config.node_monitor_period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let nodes = caches.nodes.state();
        let names: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        tracked.retain(|name, _| names.contains(name.as_str()));
        for node in nodes {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let lease_renew = caches
                .leases
                .get(&reflector::ObjectRef::new(&name).within(LEASE_NAMESPACE))
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            let conditions = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let ready_heartbeat = conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
            let entry = tracked.entry(name.clone()).or_insert_with(|| {
                recorder.publish(
                    node.as_ref(),
                    NORMAL,
                    "RegisteredNode",
                    format!("Node {name} event: Registered Node {name} in Controller"),
                );
                Tracked {
                    heartbeat: Heartbeat::new(now, ready_heartbeat, lease_renew),
                    ready: health::condition_status(&conditions, "Ready").map(str::to_string),
                    mark_pods_pending: false,
                }
            });
            entry.heartbeat.observe(now, ready_heartbeat, lease_renew);
            let mut current = conditions.clone();
            if entry
                .heartbeat
                .is_silent(now, ctx.config.node_monitor_grace_period)
                && let Some(unknown) = health::silent_node_conditions(&conditions, Timestamp::now())
            {
                tracing::warn!(node = %name, "node lifecycle: the node stopped posting its status; marking it unknown");
                let patch = json!({"status": {"conditions": unknown}});
                let api: Api<Node> = Api::all(ctx.client.clone());
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => current = unknown,
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "node lifecycle: updating the node status failed");
                        continue;
                    }
                }
            }
            let ready = health::condition_status(&current, "Ready").map(str::to_string);
            if ready.as_deref() != Some("True") && entry.ready.as_deref() == Some("True") {
                recorder.publish(
                    node.as_ref(),
                    NORMAL,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
                entry.mark_pods_pending = true;
            }
            if ready.as_deref() == Some("True") {
                entry.mark_pods_pending = false;
            } else if entry.mark_pods_pending {
                entry.mark_pods_pending = !mark_pods_not_ready(&ctx, &caches.pods, &name).await;
            }
            entry.ready = ready;
            update_taints(&ctx, &node, &current).await;
        }
    }
}

/// Sets the taints the node's conditions call for, if they differ.
async fn update_taints(
    ctx: &Context,
    node: &Node,
    conditions: &[k8s_openapi::api::core::v1::NodeCondition],
) {
    let Some(name) = node.metadata.name.as_deref() else {
        return;
    };
    let spec = node.spec.clone().unwrap_or_default();
    let existing = spec.taints.clone().unwrap_or_default();
    let unschedulable = spec.unschedulable.unwrap_or(false);
    let Some(taints) =
        health::desired_taints(&existing, conditions, unschedulable, Timestamp::now())
    else {
        return;
    };
    tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node lifecycle: updating the node's taints");
    // Named by resourceVersion: a concurrent change (kubectl taint) wins, and is looked
    // at again next period.
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }},
    });
    let api: Api<Node> = Api::all(ctx.client.clone());
    if let Err(e) = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(node = %name, error = %e, "node lifecycle: updating the taints failed; retrying next period");
    }
}

/// Sets the Ready condition of the pods on `node` to False (Kubernetes'
/// `MarkPodsNotReady`). Whether every pod was updated.
async fn mark_pods_not_ready(ctx: &Context, pods: &Store<Pod>, node: &str) -> bool {
    let mut all = true;
    let on_node =
        pods.state_filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node));
    for pod in on_node {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let mut conditions = status.conditions.clone().unwrap_or_default();
        let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready") else {
            continue;
        };
        if ready.status != "True" {
            continue;
        }
        ready.status = "False".into();
        ready.last_transition_time = Some(Time(Timestamp::now()));
        if !patch_pod_conditions(ctx, &pod, conditions).await {
            all = false;
        }
    }
    all
}

/// Writes a pod's conditions (tested against its uid).
async fn patch_pod_conditions(ctx: &Context, pod: &Pod, conditions: Vec<PodCondition>) -> bool {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return true;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "metadata": {"uid": pod.metadata.uid},
        "status": {"conditions": conditions},
    });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => true,
        Err(e) if is_not_found(&e) => true,
        Err(e) => {
            tracing::debug!(pod = %name, error = %e, "node lifecycle: updating pod conditions failed");
            false
        }
    }
}

/// Evicts pods from nodes with NoExecute taints they do not tolerate (long enough).
async fn evict_pods(ctx: Arc<Context>, caches: Caches, recorder: Recorder) {
    let mut ticker = tokio::time::interval(EVICTION_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pods deleted whose deletion the watch has not shown yet: evicted once.
    let mut evicted: HashSet<String> = HashSet::new();
    loop {
        ticker.tick().await;
        let live: HashSet<String> = caches
            .pods
            .state()
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        evicted.retain(|uid| live.contains(uid));
        let tainted: HashMap<String, Vec<k8s_openapi::api::core::v1::Taint>> = caches
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let taints: Vec<_> = n
                    .spec
                    .as_ref()?
                    .taints
                    .iter()
                    .flatten()
                    .filter(|t| t.effect == "NoExecute")
                    .cloned()
                    .collect();
                (!taints.is_empty()).then(|| (n.metadata.name.clone().unwrap_or_default(), taints))
            })
            .collect();
        if tainted.is_empty() {
            continue;
        }
        let now = Timestamp::now();
        for pod in caches.pods.state() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || evicted.contains(&uid) {
                continue;
            }
            let Some(spec) = pod.spec.as_ref() else {
                continue;
            };
            let Some(taints) = spec.node_name.as_ref().and_then(|n| tainted.get(n)) else {
                continue;
            };
            let tolerations = spec.tolerations.clone().unwrap_or_default();
            let due = matches!(
                eviction::eviction_time(taints, &tolerations, now),
                Eviction::At(at) if at <= now
            );
            if due && evict(&ctx, &recorder, &pod).await {
                evicted.insert(uid);
            }
        }
    }
}

/// Evicts one pod: Event, DisruptionTarget condition, graceful delete of that uid.
/// Whether it is done (deleted, or gone already).
async fn evict(ctx: &Context, recorder: &Recorder, pod: &Pod) -> bool {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return true;
    };
    tracing::info!(pod = %format!("{ns}/{name}"), "taint eviction: deleting a pod that does not tolerate its node's NoExecute taints");
    recorder.publish(
        pod,
        NORMAL,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {ns}/{name}"),
    );
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
    patch_pod_conditions(ctx, pod, conditions).await;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) || is_conflict(&e) => {}
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "taint eviction: deleting the pod failed; retrying");
            return false;
        }
    }
    true
}
