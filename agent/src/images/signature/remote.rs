//! Signature artifacts in registries: reading the signatures of a manifest digest
//! (`R:sha256-<hex>.sig`) and adding one, over the node's [`Registries`] clients (plain HTTP
//! and credentials as for pulls).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ANNOTATION_SIGNATURE, FoundSignature, MEDIA_TYPE_SIMPLE_SIGNING, signature_tag};
use crate::images::registry::{Registries, RegistryAuth, describe, remote_reference};
use crate::images::{ImageError, Reference};

/// The most signature layers read for one image (cosign adds one per signing).
const MAX_SIGNATURES: usize = 64;
/// The largest payload read (a payload is a few hundred bytes).
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
/// The largest signature manifest read.
const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// `application/vnd.oci.image.manifest.v1+json`.
const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config media type of a signature manifest.
const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// What a manifest or signature lookup accepts.
const ACCEPTED: &[&str] = &[
    MEDIA_TYPE_OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The parts of a signature manifest read and written.
#[derive(Debug, Serialize, Deserialize)]
struct SignatureManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Layer,
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Where the signatures of `digest` in `reference`'s repository are.
fn signature_reference(reference: &Reference, digest: &str) -> Reference {
    Reference {
        domain: reference.domain.clone(),
        path: reference.path.clone(),
        tag: Some(signature_tag(digest)),
        digest: None,
    }
}

fn is_not_found(error: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    use oci_client::errors::OciErrorCode as C;
    match error {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown)),
        E::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// The manifest digest `reference` names in its registry: its own digest when it has one
/// (checked to exist), else what its tag points to now.
pub async fn manifest_digest(
    registries: &Registries,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<String, ImageError> {
    let failed = |message: String| ImageError::Pull {
        reference: reference.to_string(),
        message,
    };
    let remote = remote_reference(reference).map_err(failed)?;
    let client = registries.client(&reference.domain, auth);
    let (bytes, _) = client
        .pull_manifest_raw(&remote, auth, ACCEPTED)
        .await
        .map_err(|e| failed(describe(&e)))?;
    let digest = sha256(&bytes);
    if let Some(pinned) = &reference.digest
        && *pinned != digest
    {
        return Err(failed(format!(
            "the registry's manifest hashes to {digest}, not {pinned}"
        )));
    }
    Ok(digest)
}

/// The signatures of manifest `digest` in `reference`'s repository: none when it has no
/// signature artifact. Each payload is checked against its layer digest.
pub async fn fetch_signatures(
    registries: &Registries,
    reference: &Reference,
    digest: &str,
    auth: &RegistryAuth,
) -> Result<Vec<FoundSignature>, String> {
    let signatures = signature_reference(reference, digest);
    let remote = remote_reference(&signatures)?;
    let client = registries.client(&reference.domain, auth);
    let bytes = match client.pull_manifest_raw(&remote, auth, ACCEPTED).await {
        Ok((bytes, _)) => bytes,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(format!("{signatures}: {}", describe(&e))),
    };
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!("{signatures}: the manifest is larger than 1 MiB"));
    }
    let manifest: SignatureManifest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{signatures} is not a signature manifest: {e}"))?;
    let mut found = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == MEDIA_TYPE_SIMPLE_SIGNING)
        .take(MAX_SIGNATURES)
    {
        let Some(signature) = layer.annotations.get(ANNOTATION_SIGNATURE) else {
            continue;
        };
        if layer.size > MAX_PAYLOAD_BYTES {
            continue;
        }
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut payload = Limited::default();
        client
            .pull_blob(&remote, &descriptor, &mut payload)
            .await
            .map_err(|e| format!("{signatures}: payload {}: {}", layer.digest, describe(&e)))?;
        // A payload that is not the blob its layer names is no payload.
        if sha256(&payload.bytes) != layer.digest {
            continue;
        }
        found.push(FoundSignature {
            payload: payload.bytes,
            signature: signature.clone(),
        });
    }
    Ok(found)
}

/// Adds a signature (`payload` and its base64 `signature`) of manifest `digest` to
/// `reference`'s repository: the payload blob, then the signature manifest with the layers
/// it had plus this one. Returns the signature artifact's reference.
pub async fn push_signature(
    registries: &Registries,
    reference: &Reference,
    digest: &str,
    auth: &RegistryAuth,
    payload: Vec<u8>,
    signature: String,
) -> Result<Reference, ImageError> {
    let signatures = signature_reference(reference, digest);
    let failed = |message: String| ImageError::Push {
        reference: signatures.to_string(),
        message,
    };
    let remote = remote_reference(&signatures).map_err(failed)?;
    let client = registries.client(&reference.domain, auth);
    client
        .auth(&remote, auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| failed(describe(&e)))?;
    let mut layers = match client.pull_manifest_raw(&remote, auth, ACCEPTED).await {
        Ok((bytes, _)) => {
            serde_json::from_slice::<SignatureManifest>(&bytes)
                .map_err(|e| failed(format!("the existing signature manifest is not valid: {e}")))?
                .layers
        }
        Err(e) if is_not_found(&e) => Vec::new(),
        Err(e) => return Err(failed(describe(&e))),
    };
    let payload_digest = sha256(&payload);
    let layer = Layer {
        media_type: MEDIA_TYPE_SIMPLE_SIGNING.into(),
        size: payload.len() as u64,
        digest: payload_digest.clone(),
        annotations: BTreeMap::from([(ANNOTATION_SIGNATURE.to_string(), signature)]),
    };
    if layers
        .iter()
        .any(|l| l.digest == layer.digest && l.annotations == layer.annotations)
    {
        return Ok(signatures);
    }
    layers.push(layer);
    let present = client
        .blob_exists(&remote, &payload_digest)
        .await
        .map_err(|e| failed(describe(&e)))?;
    if !present {
        client
            .push_blob(&remote, payload, &payload_digest)
            .await
            .map_err(|e| failed(describe(&e)))?;
    }
    // The config as cosign writes it: no platform, one history entry and diff ID per layer.
    let config = serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": layers.iter().map(|_| serde_json::json!({"created": "0001-01-01T00:00:00Z"})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        "config": {},
    });
    let config = serde_json::to_vec(&config).map_err(|e| failed(e.to_string()))?;
    let config_digest = sha256(&config);
    let config_layer = Layer {
        media_type: MEDIA_TYPE_OCI_CONFIG.into(),
        size: config.len() as u64,
        digest: config_digest.clone(),
        annotations: BTreeMap::new(),
    };
    if !client
        .blob_exists(&remote, &config_digest)
        .await
        .map_err(|e| failed(describe(&e)))?
    {
        client
            .push_blob(&remote, config, &config_digest)
            .await
            .map_err(|e| failed(describe(&e)))?;
    }
    let manifest = SignatureManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
        config: config_layer,
        layers,
    };
    let body = serde_json::to_vec(&manifest).map_err(|e| failed(e.to_string()))?;
    client
        .push_manifest_raw(
            &remote,
            body,
            http::HeaderValue::from_static(MEDIA_TYPE_OCI_MANIFEST),
        )
        .await
        .map_err(|e| failed(describe(&e)))?;
    Ok(signatures)
}

/// An in-memory blob that refuses to grow past [`MAX_PAYLOAD_BYTES`] (the registry may
/// send more than the descriptor says).
#[derive(Default)]
struct Limited {
    bytes: Vec<u8>,
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() as u64 + buf.len() as u64 > MAX_PAYLOAD_BYTES {
            return Poll::Ready(Err(std::io::Error::other(
                "the signature payload is larger than 64 KiB",
            )));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
