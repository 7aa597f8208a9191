//! Pod validation: the pod spec (`ValidatePodSpec`, also used for workload templates),
//! tolerations, and the pod update rules (`ValidatePodUpdate`: a pod's spec is immutable
//! except images, `activeDeadlineSeconds`, added tolerations and removed scheduling gates).

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use wasmkube_api::field::{FieldError, FieldPath, Rendered};
use wasmkube_api::validate::{
    inclusive_range_error, is_dns1123_label, is_dns1123_subdomain, is_valid_label_value,
};

use super::container::containers_errors;
use super::metadata::{label_errors, label_key_errors};
use super::pod_defaults::default_pod;
use super::{Cause, causes, get_i64, get_list, get_str};

/// The fields a pod update may change, as Kubernetes lists them in its error.
const UPDATABLE_POD_SPEC_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Volume sources in the order Kubernetes checks them (the second one found is the one
/// reported as extra).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// Validates a Pod; with `old`, also the update rules. The old pod is compared with its
/// defaults applied (as Kubernetes defaults objects read from storage), so a pod stored
/// before a default existed can still be updated.
pub fn validate_pod(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = pod_spec_errors(spec, &FieldPath::new("spec"), true);
    if let Some(old) = old {
        let mut old = old.clone();
        default_pod(&mut old);
        errs.extend(pod_update_errors(
            spec,
            old.get("spec").unwrap_or(&Value::Null),
        ));
    }
    causes(errs)
}

/// Validates a pod spec at `path`; `is_pod` is false for templates embedded in
/// workloads (where a host port may still be left for defaulting).
pub(super) fn pod_spec_errors(spec: &Value, path: &FieldPath, is_pod: bool) -> Vec<FieldError> {
    let (volume_names, mut errs) = volume_errors(get_list(spec, "volumes"), &path.child("volumes"));
    errs.extend(containers_errors(spec, path, &volume_names));
    match get_str(spec, "restartPolicy") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(&path.child("restartPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            &path.child("restartPolicy"),
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    match get_str(spec, "dnsPolicy") {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(&path.child("dnsPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            &path.child("dnsPolicy"),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(label_errors(
        spec.get("nodeSelector"),
        &path.child("nodeSelector"),
    ));
    for (field, check) in [
        (
            "serviceAccountName",
            is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
        ("runtimeClassName", is_dns1123_subdomain),
        ("priorityClassName", is_dns1123_subdomain),
        ("schedulerName", is_dns1123_subdomain),
    ] {
        let value = get_str(spec, field);
        if !value.is_empty() {
            errs.extend(
                check(value)
                    .iter()
                    .map(|m| FieldError::invalid(&path.child(field), value, m)),
            );
        }
    }
    if let Some(deadline) = get_i64(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            deadline,
            &inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    errs.extend(toleration_errors(
        get_list(spec, "tolerations"),
        &path.child("tolerations"),
    ));
    let mut gates = BTreeSet::new();
    for (i, gate) in get_list(spec, "schedulingGates").iter().enumerate() {
        let name = get_str(gate, "name");
        errs.extend(label_key_errors(
            name,
            &path.child("schedulingGates").index(i),
        ));
        if !gates.insert(name) {
            errs.push(FieldError::duplicate(
                &path.child("schedulingGates").index(i),
                name,
            ));
        }
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for (ci, c) in get_list(spec, "containers").iter().enumerate() {
            for (pi, port) in get_list(c, "ports").iter().enumerate() {
                let host = get_i64(port, "hostPort").unwrap_or(0);
                let container = get_i64(port, "containerPort").unwrap_or(0);
                if (is_pod || host != 0) && host != container {
                    errs.push(FieldError::invalid(
                        &path
                            .child("containers")
                            .index(ci)
                            .child("ports")
                            .index(pi)
                            .child("hostPort"),
                        host,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    errs
}

/// Validates `spec.volumes`; returns the declared names too.
fn volume_errors(volumes: &[Value], path: &FieldPath) -> (BTreeSet<String>, Vec<FieldError>) {
    let mut names = BTreeSet::new();
    let mut errs = Vec::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = path.index(i);
        let empty = Map::new();
        let fields = vol.as_object().unwrap_or(&empty);
        let mut sources: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|s| fields.get(*s).is_some_and(|v| !v.is_null()))
            .collect();
        // Sources this list does not know still count.
        sources.extend(
            fields
                .iter()
                .filter(|(k, v)| {
                    k.as_str() != "name" && !v.is_null() && !VOLUME_SOURCES.contains(&k.as_str())
                })
                .map(|(k, _)| k.as_str()),
        );
        match sources.as_slice() {
            [] => errs.push(FieldError::required(&p, "must specify a volume type")),
            [one] => errs.extend(volume_source_errors(one, &fields[*one], &p.child(one))),
            [_, second, ..] => {
                errs.push(FieldError::forbidden(
                    &p.child(second),
                    "may not specify more than 1 volume type",
                ));
            }
        }
        let name = get_str(vol, "name");
        let name_path = p.child("name");
        if name.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
        } else {
            errs.extend(
                is_dns1123_label(name)
                    .iter()
                    .map(|m| FieldError::invalid(&name_path, name, m)),
            );
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&name_path, name));
        }
    }
    (names, errs)
}

fn volume_source_errors(kind: &str, source: &Value, path: &FieldPath) -> Vec<FieldError> {
    if kind == "projected" {
        return projected_errors(source, path);
    }
    let required = match kind {
        "hostPath" => "path",
        "secret" => "secretName",
        "configMap" => "name",
        "persistentVolumeClaim" => "claimName",
        _ => return Vec::new(),
    };
    if get_str(source, required).is_empty() {
        return vec![FieldError::required(&path.child(required), "")];
    }
    if kind == "hostPath" {
        return host_path_errors(source, path);
    }
    Vec::new()
}

/// A projected volume's `serviceAccountToken` sources: a path, and a lifetime of 10 minutes
/// to 2^32 seconds (Kubernetes' `validateProjectionSources`).
fn projected_errors(source: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, projection) in get_list(source, "sources").iter().enumerate() {
        let Some(token) = projection
            .get("serviceAccountToken")
            .filter(|t| !t.is_null())
        else {
            continue;
        };
        let p = path.child("sources").index(i).child("serviceAccountToken");
        if get_str(token, "path").is_empty() {
            errs.push(FieldError::required(&p.child("path"), ""));
        }
        if let Some(seconds) = token.get("expirationSeconds").and_then(Value::as_i64) {
            let field = p.child("expirationSeconds");
            if seconds < 600 {
                errs.push(FieldError::invalid(
                    &field,
                    seconds,
                    "may not specify a duration less than 10 minutes",
                ));
            } else if seconds > 1 << 32 {
                errs.push(FieldError::invalid(
                    &field,
                    seconds,
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
        }
    }
    errs
}

/// The host path types Kubernetes knows, as its error lists them.
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// `validateHostPathVolumeSource`: no `..` in the path, a known type.
fn host_path_errors(source: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let host = get_str(source, "path");
    if host.split('/').any(|part| part == "..") {
        errs.push(FieldError::invalid(
            &path.child("path"),
            host,
            "must not contain '..'",
        ));
    }
    if let Some(t) = source.get("type").and_then(Value::as_str)
        && !HOST_PATH_TYPES.contains(&t)
    {
        errs.push(FieldError::not_supported(
            &path.child("type"),
            t,
            HOST_PATH_TYPES,
        ));
    }
    errs
}

/// `ValidateTolerations`.
pub(super) fn toleration_errors(tolerations: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = get_str(t, "key");
        let operator = get_str(t, "operator");
        let value = get_str(t, "value");
        let effect = get_str(t, "effect");
        if !key.is_empty() {
            errs.extend(label_key_errors(key, &p.child("key")));
        }
        if key.is_empty() && operator != "Exists" {
            errs.push(FieldError::invalid(
                &p.child("operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.get("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                &p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        &p.child("operator"),
                        value,
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => errs.push(FieldError::invalid(
                &p.child("operator"),
                Rendered(super::compact(t)),
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => errs.push(FieldError::not_supported(
                &p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            errs.extend(taint_effect_errors(effect, &p.child("effect")));
        }
    }
    errs
}

/// A taint or toleration effect (non-empty) must be one Kubernetes knows.
pub(super) fn taint_effect_errors(effect: &str, path: &FieldPath) -> Vec<FieldError> {
    match effect {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Vec::new(),
        "" => vec![FieldError::required(path, "")],
        other => vec![FieldError::not_supported(
            path,
            other,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        )],
    }
}

/// `ValidatePodUpdate` on the specs.
fn pod_update_errors(new: &Value, old: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("spec");
    let mut errs = Vec::new();
    for list in ["containers", "initContainers"] {
        let (n, o) = (get_list(new, list), get_list(old, list));
        if n.len() != o.len() {
            errs.push(FieldError::forbidden(
                &path.child(list),
                "pod updates may not add or remove containers",
            ));
            return errs;
        }
        for (i, c) in n.iter().enumerate() {
            let image = get_str(c, "image");
            if image.is_empty() {
                errs.push(FieldError::required(
                    &path.child(list).index(i).child("image"),
                    "",
                ));
            } else if image.trim() != image {
                errs.push(FieldError::invalid(
                    &path.child(list).index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    let deadline_path = path.child("activeDeadlineSeconds");
    match (
        get_i64(new, "activeDeadlineSeconds"),
        get_i64(old, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(FieldError::invalid(
                &deadline_path,
                n,
                &inclusive_range_error(0, i64::from(i32::MAX)),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                &deadline_path,
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            &deadline_path,
            Rendered("null".into()),
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    errs.extend(only_added_tolerations(
        get_list(new, "tolerations"),
        get_list(old, "tolerations"),
        &path,
    ));
    let old_gates: BTreeSet<&str> = get_list(old, "schedulingGates")
        .iter()
        .map(|g| get_str(g, "name"))
        .collect();
    for (i, gate) in get_list(new, "schedulingGates").iter().enumerate() {
        let name = get_str(gate, "name");
        if !old_gates.contains(name) {
            errs.push(FieldError::forbidden(
                &path.child("schedulingGates").index(i).child("name"),
                &format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            ));
        }
    }
    let munged = munge_updatable_fields(new, old);
    let (munged, old_normal) = (normalized(&munged), normalized(old));
    if munged != old_normal {
        let diff = spec_diff(&old_normal, &munged);
        errs.push(FieldError::forbidden(
            &path,
            &format!(
                "pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}\n{diff}"
            ),
        ));
    }
    errs
}

/// The new spec with every field a user may change set back to the old value.
fn munge_updatable_fields(new: &Value, old: &Value) -> Value {
    let mut munged = new.clone();
    let Some(m) = munged.as_object_mut() else {
        return munged;
    };
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(items)) = m.get_mut(list) {
            for (i, c) in items.iter_mut().enumerate() {
                if let (Some(c), Some(old_image)) = (
                    c.as_object_mut(),
                    get_list(old, list).get(i).and_then(|o| o.get("image")),
                ) {
                    c.insert("image".into(), old_image.clone());
                }
            }
        }
    }
    for field in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
        match old.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    let old_grace = get_i64(old, "terminationGracePeriodSeconds");
    if old_grace.is_some_and(|g| g < 0) && get_i64(new, "terminationGracePeriodSeconds") == Some(1)
    {
        m.insert(
            "terminationGracePeriodSeconds".into(),
            Value::from(old_grace),
        );
    }
    // The binding subresource assigns the node through the same update path; a first
    // assignment is therefore accepted here (Kubernetes bypasses update validation there).
    if get_str(old, "nodeName").is_empty() {
        match old.get("nodeName") {
            Some(v) => m.insert("nodeName".into(), v.clone()),
            None => m.remove("nodeName"),
        };
    }
    munged
}

/// Drops nulls and empty lists, which Kubernetes' semantic equality treats as absent.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && !matches!(v, Value::Array(a) if a.is_empty()))
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// A short description of which top-level spec fields differ.
fn spec_diff(old: &Value, new: &Value) -> String {
    let empty = Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or_else(|| "<unset>".to_string(), super::compact);
            format!("  spec.{k}: {} -> {}", show(o.get(k)), show(n.get(k)))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every old toleration must still be there, changed at most in `tolerationSeconds`.
fn only_added_tolerations(new: &[Value], old: &[Value], path: &FieldPath) -> Vec<FieldError> {
    let without_seconds = |t: &Value| {
        let mut t = normalized(t);
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let new_set: Vec<Value> = new.iter().map(without_seconds).collect();
    if old.iter().any(|o| !new_set.contains(&without_seconds(o))) {
        return vec![FieldError::forbidden(
            &path.child("tolerations"),
            "existing toleration can not be modified except its tolerationSeconds",
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{fields, summary};
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    /// A pod as the handlers validate it on update: defaulted.
    fn live(spec: Value) -> Value {
        let mut p = pod(spec);
        default_pod(&mut p);
        p
    }

    fn spec() -> Value {
        json!({
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "app", "image": "reg/app:1", "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePolicy": "File"}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        })
    }

    fn with(mut base: Value, patch: Value) -> Value {
        if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
            b.extend(p.clone());
        }
        base
    }

    #[test]
    fn a_valid_pod_passes_create_and_an_identical_update() {
        assert_eq!(validate_pod(&live(spec()), None), vec![]);
        assert_eq!(validate_pod(&live(spec()), Some(&live(spec()))), vec![]);
    }

    #[test]
    fn restart_and_dns_policies_are_enumerated() {
        let c = validate_pod(
            &pod(with(
                spec(),
                json!({"restartPolicy": "Sometimes", "dnsPolicy": "Google"}),
            )),
            None,
        );
        assert_eq!(
            summary(&c),
            vec![
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
            ]
        );
    }

    #[test]
    fn volumes_need_one_source_and_unique_label_names() {
        let c = validate_pod(
            &pod(with(
                spec(),
                json!({"volumes": [
                    {"name": "a", "emptyDir": {}},
                    {"name": "a", "emptyDir": {}},
                    {"name": "b"},
                    {"name": "C", "emptyDir": {}, "configMap": {"name": "x"}},
                    {"name": "d", "secret": {}},
                ]}),
            )),
            None,
        );
        assert_eq!(
            fields(&c),
            vec![
                "spec.volumes[1].name",
                "spec.volumes[2]",
                "spec.volumes[3].configMap",
                "spec.volumes[3].name",
                "spec.volumes[4].secret.secretName",
            ]
        );
        let s = summary(&c);
        assert_eq!(s[0], "spec.volumes[1].name: Duplicate value: \"a\"");
        assert_eq!(
            s[1],
            "spec.volumes[2]: Required value: must specify a volume type"
        );
        assert_eq!(
            s[2],
            "spec.volumes[3].configMap: Forbidden: may not specify more than 1 volume type"
        );
        assert!(
            s[3].starts_with(
                "spec.volumes[3].name: Invalid value: \"C\": a lowercase RFC 1123 label"
            )
        );
        assert_eq!(s[4], "spec.volumes[4].secret.secretName: Required value");
    }

    #[test]
    fn scalar_names_and_deadlines_are_checked() {
        let c = validate_pod(
            &pod(with(
                spec(),
                json!({"nodeName": "Node_1", "serviceAccountName": "a b", "hostname": "a.b", "activeDeadlineSeconds": 0}),
            )),
            None,
        );
        assert_eq!(
            fields(&c),
            vec![
                "spec.serviceAccountName",
                "spec.nodeName",
                "spec.hostname",
                "spec.activeDeadlineSeconds"
            ]
        );
        assert_eq!(
            c[3].message,
            "Invalid value: 0: must be between 1 and 2147483647, inclusive"
        );
    }

    #[test]
    fn node_selector_labels_are_validated() {
        let c = validate_pod(
            &pod(with(spec(), json!({"nodeSelector": {"disk": "fast ssd"}}))),
            None,
        );
        assert_eq!(fields(&c), vec!["spec.nodeSelector"]);
    }

    #[test]
    fn tolerations_follow_kubernetes_rules() {
        let c = validate_pod(
            &pod(with(
                spec(),
                json!({"tolerations": [
                    {"operator": "Equal", "value": "x"},
                    {"key": "k", "operator": "Exists", "value": "v"},
                    {"key": "k", "operator": "Equal", "effect": "NoSchedule", "tolerationSeconds": 5},
                    {"key": "k", "operator": "Like", "effect": "Sometimes"},
                ]}),
            )),
            None,
        );
        assert_eq!(
            fields(&c),
            vec![
                "spec.tolerations[0].operator",
                "spec.tolerations[1].operator",
                "spec.tolerations[2].effect",
                "spec.tolerations[3].operator",
                "spec.tolerations[3].effect",
            ]
        );
        assert_eq!(
            c[0].message,
            "Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""
        );
        assert_eq!(
            c[2].message,
            "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
        );
    }

    #[test]
    fn host_network_pods_must_use_matching_host_ports() {
        let mut s = with(spec(), json!({"hostNetwork": true}));
        s["containers"][0]["ports"] =
            json!([{"containerPort": 80, "hostPort": 81, "protocol": "TCP"}]);
        let c = validate_pod(&pod(s), None);
        assert_eq!(
            summary(&c),
            vec![
                "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true"
            ]
        );
    }

    #[test]
    fn pod_updates_may_change_images_deadline_and_add_tolerations() {
        let old = live(spec());
        let mut new_spec = spec();
        new_spec["containers"][0]["image"] = json!("reg/app:2");
        new_spec["activeDeadlineSeconds"] = json!(100);
        new_spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
            {"key": "extra", "operator": "Exists"}
        ]);
        assert_eq!(validate_pod(&live(new_spec), Some(&old)), vec![]);
    }

    #[test]
    fn pod_updates_may_not_change_other_fields() {
        let old = live(spec());
        let mut new_spec = spec();
        new_spec["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        let c = validate_pod(&live(new_spec), Some(&old));
        assert_eq!(fields(&c), vec!["spec"]);
        assert_eq!(c[0].reason, "FieldValueForbidden");
        assert!(c[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"
        ));
        assert!(c[0].message.contains("spec.containers:"));
    }

    #[test]
    fn pod_updates_may_not_add_containers_or_remove_tolerations() {
        let old = live(spec());
        let mut two = spec();
        two["containers"] = json!([spec()["containers"][0], {"name": "b", "image": "b", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]);
        assert_eq!(
            summary(&validate_pod(&live(two), Some(&old))),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );
        let custom = json!({"key": "custom", "operator": "Exists"});
        let with_custom = live(with(spec(), json!({"tolerations": [custom]})));
        let c = validate_pod(&live(spec()), Some(&with_custom));
        assert_eq!(
            summary(&c),
            vec![
                "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
            ]
        );
    }

    #[test]
    fn active_deadline_may_only_shrink() {
        let old = live(with(spec(), json!({"activeDeadlineSeconds": 10})));
        let c = validate_pod(
            &live(with(spec(), json!({"activeDeadlineSeconds": 20}))),
            Some(&old),
        );
        assert_eq!(
            summary(&c),
            vec![
                "spec.activeDeadlineSeconds: Invalid value: 20: must be less than or equal to previous value"
            ]
        );
        let c = validate_pod(&live(spec()), Some(&old));
        assert_eq!(
            summary(&c),
            vec![
                "spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"
            ]
        );
    }

    #[test]
    fn pods_stored_without_newer_defaults_can_still_be_updated() {
        let mut stored = pod(spec());
        let mut current = stored.clone();
        default_pod(&mut current);
        if let Some(s) = stored["spec"].as_object_mut() {
            s.remove("schedulerName");
        }
        assert_eq!(validate_pod(&current, Some(&stored)), vec![]);
    }

    #[test]
    fn a_first_node_assignment_is_accepted_but_a_move_is_not() {
        let old = live(spec());
        let bound = live(with(spec(), json!({"nodeName": "n1"})));
        assert_eq!(validate_pod(&bound, Some(&old)), vec![]);
        let moved = live(with(spec(), json!({"nodeName": "n2"})));
        assert_eq!(fields(&validate_pod(&moved, Some(&bound))), vec!["spec"]);
    }

    #[test]
    fn scheduling_gates_may_only_be_removed() {
        let old = live(with(
            spec(),
            json!({"schedulingGates": [{"name": "example.com/a"}]}),
        ));
        assert_eq!(validate_pod(&live(spec()), Some(&old)), vec![]);
        let c = validate_pod(
            &live(with(
                spec(),
                json!({"schedulingGates": [{"name": "example.com/b"}]}),
            )),
            Some(&old),
        );
        assert_eq!(
            summary(&c),
            vec![
                "spec.schedulingGates[0].name: Forbidden: only deletion is allowed, but found new scheduling gate 'example.com/b'"
            ]
        );
    }

    #[test]
    fn host_paths_may_not_step_back_and_need_a_known_type() {
        let c = validate_pod(
            &pod(with(
                spec(),
                json!({"volumes": [
                    {"name": "a", "hostPath": {"path": "/srv/../etc"}},
                    {"name": "b", "hostPath": {"path": "/srv", "type": "Folder"}},
                ]}),
            )),
            None,
        );
        assert_eq!(
            summary(&c),
            vec![
                "spec.volumes[0].hostPath.path: Invalid value: \"/srv/../etc\": must not contain '..'",
                "spec.volumes[1].hostPath.type: Unsupported value: \"Folder\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
            ]
        );
    }
}
