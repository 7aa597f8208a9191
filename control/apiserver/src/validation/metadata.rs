//! Object metadata validation (`ValidateObjectMeta`), label maps, annotations and
//! `metav1.LabelSelector`s, shared by every kind.

use serde_json::Value;
use wasmkube_api::field::{FieldError, FieldPath, Rendered, go_quote, go_string_map};
use wasmkube_api::validate::{
    TOTAL_ANNOTATION_SIZE_LIMIT_BYTES, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_rfc1035_label, is_valid_label_value, is_valid_path_segment_name,
    is_valid_path_segment_prefix, mask_trailing_dash, validate_annotations_size,
};

use super::{Cause, causes, get_i64, get_list, get_str, string_map};
use crate::registry::NameRule;

/// Validates `metadata` of an object about to be written: name (or generateName) in the
/// kind's format, namespace presence, generation, labels, annotations (keys and total
/// size), owner references and finalizers. Cluster-scoped objects must come without a
/// namespace (the handlers clear it first, as Kubernetes' `BeforeCreate` does).
pub fn validate_metadata(obj: &Value, name_rule: NameRule, namespaced: bool) -> Vec<Cause> {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    causes(object_meta_errors(
        meta,
        name_rule,
        namespaced,
        &FieldPath::new("metadata"),
    ))
}

/// Problems of `name` under `rule`; `prefix` for a `generateName` (a trailing `-` is fine).
pub(super) fn name_problems(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let masked;
    let name = if prefix && rule != NameRule::PathSegment {
        masked = mask_trailing_dash(name);
        masked.as_str()
    } else {
        name
    };
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Label => is_dns1123_label(name),
        NameRule::Rfc1035Label => is_rfc1035_label(name),
        NameRule::PathSegment if prefix => is_valid_path_segment_prefix(name),
        NameRule::PathSegment => is_valid_path_segment_name(name),
    }
}

fn object_meta_errors(
    meta: &Value,
    name_rule: NameRule,
    namespaced: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = get_str(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in name_problems(name_rule, generate_name, true) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                generate_name,
                &msg,
            ));
        }
    }
    let name = get_str(meta, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_problems(name_rule, name, false) {
            errs.push(FieldError::invalid(&path.child("name"), name, &msg));
        }
    }
    let namespace = get_str(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(&path.child("namespace"), ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(FieldError::invalid(
                    &path.child("namespace"),
                    namespace,
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(generation) = get_i64(meta, "generation") {
        errs.extend(nonnegative(generation, &path.child("generation")));
    }
    errs.extend(label_errors(meta.get("labels"), &path.child("labels")));
    errs.extend(annotation_errors(
        meta.get("annotations"),
        &path.child("annotations"),
    ));
    errs.extend(owner_reference_errors(
        get_list(meta, "ownerReferences"),
        &path.child("ownerReferences"),
    ));
    errs.extend(finalizer_errors(
        get_list(meta, "finalizers"),
        &path.child("finalizers"),
    ));
    errs
}

/// Labels and annotations of an embedded template (`ValidateTemplateObjectMeta`).
pub(super) fn template_meta_errors(meta: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let meta = meta.unwrap_or(&Value::Null);
    let mut errs = label_errors(meta.get("labels"), &path.child("labels"));
    errs.extend(annotation_errors(
        meta.get("annotations"),
        &path.child("annotations"),
    ));
    errs
}

/// `must be greater than or equal to 0` for negative values.
pub(super) fn nonnegative(value: i64, path: &FieldPath) -> Vec<FieldError> {
    if value < 0 {
        vec![FieldError::invalid(
            path,
            value,
            "must be greater than or equal to 0",
        )]
    } else {
        Vec::new()
    }
}

/// `ValidateLabels`: every key a qualified name, every value a label value; both
/// reported at the map's path.
pub(super) fn label_errors(labels: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else {
        return errs;
    };
    for (k, v) in map {
        errs.extend(label_key_errors(k, path));
        let v = v.as_str().unwrap_or_default();
        for msg in is_valid_label_value(v) {
            errs.push(FieldError::invalid(path, v, &msg));
        }
    }
    errs
}

/// `ValidateLabelName`: a qualified name, each problem at `path`.
pub(super) fn label_key_errors(key: &str, path: &FieldPath) -> Vec<FieldError> {
    is_qualified_name(key)
        .into_iter()
        .map(|msg| FieldError::invalid(path, key, &msg))
        .collect()
}

fn annotation_errors(annotations: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = annotations.and_then(Value::as_object) else {
        return errs;
    };
    for k in map.keys() {
        // Annotation keys are qualified names in which case does not matter.
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k, &msg));
        }
    }
    let sizes = map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()));
    if validate_annotations_size(sizes).is_err() {
        errs.push(FieldError::too_long(
            path,
            TOTAL_ANNOTATION_SIZE_LIMIT_BYTES,
        ));
    }
    errs
}

fn owner_reference_errors(refs: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut controller: Option<String> = None;
    for r in refs {
        let api_version = get_str(r, "apiVersion");
        // The version is what follows the last '/' (the group may be empty for core).
        if api_version
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .is_empty()
        {
            errs.push(FieldError::invalid(
                &path.child("apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        for key in ["kind", "name", "uid"] {
            let v = get_str(r, key);
            if v.is_empty() {
                errs.push(FieldError::invalid(
                    &path.child(key),
                    v,
                    "must not be empty",
                ));
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let this = format!("{}/{}", get_str(r, "kind"), get_str(r, "name"));
            match &controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    Rendered(super::compact(&Value::Array(refs.to_vec()))),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"
                    ),
                )),
                None => controller = Some(this),
            }
        }
    }
    errs
}

fn finalizer_errors(finalizers: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let names: Vec<&str> = finalizers.iter().filter_map(Value::as_str).collect();
    for name in &names {
        errs.extend(label_key_errors(name, path));
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        let list: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        errs.push(FieldError::invalid(
            path,
            list.as_slice(),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Go's `%#v` of a `map[string]string` that may be absent (nil).
pub(super) fn go_labels(labels: Option<&Value>) -> Rendered {
    match labels.and_then(Value::as_object) {
        None => Rendered("map[string]string(nil)".into()),
        Some(_) => {
            let map = string_map(labels);
            Rendered(go_string_map(
                map.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ))
        }
    }
}

/// Go's `%#v` of a `metav1.LabelSelector`, as shown in selector errors.
pub(super) fn go_label_selector(selector: &Value) -> Rendered {
    let match_labels = match selector.get("matchLabels").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            let map = string_map(selector.get("matchLabels"));
            go_string_map(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        }
        _ => "map[string]string(nil)".to_string(),
    };
    let exprs = get_list(selector, "matchExpressions");
    let match_expressions = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|e| {
                let values: Vec<String> = get_list(e, "values")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(go_quote)
                    .collect();
                let values = if values.is_empty() {
                    "[]string(nil)".to_string()
                } else {
                    format!("[]string{{{}}}", values.join(", "))
                };
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                    go_quote(get_str(e, "key")),
                    go_quote(get_str(e, "operator"))
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    Rendered(format!(
        "v1.LabelSelector{{MatchLabels:{match_labels}, MatchExpressions:{match_expressions}}}"
    ))
}

/// `ValidateLabelSelector` of a `metav1.LabelSelector` (strict label values).
pub(super) fn label_selector_errors(selector: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = label_errors(selector.get("matchLabels"), &path.child("matchLabels"));
    for (i, expr) in get_list(selector, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = get_list(expr, "values");
        match get_str(expr, "operator") {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                &p.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                &p.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(FieldError::invalid(
                &p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        errs.extend(label_key_errors(get_str(expr, "key"), &p.child("key")));
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or_default();
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid(&p.child("values").index(j), v, &msg));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};
    use serde_json::json;

    fn check(meta: Value, rule: NameRule, namespaced: bool) -> Vec<Cause> {
        validate_metadata(&json!({ "metadata": meta }), rule, namespaced)
    }

    #[test]
    fn valid_metadata_has_no_causes() {
        let meta = json!({
            "name": "web-1", "namespace": "default",
            "labels": {"app.kubernetes.io/name": "web", "tier": ""},
            "annotations": {"Example.com/Note": "anything at all"},
            "finalizers": ["example.com/cleanup"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]
        });
        assert_eq!(check(meta, NameRule::Subdomain, true), vec![]);
    }

    #[test]
    fn name_is_required_unless_generated_and_follows_the_kind_rule() {
        let c = check(json!({"namespace": "default"}), NameRule::Subdomain, true);
        assert_eq!(
            summary(&c),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let c = check(
            json!({"name": "Web", "namespace": "default"}),
            NameRule::Subdomain,
            true,
        );
        assert_eq!(fields(&c), vec!["metadata.name"]);
        assert!(
            c[0].message
                .starts_with("Invalid value: \"Web\": a lowercase RFC 1123 subdomain")
        );
        let c = check(json!({"name": "a.b"}), NameRule::Label, false);
        assert_eq!(
            summary(&c),
            vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
        );
        let c = check(
            json!({"name": "1svc", "namespace": "d"}),
            NameRule::Rfc1035Label,
            true,
        );
        assert!(c[0].message.contains("a DNS-1035 label"));
        let c = check(
            json!({"name": "ev.1a2b", "namespace": "d"}),
            NameRule::PathSegment,
            true,
        );
        assert_eq!(c, vec![]);
        let c = check(
            json!({"name": "a/b", "namespace": "d"}),
            NameRule::PathSegment,
            true,
        );
        assert_eq!(
            summary(&c),
            vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
        );
    }

    #[test]
    fn generate_name_prefix_may_end_with_a_dash() {
        let c = check(
            json!({"name": "web-x7k2p", "generateName": "web-", "namespace": "d"}),
            NameRule::Subdomain,
            true,
        );
        assert_eq!(c, vec![]);
        let c = check(
            json!({"name": "x", "generateName": "Web-", "namespace": "d"}),
            NameRule::Subdomain,
            true,
        );
        assert_eq!(fields(&c), vec!["metadata.generateName"]);
    }

    #[test]
    fn namespace_is_required_for_namespaced_kinds_and_forbidden_otherwise() {
        assert_eq!(
            summary(&check(json!({"name": "a"}), NameRule::Subdomain, true)),
            vec!["metadata.namespace: Required value"]
        );
        assert_eq!(
            summary(&check(
                json!({"name": "a", "namespace": "x"}),
                NameRule::Subdomain,
                false
            )),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn bad_label_keys_and_values_are_reported_at_the_labels_path() {
        let c = check(
            json!({"name": "a", "labels": {"bad key": "v", "k": "bad value"}}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(fields(&c), vec!["metadata.labels", "metadata.labels"]);
        assert!(
            c[0].message
                .starts_with("Invalid value: \"bad key\": name part must consist of")
        );
        assert!(
            c[1].message
                .starts_with("Invalid value: \"bad value\": a valid label must be an empty string")
        );
    }

    #[test]
    fn annotations_are_limited_in_key_format_and_total_size() {
        let c = check(
            json!({"name": "a", "annotations": {"a/b/c": "x"}}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(fields(&c), vec!["metadata.annotations"]);
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES);
        let c = check(
            json!({"name": "a", "annotations": {"k": big}}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(
            summary(&c),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
        assert_eq!(c[0].reason, "FieldValueTooLong");
    }

    #[test]
    fn owner_references_need_their_identity_and_one_controller() {
        let c = check(
            json!({"name": "a", "ownerReferences": [
                {"apiVersion": "", "kind": "", "name": "", "uid": ""},
            ]}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(
            summary(&c),
            vec![
                "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
                "metadata.ownerReferences.kind: Invalid value: \"\": must not be empty",
                "metadata.ownerReferences.name: Invalid value: \"\": must not be empty",
                "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty",
            ]
        );
        let two = json!({"name": "a", "ownerReferences": [
            {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": true},
        ]});
        let c = check(two, NameRule::Subdomain, false);
        assert!(
            c[0].message
                .ends_with("Found \"true\" in references for A/a and B/b")
        );
    }

    #[test]
    fn finalizers_are_qualified_names_and_exclusive_deletion_modes() {
        let c = check(
            json!({"name": "a", "finalizers": ["bad name"]}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(fields(&c), vec!["metadata.finalizers"]);
        let c = check(
            json!({"name": "a", "finalizers": ["orphan", "foregroundDeletion"]}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(
            summary(&c),
            vec![
                "metadata.finalizers: Invalid value: []string{\"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set"
            ]
        );
    }

    #[test]
    fn negative_generation_is_invalid() {
        let c = check(
            json!({"name": "a", "generation": -1}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(
            summary(&c),
            vec!["metadata.generation: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn label_selectors_check_operators_values_and_keys() {
        let sel = json!({
            "matchLabels": {"app": "bad value"},
            "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Gt", "values": ["1"]},
                {"key": "bad key", "operator": "NotIn", "values": ["ok", "not ok"]},
            ]
        });
        let errs = label_selector_errors(&sel, &FieldPath::new("spec").child("selector"));
        let got: Vec<String> = errs.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            got,
            vec![
                "spec.selector.matchLabels",
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
                "spec.selector.matchExpressions[3].key",
                "spec.selector.matchExpressions[3].values[1]",
            ]
        );
        assert_eq!(
            errs[1].to_string(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
    }

    #[test]
    fn go_renderings_match_fmt() {
        assert_eq!(go_labels(None).0, "map[string]string(nil)");
        assert_eq!(
            go_labels(Some(&json!({"a": "b"}))).0,
            "map[string]string{\"a\":\"b\"}"
        );
        assert_eq!(
            go_label_selector(&json!({"matchLabels": {"app": "x"}})).0,
            "v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
        assert_eq!(
            go_label_selector(
                &json!({"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]})
            )
            .0,
            "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"k\", Operator:\"In\", Values:[]string{\"v\"}}}}"
        );
    }
}
