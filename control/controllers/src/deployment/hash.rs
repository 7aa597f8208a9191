//! Which ReplicaSet belongs to which pod template: the `pod-template-hash` that names a
//! Deployment's ReplicaSets (`<deployment>-<hash>`) and tells their pods apart, and the
//! template comparison that finds the "new" ReplicaSet (the one running the Deployment's
//! current template) among the old ones.
//!
//! The hash is computed the way Kubernetes' `controller.ComputeHash` is: FNV-32a over a
//! serialization of the template, then the Deployment's `collisionCount` (4 bytes, little
//! endian) when set, and the decimal value rendered with the "safe encode" alphabet (no
//! vowels, no look-alikes). Kubernetes serializes the Go struct with a deep printer; we hash
//! the template's JSON (k8s-openapi's field order, fixed), so the value differs from a real
//! cluster's for the same template, but is just as stable: the same template always gives
//! the same name. What makes a template "the same" is [`equal_ignore_hash`], not the hash,
//! exactly as in Kubernetes (a hash collision is resolved by bumping `collisionCount`).

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label (and selector term) that ties a ReplicaSet and its pods to one template.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The characters `rand.SafeEncodeString` maps bytes to.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32a of `bytes`, continuing from `hash`.
fn fnv32a(mut hash: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

const FNV32_OFFSET: u32 = 0x811c_9dc5;

/// `rand.SafeEncodeString`: each byte of `s` becomes a character of the safe alphabet.
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The `pod-template-hash` of `template` given the Deployment's `collisionCount`.
pub(crate) fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // Serializing a k8s-openapi struct cannot fail (no maps with non-string keys).
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv32a(FNV32_OFFSET, &bytes);
    if let Some(count) = collision_count {
        hash = fnv32a(hash, &count.to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

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
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(FNV32_OFFSET, b""), 0x811c_9dc5);
        assert_eq!(fnv32a(FNV32_OFFSET, b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(FNV32_OFFSET, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_uses_only_consonants_and_unambiguous_digits() {
        // '0' is byte 48: 48 % 27 = 21 -> '4'; '1' -> '5'.
        assert_eq!(safe_encode("01"), "45");
        let hash = compute_hash(&template("a:v1"), None);
        assert!(!hash.is_empty() && hash.len() <= 10);
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
    }

    #[test]
    fn the_same_template_always_hashes_the_same_and_another_differently() {
        assert_eq!(
            compute_hash(&template("a:v1"), None),
            compute_hash(&template("a:v1"), None)
        );
        assert_ne!(
            compute_hash(&template("a:v1"), None),
            compute_hash(&template("a:v2"), None)
        );
    }

    #[test]
    fn a_collision_count_changes_the_hash() {
        let t = template("a:v1");
        assert_ne!(compute_hash(&t, None), compute_hash(&t, Some(1)));
        assert_ne!(compute_hash(&t, Some(1)), compute_hash(&t, Some(2)));
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
