//! What an image manifest runs: the wasm module or component, its kind, entrypoint and env.
//!
//! A CNCF wasm artifact's layer is the module. For an ordinary (runwasi-style) image the
//! module is a file in its tar layers: the one the config's `Entrypoint` (else `Cmd`) names,
//! or the only `.wasm` file when they name none. Layers are applied in order with whiteouts,
//! the way an image's root filesystem is built, and the module is copied out into a blob of
//! its own so the runtime can read (and cache by) it directly. The result is cached per
//! manifest digest under `meta/`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

use super::bounded::{BoundedGzip, check_entry_size, refused_or, surface_refusal};
use super::oci::{self, Descriptor, ImageConfig, Manifest};
use super::{ImageError, ImageKind, ImageStore, digest_hex};

/// The first bytes of every wasm module and component.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What a manifest runs; cached as `meta/sha256/<manifest hex>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WasmMeta {
    pub(crate) kind: ImageKind,
    pub(crate) wasm_digest: String,
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

/// Reads the cached analysis of manifest `digest`, or analyzes it and caches the result.
pub(crate) fn meta_for(
    store: &ImageStore,
    reference: &str,
    digest: &str,
) -> Result<WasmMeta, ImageError> {
    let path = store
        .meta_dir()
        .join(format!("{}.json", digest_hex(digest)?));
    if let Ok(bytes) = fs::read(&path)
        && let Ok(meta) = serde_json::from_slice::<WasmMeta>(&bytes)
    {
        return Ok(meta);
    }
    let meta = analyze(store, reference, digest)?;
    let body = serde_json::to_vec(&meta).map_err(|source| ImageError::Json {
        what: format!("the analysis of {digest}"),
        source,
    })?;
    store.write_atomic(&path, &body)?;
    Ok(meta)
}

fn analyze(store: &ImageStore, reference: &str, digest: &str) -> Result<WasmMeta, ImageError> {
    let not_wasm = |reason: String| ImageError::NotWasm {
        reference: reference.to_string(),
        reason,
    };
    let manifest: Manifest =
        serde_json::from_slice(&store.read_blob(digest)?).map_err(|source| ImageError::Json {
            what: format!("manifest {digest}"),
            source,
        })?;
    if manifest.config.media_type == oci::MEDIA_TYPE_WASM_CONFIG {
        let layer = manifest
            .layers
            .iter()
            .find(|l| is_wasm_media_type(&l.media_type))
            .ok_or_else(|| {
                not_wasm(format!(
                    "it is a wasm artifact (config {}) without an {} layer",
                    oci::MEDIA_TYPE_WASM_CONFIG,
                    oci::MEDIA_TYPE_WASM_LAYER
                ))
            })?;
        if !blob_is_wasm(store, &layer.digest)? {
            return Err(not_wasm(format!(
                "its {} layer {} does not start with the wasm magic bytes",
                layer.media_type, layer.digest
            )));
        }
        return Ok(WasmMeta {
            kind: ImageKind::WasmArtifact,
            wasm_digest: layer.digest.clone(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
        });
    }

    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
        .map_err(|source| ImageError::Json {
            what: format!("image config {}", manifest.config.digest),
            source,
        })?;
    let platform = format!("{}/{}", config.os, config.architecture);
    let exec = config.config.unwrap_or_default();
    let entrypoint = exec.entrypoint.unwrap_or_default();
    let cmd = exec.cmd.unwrap_or_default();
    let env = exec
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let meta = |wasm_digest: String| WasmMeta {
        kind: ImageKind::RunwasiLayer,
        wasm_digest,
        entrypoint: entrypoint.clone(),
        cmd: cmd.clone(),
        env: Vec::clone(&env),
    };

    // A layer that is itself a module (a wasm media type, or wasm content).
    for layer in &manifest.layers {
        if is_wasm_media_type(&layer.media_type) || blob_is_wasm(store, &layer.digest)? {
            return Ok(meta(layer.digest.clone()));
        }
    }

    let files = scan_layers(store, &manifest.layers)?;
    let module = match entrypoint.iter().chain(&cmd).next() {
        Some(argv0) => {
            let path = normalize_path(argv0).unwrap_or_default();
            if !files.contains_key(&path) {
                return Err(not_wasm(format!(
                    "its entrypoint {argv0:?} is not a file in its layers (platform {platform}{})",
                    describe_wasm_files(&files)
                )));
            }
            path
        }
        None => {
            let wasm_files: Vec<&String> = files.keys().filter(|p| p.ends_with(".wasm")).collect();
            match wasm_files.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(not_wasm(format!(
                        "its layers hold no .wasm file and its config names no entrypoint \
                         (platform {platform})"
                    )));
                }
                several => {
                    return Err(not_wasm(format!(
                        "its layers hold several .wasm files ({}) and its config names none as \
                         Entrypoint",
                        several
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    };
    let layer = files
        .get(&module)
        .and_then(|i| manifest.layers.get(*i))
        .ok_or_else(|| not_wasm(format!("{module} vanished from its layers")))?;
    match extract_module(store, layer, &module)? {
        Some(wasm_digest) => Ok(meta(wasm_digest)),
        None => Err(not_wasm(format!(
            "its entrypoint /{module} is not a wasm module (platform {platform})"
        ))),
    }
}

fn is_wasm_media_type(media_type: &str) -> bool {
    media_type == oci::MEDIA_TYPE_WASM_LAYER || media_type == oci::MEDIA_TYPE_WASM_COMPONENT_LAYER
}

/// Whether blob `digest` starts with the wasm magic bytes.
fn blob_is_wasm(store: &ImageStore, digest: &str) -> Result<bool, ImageError> {
    let path = store.blob_path(digest)?;
    let mut file = File::open(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ImageError::MissingBlob {
            digest: digest.to_string(),
            place: "the node's image store".into(),
        },
        _ => ImageError::Io {
            action: "open",
            path: path.clone(),
            source,
        },
    })?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == WASM_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(ImageError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Opens a layer blob as a tar archive, decompressing gzip (told by its magic bytes, not its
/// media type, which Docker archives get wrong).
fn open_layer(
    store: &ImageStore,
    layer: &Descriptor,
) -> Result<tar::Archive<Box<dyn Read>>, ImageError> {
    let path = store.blob_path(&layer.digest)?;
    let file = File::open(&path).map_err(ImageError::io("open", &path))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(ImageError::io("read", &path))?;
    let inner: Box<dyn Read> = if head.starts_with(&GZIP_MAGIC) {
        Box::new(BoundedGzip::new(
            reader,
            store.limits(),
            format!("layer {}", layer.digest),
        ))
    } else if head.starts_with(&ZSTD_MAGIC) {
        return Err(ImageError::NotWasm {
            reference: layer.digest.clone(),
            reason: "zstd-compressed layers are not supported yet; use gzip or no compression"
                .into(),
        });
    } else {
        Box::new(reader)
    };
    Ok(tar::Archive::new(inner))
}

/// The regular files of the image's root filesystem (path without leading `/`) and the index
/// of the layer that provides each, after applying whiteouts.
fn scan_layers(
    store: &ImageStore,
    layers: &[Descriptor],
) -> Result<BTreeMap<String, usize>, ImageError> {
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = store.blob_path(&layer.digest)?;
        let mut archive = open_layer(store, layer)?;
        let mut lower_removed: Vec<String> = Vec::new();
        let mut upper: BTreeMap<String, usize> = BTreeMap::new();
        let unreadable = |e: io::Error| refused_or(e, ImageError::io("read the tar layer", &path));
        let entries = archive.entries().map_err(unreadable)?;
        for entry in entries {
            let entry = entry.map_err(unreadable)?;
            let Some(name) = entry
                .path()
                .ok()
                .and_then(|p| p.to_str().and_then(normalize_path))
            else {
                continue;
            };
            let (dir, base) = match name.rsplit_once('/') {
                Some((dir, base)) => (format!("{dir}/"), base),
                None => (String::new(), name.as_str()),
            };
            if base == ".wh..wh..opq" {
                lower_removed.push(dir);
            } else if let Some(hidden) = base.strip_prefix(".wh.") {
                lower_removed.push(format!("{dir}{hidden}"));
            } else if entry.header().entry_type().is_file() {
                upper.insert(name, i);
            } else {
                // Directories, links and devices: a link over a lower file hides it.
                upper.remove(&name);
                if !entry.header().entry_type().is_dir() {
                    lower_removed.push(name);
                }
            }
        }
        for removed in &lower_removed {
            files.retain(|p, _| !hides(removed, p));
        }
        files.extend(upper);
    }
    Ok(files)
}

/// Whether whiteout target `removed` (a path, or a directory ending in `/`) hides path `p`.
fn hides(removed: &str, p: &str) -> bool {
    let removed = removed.trim_end_matches('/');
    removed.is_empty()
        || p == removed
        || p.strip_prefix(removed)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Copies file `module` out of `layer` into a blob if it is a wasm module; `None` if it is not.
fn extract_module(
    store: &ImageStore,
    layer: &Descriptor,
    module: &str,
) -> Result<Option<String>, ImageError> {
    let path = store.blob_path(&layer.digest)?;
    let mut archive = open_layer(store, layer)?;
    let unreadable = |e: io::Error| refused_or(e, ImageError::io("read the tar layer", &path));
    let entries = archive.entries().map_err(unreadable)?;
    for entry in entries {
        let mut entry = entry.map_err(unreadable)?;
        let is_module = entry.header().entry_type().is_file()
            && entry
                .path()
                .ok()
                .and_then(|p| p.to_str().and_then(normalize_path))
                .is_some_and(|p| p == module);
        if !is_module {
            continue;
        }
        check_entry_size(
            &store.limits(),
            &format!("/{module} in layer {}", layer.digest),
            entry.header().size().map_err(unreadable)?,
        )?;
        let mut magic = [0u8; 4];
        match entry.read_exact(&mut magic) {
            Ok(()) if magic == WASM_MAGIC => {}
            Ok(()) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        }
        let digest = store
            .ingest_blob(io::Cursor::new(magic).chain(entry), None)
            .map_err(surface_refusal)?;
        return Ok(Some(digest));
    }
    Ok(None)
}

/// `./a//b.wasm` and `/a/b.wasm` -> `a/b.wasm`; `None` for paths that climb out (`..`).
pub(super) fn normalize_path(p: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn describe_wasm_files(files: &BTreeMap<String, usize>) -> String {
    let wasm: Vec<&str> = files
        .keys()
        .filter(|p| p.ends_with(".wasm"))
        .map(String::as_str)
        .collect();
    if wasm.is_empty() {
        String::new()
    } else {
        format!("; .wasm files in the image: /{}", wasm.join(", /"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_relative_to_the_root() {
        assert_eq!(normalize_path("/hello.wasm").as_deref(), Some("hello.wasm"));
        assert_eq!(normalize_path("./a//b.wasm").as_deref(), Some("a/b.wasm"));
        assert_eq!(normalize_path("../etc/passwd"), None);
    }
}
