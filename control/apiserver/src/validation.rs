//! Validation and defaulting hooks of the built-in kinds, on `serde_json::Value` objects.
//!
//! Each kind's [`crate::registry::ResourceType`] points at one `default_*` hook (called on
//! create and on updates of the main resource, before validation) and one `validate_*`
//! hook (called with `old = Some(..)` on updates). The generic handlers also call
//! [`validate_metadata`] for every write. The rules, field paths and messages are those of
//! the Kubernetes apiserver (`pkg/apis/*/validation`, `pkg/apis/*/v1/defaults.go` and the
//! admission plugins that default fields), so kubectl users see familiar errors such as
//! `spec.containers[0].image: Required value`.
//!
//! Submodules, by concept: [`metadata`] (object metadata, labels, selectors), `pod` (pod
//! specs and pod updates), `container` (containers, ports, env, resources, probes),
//! `pod_defaults`, `workload` (Deployment, ReplicaSet, DaemonSet), `job`, `service`, `endpointslice`, `networkpolicy`, `knative` (Knative Serving's kinds), `data`
//! (ConfigMap, Secret), `kinds` (Namespace, Node, Event, RuntimeClass), `rbac` (roles
//! and bindings) and `certificates` (CertificateSigningRequests).
//! Field errors are built with `wasmkube_api::field` and turned into [`Cause`]s here.

mod certificates;
mod container;
mod data;
mod endpointslice;
mod job;
mod kinds;
mod knative;
mod metadata;
mod networkpolicy;
mod pod;
mod pod_defaults;
mod quota;
mod rbac;
mod service;
mod workload;

use std::collections::BTreeMap;

use serde_json::Value;
use wasmkube_api::field::FieldError;

pub use certificates::{validate_csr, validate_csr_status_update};
pub use data::{default_secret, validate_data_keys};
pub use endpointslice::{default_endpointslice, validate_endpointslice};
pub use job::{default_job, validate_job};
pub use kinds::{
    default_namespace, default_node, validate_event, validate_namespace, validate_node,
    validate_runtimeclass,
};
pub use knative::{
    default_configuration, default_knative_service, default_revision, default_route,
    validate_configuration, validate_knative_service, validate_revision, validate_route,
};
pub use metadata::validate_metadata;
pub use networkpolicy::{default_network_policy, validate_network_policy};
pub use pod::validate_pod;
pub use pod_defaults::{
    DefaultTolerationSeconds, default_pod, default_toleration_seconds, pod_qos_class,
    set_default_toleration_seconds,
};
pub use quota::{default_limit_range, validate_limit_range, validate_resource_quota};
pub use rbac::{
    default_role_binding, validate_cluster_role, validate_cluster_role_binding, validate_role,
    validate_role_binding,
};
pub use service::{default_service, validate_service};
pub use workload::{
    default_daemonset, default_deployment, default_replicaset, validate_daemonset,
    validate_deployment, validate_replicaset,
};

/// One field-level problem, reported in a 422 Invalid status's `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Kubernetes cause reason, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    /// Human message, e.g. `Required value`.
    pub message: String,
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl From<FieldError> for Cause {
    fn from(e: FieldError) -> Self {
        Cause {
            reason: e.error_type.reason(),
            message: e.body(),
            field: e.field,
        }
    }
}

/// Converts field errors into causes, dropping exact duplicates as Kubernetes does.
pub fn causes(errors: Vec<FieldError>) -> Vec<Cause> {
    let mut out: Vec<Cause> = Vec::with_capacity(errors.len());
    for e in errors {
        let cause = Cause::from(e);
        if !out.contains(&cause) {
            out.push(cause);
        }
    }
    out
}

/// The default hook of kinds without defaults.
pub fn default_nothing(_obj: &mut Value) {}

/// The validation hook of kinds without rules beyond metadata.
pub fn validate_nothing(_obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    Vec::new()
}

/// `v[key]` as a string, `""` when missing or not a string.
fn get_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `v[key]` as a list, empty when missing or not a list.
fn get_list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `v[key]` as an integer, if it is one.
fn get_i64(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// A JSON object of strings as a map (non-string values are skipped).
fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `obj[key]` as a mutable JSON object, created (replacing a non-object) when needed.
fn object_entry<'a>(
    obj: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> &'a mut serde_json::Map<String, Value> {
    let entry = obj
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        *entry = Value::Object(Default::default());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Sets `obj[key] = value` unless the key holds a non-null value already.
fn set_default(obj: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        Some(v) if !v.is_null() && v != &Value::String(String::new()) => {}
        _ => {
            obj.insert(key.to_string(), value);
        }
    }
}

/// Renders a JSON value compactly, for the few messages that show a whole struct.
fn compact(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod test_support {
    use super::Cause;

    /// `field: message` of every cause, for compact assertions.
    pub(super) fn summary(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    /// The field paths of every cause.
    pub(super) fn fields(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| c.field.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmkube_api::field::FieldPath;

    #[test]
    fn causes_carry_reason_body_and_field() {
        let e = FieldError::required(&FieldPath::new("spec").child("containers"), "");
        assert_eq!(
            causes(vec![e.clone(), e]),
            vec![Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: "spec.containers".into()
            }]
        );
    }

    #[test]
    fn set_default_fills_missing_null_and_empty_strings_only() {
        let mut m = serde_json::Map::new();
        m.insert("a".into(), Value::Null);
        m.insert("b".into(), Value::String(String::new()));
        m.insert("c".into(), Value::String("x".into()));
        for k in ["a", "b", "c", "d"] {
            set_default(&mut m, k, Value::String("d".into()));
        }
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"a": "d", "b": "d", "c": "x", "d": "d"})
        );
    }
}
