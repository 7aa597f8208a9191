//! The revision of a DaemonSet's pod template: the `controller-revision-hash` label its pods
//! carry, which says whether a pod runs the current template.
//!
//! Kubernetes hashes the template of a ControllerRevision with FNV-1a (32 bit) together with
//! `status.collisionCount` and writes the number in decimal through its "safe" alphabet
//! (`rand.SafeEncodeString`: no vowels, no confusable digits). We do the same over the
//! template's JSON (fields in declaration order, so equal templates hash alike), so the
//! labels look like Kubernetes' (`6d4f8b7c9`), though they are not byte-equal to its values.

use k8s_openapi::api::apps::v1::DaemonSet;

/// The label with a daemon pod's template revision.
pub(crate) const REVISION_HASH_LABEL: &str = "controller-revision-hash";

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a32(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Maps every character through the safe alphabet (`SafeEncodeString`).
fn safe_encode(text: &str) -> String {
    text.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The revision hash of the DaemonSet's current pod template.
pub(crate) fn template_hash(ds: &DaemonSet) -> String {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let json = serde_json::to_vec(&template).unwrap_or_default();
    let mut hash = fnv1a32(&json, 0x811c_9dc5);
    if let Some(collisions) = ds.status.as_ref().and_then(|s| s.collision_count) {
        hash = fnv1a32(&collisions.to_le_bytes(), hash);
    }
    safe_encode(&hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn ds(image: &str) -> DaemonSet {
        DaemonSet {
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DaemonSetSpec::default()
            }),
            ..DaemonSet::default()
        }
    }

    #[test]
    fn equal_templates_hash_alike_and_changed_ones_differ() {
        assert_eq!(template_hash(&ds("a:1")), template_hash(&ds("a:1")));
        assert_ne!(template_hash(&ds("a:1")), template_hash(&ds("a:2")));
    }

    #[test]
    fn hashes_use_only_the_safe_alphabet() {
        let h = template_hash(&ds("a:1"));
        assert!(!h.is_empty());
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b"", 0x811c_9dc5), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a", 0x811c_9dc5), 0xe40c_292c);
    }
}
