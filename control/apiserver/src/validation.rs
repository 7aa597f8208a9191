//! Validation and defaulting hooks of the built-in kinds (STUB: being filled in).

use serde_json::Value;

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

pub fn default_nothing(_obj: &mut Value) {}
pub fn validate_nothing(_obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    Vec::new()
}
macro_rules! stub_validate { ($($n:ident),*) => { $(pub fn $n(_obj: &Value, _old: Option<&Value>) -> Vec<Cause> { Vec::new() })* } }
macro_rules! stub_default { ($($n:ident),*) => { $(pub fn $n(_obj: &mut Value) {})* } }
stub_validate!(validate_namespace, validate_pod, validate_node, validate_service, validate_data_keys, validate_event, validate_deployment, validate_replicaset, validate_daemonset, validate_job, validate_runtimeclass);
stub_default!(default_namespace, default_pod, default_service, default_secret, default_deployment, default_replicaset, default_daemonset, default_job);
