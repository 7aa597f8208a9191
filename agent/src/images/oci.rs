//! The few OCI image-spec JSON documents the store reads and writes: descriptors, image
//! indexes, image manifests and image configs, plus the media types that matter here.
//!
//! Hand-written (a dozen serde fields) rather than the `oci-spec` crate, whose builder and
//! getter machinery would cost more compile time than these structs are long. Unknown fields
//! are ignored, so newer documents still parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `application/vnd.oci.image.index.v1+json`.
pub(crate) const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`.
#[cfg(test)]
pub(crate) const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's manifest list, the index of Docker-format images.
pub(crate) const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// The CNCF wasm artifact's config media type.
pub(crate) const MEDIA_TYPE_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF wasm artifact's layer media type: the raw module or component.
pub(crate) const MEDIA_TYPE_WASM_LAYER: &str = "application/wasm";
/// The layer media type of wasm components pushed by runwasi-era tooling.
pub(crate) const MEDIA_TYPE_WASM_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// containerd's annotation holding an image's full name.
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in an index: a full reference or only a tag.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The content of an OCI layout's `oci-layout` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayoutFile {
    /// Only `1.0.0` exists.
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// The one layout version of the OCI image spec.
pub(crate) const LAYOUT_VERSION: &str = "1.0.0";

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The platform of a manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Free-form annotations, e.g. image names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform a manifest is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `wasi`, `wasip1`, `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `wasm`, `amd64`.
    #[serde(default)]
    pub architecture: String,
}

impl Platform {
    /// Whether this platform is WebAssembly: OS `wasi*` or architecture `wasm*`.
    pub fn is_wasm(&self) -> bool {
        self.os.starts_with("wasi") || self.architecture.starts_with("wasm")
    }
}

/// An image index (or Docker manifest list): a list of manifests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// `application/vnd.oci.image.index.v1+json` when present.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes).
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: a config and layers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config (OCI or Docker) the agent uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ImageConfig {
    /// e.g. `wasi` or `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `wasm` or `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// The execution parameters.
    #[serde(default)]
    pub config: Option<ExecConfig>,
}

/// `config.config` of an image config: how to run it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ExecConfig {
    /// `Entrypoint`: argv prefix, overridden by a container's `command`.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`: default arguments, overridden by a container's `args`.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `Env`: `KEY=value` strings.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
}

/// A JSON document that is either an index or a manifest, told apart by its fields when the
/// media type is missing.
#[derive(Debug, Clone)]
pub(crate) enum Document {
    /// An image index or Docker manifest list.
    Index(Index),
    /// An image manifest.
    Manifest(Manifest),
}

impl Document {
    /// Parses `bytes` as an index when it has `manifests` (or says so in `media_type`), else as a
    /// manifest.
    pub(crate) fn parse(bytes: &[u8], media_type: &str) -> Result<Document, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let is_index = media_type == MEDIA_TYPE_OCI_INDEX
            || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
            || value.get("manifests").is_some();
        if is_index {
            serde_json::from_value(value).map(Document::Index)
        } else {
            serde_json::from_value(value).map(Document::Manifest)
        }
    }
}
