//! The scheduler's view of the cluster: nodes, the pods on each node, RuntimeClasses.
//!
//! The [`Snapshot`] is fed by the watches (bound pods, nodes, RuntimeClasses) and by the
//! scheduler itself: a pod it has just decided on is *assumed* onto its node at once, so the
//! next pods of a burst see the resources as taken before the binding reaches the apiserver
//! and comes back through the watch. The watch then *confirms* the assumed pod (or moves it,
//! if another scheduler won the race); a failed binding *forgets* it.
//!
//! One task (the scheduling loop) owns the snapshot and changes it between scheduling
//! cycles, so plugins read a consistent picture without copying it. Every [`NodeInfo`] keeps
//! the sum of its pods' requests and the pods themselves, which is what resource fit needs
//! now and what inter-pod affinity and topology spreading will need later.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::node::v1::RuntimeClass;

use crate::labels::{LabelIndex, NodeLabels};
use crate::resources::{Allocatable, PodRequests, Resources};

/// A pod with what the scheduler computes about it once.
#[derive(Debug)]
pub struct PodInfo {
    /// The pod as the watch delivered it.
    pub pod: Arc<Pod>,
    /// `metadata.uid` (the identity used everywhere in the scheduler).
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Its requests, parsed.
    pub requests: PodRequests,
}

impl PodInfo {
    /// Wraps a pod, computing its requests.
    pub fn new(pod: Pod) -> Self {
        let pod = Arc::new(pod);
        PodInfo {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            requests: PodRequests::of(&pod),
            pod,
        }
    }

    /// `spec.nodeName`, if bound.
    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

/// One node and what is placed on it.
#[derive(Debug)]
pub struct NodeInfo {
    name: String,
    node: Option<Arc<Node>>,
    /// What the node offers (`status.allocatable`).
    pub allocatable: Allocatable,
    /// The sum of the requests of the pods on the node (bound and assumed).
    pub requested: Resources,
    /// CPU requested for scoring, with defaults for containers without requests.
    pub non_zero_milli_cpu: i64,
    /// Memory requested for scoring, with defaults for containers without requests.
    pub non_zero_memory: i64,
    unschedulable: bool,
    /// Whether any taint has effect `NoSchedule` or `NoExecute`.
    hard_taints: bool,
    /// Whether any taint has effect `PreferNoSchedule`.
    soft_taints: bool,
    labels: NodeLabels,
    pods: Vec<Arc<PodInfo>>,
}

impl NodeInfo {
    /// A node with no pods, outside any snapshot (its labels are numbered against a
    /// private index, so selectors compiled against a snapshot do not apply to it).
    #[cfg(test)]
    pub(crate) fn new(node: Node) -> Self {
        let mut info = NodeInfo::empty(node.metadata.name.clone().unwrap_or_default());
        info.set_node(node, &mut LabelIndex::default());
        info
    }

    fn empty(name: String) -> Self {
        NodeInfo {
            name,
            node: None,
            allocatable: Allocatable::default(),
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            unschedulable: false,
            hard_taints: false,
            soft_taints: false,
            labels: NodeLabels::default(),
            pods: Vec::new(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Node object. `None` only for a node the scheduler knows pods of but whose Node
    /// object it has not seen (yet, or any more); such nodes are never offered to plugins.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref()
    }

    /// `spec.unschedulable` (cordoned).
    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    /// Whether the node has a `NoSchedule` or `NoExecute` taint (without touching the
    /// Node object: this is on the hot path).
    pub fn has_hard_taints(&self) -> bool {
        self.hard_taints
    }

    /// Whether the node has a `PreferNoSchedule` taint.
    pub fn has_soft_taints(&self) -> bool {
        self.soft_taints
    }

    /// The node's labels as numbers of the snapshot's [`LabelIndex`].
    pub fn labels(&self) -> &NodeLabels {
        &self.labels
    }

    /// `spec.taints`.
    pub fn taints(&self) -> &[Taint] {
        self.node
            .as_deref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }

    /// The pods on the node, bound or assumed.
    pub fn pods(&self) -> &[Arc<PodInfo>] {
        &self.pods
    }

    /// Replaces the Node object, keeping the pods; numbers its labels in `index`.
    fn set_node(&mut self, node: Node, index: &mut LabelIndex) {
        self.allocatable = Allocatable::of(&node);
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let taints = spec.and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
        self.hard_taints = taints
            .iter()
            .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
        self.soft_taints = taints.iter().any(|t| t.effect == "PreferNoSchedule");
        self.labels = index.intern(node.metadata.labels.as_ref());
        self.node = Some(Arc::new(node));
    }

    /// Places a pod on the node and counts its requests.
    pub(crate) fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests.resources);
        self.non_zero_milli_cpu = self
            .non_zero_milli_cpu
            .saturating_add(pod.requests.non_zero_milli_cpu);
        self.non_zero_memory = self
            .non_zero_memory
            .saturating_add(pod.requests.non_zero_memory);
        self.pods.push(pod);
    }

    /// Takes a pod off the node; `false` if it was not there.
    pub(crate) fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else {
            return false;
        };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests.resources);
        self.non_zero_milli_cpu = self
            .non_zero_milli_cpu
            .saturating_sub(pod.requests.non_zero_milli_cpu);
        self.non_zero_memory = self
            .non_zero_memory
            .saturating_sub(pod.requests.non_zero_memory);
        true
    }
}

/// How a node update changed what the scheduler can place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChange {
    /// A node the scheduler had not seen.
    Added,
    /// Allocatable, labels, taints or cordon changed: pending pods may fit now.
    SchedulingRelevant,
    /// Only other fields (conditions, heartbeats) changed.
    Other,
}

#[derive(Debug)]
struct PodPlacement {
    node: String,
    assumed: bool,
}

/// The cluster as the scheduler sees it. See the module documentation.
#[derive(Debug, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    live_nodes: usize,
    pods: HashMap<String, PodPlacement>,
    runtime_classes: HashMap<String, Arc<RuntimeClass>>,
    label_index: LabelIndex,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Snapshot::default()
    }

    /// All node entries, including ones without a Node object (check [`NodeInfo::node`]).
    pub fn node_infos(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// How many nodes (with a Node object) there are.
    pub fn num_nodes(&self) -> usize {
        self.live_nodes
    }

    /// One node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// The numbering of the nodes' labels, for compiling selectors.
    pub fn label_index(&self) -> &LabelIndex {
        &self.label_index
    }

    /// A RuntimeClass by name.
    pub fn runtime_class(&self, name: &str) -> Option<&RuntimeClass> {
        self.runtime_classes.get(name).map(Arc::as_ref)
    }

    /// How many pods are placed (bound or assumed).
    pub fn num_pods(&self) -> usize {
        self.pods.len()
    }

    /// Whether the pod is assumed and its binding not yet seen by the watch.
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// Where a pod is placed (bound or assumed).
    pub fn placement(&self, uid: &str) -> Option<&str> {
        self.pods.get(uid).map(|p| p.node.as_str())
    }

    /// Adds or replaces a node; says what changed.
    pub fn upsert_node(&mut self, node: Node) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        let i = self.entry(&name);
        let info = &mut self.nodes[i];
        let change = match &info.node {
            None => {
                self.live_nodes += 1;
                NodeChange::Added
            }
            Some(old) if scheduling_relevant_change(old, &node) => NodeChange::SchedulingRelevant,
            Some(_) => NodeChange::Other,
        };
        info.set_node(node, &mut self.label_index);
        change
    }

    /// Removes a node; its pods stay counted until their own deletion arrives.
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].node.take().is_some() {
            self.live_nodes -= 1;
        }
        if self.nodes[i].pods.is_empty() {
            self.drop_entry(name);
        }
    }

    /// Records a bound pod from the watch: confirms an assumed pod, moves a pod the
    /// scheduler assumed elsewhere, or refreshes the stored object.
    pub fn add_bound_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name().map(str::to_string) else {
            return;
        };
        self.remove_pod(&pod.uid);
        self.place(pod, &node, false);
    }

    /// Places a pod the scheduler has just chosen a node for, before the binding is written.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_pod(&pod.uid);
        self.place(pod, node, true);
    }

    /// Undoes [`Snapshot::assume`] after a failed binding; a no-op once the watch has
    /// confirmed the pod.
    pub fn forget(&mut self, uid: &str) {
        if self.is_assumed(uid) {
            self.remove_pod(uid);
        }
    }

    /// Removes a pod (deleted, finished). Returns whether it was placed.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(placement) = self.pods.remove(uid) else {
            return false;
        };
        if let Some(&i) = self.index.get(&placement.node) {
            self.nodes[i].remove_pod(uid);
            if self.nodes[i].node.is_none() && self.nodes[i].pods.is_empty() {
                self.drop_entry(&placement.node);
            }
        }
        true
    }

    /// Adds or replaces a RuntimeClass.
    pub fn upsert_runtime_class(&mut self, class: RuntimeClass) {
        let name = class.metadata.name.clone().unwrap_or_default();
        self.runtime_classes.insert(name, Arc::new(class));
    }

    /// Removes a RuntimeClass.
    pub fn remove_runtime_class(&mut self, name: &str) {
        self.runtime_classes.remove(name);
    }

    /// Names of all nodes with a Node object (for relist reconciliation).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// UIDs of all pods the watch has confirmed (for relist reconciliation).
    pub fn bound_pod_uids(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Names of all RuntimeClasses (for relist reconciliation).
    pub fn runtime_class_names(&self) -> Vec<String> {
        self.runtime_classes.keys().cloned().collect()
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        let i = self.entry(node);
        self.pods.insert(
            pod.uid.clone(),
            PodPlacement {
                node: node.to_string(),
                assumed,
            },
        );
        self.nodes[i].add_pod(pod);
    }

    fn entry(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.nodes.push(NodeInfo::empty(name.to_string()));
        let i = self.nodes.len() - 1;
        self.index.insert(name.to_string(), i);
        i
    }

    fn drop_entry(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }
}

fn scheduling_relevant_change(old: &Node, new: &Node) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
            != new.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
        || old.status.as_ref().map(|s| &s.allocatable)
            != new.status.as_ref().map(|s| &s.allocatable)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{node, pod_with_requests};

    fn bound(mut pod: Pod, node: &str) -> Arc<PodInfo> {
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.into());
        }
        Arc::new(PodInfo::new(pod))
    }

    #[test]
    fn bound_pods_count_against_their_node() {
        let mut s = Snapshot::new();
        s.upsert_node(node("n1", "4", "8Gi"));
        s.add_bound_pod(bound(pod_with_requests("a", "1", "1Gi"), "n1"));
        s.add_bound_pod(bound(pod_with_requests("b", "500m", "1Gi"), "n1"));
        let n1 = s.node("n1").expect("n1");
        assert_eq!(n1.requested.milli_cpu, 1500);
        assert_eq!(n1.pods().len(), 2);
        assert!(s.remove_pod("a"));
        assert_eq!(s.node("n1").expect("n1").requested.milli_cpu, 500);
    }

    #[test]
    fn an_assumed_pod_is_confirmed_by_the_watch_without_double_counting() {
        let mut s = Snapshot::new();
        s.upsert_node(node("n1", "4", "8Gi"));
        let p = Arc::new(PodInfo::new(pod_with_requests("a", "1", "1Gi")));
        s.assume(p, "n1");
        assert!(s.is_assumed("a"));
        s.add_bound_pod(bound(pod_with_requests("a", "1", "1Gi"), "n1"));
        assert!(!s.is_assumed("a"));
        assert_eq!(s.node("n1").expect("n1").requested.milli_cpu, 1000);
        s.forget("a");
        assert_eq!(s.placement("a"), Some("n1"));
    }

    #[test]
    fn a_pod_bound_elsewhere_moves_from_its_assumed_node() {
        let mut s = Snapshot::new();
        s.upsert_node(node("n1", "4", "8Gi"));
        s.upsert_node(node("n2", "4", "8Gi"));
        s.assume(
            Arc::new(PodInfo::new(pod_with_requests("a", "1", "1Gi"))),
            "n1",
        );
        s.add_bound_pod(bound(pod_with_requests("a", "1", "1Gi"), "n2"));
        assert_eq!(s.node("n1").expect("n1").requested.milli_cpu, 0);
        assert_eq!(s.node("n2").expect("n2").requested.milli_cpu, 1000);
    }

    #[test]
    fn forgetting_an_assumed_pod_frees_its_resources() {
        let mut s = Snapshot::new();
        s.upsert_node(node("n1", "4", "8Gi"));
        s.assume(
            Arc::new(PodInfo::new(pod_with_requests("a", "1", "1Gi"))),
            "n1",
        );
        s.forget("a");
        assert_eq!(s.placement("a"), None);
        assert!(s.node("n1").expect("n1").requested.is_zero());
    }

    #[test]
    fn pods_on_an_unknown_node_are_kept_but_the_node_is_not_counted() {
        let mut s = Snapshot::new();
        s.add_bound_pod(bound(pod_with_requests("a", "1", "1Gi"), "ghost"));
        assert_eq!(s.num_nodes(), 0);
        assert!(s.node("ghost").is_some_and(|n| n.node().is_none()));
        assert_eq!(s.upsert_node(node("ghost", "4", "8Gi")), NodeChange::Added);
        assert_eq!(s.num_nodes(), 1);
        assert_eq!(s.node("ghost").expect("ghost").requested.milli_cpu, 1000);
        s.remove_node("ghost");
        assert_eq!(s.num_nodes(), 0);
        s.remove_pod("a");
        assert!(s.node("ghost").is_none());
    }

    #[test]
    fn removing_a_node_keeps_the_index_of_the_others_right() {
        let mut s = Snapshot::new();
        for n in ["n1", "n2", "n3"] {
            s.upsert_node(node(n, "1", "1Gi"));
        }
        s.remove_node("n1");
        assert_eq!(s.node("n3").map(NodeInfo::name), Some("n3"));
        assert_eq!(s.node("n2").map(NodeInfo::name), Some("n2"));
        assert_eq!(s.num_nodes(), 2);
    }

    #[test]
    fn heartbeat_updates_are_not_scheduling_relevant_but_cordons_are() {
        let mut s = Snapshot::new();
        let mut n = node("n1", "1", "1Gi");
        s.upsert_node(n.clone());
        n.metadata.resource_version = Some("2".into());
        assert_eq!(s.upsert_node(n.clone()), NodeChange::Other);
        if let Some(spec) = n.spec.as_mut() {
            spec.unschedulable = Some(true);
        }
        assert_eq!(s.upsert_node(n), NodeChange::SchedulingRelevant);
        assert!(s.node("n1").is_some_and(NodeInfo::unschedulable));
    }
}
