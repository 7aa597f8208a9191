//! Signed images: cosign-compatible keyed signatures, made and checked without a
//! transparency log, as `cosign sign --key` / `cosign verify --key` (with `--tlog-upload=false`
//! / `--insecure-ignore-tlog`) and containers/image (`skopeo copy --sign-by-sigstore-private-key`,
//! a `sigstoreSigned` policy) do.
//!
//! # Format
//! The signatures of the image with manifest digest `sha256:<hex>` in repository `R` are the
//! layers of the OCI manifest tagged `R:sha256-<hex>.sig`. Each layer
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) is a *simple signing* payload:
//! ```json
//! {"critical":{"identity":{"docker-reference":"R"},
//!              "image":{"docker-manifest-digest":"sha256:<hex>"},
//!              "type":"cosign container image signature"},
//!  "optional":null}
//! ```
//! and its `dev.cosignproject.cosign/signature` annotation is the base64 ECDSA signature
//! of the payload's bytes ([`keys`]).
//!
//! # Checking
//! [`check`] judges the signatures found for one digest against a set of public keys: it
//! passes when one signature verifies under one key *and* its payload names that very
//! digest. So a tag moved to another manifest after signing finds no signature (or, when
//! someone copies the old signature to the new digest's tag, one naming another digest:
//! refused as tampered). The docker-reference is shown, not required to match (cosign's
//! rule: a digest names the content wherever it was copied to).
//!
//! [`policy`] is the agent's rule of which namespaces need signatures by which keys;
//! [`remote`] reads and writes the signature artifacts in registries.

pub mod keys;
pub mod policy;
pub mod remote;
mod scrypt;

pub use keys::{KeyError, PrivateKey, PublicKey};
pub use policy::{PolicyError, SignaturePolicy, SignatureVerifier};

use serde::{Deserialize, Serialize};

/// The media type of a simple signing payload layer.
pub const MEDIA_TYPE_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The signature tag of the manifest `digest` (`sha256:<hex>` -> `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// A simple signing payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    /// What the signature vouches for.
    pub critical: Critical,
    /// Annotations (creator, timestamp, ...); cosign writes `null`.
    #[serde(default)]
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The critical part of a payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Critical {
    /// The repository the signer named.
    pub identity: Identity,
    /// The manifest digest signed.
    pub image: ImageDigest,
    /// [`PAYLOAD_TYPE`].
    #[serde(rename = "type")]
    pub type_: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// The repository, e.g. `registry.example.com/team/app`.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageDigest {
    /// `sha256:<hex>`.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload vouching for `digest` in `repository`.
    pub fn new(repository: &str, digest: &str) -> Payload {
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_string(),
                },
                image: ImageDigest {
                    docker_manifest_digest: digest.to_string(),
                },
                type_: PAYLOAD_TYPE.to_string(),
            },
            optional: None,
        }
    }

    /// The payload's bytes as cosign writes them (compact JSON, `"optional":null`).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One signature found for an image: a payload and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSignature {
    /// The payload blob's bytes (what was signed).
    pub payload: Vec<u8>,
    /// The base64 signature annotation.
    pub signature: String,
}

/// A signature that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The digest it vouches for.
    pub digest: String,
    /// The repository its payload names.
    pub docker_reference: String,
    /// The fingerprint of the key it verifies under.
    pub key: String,
}

/// Why an image's signatures do not satisfy a set of keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature at all.
    #[error("the image {digest} is not signed (no signature {tag} in {repository})")]
    Unsigned {
        /// The image digest.
        digest: String,
        /// Where its signatures would be.
        repository: String,
        /// Their tag.
        tag: String,
    },
    /// Signatures, but none verifies under the keys.
    #[error(
        "none of the {count} signature(s) of the image {digest} verifies with the trusted key(s) \
         {keys}: signed by another key, or the signature was altered"
    )]
    NoMatchingKey {
        /// The image digest.
        digest: String,
        /// How many signatures were found.
        count: usize,
        /// The trusted keys' fingerprints.
        keys: String,
    },
    /// A trusted signature, but of another manifest: the image or its signature was swapped.
    #[error(
        "the image {digest} carries a signature by a trusted key for another manifest ({signed}): \
         the image or its signature was tampered with"
    )]
    WrongDigest {
        /// The image digest.
        digest: String,
        /// The digest the payload names.
        signed: String,
    },
    /// The signatures could not be read from the registry.
    #[error("the signatures of the image {digest} could not be read: {message}")]
    Unavailable {
        /// The image digest.
        digest: String,
        /// Why.
        message: String,
    },
}

/// Judges `found`, the signatures of manifest `digest` from `repository`, against `keys`: the
/// first signature that verifies under a key and names `digest` passes.
pub fn check(
    repository: &str,
    digest: &str,
    found: &[FoundSignature],
    keys: &[PublicKey],
) -> Result<Verified, Refusal> {
    if found.is_empty() {
        return Err(Refusal::Unsigned {
            digest: digest.to_string(),
            repository: repository.to_string(),
            tag: signature_tag(digest),
        });
    }
    let mut wrong_digest = None;
    for signature in found {
        let Some(bytes) = keys::decode_signature(&signature.signature) else {
            continue;
        };
        let Some(key) = keys.iter().find(|k| k.verifies(&signature.payload, &bytes)) else {
            continue;
        };
        // Only a payload the key vouches for is read.
        let Ok(payload) = serde_json::from_slice::<Payload>(&signature.payload) else {
            continue;
        };
        if payload.critical.type_ != PAYLOAD_TYPE {
            continue;
        }
        if payload.critical.image.docker_manifest_digest != digest {
            wrong_digest = Some(payload.critical.image.docker_manifest_digest);
            continue;
        }
        return Ok(Verified {
            digest: digest.to_string(),
            docker_reference: payload.critical.identity.docker_reference,
            key: key.fingerprint(),
        });
    }
    Err(match wrong_digest {
        Some(signed) => Refusal::WrongDigest {
            digest: digest.to_string(),
            signed,
        },
        None => Refusal::NoMatchingKey {
            digest: digest.to_string(),
            count: found.len(),
            keys: keys
                .iter()
                .map(PublicKey::fingerprint)
                .collect::<Vec<_>>()
                .join(", "),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn signed(key: &PrivateKey, digest: &str) -> FoundSignature {
        let payload = Payload::new("127.0.0.1:5000/app", digest).to_bytes();
        let signature = keys::encode_signature(&key.sign(&payload).unwrap());
        FoundSignature { payload, signature }
    }

    #[test]
    fn the_payload_is_the_one_cosign_writes() {
        let text = String::from_utf8(Payload::new("r.example/app", DIGEST).to_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"r.example/app\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{DIGEST}\"}},\
                 \"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(
            signature_tag(DIGEST),
            format!("sha256-{}.sig", &DIGEST[7..])
        );
    }

    #[test]
    fn a_signature_by_a_trusted_key_for_the_digest_passes() {
        let key = PrivateKey::generate().unwrap();
        let other = PrivateKey::generate().unwrap();
        let found = [signed(&other, DIGEST), signed(&key, DIGEST)];
        let verified = check("r", DIGEST, &found, &[key.public_key()]).unwrap();
        assert_eq!(verified.key, key.public_key().fingerprint());
        assert_eq!(verified.docker_reference, "127.0.0.1:5000/app");
    }

    #[test]
    fn unsigned_wrongly_signed_and_swapped_images_are_refused_with_their_reason() {
        let key = PrivateKey::generate().unwrap();
        let other = PrivateKey::generate().unwrap();
        let trusted = [key.public_key()];
        assert!(matches!(
            check("r", DIGEST, &[], &trusted),
            Err(Refusal::Unsigned { .. })
        ));
        assert!(matches!(
            check("r", DIGEST, &[signed(&other, DIGEST)], &trusted),
            Err(Refusal::NoMatchingKey { count: 1, .. })
        ));
        assert!(matches!(
            check("r", DIGEST, &[signed(&key, OTHER)], &trusted),
            Err(Refusal::WrongDigest { signed, .. }) if signed == OTHER
        ));
        // A payload altered after signing.
        let mut altered = signed(&key, DIGEST);
        altered.payload = Payload::new("127.0.0.1:5000/evil", DIGEST).to_bytes();
        assert!(matches!(
            check("r", DIGEST, &[altered], &trusted),
            Err(Refusal::NoMatchingKey { .. })
        ));
        let garbage = FoundSignature {
            payload: b"{".to_vec(),
            signature: "!!".into(),
        };
        assert!(matches!(
            check("r", DIGEST, &[garbage], &trusted),
            Err(Refusal::NoMatchingKey { .. })
        ));
    }
}
