//! `wasmkube image inspect`: what an image in the store is, as JSON (crictl inspecti's
//! role): its names and digest, the manifest (the wasm one, for an index), config and layers
//! with their media types and sizes, the platform, the module or component it runs with its
//! imports and exports, and the compiled code the agent keeps for it.

use serde::Serialize;
use serde_json::Value;

use super::oci::{Descriptor, Manifest};
use super::{ImageError, ImageStore};

/// An image, as `wasmkube image inspect` prints it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInspection {
    /// The names pointing at the image.
    pub names: Vec<String>,
    /// The top-level digest (an index's, for a multi-platform image): pods' `imageID`.
    pub digest: String,
    /// The top-level document's media type.
    pub media_type: String,
    /// The bytes of every blob of the image the store holds.
    pub size: u64,
    /// The manifest that runs, when the top level is an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<BlobSummary>,
    /// The image config.
    pub config: BlobSummary,
    /// `os/architecture` from the config.
    pub platform: String,
    /// The layers, base first.
    pub layers: Vec<BlobSummary>,
    /// What the image runs.
    pub wasm: WasmSummary,
    /// The config's `Entrypoint`, `Cmd` and `Env` (runwasi-style images).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `Env`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Compiled code files of the module in the agent's cache.
    pub compiled: Vec<String>,
}

/// A blob: digest, media type, size.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobSummary {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The module or component an image runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmSummary {
    /// `wasm artifact` (the layer is the binary) or `wasm in image layer` (runwasi style).
    pub image_kind: &'static str,
    /// `module` or `component`.
    pub kind: &'static str,
    /// The binary's digest (the compile cache's key).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Imports: a component's top-level ones, a module's as `module/name`.
    pub imports: Vec<String>,
    /// Exports.
    pub exports: Vec<String>,
}

impl BlobSummary {
    fn of(d: &Descriptor) -> BlobSummary {
        BlobSummary {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
        }
    }
}

impl ImageStore {
    /// Describes the image `image`: a name (normalized as Docker does), `repo@sha256:...` or
    /// a bare `sha256:<hex>` digest of an image in the store.
    pub fn inspect(&self, image: &str) -> Result<ImageInspection, ImageError> {
        let resolved = self.resolve(image)?;
        let top = resolved.digest.clone();
        let names: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|(_, d)| *d == top)
            .map(|(n, _)| n)
            .collect();
        let top_bytes = self.read_blob(&top)?;
        let top_value: Value =
            serde_json::from_slice(&top_bytes).map_err(|source| ImageError::Json {
                what: format!("manifest {top}"),
                source,
            })?;
        let media_type = top_value["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let leaf = self.leaf_manifest(&resolved.reference, &top, &media_type, 0)?;
        let leaf_bytes = self.read_blob(&leaf)?;
        let manifest: Manifest =
            serde_json::from_slice(&leaf_bytes).map_err(|source| ImageError::Json {
                what: format!("manifest {leaf}"),
                source,
            })?;
        let config_value: Value = self
            .read_blob(&manifest.config.digest)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let platform = format!(
            "{}/{}",
            text(&config_value["os"]),
            text(&config_value["architecture"])
        );
        let wasm_bytes =
            std::fs::read(&resolved.wasm).map_err(ImageError::io("read", &resolved.wasm))?;
        let (kind, imports, exports) = world(&wasm_bytes);
        let mut blobs = std::collections::BTreeSet::new();
        self.owned_blobs(&top, &mut blobs);
        let size = blobs
            .iter()
            .filter_map(|d| self.blob_path(d).ok())
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let hex = resolved.wasm_digest.trim_start_matches("sha256:");
        let mut compiled: Vec<String> = self
            .code_cache_dir()
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&format!("{hex}-")) && name.ends_with(".cwasm")
            })
            .map(|e| e.path().display().to_string())
            .collect();
        compiled.sort();
        let exec = &config_value["config"];
        Ok(ImageInspection {
            names,
            digest: top.clone(),
            media_type: if media_type.is_empty() {
                "application/vnd.oci.image.manifest.v1+json".into()
            } else {
                media_type
            },
            size,
            manifest: (leaf != top).then(|| BlobSummary {
                digest: leaf.clone(),
                media_type: serde_json::from_slice::<Value>(&leaf_bytes)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_else(|| super::registry::MEDIA_TYPE_OCI_MANIFEST.into()),
                size: leaf_bytes.len() as u64,
            }),
            config: BlobSummary::of(&manifest.config),
            platform,
            layers: manifest.layers.iter().map(BlobSummary::of).collect(),
            wasm: WasmSummary {
                image_kind: match resolved.kind {
                    super::ImageKind::WasmArtifact => "wasm artifact",
                    super::ImageKind::RunwasiLayer => "wasm in image layer",
                },
                kind,
                digest: resolved.wasm_digest.clone(),
                size: wasm_bytes.len() as u64,
                imports,
                exports,
            },
            entrypoint: strings(&exec["Entrypoint"]),
            cmd: strings(&exec["Cmd"]),
            env: strings(&exec["Env"]),
            compiled,
        })
    }
}

/// A binary's kind and its imports and exports (what parses of them).
fn world(wasm: &[u8]) -> (&'static str, Vec<String>, Vec<String>) {
    use wasmparser::{Parser, Payload};
    match super::build::binary_kind(wasm) {
        Some(super::build::WasmBinaryKind::Component) => {
            let info = super::build::component_info(wasm).unwrap_or_default();
            ("component", info.imports, info.exports)
        }
        Some(super::build::WasmBinaryKind::Module) => {
            let (mut imports, mut exports) = (Vec::new(), Vec::new());
            for payload in Parser::new(0).parse_all(wasm) {
                match payload {
                    Ok(Payload::ImportSection(reader)) => {
                        for import in reader.into_imports().flatten() {
                            imports.push(format!("{}/{}", import.module, import.name));
                        }
                    }
                    Ok(Payload::ExportSection(reader)) => {
                        for export in reader.into_iter().flatten() {
                            exports.push(export.name.to_string());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            ("module", imports, exports)
        }
        None => ("unknown", Vec::new(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modules_imports_and_exports_are_listed() {
        // (module (import "wasi_snapshot_preview1" "fd_write" (func)) (func (export "_start")))
        let wasm = [
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // preamble
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
            0x02, 0x23, 0x01, 0x16, b'w', b'a', b's', b'i', b'_', b's', b'n', b'a', b'p', b's',
            b'h', b'o', b't', b'_', b'p', b'r', b'e', b'v', b'i', b'e', b'w', b'1', 0x08, b'f',
            b'd', b'_', b'w', b'r', b'i', b't', b'e', 0x00, 0x00, // import section
            0x03, 0x02, 0x01, 0x00, // function section
            0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x01, // export
            0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section
        ];
        let (kind, imports, exports) = world(&wasm);
        assert_eq!(kind, "module");
        assert_eq!(imports, vec!["wasi_snapshot_preview1/fd_write"]);
        assert_eq!(exports, vec!["_start"]);
    }
}
