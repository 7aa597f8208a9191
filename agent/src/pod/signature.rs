//! The image signature check of a container start: in a namespace the agent's
//! `--image-signature-policy` restricts, the digest the container would run must carry a
//! signature by one of the rule's keys ([`crate::images::signature`]). A refusal is the
//! kubelet's `SignatureValidationFailed` (Warning `Failed` events saying why), retried with
//! the image pull back-off.

use k8s_openapi::api::core::v1::Pod;
use wasmkube_client::events::EventType;

use super::PodContext;
use super::start::StartFailed;
use crate::images::ResolvedImage;
use crate::images::registry::RegistryAuth;

/// Checks `image` (resolved from the container's `image_ref`) against the policy for the
/// pod's namespace; the signatures are read with the pod's pull credentials `auth`.
pub(crate) async fn check_image(
    ctx: &PodContext,
    pod: &Pod,
    image_ref: &str,
    image: &ResolvedImage,
    auth: &RegistryAuth,
    event: &impl Fn(EventType, &str, String),
) -> Result<(), StartFailed> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if !ctx.signatures.restricts(namespace) {
        return Ok(());
    }
    match ctx
        .signatures
        .verify(&ctx.registries, namespace, image_ref, &image.digest, auth)
        .await
    {
        Ok(verified) => {
            if let Some(v) = verified {
                tracing::debug!(image = image_ref, digest = %v.digest, key = %v.key, "image signature verified");
            }
            Ok(())
        }
        Err(refusal) => {
            let message = format!(
                "image signature validation failed: namespace {namespace} runs only images \
                 signed by a key of the agent's image signature policy, and {refusal}"
            );
            event(
                EventType::Warning,
                "Failed",
                format!("Failed to pull image \"{image_ref}\": {message}"),
            );
            event(
                EventType::Warning,
                "Failed",
                "Error: SignatureValidationFailed".to_string(),
            );
            Err(StartFailed::Signature(message))
        }
    }
}
