//! The pod-template hash: the `pod-template-hash` label of a Deployment's ReplicaSets and the
//! `controller-revision-hash` of a DaemonSet's pods, as Kubernetes' `controller.ComputeHash`
//! computes it: FNV-32a over the template, then — when the owner's `collisionCount` is set —
//! 8 bytes holding the count as a little-endian `uint32` (4 bytes of it and 4 zero bytes, as
//! Kubernetes writes them), and the decimal value of the hash written through
//! `rand.SafeEncodeString` (every character mapped into an alphabet without vowels and
//! look-alike digits, so no words appear in names).
//!
//! One difference: Kubernetes hashes the Go struct as `DeepHashObject` prints it (go-spew,
//! with Go type names, every zero-valued field and the internal representation of
//! quantities), which cannot be reproduced outside Go. We hash the template's JSON as
//! k8s-openapi serializes it (fields in a fixed order, empty ones left out). The value is
//! just as stable — the same template always gives the same hash — but not the value a
//! Kubernetes cluster computes for the same template. Nothing relies on equality with
//! Kubernetes' values: which ReplicaSet runs a template is decided by comparing templates,
//! and a hash collision is resolved by bumping `collisionCount`, as in Kubernetes.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The characters of `rand.String` / `rand.SafeEncodeString` (no vowels, no `0`, `1`, `3`).
pub const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The FNV-1a 32-bit offset basis.
const FNV32_OFFSET: u32 = 0x811c_9dc5;
/// The FNV 32-bit prime.
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-32a of `bytes`, continuing from `hash`. Hand-written: five lines, and the `fnv`
/// crate only offers the 64-bit variant.
fn fnv32a(mut hash: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(FNV32_PRIME);
    }
    hash
}

/// `rand.SafeEncodeString`: each byte of `s` becomes the character of [`SAFE_ALPHABET`] at
/// the byte's value modulo the alphabet's length.
pub fn safe_encode_string(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The hash of `template` given its owner's `collisionCount` (see the module documentation).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // Serializing a k8s-openapi struct cannot fail (no maps with non-string keys).
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv32a(FNV32_OFFSET, &json);
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        hash = fnv32a(hash, &bytes);
    }
    safe_encode_string(&hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
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
    fn safe_encoding_maps_every_byte_into_the_alphabet() {
        // '0' is byte 48: 48 % 27 = 21 -> '4'; '1' -> '5'; '9' (57 % 27 = 3) -> 'f'.
        assert_eq!(safe_encode_string("019"), "45f");
        assert_eq!(safe_encode_string(""), "");
    }

    #[test]
    fn the_hash_of_a_template_is_pinned() {
        // If this changes, every Deployment's next ReplicaSet and every DaemonSet's pods get
        // new names/labels after an upgrade: change it only on purpose.
        assert_eq!(pod_template_hash(&template("a:v1"), None), PINNED_V1);
        assert_eq!(
            pod_template_hash(&template("a:v1"), Some(1)),
            PINNED_V1_COLLISION_1
        );
        assert_eq!(
            pod_template_hash(&PodTemplateSpec::default(), None),
            PINNED_EMPTY
        );
    }

    const PINNED_V1: &str = "cf6f67597";
    const PINNED_V1_COLLISION_1: &str = "596fcc79d8";
    const PINNED_EMPTY: &str = "5859f96865";

    #[test]
    fn the_same_template_always_hashes_the_same_and_another_differently() {
        assert_eq!(
            pod_template_hash(&template("a:v1"), None),
            pod_template_hash(&template("a:v1"), None)
        );
        assert_ne!(
            pod_template_hash(&template("a:v1"), None),
            pod_template_hash(&template("a:v2"), None)
        );
        let hash = pod_template_hash(&template("a:v1"), None);
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
    }

    #[test]
    fn each_collision_count_gives_another_hash() {
        let t = template("a:v1");
        assert_ne!(pod_template_hash(&t, None), pod_template_hash(&t, Some(0)));
        assert_ne!(
            pod_template_hash(&t, Some(0)),
            pod_template_hash(&t, Some(1))
        );
        assert_ne!(
            pod_template_hash(&t, Some(1)),
            pod_template_hash(&t, Some(2))
        );
    }
}
