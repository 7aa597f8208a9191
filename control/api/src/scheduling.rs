//! Scheduling predicates, as Kubernetes' `k8s.io/component-helpers/scheduling/corev1`: pure
//! functions over API objects that the scheduler's plugins, the DaemonSet controller and the
//! node lifecycle controller's taint eviction all decide with, so they never disagree.
//!
//! - [`taints`]: whether a toleration tolerates a taint (`Toleration.ToleratesTaint`), and
//!   the first taint a pod's tolerations leave untolerated.
//! - [`node_affinity`]: `nodeSelector` and node selector terms (`matchExpressions` over
//!   labels, `matchFields` over `metadata.name`) against a node, and a pod's required node
//!   affinity (`GetRequiredNodeAffinity(pod).Match(node)`).

pub mod node_affinity;
pub mod taints;

pub use node_affinity::{
    labels_match, node_selector_matches, node_selector_term_matches, required_node_affinity_matches,
};
pub use taints::{find_matching_untolerated_taint, tolerates, tolerations_tolerate_taint};
