//! Wasm images made at test time: a module (from WAT text or raw bytes) packaged as an OCI
//! image layout in the CNCF wasm artifact format (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer), named by the
//! `io.containerd.image.name` annotation the way `samples/oci-package` and containerd write
//! it, ready for `wasmkube image import`.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use sha2::{Digest, Sha256};

const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image layout of one wasm module in a temporary directory.
pub(crate) struct WasmImage {
    name: String,
    layout: tempfile::TempDir,
}

impl WasmImage {
    /// Compiles `wat` to a module and packages it as image `name` (`repo:tag`).
    pub(crate) fn from_wat(name: &str, wat: &str) -> Result<WasmImage> {
        let wasm = wat::parse_str(wat).with_context(|| format!("assembling the WAT of {name}"))?;
        WasmImage::from_wasm(name, &wasm)
    }

    /// Packages the module or component `wasm` as image `name` (`repo:tag`).
    pub(crate) fn from_wasm(name: &str, wasm: &[u8]) -> Result<WasmImage> {
        let tag = name
            .rsplit_once(':')
            .filter(|(repo, _)| !repo.is_empty())
            .map(|(_, tag)| tag.to_owned())
            .ok_or_else(|| anyhow!("image name {name:?} needs a :tag"))?;
        let layout = tempfile::Builder::new()
            .prefix("wasmkube-e2e-image-")
            .tempdir()
            .context("creating an image layout directory")?;
        let dir = layout.path();
        let layer = write_blob(dir, wasm)?;
        let config = serde_json::to_vec(&json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [layer.0],
        }))?;
        let config = write_blob(dir, &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": config.0, "size": config.1},
            "layers": [{"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": layer.0, "size": layer.1}],
        }))?;
        let manifest = write_blob(dir, &manifest)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest.0,
                "size": manifest.1,
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        });
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .context("writing oci-layout")?;
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
            .context("writing index.json")?;
        Ok(WasmImage {
            name: name.to_owned(),
            layout,
        })
    }

    /// The image's name, for a pod's `image:`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The layout directory, for `wasmkube image import`.
    pub(crate) fn path(&self) -> &Path {
        self.layout.path()
    }
}

/// Writes `bytes` as a blob of the layout; returns its digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> Result<(String, usize)> {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).context("creating blobs/sha256")?;
    std::fs::write(blobs.join(&hex), bytes).context("writing a blob")?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

/// A valid preview1 command module of about `data_bytes` bytes: a `_start` that returns at
/// once, a memory just large enough, and one active data segment of `data_bytes` bytes (a
/// non-repeating pattern, so nothing can shortcut it). Hand-encoded: WAT text of that size
/// would be three times larger and slow to assemble.
pub(crate) fn module_with_data_segment(data_bytes: usize) -> Vec<u8> {
    const PAGE: usize = 65_536;
    let pages = data_bytes.div_ceil(PAGE) + 1;
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Type section: one type () -> ().
    section(&mut module, 1, &[0x01, 0x60, 0x00, 0x00]);
    // Function section: one function of type 0.
    section(&mut module, 3, &[0x01, 0x00]);
    // Memory section: one memory, minimum `pages`, no maximum.
    let mut memory = vec![0x01, 0x00];
    leb128(&mut memory, pages);
    section(&mut module, 5, &memory);
    // Export section: "_start" (function 0) and "memory" (memory 0).
    let mut exports = vec![0x02];
    for (name, kind) in [("_start", 0x00u8), ("memory", 0x02)] {
        leb128(&mut exports, name.len());
        exports.extend_from_slice(name.as_bytes());
        exports.extend([kind, 0x00]);
    }
    section(&mut module, 7, &exports);
    // Code section: one body with no locals that just ends.
    section(&mut module, 10, &[0x01, 0x02, 0x00, 0x0b]);
    // Data section: one active segment at offset 0 of memory 0.
    let mut data = Vec::with_capacity(data_bytes + 16);
    data.extend([0x01, 0x00, 0x41, 0x00, 0x0b]);
    leb128(&mut data, data_bytes);
    let mut state: u32 = 0x9e37_79b9;
    data.extend((0..data_bytes).map(|_| {
        // xorshift32: cheap bytes that do not repeat.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state.to_le_bytes()[0]
    }));
    section(&mut module, 11, &data);
    module
}

/// Appends section `id` with `contents` to `module`.
fn section(module: &mut Vec<u8>, id: u8, contents: &[u8]) {
    module.push(id);
    leb128(module, contents.len());
    module.extend_from_slice(contents);
}

/// Appends `value` as unsigned LEB128.
fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_encoded_big_module_matches_what_wat_assembles_for_a_small_one() {
        let wasm = module_with_data_segment(3);
        let expected = wat::parse_str(
            r#"(module
                 (type (func))
                 (func (type 0))
                 (memory 2)
                 (export "_start" (func 0))
                 (export "memory" (memory 0))
                 (data (i32.const 0) "abc"))"#,
        )
        .expect("valid WAT");
        // The same sections in the same order; only the three data bytes differ.
        assert_eq!(wasm.len(), expected.len());
        assert_eq!(wasm[..wasm.len() - 3], expected[..expected.len() - 3]);
    }

    #[test]
    fn leb128_encodes_like_the_spec_examples() {
        let mut out = Vec::new();
        leb128(&mut out, 624_485);
        assert_eq!(out, [0xe5, 0x8e, 0x26]);
    }
}
