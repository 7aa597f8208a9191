//! wasmkube-scheduler: assigns pending pods to nodes, like kube-scheduler.
//!
//! - [`snapshot`]: the cluster as the scheduler sees it (nodes, pods per node, assumed pods).
//! - [`framework`]: filter and score plugin traits and the scheduling cycle.
//! - [`plugins`]: NodeResourcesFit, NodeName, NodeUnschedulable, NodeAffinity (with
//!   nodeSelector), TaintToleration, RuntimeClass and the balanced-allocation score.
//! - [`resources`]: pod requests and node allocatable as integers.

pub mod framework;
pub mod plugins;
pub mod resources;
pub mod snapshot;

#[cfg(test)]
mod testing;
