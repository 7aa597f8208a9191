//! The built-in plugins and the default plugin set.
//!
//! Names, reasons and weights follow kube-scheduler's defaults so that messages and
//! placements read the same:
//!
//! | plugin | filter | score (weight) |
//! |---|---|---|
//! | [`RuntimeClass`] | the class exists; its `scheduling.nodeSelector` | |
//! | [`NodeUnschedulable`] | cordoned nodes, unless tolerated | |
//! | [`NodeName`] | `spec.nodeName` | |
//! | [`TaintToleration`] | `NoSchedule`/`NoExecute` taints | untolerated `PreferNoSchedule` taints (3) |
//! | [`NodeAffinity`] | `nodeSelector`, required node affinity | preferred node affinity (2) |
//! | [`NodeResourcesFit`] | requests vs allocatable minus requested | least allocated (1) |
//! | [`BalancedAllocation`] | | cpu and memory used evenly (1) |
//!
//! The RuntimeClass's tolerations join the pod's own (see [`effective_tolerations`]), as
//! Kubernetes' RuntimeClass admission would merge them into the pod.

mod node_affinity;
mod node_name;
mod node_resources;
mod node_unschedulable;
mod runtime_class;
mod taint_toleration;

pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_resources::{BalancedAllocation, NodeResourcesFit};
pub use node_unschedulable::{NodeUnschedulable, UNSCHEDULABLE_TAINT_KEY};
pub use runtime_class::{RuntimeClass, RuntimeClassScheduling};
pub use taint_toleration::{TaintToleration, effective_tolerations};

use crate::framework::Framework;

/// kube-scheduler's default weights.
const TAINT_TOLERATION_WEIGHT: i64 = 3;
const NODE_AFFINITY_WEIGHT: i64 = 2;
const NODE_RESOURCES_FIT_WEIGHT: i64 = 1;
const BALANCED_ALLOCATION_WEIGHT: i64 = 1;

/// A framework with every built-in plugin, in kube-scheduler's order and weights.
///
/// RuntimeClass comes first: its pre-filter resolves the class whose tolerations the later
/// plugins read, and a node outside the class's node selector is best explained by it.
pub fn default_framework() -> Framework {
    Framework::new()
        .with_filter(RuntimeClass)
        .with_filter(NodeUnschedulable)
        .with_filter(NodeName)
        .with_filter(TaintToleration)
        .with_filter(NodeAffinity)
        .with_filter(NodeResourcesFit)
        .with_score(TaintToleration, TAINT_TOLERATION_WEIGHT)
        .with_score(NodeAffinity, NODE_AFFINITY_WEIGHT)
        .with_score(NodeResourcesFit, NODE_RESOURCES_FIT_WEIGHT)
        .with_score(BalancedAllocation, BALANCED_ALLOCATION_WEIGHT)
}
