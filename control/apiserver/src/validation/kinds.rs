//! The small kinds: Namespace (finalizers, phase, the `kubernetes.io/metadata.name`
//! label), Node (taints, pod CIDRs), Event (involved object and reporting fields) and RuntimeClass
//! (handler, overhead, scheduling).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use wasmkube_api::field::{FieldError, FieldPath};
use wasmkube_api::validate::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_label_value,
};

use super::container::resources_errors;
use super::metadata::{label_errors, label_key_errors};
use super::pod::{taint_effect_errors, toleration_errors};
use super::{Cause, causes, get_list, get_str, object_entry};

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Namespace defaults: the `kubernetes.io/metadata.name` label; on create (no
/// `status.phase` yet) also `status.phase: Active` and the `kubernetes` finalizer in
/// `spec.finalizers`. Updates keep the finalizers as written, because the namespace
/// controller removes `kubernetes` when it has emptied a terminating namespace.
pub fn default_namespace(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = object_entry(root, "metadata");
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        object_entry(meta, "labels").insert(NAMESPACE_NAME_LABEL.into(), json!(name));
    }
    let phase = root
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str);
    let creating = phase.unwrap_or("").is_empty();
    if !creating {
        return;
    }
    object_entry(root, "status").insert("phase".into(), json!("Active"));
    let spec = object_entry(root, "spec");
    let finalizers = spec.entry("finalizers").or_insert_with(|| json!([]));
    if !finalizers.is_array() {
        *finalizers = json!([]);
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f.as_str() == Some("kubernetes"))
    {
        list.push(json!("kubernetes"));
    }
}

/// Validates a Namespace's `spec.finalizers`.
pub fn validate_namespace(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let path = FieldPath::new("spec").child("finalizers");
    let mut errs = Vec::new();
    for f in get_list(obj.get("spec").unwrap_or(&Value::Null), "finalizers") {
        let f = f.as_str().unwrap_or_default();
        errs.extend(label_key_errors(f, &path));
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(FieldError::invalid(
                &path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    causes(errs)
}

/// Node defaults: `spec.podCIDR` is `spec.podCIDRs[0]`, and a lone `podCIDR` becomes the
/// list (Kubernetes' conversion keeps the two so).
pub fn default_node(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let first = spec
        .get("podCIDRs")
        .and_then(Value::as_array)
        .and_then(|l| l.first())
        .cloned();
    match first {
        Some(first) => {
            spec.insert("podCIDR".into(), first);
        }
        None => {
            if let Some(single) = spec
                .get("podCIDR")
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                let list = json!([single]);
                spec.insert("podCIDRs".into(), list);
            }
        }
    }
}

/// `spec.podCIDRs`: valid CIDRs, at most one per IP family; on update unchanged once set
/// (node IPAM sets them once, from "" to valid).
fn pod_cidr_errors(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let path = FieldPath::new("spec").child("podCIDRs");
    let cidrs = |v: &Value| -> Vec<String> {
        get_list(v.get("spec").unwrap_or(&Value::Null), "podCIDRs")
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let new = cidrs(obj);
    let mut errs = Vec::new();
    let mut families = Vec::new();
    for (i, cidr) in new.iter().enumerate() {
        match cidr.parse::<ipnet::IpNet>() {
            Ok(net) => families.push(matches!(net, ipnet::IpNet::V6(_))),
            Err(_) => errs.push(FieldError::invalid(
                &path.index(i),
                cidr.as_str(),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    if errs.is_empty() && new.len() > 1 && (new.len() > 2 || families[0] == families[1]) {
        errs.push(FieldError::invalid(
            &path,
            new.as_slice(),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    if let Some(old) = old {
        let before = cidrs(old);
        if !before.is_empty() && before != new {
            errs.push(FieldError::forbidden(
                &path,
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
    }
    errs
}

/// Validates a Node's taints (key, value, effect, unique per key and effect) and pod CIDRs.
pub fn validate_node(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let path = FieldPath::new("spec").child("taints");
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, taint) in get_list(obj.get("spec").unwrap_or(&Value::Null), "taints")
        .iter()
        .enumerate()
    {
        let p = path.index(i);
        let key = get_str(taint, "key");
        errs.extend(label_key_errors(key, &p.child("key")));
        let value = get_str(taint, "value");
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("value"),
                value,
                &msgs.join(";"),
            ));
        }
        let effect = get_str(taint, "effect");
        errs.extend(taint_effect_errors(effect, &p.child("effect")));
        if !seen.insert((key.to_string(), effect.to_string())) {
            let mut e = FieldError::duplicate(&p, taint);
            e.detail = "taints must be unique by key and effect pair".into();
            errs.push(e);
        }
    }
    errs.extend(pod_cidr_errors(obj, old));
    causes(errs)
}

/// Validates a core/v1 Event: an involved object in the event's namespace and, for
/// events with an `eventTime` (the newer style), the reporting fields.
pub fn validate_event(obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(involved) = obj.get("involvedObject").filter(|v| v.is_object()) else {
        errs.push(FieldError::required(&FieldPath::new("involvedObject"), ""));
        return causes(errs);
    };
    let involved_ns = get_str(involved, "namespace");
    let ns_path = FieldPath::new("involvedObject").child("namespace");
    let new_style = obj.get("eventTime").is_some_and(|v| !v.is_null());
    let mismatch = if new_style {
        involved_ns.is_empty() && !matches!(namespace, "default" | "kube-system")
    } else if involved_ns.is_empty() {
        !namespace.is_empty() && namespace != "default"
    } else {
        involved_ns != namespace
    };
    if mismatch {
        errs.push(FieldError::invalid(
            &ns_path,
            involved_ns,
            "does not match event.namespace",
        ));
    }
    if new_style {
        let controller = get_str(obj, "reportingComponent");
        if controller.is_empty() {
            errs.push(FieldError::required(
                &FieldPath::new("reportingController"),
                "",
            ));
        }
        for msg in is_qualified_name(controller) {
            errs.push(FieldError::invalid(
                &FieldPath::new("reportingController"),
                controller,
                &msg,
            ));
        }
        let instance = get_str(obj, "reportingInstance");
        if instance.is_empty() {
            errs.push(FieldError::required(
                &FieldPath::new("reportingInstance"),
                "",
            ));
        } else if instance.len() > 128 {
            errs.push(FieldError::invalid(
                &FieldPath::new("reportingInstance"),
                "",
                "can have at most 128 characters",
            ));
        }
        for (field, max) in [("action", 128), ("reason", 128)] {
            let v = get_str(obj, field);
            if v.is_empty() {
                errs.push(FieldError::required(&FieldPath::new(field), ""));
            } else if v.len() > max {
                errs.push(FieldError::invalid(
                    &FieldPath::new(field),
                    "",
                    &format!("can have at most {max} characters"),
                ));
            }
        }
    }
    if !namespace.is_empty() {
        for msg in is_dns1123_subdomain(namespace) {
            errs.push(FieldError::invalid(
                &FieldPath::new("namespace"),
                namespace,
                &msg,
            ));
        }
    }
    causes(errs)
}

/// Validates a RuntimeClass: a DNS-label handler that never changes, overhead quantities
/// and scheduling constraints.
pub fn validate_runtimeclass(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let path = FieldPath::new("handler");
    let handler = get_str(obj, "handler");
    if handler.is_empty() {
        errs.push(FieldError::required(&path, ""));
    } else {
        errs.extend(
            is_dns1123_label(handler)
                .iter()
                .map(|m| FieldError::invalid(&path, handler, m)),
        );
    }
    if let Some(old) = old
        && get_str(old, "handler") != handler
    {
        errs.push(FieldError::invalid(&path, handler, "field is immutable"));
    }
    if let Some(fixed) = obj.pointer("/overhead/podFixed") {
        let limits = json!({ "limits": fixed });
        for mut e in resources_errors(&limits, &FieldPath::new("overhead").child("podFixed")) {
            e.field = e
                .field
                .replacen("overhead.podFixed.limits", "overhead.podFixed", 1);
            errs.push(e);
        }
    }
    if let Some(scheduling) = obj.get("scheduling").filter(|v| v.is_object()) {
        let path = FieldPath::new("scheduling");
        errs.extend(label_errors(
            scheduling.get("nodeSelector"),
            &path.child("nodeSelector"),
        ));
        errs.extend(toleration_errors(
            get_list(scheduling, "tolerations"),
            &path.child("tolerations"),
        ));
    }
    causes(errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};

    #[test]
    fn new_namespaces_get_the_kubernetes_finalizer_phase_and_name_label() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        default_namespace(&mut ns);
        assert_eq!(
            ns,
            json!({
                "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            })
        );
        assert_eq!(validate_namespace(&ns, None), vec![]);
    }

    #[test]
    fn a_node_gets_its_pod_cidr_once_and_keeps_it() {
        let mut node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.42.3.0/24"}});
        default_node(&mut node);
        assert_eq!(node["spec"]["podCIDRs"], json!(["10.42.3.0/24"]));
        let none = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert_eq!(validate_node(&node, Some(&none)), vec![]);
        assert_eq!(validate_node(&node, Some(&node)), vec![]);
        let mut moved = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.42.4.0/24"]}});
        default_node(&mut moved);
        assert_eq!(moved["spec"]["podCIDR"], json!("10.42.4.0/24"));
        assert_eq!(
            summary(&validate_node(&moved, Some(&node))),
            vec![
                "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
            ]
        );
        let bad = json!({"spec": {"podCIDRs": ["10.42.0.0/33", "10.42.1.0/24"]}});
        assert_eq!(fields(&validate_node(&bad, None)), vec!["spec.podCIDRs[0]"]);
        let two_v4 = json!({"spec": {"podCIDRs": ["10.42.0.0/24", "10.42.1.0/24"]}});
        assert_eq!(fields(&validate_node(&two_v4, None)), vec!["spec.podCIDRs"]);
        let dual = json!({"spec": {"podCIDRs": ["10.42.0.0/24", "fd42::/64"]}});
        assert_eq!(validate_node(&dual, None), vec![]);
    }

    #[test]
    fn namespace_updates_keep_finalizers_as_written() {
        let mut ns = json!({"metadata": {"name": "a"}, "spec": {"finalizers": []}, "status": {"phase": "Terminating"}});
        default_namespace(&mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!([]));
        assert_eq!(ns["status"]["phase"], json!("Terminating"));
    }

    #[test]
    fn namespace_finalizers_are_standard_or_qualified() {
        let ns = json!({"spec": {"finalizers": ["kubernetes", "example.com/x", "custom", "bad name/x"]}});
        let c = validate_namespace(&ns, None);
        assert_eq!(fields(&c), vec!["spec.finalizers", "spec.finalizers"]);
        assert_eq!(
            c[0].message,
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }

    #[test]
    fn node_taints_are_validated_and_unique() {
        let node = json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "other", "effect": "NoSchedule"},
            {"key": "bad key", "effect": "Never"},
            {"key": "k"},
        ]}});
        let c = validate_node(&node, None);
        assert_eq!(
            fields(&c),
            vec![
                "spec.taints[1]",
                "spec.taints[2].key",
                "spec.taints[2].effect",
                "spec.taints[3].effect"
            ]
        );
        assert!(
            c[0].message
                .ends_with(": taints must be unique by key and effect pair")
        );
        assert_eq!(c[3].message, "Required value");
    }

    #[test]
    fn events_need_an_involved_object_in_their_namespace() {
        let event = |involved: Value| json!({"metadata": {"name": "e", "namespace": "apps"}, "involvedObject": involved});
        assert_eq!(
            validate_event(
                &event(json!({"kind": "Pod", "namespace": "apps", "name": "p"})),
                None
            ),
            vec![]
        );
        assert_eq!(
            summary(&validate_event(
                &event(json!({"kind": "Pod", "namespace": "other"})),
                None
            )),
            vec![
                "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
            ]
        );
        assert_eq!(
            summary(&validate_event(
                &json!({"metadata": {"name": "e", "namespace": "apps"}}),
                None
            )),
            vec!["involvedObject: Required value"]
        );
        let node_event = json!({"metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n1"}});
        assert_eq!(validate_event(&node_event, None), vec![]);
    }

    #[test]
    fn new_style_events_need_reporting_fields() {
        let e = json!({"metadata": {"name": "e", "namespace": "apps"}, "eventTime": "2024-01-01T00:00:00.000000Z",
                       "involvedObject": {"kind": "Pod", "namespace": "apps"}});
        assert_eq!(
            fields(&validate_event(&e, None)),
            vec![
                "reportingController",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
    }

    #[test]
    fn runtime_classes_need_an_immutable_dns_label_handler() {
        let rc = |handler: &str| json!({"metadata": {"name": "wasmtime"}, "handler": handler});
        assert_eq!(validate_runtimeclass(&rc("wasmtime"), None), vec![]);
        assert_eq!(
            summary(&validate_runtimeclass(
                &json!({"metadata": {"name": "x"}}),
                None
            )),
            vec!["handler: Required value"]
        );
        assert!(
            summary(&validate_runtimeclass(&rc("Wasm_Time"), None))[0]
                .starts_with("handler: Invalid value: \"Wasm_Time\": a lowercase RFC 1123 label")
        );
        assert_eq!(
            summary(&validate_runtimeclass(&rc("runc"), Some(&rc("wasmtime")))),
            vec!["handler: Invalid value: \"runc\": field is immutable"]
        );
    }

    #[test]
    fn runtime_class_overhead_and_scheduling_are_checked() {
        let rc = json!({"handler": "wasmtime", "overhead": {"podFixed": {"memory": "lots"}},
                        "scheduling": {"nodeSelector": {"k": "bad value"}, "tolerations": [{"operator": "Maybe"}]}});
        assert_eq!(
            fields(&validate_runtimeclass(&rc, None)),
            vec![
                "overhead.podFixed[memory]",
                "scheduling.nodeSelector",
                "scheduling.tolerations[0].operator",
                "scheduling.tolerations[0].operator"
            ]
        );
    }
}
