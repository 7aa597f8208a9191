//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`, what `kubectl cordon` sets)
//! take no new pods, unless the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;

use wasmkube_api::scheduling::tolerates;

use super::taint_toleration::effective_tolerations;
use crate::framework::{CycleState, FilterPlugin, Unschedulable};
use crate::snapshot::{NodeInfo, PodInfo};

/// kube-scheduler's reason.
pub(crate) const REASON: &str = "node(s) were unschedulable";

/// The taint a cordoned node is treated as having.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Filters out cordoned nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        state: &CycleState,
    ) -> Result<(), Unschedulable> {
        if !node.unschedulable() {
            return Ok(());
        }
        let taint = Taint {
            key: UNSCHEDULABLE_TAINT_KEY.to_string(),
            effect: "NoSchedule".to_string(),
            value: None,
            time_added: None,
        };
        if effective_tolerations(pod, state).any(|t| tolerates(t, &taint)) {
            Ok(())
        } else {
            Err(Unschedulable::unresolvable(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, node, node_info, pod, toleration, with_spec};

    fn cordoned() -> NodeInfo {
        let mut n = node("n1", "1", "1Gi");
        if let Some(spec) = n.spec.as_mut() {
            spec.unschedulable = Some(true);
        }
        node_info(n)
    }

    #[test]
    fn a_cordoned_node_takes_no_pods() {
        let p = info(pod("p"));
        assert_eq!(
            NodeUnschedulable.filter(&p, &cordoned(), &CycleState::new()),
            Err(Unschedulable::unresolvable(REASON))
        );
    }

    #[test]
    fn a_schedulable_node_takes_pods() {
        let p = info(pod("p"));
        let n = node_info(node("n1", "1", "1Gi"));
        assert!(NodeUnschedulable.filter(&p, &n, &CycleState::new()).is_ok());
    }

    #[test]
    fn a_pod_tolerating_the_unschedulable_taint_goes_to_a_cordoned_node() {
        let p = info(with_spec(pod("p"), |s| {
            s.tolerations = Some(vec![toleration(
                UNSCHEDULABLE_TAINT_KEY,
                "Exists",
                "",
                "NoSchedule",
            )])
        }));
        assert!(
            NodeUnschedulable
                .filter(&p, &cordoned(), &CycleState::new())
                .is_ok()
        );
    }
}
