//! Which ReplicaSet belongs to which pod template: the `pod-template-hash` that names a
//! Deployment's ReplicaSets (`<deployment>-<hash>`) and tells their pods apart, and the
//! template comparison that finds the "new" ReplicaSet (the one running the Deployment's
//! current template) among the old ones.
//!
//! The hash is `wasmkube_api::pod_template_hash` (Kubernetes' `controller.ComputeHash`, over
//! the template's JSON: as stable as Kubernetes' value, but not equal to it) with the
//! Deployment's `collisionCount`. What makes a template "the same" is [`equal_ignore_hash`],
//! not the hash, exactly as in Kubernetes (a hash collision is resolved by bumping
//! `collisionCount`).

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label (and selector term) that ties a ReplicaSet and its pods to one template.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The template as JSON without the `pod-template-hash` label and with empty values
/// dropped (Kubernetes' semantic equality treats nil and empty alike).
fn comparable(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    prune(&mut value);
    value
}

/// Removes nulls, empty objects and empty arrays, depth first.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether two templates are the same apart from their `pod-template-hash` label
/// (Kubernetes' `EqualIgnoreHash`).
pub(crate) fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    comparable(a) == comparable(b)
}

/// Oldest first, then by name (Kubernetes' `ReplicaSetsByCreationTimestamp`).
pub(crate) fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let time = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    time(a)
        .cmp(&time(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

fn template_of(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref().and_then(|s| s.template.as_ref())
}

/// The index of the Deployment's new ReplicaSet in `rss`: the oldest whose template equals
/// the Deployment's.
pub(crate) fn find_new(d: &Deployment, rss: &[ReplicaSet]) -> Option<usize> {
    let template = &d.spec.as_ref()?.template;
    let mut candidates: Vec<usize> = (0..rss.len())
        .filter(|i| template_of(&rss[*i]).is_some_and(|t| equal_ignore_hash(t, template)))
        .collect();
    candidates.sort_by(|a, b| by_creation(&rss[*a], &rss[*b]));
    candidates.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn templates_compare_equal_apart_from_the_hash_label_and_empty_fields() {
        let a = template("a:v1");
        let mut b = template("a:v1");
        if let Some(labels) = b.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.insert(POD_TEMPLATE_HASH.into(), "abc".into());
        }
        if let Some(spec) = b.spec.as_mut() {
            spec.containers[0].env = Some(vec![]);
        }
        assert!(equal_ignore_hash(&a, &b));
        if let Some(spec) = b.spec.as_mut() {
            spec.containers[0].env = Some(vec![EnvVar {
                name: "X".into(),
                value: Some("1".into()),
                ..EnvVar::default()
            }]);
        }
        assert!(!equal_ignore_hash(&a, &b));
    }
}
