//! rbac.authorization.k8s.io/v1: Role, ClusterRole (rules, aggregationRule), RoleBinding
//! and ClusterRoleBinding (roleRef, subjects), after Kubernetes'
//! `pkg/apis/rbac/validation` and the v1 defaults (subjects' and roleRef's apiGroup).

use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::validate::is_dns1123_subdomain;

use super::metadata::label_selector_errors;
use super::{Cause, causes, get_list, get_str};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `ValidatePolicyRule`: verbs always; resource rules need groups and resources;
/// non-resource URLs only in ClusterRoles and never mixed with resources.
fn policy_rule_errors(rule: &Value, namespaced: bool, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get_list(rule, "verbs").is_empty() {
        errs.push(FieldError::required(
            &path.child("verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = get_list(rule, "nonResourceURLs");
    if !urls.is_empty() {
        let value = rule.get("nonResourceURLs").unwrap_or(&Value::Null);
        if namespaced {
            errs.push(FieldError::invalid(
                &path.child("nonResourceURLs"),
                value,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !get_list(rule, "apiGroups").is_empty()
            || !get_list(rule, "resources").is_empty()
            || !get_list(rule, "resourceNames").is_empty()
        {
            errs.push(FieldError::invalid(
                &path.child("nonResourceURLs"),
                value,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return errs;
    }
    if get_list(rule, "apiGroups").is_empty() {
        errs.push(FieldError::required(
            &path.child("apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if get_list(rule, "resources").is_empty() {
        errs.push(FieldError::required(
            &path.child("resources"),
            "resource rules must supply at least one resource",
        ));
    }
    errs
}

fn rules_errors(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    get_list(obj, "rules")
        .iter()
        .enumerate()
        .flat_map(|(i, rule)| {
            policy_rule_errors(rule, namespaced, &FieldPath::new("rules").index(i))
        })
        .collect()
}

/// Validates a Role.
pub fn validate_role(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    causes(rules_errors(obj, true))
}

/// Validates a ClusterRole: rules, and the aggregation rule's selectors.
pub fn validate_cluster_role(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let mut errs = rules_errors(obj, false);
    if let Some(rule) = obj.get("aggregationRule").filter(|r| !r.is_null()) {
        let path = FieldPath::new("aggregationRule").child("clusterRoleSelectors");
        let selectors = get_list(rule, "clusterRoleSelectors");
        if selectors.is_empty() {
            errs.push(FieldError::required(
                &path,
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, selector) in selectors.iter().enumerate() {
            errs.extend(label_selector_errors(selector, &path.index(i)));
        }
    }
    causes(errs)
}

fn go_role_ref(role_ref: &Value) -> Rendered {
    Rendered(format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        get_str(role_ref, "apiGroup"),
        get_str(role_ref, "kind"),
        get_str(role_ref, "name")
    ))
}

/// `ValidateRoleBinding` / `ValidateClusterRoleBinding` (+ the update rule that
/// `roleRef` cannot change).
fn binding_errors(obj: &Value, old: Option<&Value>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let path = FieldPath::new("roleRef");
    let api_group = get_str(role_ref, "apiGroup");
    if api_group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            &path.child("apiGroup"),
            api_group,
            &[RBAC_GROUP],
        ));
    }
    let kind = get_str(role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        errs.push(FieldError::not_supported(&path.child("kind"), kind, kinds));
    }
    let name = get_str(role_ref, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else {
        for msg in wasmkube_api::validate::is_valid_path_segment_name(name) {
            errs.push(FieldError::invalid(&path.child("name"), name, &msg));
        }
    }
    for (i, subject) in get_list(obj, "subjects").iter().enumerate() {
        errs.extend(subject_errors(
            subject,
            namespaced,
            &FieldPath::new("subjects").index(i),
        ));
    }
    if let Some(old) = old {
        let old_ref = old.get("roleRef").unwrap_or(&Value::Null);
        if old_ref != role_ref {
            errs.push(FieldError::invalid(
                &path,
                go_role_ref(role_ref),
                "cannot change roleRef",
            ));
        }
    }
    errs
}

/// `ValidateRoleBindingSubject`.
fn subject_errors(subject: &Value, namespaced: bool, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = get_str(subject, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    }
    let api_group = get_str(subject, "apiGroup");
    match get_str(subject, "kind") {
        "ServiceAccount" => {
            if !name.is_empty() {
                for msg in is_dns1123_subdomain(name) {
                    errs.push(FieldError::invalid(&path.child("name"), name, &msg));
                }
            }
            if !api_group.is_empty() {
                errs.push(FieldError::not_supported(
                    &path.child("apiGroup"),
                    api_group,
                    &[""],
                ));
            }
            if !namespaced && get_str(subject, "namespace").is_empty() {
                errs.push(FieldError::required(&path.child("namespace"), ""));
            }
        }
        "User" | "Group" => {
            if api_group != RBAC_GROUP {
                errs.push(FieldError::not_supported(
                    &path.child("apiGroup"),
                    api_group,
                    &[RBAC_GROUP],
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
    errs
}

/// Validates a RoleBinding.
pub fn validate_role_binding(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    causes(binding_errors(obj, old, true))
}

/// Validates a ClusterRoleBinding.
pub fn validate_cluster_role_binding(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    causes(binding_errors(obj, old, false))
}

/// The v1 defaults of both binding kinds: `roleRef.apiGroup`, and each subject's
/// `apiGroup` by kind (`rbac.authorization.k8s.io` for User and Group, `""` for
/// ServiceAccount).
pub fn default_role_binding(obj: &mut Value) {
    if let Some(role_ref) = obj.get_mut("roleRef").and_then(Value::as_object_mut)
        && role_ref
            .get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        role_ref.insert("apiGroup".into(), json!(RBAC_GROUP));
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let empty = subject
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
            if empty && matches!(kind, "User" | "Group") {
                subject.insert("apiGroup".into(), json!(RBAC_GROUP));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::summary;

    #[test]
    fn rules_need_verbs_groups_and_resources_or_urls() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"]},
            {"verbs": ["get"], "nonResourceURLs": ["/x"], "resources": ["pods"]},
        ]});
        assert_eq!(
            summary(&validate_cluster_role(&role, None)),
            [
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[1].resources: Required value: resource rules must supply at least one resource",
                "rules[2].nonResourceURLs: Invalid value: []string{\"/x\"}: rules cannot apply to both regular resources and non-resource URLs",
            ]
        );
        let namespaced = json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        assert_eq!(
            summary(&validate_role(&namespaced, None)),
            [
                "rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"
            ]
        );
    }

    #[test]
    fn an_aggregation_rule_needs_a_valid_selector() {
        let role = json!({"aggregationRule": {"clusterRoleSelectors": []}});
        assert_eq!(
            summary(&validate_cluster_role(&role, None)),
            [
                "aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
            ]
        );
    }

    #[test]
    fn bindings_check_role_ref_subjects_and_immutability() {
        let mut binding = json!({
            "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Robot", "name": "r2"},
                         {"kind": "ServiceAccount", "name": "builder"}]});
        default_role_binding(&mut binding);
        assert_eq!(binding["roleRef"]["apiGroup"], RBAC_GROUP);
        assert_eq!(binding["subjects"][0]["apiGroup"], RBAC_GROUP);
        assert!(binding["subjects"][2].get("apiGroup").is_none());
        assert_eq!(
            summary(&validate_role_binding(&binding, None)),
            [
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""
            ]
        );
        assert_eq!(
            summary(&validate_cluster_role_binding(&binding, None)),
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
                "subjects[2].namespace: Required value",
            ]
        );
        let mut changed = binding.clone();
        changed["roleRef"]["name"] = json!("other");
        changed["subjects"] = json!([]);
        assert_eq!(
            summary(&validate_role_binding(&changed, Some(&binding))),
            [
                "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"
            ]
        );
    }
}
