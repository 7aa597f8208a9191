//! NodeName: a pod that names its node (`spec.nodeName`) fits only that node.

use crate::framework::{CycleState, FilterPlugin, Unschedulable};
use crate::snapshot::{NodeInfo, PodInfo};

/// kube-scheduler's reason.
pub(crate) const REASON: &str = "node(s) didn't match the requested node name";

/// Filters out every node but the one named in `spec.nodeName`, if any.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        _state: &CycleState,
    ) -> Result<(), Unschedulable> {
        match pod.node_name() {
            Some(wanted) if wanted != node.name() => Err(Unschedulable::unresolvable(REASON)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, node, node_info, pod, with_spec};

    #[test]
    fn a_pod_without_node_name_fits_any_node() {
        let p = info(pod("p"));
        let n = node_info(node("n1", "1", "1Gi"));
        assert!(NodeName.filter(&p, &n, &CycleState::new()).is_ok());
    }

    #[test]
    fn a_pod_naming_another_node_does_not_fit() {
        let p = info(with_spec(pod("p"), |s| s.node_name = Some("n2".into())));
        let n1 = node_info(node("n1", "1", "1Gi"));
        let n2 = node_info(node("n2", "1", "1Gi"));
        let state = CycleState::new();
        assert_eq!(
            NodeName.filter(&p, &n1, &state),
            Err(Unschedulable::unresolvable(REASON))
        );
        assert!(NodeName.filter(&p, &n2, &state).is_ok());
    }
}
