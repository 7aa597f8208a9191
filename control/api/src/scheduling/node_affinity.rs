//! Node selection, as component-helpers' `scheduling/corev1/nodeaffinity`: a pod's
//! `nodeSelector` (every label must be on the node) and node selector terms (ORed; within a
//! term `matchExpressions` over the node's labels and `matchFields` over its
//! `metadata.name` are ANDed; a term without requirements matches no node).
//!
//! Label operators: `In`, `NotIn` (also true when the label is absent), `Exists`,
//! `DoesNotExist`, and `Gt`/`Lt`, which compare one integer value with the label's (a
//! label that is not an integer matches neither). Fields: `metadata.name` with `In` or
//! `NotIn`, as Kubernetes supports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement};
use k8s_openapi::api::core::v1::{NodeSelectorTerm, PodSpec};

/// Whether every `(key, value)` of the `nodeSelector` `selector` is among `labels`.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether one node selector term matches the node `node_name` with `labels`.
pub fn node_selector_term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions.iter().all(|r| {
        label_requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str))
    }) && fields
        .iter()
        .all(|r| field_requirement_matches(r, node_name))
}

/// Whether any term of `selector` matches the node (`MatchNodeSelectorTerms`).
pub fn node_selector_matches(
    selector: &NodeSelector,
    node_name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| node_selector_term_matches(term, node_name, labels))
}

/// Whether a pod with `spec` may run on `node` by its `nodeSelector` and its required node
/// affinity (`GetRequiredNodeAffinity(pod).Match(node)`).
pub fn required_node_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .as_ref()
        .is_none_or(|selector| labels_match(selector, labels));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok && required.is_none_or(|r| node_selector_matches(r, name, labels))
}

/// One `matchExpressions` requirement against the label's value (`None`: no such label).
fn label_requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or(&[]);
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let [bound] = values else {
                return false;
            };
            let (Some(value), Ok(bound)) = (value, bound.parse::<i64>()) else {
                return false;
            };
            let Ok(value) = value.parse::<i64>() else {
                return false;
            };
            if requirement.operator == "Gt" {
                value > bound
            } else {
                value < bound
            }
        }
        _ => false,
    }
}

/// One `matchFields` requirement: `metadata.name` with `In` or `NotIn`.
fn field_requirement_matches(requirement: &NodeSelectorRequirement, node_name: &str) -> bool {
    if requirement.key != "metadata.name" {
        return false;
    }
    let values = requirement.values.as_deref().unwrap_or(&[]);
    match requirement.operator.as_str() {
        "In" => values.iter().any(|v| v == node_name),
        "NotIn" => !values.iter().any(|v| v == node_name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity};

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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn matches(t: &NodeSelectorTerm, l: &[(&str, &str)]) -> bool {
        node_selector_term_matches(t, "n1", Some(&labels(l)))
    }

    #[test]
    fn in_and_not_in_compare_values_and_not_in_matches_a_missing_label() {
        let t = term(vec![req("zone", "In", &["a", "b"])]);
        assert!(matches(&t, &[("zone", "b")]));
        assert!(!matches(&t, &[("zone", "c")]));
        assert!(!matches(&t, &[]));
        let t = term(vec![req("gpu", "NotIn", &["yes"])]);
        assert!(matches(&t, &[]));
        assert!(matches(&t, &[("gpu", "no")]));
        assert!(!matches(&t, &[("gpu", "yes")]));
    }

    #[test]
    fn exists_and_does_not_exist_look_at_the_key_only() {
        let t = term(vec![
            req("zone", "Exists", &[]),
            req("gpu", "DoesNotExist", &[]),
        ]);
        assert!(matches(&t, &[("zone", "a")]));
        assert!(!matches(&t, &[("zone", "a"), ("gpu", "1")]));
        assert!(!matches(&t, &[]));
    }

    #[test]
    fn gt_and_lt_compare_one_integer_and_reject_anything_else() {
        let gt = term(vec![req("cores", "Gt", &["4"])]);
        assert!(matches(&gt, &[("cores", "8")]));
        assert!(!matches(&gt, &[("cores", "4")]));
        assert!(!matches(&gt, &[("cores", "many")]));
        assert!(!matches(&gt, &[]));
        assert!(matches(
            &term(vec![req("cores", "Lt", &["4"])]),
            &[("cores", "2")]
        ));
        assert!(!matches(
            &term(vec![req("cores", "Lt", &["4", "5"])]),
            &[("cores", "2")]
        ));
        assert!(!matches(
            &term(vec![req("cores", "Lt", &["x"])]),
            &[("cores", "2")]
        ));
    }

    #[test]
    fn an_empty_term_and_an_unknown_operator_match_no_node() {
        assert!(!matches(&NodeSelectorTerm::default(), &[("zone", "a")]));
        assert!(!matches(&term(vec![]), &[("zone", "a")]));
        assert!(!matches(
            &term(vec![req("zone", "Like", &["a"])]),
            &[("zone", "a")]
        ));
    }

    #[test]
    fn match_fields_select_by_node_name_only() {
        let by_name = |op: &str, key: &str| NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req(key, op, &["n2"])]),
        };
        assert!(node_selector_term_matches(
            &by_name("In", "metadata.name"),
            "n2",
            None
        ));
        assert!(!node_selector_term_matches(
            &by_name("In", "metadata.name"),
            "n1",
            None
        ));
        assert!(node_selector_term_matches(
            &by_name("NotIn", "metadata.name"),
            "n1",
            None
        ));
        assert!(!node_selector_term_matches(
            &by_name("In", "metadata.labels"),
            "n2",
            None
        ));
        assert!(!node_selector_term_matches(
            &by_name("Exists", "metadata.name"),
            "n2",
            None
        ));
    }

    #[test]
    fn terms_are_ored_and_requirements_within_a_term_anded() {
        let selector = NodeSelector {
            node_selector_terms: vec![
                term(vec![req("zone", "In", &["a"]), req("cores", "In", &["8"])]),
                term(vec![req("zone", "In", &["z"])]),
            ],
        };
        let on = |l: &[(&str, &str)]| node_selector_matches(&selector, "n", Some(&labels(l)));
        assert!(on(&[("zone", "a"), ("cores", "8")]));
        assert!(!on(&[("zone", "a"), ("cores", "4")]));
        assert!(on(&[("zone", "z")]));
    }

    #[test]
    fn a_pod_needs_its_node_selector_and_its_required_affinity_on_the_node() {
        let node = |name: &str, l: &[(&str, &str)]| {
            let mut n = Node::default();
            n.metadata.name = Some(name.into());
            n.metadata.labels = Some(labels(l));
            n
        };
        let mut spec = PodSpec {
            node_selector: Some(labels(&[("disk", "ssd")])),
            ..PodSpec::default()
        };
        assert!(required_node_affinity_matches(
            &spec,
            &node("a", &[("disk", "ssd")])
        ));
        assert!(!required_node_affinity_matches(
            &spec,
            &node("b", &[("disk", "hdd")])
        ));
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![term(vec![req("zone", "In", &["z"])])],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        });
        assert!(!required_node_affinity_matches(
            &spec,
            &node("a", &[("disk", "ssd")])
        ));
        assert!(required_node_affinity_matches(
            &spec,
            &node("a", &[("disk", "ssd"), ("zone", "z")])
        ));
        assert!(required_node_affinity_matches(
            &PodSpec::default(),
            &node("any", &[])
        ));
    }
}
