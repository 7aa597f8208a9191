//! Removing images: `wasmkube image rm` and the agent's image garbage collection.
//!
//! An image is a name (or names) in `index.json` pointing at a top-level digest. Removing
//! it drops its names first, then every blob it reaches (manifests, config, layers, the
//! module extracted from a runwasi-style layer) that no remaining name reaches, with the
//! analysis cached for each removed manifest (`meta/`) and the compiled code of each removed
//! module (`<agent-dir>/wasm-cache/<hex>-<engine>.cwasm`): a blob another image shares stays.
//! Images stored without a name (an import of an unnamed layout) are no roots: their blobs
//! go when a named image that shares them is removed.
//!
//! Which images pods use is the agent's knowledge ([`super::in_use`]); the CLI reads the
//! record the agent keeps of it and refuses to remove those images unless forced.

use std::collections::BTreeSet;
use std::fs;

use super::{ImageError, ImageStore, Reference, image_name_of, reference};

/// What a removal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedImage {
    /// The top-level digest removed (or untagged).
    pub digest: String,
    /// The names removed.
    pub names: Vec<String>,
    /// Whether the image's blobs went too (no other name points at the digest).
    pub blobs_removed: bool,
    /// Bytes of blobs and compiled code deleted.
    pub bytes_freed: u64,
}

/// What [`ImageStore::remove_image`] is asked to remove, parsed from the user's words.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// One name (`repo:tag`).
    Name(String),
    /// Every name pointing at a digest (`sha256:<hex>` or `repo@sha256:<hex>`).
    Digest(String),
}

fn target_of(image: &str) -> Result<Target, ImageError> {
    if reference::is_bare_digest(image) {
        return Ok(Target::Digest(image.to_string()));
    }
    let parsed = Reference::parse(image).map_err(|source| ImageError::InvalidName {
        reference: image.to_string(),
        source,
    })?;
    Ok(match parsed.digest {
        Some(digest) => Target::Digest(digest),
        None => Target::Name(parsed.to_string()),
    })
}

impl ImageStore {
    /// Removes the image `image`: a name (`repo:tag`, normalized as Docker does) loses that
    /// name; a digest (`sha256:<hex>`, `repo@sha256:<hex>`) loses every name pointing at it.
    /// Blobs no remaining name reaches go too, with their compiled code. `in_use` are the
    /// container images (as pods write them) that must not lose their image.
    pub fn remove_image(&self, image: &str, in_use: &[String]) -> Result<RemovedImage, ImageError> {
        let target = target_of(image)?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let (digest, names): (String, Vec<String>) = match &target {
            Target::Name(name) => {
                let found = index
                    .manifests
                    .iter()
                    .find(|d| image_name_of(d) == Some(name.as_str()))
                    .ok_or_else(|| self.not_found(name))?;
                (found.digest.clone(), vec![name.clone()])
            }
            Target::Digest(digest) => {
                let names: Vec<String> = index
                    .manifests
                    .iter()
                    .filter(|d| &d.digest == digest)
                    .filter_map(|d| image_name_of(d).map(str::to_string))
                    .collect();
                if names.is_empty() && !self.has_blob(digest) {
                    return Err(self.not_found(digest));
                }
                if names.is_empty() {
                    self.check_unnamed_image(&index, digest)?;
                }
                (digest.clone(), names)
            }
        };
        index.manifests.retain(|d| {
            !image_name_of(d).is_some_and(|n| names.iter().any(|removed| removed == n))
        });
        let still_named = index.manifests.iter().any(|d| d.digest == digest);
        if let Some(user) = in_use
            .iter()
            .find(|r| uses(r, &names, &digest, still_named))
        {
            return Err(ImageError::InUse {
                image: image.to_string(),
                container_image: user.clone(),
            });
        }
        if !names.is_empty() {
            self.write_index(&index)?;
        }
        let mut removed = RemovedImage {
            digest: digest.clone(),
            names,
            blobs_removed: false,
            bytes_freed: 0,
        };
        if !still_named {
            let mut keep = BTreeSet::new();
            for other in &index.manifests {
                self.owned_blobs(&other.digest, &mut keep);
            }
            let mut mine = BTreeSet::new();
            self.owned_blobs(&digest, &mut mine);
            let gone: Vec<String> = mine.difference(&keep).cloned().collect();
            removed.bytes_freed = self.remove_blobs(&gone);
            removed.blobs_removed = true;
        }
        Ok(removed)
    }

    /// The distinct top-level digests of the named images, each with its names.
    pub fn images(&self) -> Result<Vec<(String, Vec<String>)>, ImageError> {
        let mut images: Vec<(String, Vec<String>)> = Vec::new();
        for (name, digest) in self.list()? {
            match images.iter_mut().find(|(d, _)| *d == digest) {
                Some((_, names)) => names.push(name),
                None => images.push((digest, vec![name])),
            }
        }
        Ok(images)
    }

    /// Adds every blob image `top` owns (what it references, and the module extracted from
    /// it) to `blobs`. Missing or unreadable blobs are skipped: removal takes what is there.
    pub(crate) fn owned_blobs(&self, top: &str, blobs: &mut BTreeSet<String>) {
        let mut reached = BTreeSet::new();
        if self.reachable(top, &mut reached, 0).is_err() {
            reached.insert(top.to_string());
        }
        for digest in &reached {
            if let Some(meta) = self.cached_meta(digest) {
                blobs.insert(meta.wasm_digest);
            }
        }
        blobs.extend(reached);
    }

    /// A digest no name points at may be an unnamed image's (a manifest or index), never a
    /// part of a named image (a layer, a config, an index's child): that would break it.
    fn check_unnamed_image(
        &self,
        index: &super::oci::Index,
        digest: &str,
    ) -> Result<(), ImageError> {
        let not_an_image = |reason: String| ImageError::NotWasm {
            reference: digest.to_string(),
            reason,
        };
        for named in &index.manifests {
            let mut parts = BTreeSet::new();
            self.owned_blobs(&named.digest, &mut parts);
            if parts.contains(digest) {
                return Err(not_an_image(format!(
                    "it is a blob of image {} ({}); remove that image by its name or its digest",
                    image_name_of(named).unwrap_or("<unnamed>"),
                    named.digest
                )));
            }
        }
        let is_image = self
            .read_blob(digest)
            .ok()
            .and_then(|bytes| super::oci::Document::parse(&bytes, "").ok())
            .is_some();
        if is_image {
            Ok(())
        } else {
            Err(not_an_image(
                "it is not an image's digest (a manifest or index) in the store".into(),
            ))
        }
    }

    fn cached_meta(&self, manifest: &str) -> Option<super::wasm::WasmMeta> {
        let hex = super::digest_hex(manifest).ok()?;
        let bytes = fs::read(self.meta_dir().join(format!("{hex}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Deletes blobs, the analyses cached for them and the compiled code of the modules among
    /// them; returns the bytes freed. What cannot be deleted is logged and left.
    pub(crate) fn remove_blobs(&self, digests: &[String]) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        let mut freed = 0;
        let mut modules = BTreeSet::new();
        for digest in digests {
            let Ok(hex) = super::digest_hex(digest) else {
                continue;
            };
            let blob = self.blob_dir().join(hex);
            let meta = self.meta_dir().join(format!("{hex}.json"));
            for path in [blob, meta] {
                freed += remove_file(&path);
            }
            modules.insert(hex.to_string());
        }
        // Compiled code is `<module hex>-<engine hash>.cwasm`. Its bytes count as freed only
        // on the store's filesystem, the one image GC measures.
        let store_device = fs::metadata(&self.root).map(|m| m.dev()).ok();
        let entries = self
            .code_cache_dir()
            .and_then(|dir| fs::read_dir(dir).ok())
            .into_iter()
            .flatten()
            .flatten();
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.ends_with(".cwasm")
                && name
                    .split_once('-')
                    .is_some_and(|(hex, _)| modules.contains(hex));
            if ours {
                let same_device = entry.metadata().ok().map(|m| m.dev()) == store_device;
                let size = remove_file(&entry.path());
                if same_device {
                    freed += size;
                }
            }
        }
        freed
    }

    /// The agent's compiled-code cache (`<agent-dir>/wasm-cache`), for a store at
    /// `<agent-dir>/images`.
    pub(crate) fn code_cache_dir(&self) -> Option<std::path::PathBuf> {
        if self.root.ends_with("agent/images") {
            self.root
                .parent()
                .map(|agent| agent.join(super::CODE_CACHE_DIR))
        } else {
            None
        }
    }

    fn not_found(&self, image: &str) -> ImageError {
        ImageError::NotFound {
            reference: image.to_string(),
            data_dir: self.data_dir_hint(),
        }
    }
}

/// Deletes `path`; its size when it was there.
fn remove_file(path: &std::path::Path) -> u64 {
    let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match fs::remove_file(path) {
        Ok(()) => size,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an image file");
            0
        }
    }
}

/// Whether a container image `used` (as a pod writes it) needs the image being removed:
/// it names one of the `removed` names, or pins `digest` while no name keeps the digest.
pub(super) fn uses(used: &str, removed: &[String], digest: &str, still_named: bool) -> bool {
    match target_of(used) {
        Ok(Target::Name(name)) => removed.contains(&name),
        Ok(Target::Digest(pinned)) => pinned == digest && !still_named,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_needs_the_name_it_uses_or_the_digest_it_pins() {
        let hex = "a".repeat(64);
        let digest = format!("sha256:{hex}");
        let removed = vec!["docker.io/library/hello:v1".to_string()];
        assert!(uses("hello:v1", &removed, &digest, false));
        assert!(!uses("hello:v2", &removed, &digest, false));
        assert!(uses(&format!("hello@{digest}"), &[], &digest, false));
        assert!(!uses(&format!("hello@{digest}"), &[], &digest, true));
        assert!(!uses("not an image", &removed, &digest, false));
    }
}
