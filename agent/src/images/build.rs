//! `wasmkube image build`: a wasm module or component packaged as the CNCF wasm OCI artifact
//! (TAG Runtime's "Wasm OCI Artifact" layout): one `application/wasm` layer that is the binary
//! itself, and a config of media type `application/vnd.wasm.config.v0+json` saying
//! architecture `wasm`, os `wasip1` (a core module) or `wasip2` (a component), the layer
//! digests and, for a component, its top-level imports and exports (e.g.
//! `wasi:http/incoming-handler@0.2.0`).
//!
//! The artifact carries no timestamp, so building the same binary twice gives the same
//! digest.

use serde::Serialize;

use super::oci::{self, Descriptor};
use super::registry::MEDIA_TYPE_OCI_MANIFEST;
use super::{ImageError, ImageStore, Reference};

/// The config of a wasm artifact.
#[derive(Debug, Serialize)]
struct WasmConfig {
    architecture: &'static str,
    os: &'static str,
    #[serde(rename = "layerDigests")]
    layer_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<ComponentInfo>,
}

/// A component's world, as the artifact config records it.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ComponentInfo {
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "artifactType")]
    artifact_type: &'a str,
    config: &'a Descriptor,
    layers: [&'a Descriptor; 1],
}

/// What a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmBinaryKind {
    /// A core module (WASI preview 1).
    Module,
    /// A component (WASI preview 2).
    Component,
}

/// Whether `wasm` is a core module or a component, by its preamble; `None` when it is not
/// WebAssembly at all.
pub fn binary_kind(wasm: &[u8]) -> Option<WasmBinaryKind> {
    match wasm.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(WasmBinaryKind::Module),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(WasmBinaryKind::Component),
        _ => None,
    }
}

/// The top-level import and export names of a component (nested modules' and components'
/// are theirs, not the component's).
pub(crate) fn component_info(wasm: &[u8]) -> Result<ComponentInfo, String> {
    use wasmparser::{Parser, Payload};
    let mut info = ComponentInfo::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("the component does not parse: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| format!("a component import: {e}"))?;
                    info.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| format!("a component export: {e}"))?;
                    info.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Packages `wasm` as a wasm artifact in `store`, named `reference`; returns the manifest's
/// descriptor.
pub fn build_wasm_artifact(
    store: &ImageStore,
    wasm: &[u8],
    reference: &Reference,
) -> Result<Descriptor, ImageError> {
    let invalid = |reason: String| ImageError::Build {
        reference: reference.to_string(),
        reason,
    };
    let kind = binary_kind(wasm)
        .ok_or_else(|| invalid("the file is not WebAssembly (no \\0asm preamble)".into()))?;
    let layer_digest = store.ingest_blob(wasm, None)?;
    let layer = descriptor(oci::MEDIA_TYPE_WASM_LAYER, &layer_digest, wasm.len());
    let config = WasmConfig {
        architecture: "wasm",
        os: match kind {
            WasmBinaryKind::Module => "wasip1",
            WasmBinaryKind::Component => "wasip2",
        },
        layer_digests: vec![layer_digest],
        component: match kind {
            WasmBinaryKind::Module => None,
            WasmBinaryKind::Component => Some(component_info(wasm).map_err(invalid)?),
        },
    };
    let config_bytes = json(&config)?;
    let config_digest = store.ingest_blob(config_bytes.as_slice(), None)?;
    let config = descriptor(
        oci::MEDIA_TYPE_WASM_CONFIG,
        &config_digest,
        config_bytes.len(),
    );
    let manifest = json(&Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_OCI_MANIFEST,
        artifact_type: oci::MEDIA_TYPE_WASM_CONFIG,
        config: &config,
        layers: [&layer],
    })?;
    let digest = store.ingest_blob(manifest.as_slice(), None)?;
    let top = descriptor(MEDIA_TYPE_OCI_MANIFEST, &digest, manifest.len());
    store.tag(reference, &top)?;
    Ok(top)
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: size as u64,
        platform: None,
        annotations: Default::default(),
    }
}

fn json(value: &impl Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|e| ImageError::Build {
        reference: String::new(),
        reason: format!("serializing: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_tells_a_module_from_a_component() {
        assert_eq!(
            binary_kind(b"\0asm\x01\0\0\0rest"),
            Some(WasmBinaryKind::Module)
        );
        assert_eq!(
            binary_kind(b"\0asm\x0d\0\x01\0rest"),
            Some(WasmBinaryKind::Component)
        );
        assert_eq!(binary_kind(b"\x7fELF\x02\x01\x01\0"), None);
        assert_eq!(binary_kind(b"\0asm"), None);
    }

    #[test]
    fn a_module_becomes_a_reproducible_wasm_artifact() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = ImageStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let wasm = b"\0asm\x01\0\0\0";
        let reference = Reference::parse("example.com/tiny:1").unwrap_or_else(|e| panic!("{e}"));
        let first = build_wasm_artifact(&store, wasm, &reference).unwrap_or_else(|e| panic!("{e}"));
        let second =
            build_wasm_artifact(&store, wasm, &reference).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first.digest, second.digest,
            "the same binary, the same digest"
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &store
                .read_blob(&first.digest)
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(manifest["config"]["mediaType"], oci::MEDIA_TYPE_WASM_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
        let config: serde_json::Value = serde_json::from_slice(
            &store
                .read_blob(manifest["config"]["digest"].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["layerDigests"][0], manifest["layers"][0]["digest"]);
        assert!(config.get("component").is_none());
        assert_eq!(
            store
                .list()
                .unwrap_or_else(|e| panic!("{e}"))
                .first()
                .map(|(n, d)| (n.as_str(), d.as_str())),
            Some(("example.com/tiny:1", first.digest.as_str()))
        );
        let not_wasm = build_wasm_artifact(&store, b"#!/bin/sh\n", &reference)
            .expect_err("a shell script is not wasm");
        assert!(
            not_wasm.to_string().contains("not WebAssembly"),
            "{not_wasm}"
        );
    }
}
