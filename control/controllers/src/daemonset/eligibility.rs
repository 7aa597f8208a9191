//! Which nodes run a DaemonSet's pod, and how a daemon pod is pinned to its node, as
//! Kubernetes' `NodeShouldRunDaemonPod` and `daemon/util` do it.
//!
//! A node should run the pod when the template's `nodeName` (if any) is the node, its
//! `nodeSelector` and required node affinity match the node, and every `NoSchedule` and
//! `NoExecute` taint of the node is tolerated by the template's tolerations plus the ones
//! every daemon pod gets ([`add_daemon_tolerations`]: not-ready and unreachable `NoExecute`,
//! disk/memory/pid pressure and unschedulable `NoSchedule`). A pod already on a node may
//! keep running there if only `NoSchedule` taints are untolerated. `spec.unschedulable`
//! (cordon) does not matter: daemon pods tolerate it.
//!
//! Daemon pods are bound by the scheduler like any pod; the controller pins each to its node
//! with a required node affinity on the node's `metadata.name` (`matchFields`), which
//! replaces the template's required terms (the node was already checked against them).

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use wasmkube_api::scheduling::{find_matching_untolerated_taint, required_node_affinity_matches};

/// The tolerations every daemon pod gets (`AddOrUpdateDaemonPodTolerations`).
const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// Added too when the pod uses the host network.
const NETWORK_UNAVAILABLE: (&str, &str) = ("node.kubernetes.io/network-unavailable", "NoSchedule");

/// Whether a node should run the daemon pod, and whether a pod already there may stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Eligibility {
    /// A pod should be created on the node if it has none.
    pub(crate) should_run: bool,
    /// A pod already on the node may keep running.
    pub(crate) should_continue_running: bool,
}

fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
}

/// Adds (or replaces, when key, operator, value and effect match) one toleration.
fn add_or_update_toleration(spec: &mut PodSpec, toleration: Toleration) {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    match tolerations
        .iter_mut()
        .find(|t| same_toleration(t, &toleration))
    {
        Some(existing) => *existing = toleration,
        None => tolerations.push(toleration),
    }
}

/// Adds the tolerations every daemon pod has.
pub(crate) fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let extra = host_network.then_some(&NETWORK_UNAVAILABLE);
    for (key, effect) in DAEMON_TOLERATIONS.iter().chain(extra) {
        add_or_update_toleration(
            spec,
            Toleration {
                key: Some((*key).to_string()),
                operator: Some("Exists".to_string()),
                effect: Some((*effect).to_string()),
                value: None,
                toleration_seconds: None,
            },
        );
    }
}

/// Whether `node` should run a pod of the DaemonSet whose pod template spec is `template`.
pub(crate) fn eligibility(template: &PodSpec, node: &Node) -> Eligibility {
    let never = Eligibility {
        should_run: false,
        should_continue_running: false,
    };
    let name = node.metadata.name.as_deref().unwrap_or("");
    if template
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return never;
    }
    if !required_node_affinity_matches(template, node) {
        return never;
    }
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    let tolerations = spec.tolerations.unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let hard = |t: &Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
    if find_matching_untolerated_taint(taints, &tolerations, hard).is_some() {
        let evicting = |t: &Taint| t.effect == "NoExecute";
        return Eligibility {
            should_run: false,
            should_continue_running: find_matching_untolerated_taint(
                taints,
                &tolerations,
                evicting,
            )
            .is_none(),
        };
    }
    Eligibility {
        should_run: true,
        should_continue_running: true,
    }
}

/// The node a daemon pod is for: its `nodeName`, else the `metadata.name In [node]` field
/// requirement of its required node affinity (`GetTargetNodeName`).
pub(crate) fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([one]) => Some(one.as_str()),
            _ => None,
        })
}

/// Pins `spec` to `node` with a required node affinity term on `metadata.name`, replacing the
/// required terms (`ReplaceDaemonSetPodNodeNameNodeAffinity`); preferred terms stay.
pub(crate) fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_string(),
                operator: "In".to_string(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(selector);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            effect: effect.to_string(),
                            value: None,
                            time_added: None,
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    const EVERYWHERE: Eligibility = Eligibility {
        should_run: true,
        should_continue_running: true,
    };
    const NOWHERE: Eligibility = Eligibility {
        should_run: false,
        should_continue_running: false,
    };

    #[test]
    fn node_selectors_and_required_affinity_choose_the_nodes() {
        let mut spec = PodSpec {
            node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
            ..PodSpec::default()
        };
        assert_eq!(
            eligibility(&spec, &node("a", &[("disk", "ssd")], &[])),
            EVERYWHERE
        );
        assert_eq!(
            eligibility(&spec, &node("b", &[("disk", "hdd")], &[])),
            NOWHERE
        );
        spec.node_selector = None;
        pin_to_node(&mut spec, "b");
        assert_eq!(eligibility(&spec, &node("a", &[], &[])), NOWHERE);
        assert_eq!(eligibility(&spec, &node("b", &[], &[])), EVERYWHERE);
    }

    #[test]
    fn untolerated_no_schedule_taints_keep_new_pods_out_but_let_old_ones_stay() {
        let spec = PodSpec::default();
        let gpu = node("g", &[], &[("gpu", "NoSchedule")]);
        let e = eligibility(&spec, &gpu);
        assert!(!e.should_run && e.should_continue_running);
        let evicting = node("e", &[], &[("dedicated", "NoExecute")]);
        assert_eq!(eligibility(&spec, &evicting), NOWHERE);
        let tolerant = PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("gpu".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }]),
            ..PodSpec::default()
        };
        assert_eq!(eligibility(&tolerant, &gpu), EVERYWHERE);
    }

    #[test]
    fn daemon_pods_tolerate_node_conditions_and_cordons() {
        let spec = PodSpec::default();
        let troubled = node(
            "t",
            &[],
            &[
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unreachable", "NoExecute"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ],
        );
        assert_eq!(eligibility(&spec, &troubled), EVERYWHERE);
    }

    #[test]
    fn daemon_tolerations_replace_a_matching_one_and_keep_the_rest() {
        let mut spec = PodSpec {
            tolerations: Some(vec![
                Toleration {
                    key: Some("node.kubernetes.io/not-ready".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(300),
                    value: None,
                },
                Toleration {
                    key: Some("mine".into()),
                    ..Toleration::default()
                },
            ]),
            ..PodSpec::default()
        };
        add_daemon_tolerations(&mut spec);
        let tolerations = spec.tolerations.unwrap_or_default();
        assert_eq!(tolerations.len(), 7);
        assert_eq!(tolerations[0].toleration_seconds, None);
        assert_eq!(tolerations[1].key.as_deref(), Some("mine"));
    }

    #[test]
    fn pinned_pods_name_their_target_node() {
        let mut spec = PodSpec::default();
        pin_to_node(&mut spec, "n7");
        let pod = Pod {
            spec: Some(spec),
            ..Pod::default()
        };
        assert_eq!(target_node(&pod), Some("n7"));
        let bound = Pod {
            spec: Some(PodSpec {
                node_name: Some("n8".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(target_node(&bound), Some("n8"));
        assert_eq!(target_node(&Pod::default()), None);
    }
}
