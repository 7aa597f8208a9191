//! NodeAffinity: the pod's `nodeSelector` and `affinity.nodeAffinity`.
//!
//! Filter: every `nodeSelector` label must be on the node, and one of the
//! `requiredDuringSchedulingIgnoredDuringExecution` terms must match (terms are ORed;
//! within a term, `matchExpressions` over labels and `matchFields` over `metadata.name` are
//! ANDed). Score: the summed weights of the matching
//! `preferredDuringSchedulingIgnoredDuringExecution` terms, scaled to `0..=100`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeAffinity as NodeAffinitySpec, PodSpec};
use wasmkube_api::scheduling::{labels_match, node_selector_matches, node_selector_term_matches};

use super::taint_toleration::default_normalize;
use crate::framework::{CycleState, FilterPlugin, ScorePlugin, Unschedulable};
use crate::labels::CompiledSelector;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// kube-scheduler's reason.
pub(crate) const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Filters by `nodeSelector` and required node affinity; scores by preferred node affinity.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeAffinity;

/// The pod's `nodeSelector`, compiled against the snapshot in the pre-filter.
struct CompiledNodeSelector(CompiledSelector);

fn node_affinity(spec: &PodSpec) -> Option<&NodeAffinitySpec> {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
}

fn labels_of(node: &NodeInfo) -> Option<&BTreeMap<String, String>> {
    node.node().and_then(|n| n.metadata.labels.as_ref())
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        state: &mut CycleState,
    ) -> Result<(), Unschedulable> {
        if let Some(selector) = pod.pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) {
            state.write(CompiledNodeSelector(
                snapshot.label_index().compile(selector),
            ));
        }
        Ok(())
    }

    fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        state: &CycleState,
    ) -> Result<(), Unschedulable> {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Ok(());
        };
        if let Some(selector) = &spec.node_selector {
            let matches = match state.read::<CompiledNodeSelector>() {
                Some(compiled) => compiled.0.matches(node.labels()),
                None => labels_match(selector, labels_of(node)),
            };
            if !matches {
                return Err(Unschedulable::unresolvable(REASON));
            }
        }
        let Some(affinity) = node_affinity(spec) else {
            return Ok(());
        };
        let labels = labels_of(node);
        let required = affinity
            .required_during_scheduling_ignored_during_execution
            .as_ref();
        if let Some(required) = required
            && !node_selector_matches(required, node.name(), labels)
        {
            return Err(Unschedulable::unresolvable(REASON));
        }
        Ok(())
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, _state: &CycleState) -> i64 {
        let preferred = pod.pod.spec.as_ref().and_then(node_affinity).and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        });
        let Some(preferred) = preferred else {
            return 0;
        };
        let labels = labels_of(node);
        preferred
            .iter()
            .filter(|p| p.weight != 0)
            .filter(|p| node_selector_term_matches(&p.preference, node.name(), labels))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{info, labelled, node, node_info, pod, with_spec};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn term(expressions: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(expressions),
            match_fields: None,
        }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> PodInfo {
        info(with_spec(pod("p"), |s| {
            s.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinitySpec {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }))
    }

    fn zone_node(name: &str, zone: &str, cores: &str) -> NodeInfo {
        node_info(labelled(
            node(name, "1", "1Gi"),
            &[("zone", zone), ("cores", cores)],
        ))
    }

    fn fits(p: &PodInfo, n: &NodeInfo) -> bool {
        NodeAffinity.filter(p, n, &CycleState::new()).is_ok()
    }

    #[test]
    fn node_selector_needs_every_label() {
        let p = info(with_spec(pod("p"), |s| {
            s.node_selector = Some(BTreeMap::from([
                ("zone".to_string(), "a".to_string()),
                ("cores".to_string(), "8".to_string()),
            ]))
        }));
        assert!(fits(&p, &zone_node("n1", "a", "8")));
        assert_eq!(
            NodeAffinity.filter(&p, &zone_node("n2", "a", "4"), &CycleState::new()),
            Err(Unschedulable::unresolvable(REASON))
        );
    }

    #[test]
    fn a_node_selector_compiled_against_the_snapshot_matches_like_the_label_maps() {
        let mut s = Snapshot::new();
        s.upsert_node(labelled(
            node("n1", "1", "1Gi"),
            &[("zone", "a"), ("cores", "8")],
        ));
        s.upsert_node(labelled(
            node("n2", "1", "1Gi"),
            &[("zone", "a"), ("cores", "4")],
        ));
        s.upsert_node(labelled(node("n3", "1", "1Gi"), &[("zone", "b")]));
        for selector in [
            vec![("zone", "a")],
            vec![("zone", "a"), ("cores", "8")],
            vec![("zone", "c")],
            vec![("rack", "1")],
        ] {
            let p = info(with_spec(pod("p"), |spec| {
                spec.node_selector = Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            }));
            let mut compiled = CycleState::new();
            assert!(NodeAffinity.pre_filter(&p, &s, &mut compiled).is_ok());
            for n in s.node_infos() {
                assert_eq!(
                    NodeAffinity.filter(&p, n, &compiled).is_ok(),
                    NodeAffinity.filter(&p, n, &CycleState::new()).is_ok(),
                    "selector {selector:?} on {}",
                    n.name()
                );
            }
        }
    }

    #[test]
    fn in_and_not_in_compare_values_and_not_in_matches_a_missing_label() {
        let p = with_required(vec![term(vec![req("zone", "In", &["a", "b"])])]);
        assert!(fits(&p, &zone_node("n1", "b", "1")));
        assert!(!fits(&p, &zone_node("n2", "c", "1")));
        let p = with_required(vec![term(vec![req("gpu", "NotIn", &["yes"])])]);
        assert!(fits(&p, &zone_node("n1", "a", "1")));
    }

    #[test]
    fn exists_and_does_not_exist_look_at_the_key_only() {
        let p = with_required(vec![term(vec![
            req("zone", "Exists", &[]),
            req("gpu", "DoesNotExist", &[]),
        ])]);
        assert!(fits(&p, &zone_node("n1", "a", "1")));
        let gpu = node_info(labelled(
            node("n2", "1", "1Gi"),
            &[("zone", "a"), ("gpu", "1")],
        ));
        assert!(!fits(&p, &gpu));
    }

    #[test]
    fn gt_and_lt_compare_integers_and_reject_non_integers() {
        let p = with_required(vec![term(vec![req("cores", "Gt", &["4"])])]);
        assert!(fits(&p, &zone_node("n1", "a", "8")));
        assert!(!fits(&p, &zone_node("n2", "a", "4")));
        assert!(!fits(&p, &zone_node("n3", "a", "many")));
        let p = with_required(vec![term(vec![req("cores", "Lt", &["4"])])]);
        assert!(fits(&p, &zone_node("n4", "a", "2")));
        let p = with_required(vec![term(vec![req("cores", "Lt", &["4", "5"])])]);
        assert!(!fits(&p, &zone_node("n5", "a", "2")));
    }

    #[test]
    fn terms_are_ored_and_expressions_within_a_term_anded() {
        let p = with_required(vec![
            term(vec![req("zone", "In", &["a"]), req("cores", "In", &["8"])]),
            term(vec![req("zone", "In", &["z"])]),
        ]);
        assert!(fits(&p, &zone_node("n1", "a", "8")));
        assert!(!fits(&p, &zone_node("n2", "a", "4")));
        assert!(fits(&p, &zone_node("n3", "z", "4")));
    }

    #[test]
    fn an_empty_term_matches_no_node() {
        let p = with_required(vec![NodeSelectorTerm::default()]);
        assert!(!fits(&p, &zone_node("n1", "a", "8")));
    }

    #[test]
    fn match_fields_select_by_node_name() {
        let p = with_required(vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n2"])]),
        }]);
        assert!(!fits(&p, &zone_node("n1", "a", "1")));
        assert!(fits(&p, &zone_node("n2", "a", "1")));
        let p = with_required(vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.labels", "In", &["n2"])]),
        }]);
        assert!(!fits(&p, &zone_node("n2", "a", "1")));
    }

    #[test]
    fn preferred_terms_add_their_weights_and_normalize_to_100() {
        let p = info(with_spec(pod("p"), |s| {
            s.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinitySpec {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        PreferredSchedulingTerm {
                            weight: 10,
                            preference: term(vec![req("zone", "In", &["a"])]),
                        },
                        PreferredSchedulingTerm {
                            weight: 30,
                            preference: term(vec![req("cores", "Gt", &["4"])]),
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }));
        let state = CycleState::new();
        let nodes = [
            zone_node("n1", "a", "8"),
            zone_node("n2", "b", "8"),
            zone_node("n3", "a", "2"),
            zone_node("n4", "b", "2"),
        ];
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| ScorePlugin::score(&NodeAffinity, &p, n, &state))
            .collect();
        assert_eq!(scores, vec![40, 30, 10, 0]);
        ScorePlugin::normalize(&NodeAffinity, &mut scores);
        assert_eq!(scores, vec![100, 75, 25, 0]);
    }
}
