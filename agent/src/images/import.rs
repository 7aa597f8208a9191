//! Importing OCI image layouts (a directory, or a tar archive of one, optionally gzip) into the
//! store: `wasmkube image import`.
//!
//! Every manifest listed in the layout's `index.json` is copied with what it references
//! (config, layers; for an index, the children for a wasm platform, else those present), each
//! blob verified against its digest and size. Each must hold a runnable wasm module (see the
//! parent module), or the import fails before any name changes.
//!
//! # Names, as containerd's import reads them
//! 1. `io.containerd.image.name` is the full name (written by containerd, nerdctl, Docker);
//! 2. else `org.opencontainers.image.ref.name`, when it contains `/`, `:` or `@`, is a full name
//!    (podman, skopeo `oci:dir:name`);
//! 3. else `org.opencontainers.image.ref.name` is only a tag (what the OCI spec intends, and what
//!    `docker save` and `oras` write). containerd then prepends `ctr image import --base-name`;
//!    without one `ctr` invents `import-<date>:<tag>`, a name no pod would use. Here the image
//!    is imported without a name (resolvable by digest) and the result says to pass
//!    [`ImportOptions::base_name`] (`--base-name REPO` gives `REPO:<tag>`).
//!
//! With a base name, full names not under it are dropped, as `ctr --base-name` does. Unlike
//! containerd, names are stored normalized (`hello:v1` -> `docker.io/library/hello:v1`), the
//! form the kubelet and containerd's CRI plugin look pods' images up by.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::bounded::{BoundedGzip, check_entry_size, refused_or};
use super::oci::{self, Descriptor, Document, Index, LayoutFile};
use super::reference::Reference;
use super::wasm::normalize_path;
use super::{ImageError, ImageKind, ImageStore, MAX_INDEX_DEPTH, digest_hex, select_children};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The repository for images named only by a tag (`org.opencontainers.image.ref.name`
    /// without `/`, `:` or `@`); also filters full names to those under it.
    pub base_name: Option<String>,
}

/// One image an import added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The normalized name it is stored under; `None` when the layout does not name it (it
    /// can still be used by digest).
    pub name: Option<String>,
    /// The digest the name points to (the manifest or index in the layout's `index.json`).
    pub digest: String,
    /// The kind of wasm image.
    pub kind: ImageKind,
    /// Why it has no name, and what to do about it.
    pub note: Option<String>,
}

impl ImageStore {
    /// Imports an OCI image layout directory or a (gzip) tar archive of one; see the module
    /// docs for how images are named.
    pub fn import(&self, path: &Path) -> Result<Vec<ImportedImage>, ImageError> {
        self.import_with(path, &ImportOptions::default())
    }

    /// [`ImageStore::import`] with options.
    pub fn import_with(
        &self,
        path: &Path,
        options: &ImportOptions,
    ) -> Result<Vec<ImportedImage>, ImageError> {
        let meta = fs::metadata(path).map_err(ImageError::io("read", path))?;
        if meta.is_dir() {
            self.import_layout(path, path, options)
        } else {
            let unpacked = self.unpack_archive(path)?;
            self.import_layout(unpacked.path(), path, options)
        }
    }

    /// Unpacks the layout files of a tar archive (`oci-layout`, `index.json`, `blobs/*/*`) into
    /// a temporary directory of the store; everything else in it is ignored.
    fn unpack_archive(&self, path: &Path) -> Result<tempfile::TempDir, ImageError> {
        let file = File::open(path).map_err(ImageError::io("open", path))?;
        let mut reader = BufReader::new(file);
        let head = reader.fill_buf().map_err(ImageError::io("read", path))?;
        let inner: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(BoundedGzip::new(
                reader,
                self.limits,
                format!("the archive {}", path.display()),
            ))
        } else {
            Box::new(reader)
        };
        let tmp_dir = self.tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&tmp_dir)
            .map_err(ImageError::io("create a directory in", &tmp_dir))?;
        let not_tar = |e: io::Error| {
            refused_or(e, |e| ImageError::Layout {
                path: path.to_path_buf(),
                reason: format!("it is neither a directory nor a readable tar archive ({e})"),
            })
        };
        let mut archive = tar::Archive::new(inner);
        for entry in archive.entries().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Some(name) = entry
                .path()
                .ok()
                .and_then(|p| p.to_str().and_then(normalize_path))
            else {
                continue;
            };
            let parts: Vec<&str> = name.split('/').collect();
            let wanted = matches!(parts.as_slice(), ["oci-layout"] | ["index.json"])
                || matches!(parts.as_slice(), ["blobs", _, _]);
            if !wanted {
                continue;
            }
            check_entry_size(
                &self.limits,
                &format!("{name} in {}", path.display()),
                entry.header().size().map_err(not_tar)?,
            )?;
            let dest = dir.path().join(&name);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(ImageError::io("create", parent))?;
            }
            let mut out = File::create(&dest).map_err(ImageError::io("create", &dest))?;
            io::copy(&mut entry, &mut out).map_err(not_tar)?;
        }
        Ok(dir)
    }

    /// Imports the layout in directory `source`; `shown` is the path the user gave.
    fn import_layout(
        &self,
        source: &Path,
        shown: &Path,
        options: &ImportOptions,
    ) -> Result<Vec<ImportedImage>, ImageError> {
        let layout_error = |reason: String| ImageError::Layout {
            path: shown.to_path_buf(),
            reason,
        };
        let layout: LayoutFile = read_json(&source.join("oci-layout")).map_err(|e| {
            layout_error(format!(
                "its oci-layout file is missing or invalid ({e}); export the image as an OCI \
                 layout, e.g. `skopeo copy ... oci-archive:hello.tar`, `docker save` (Docker \
                 25 or later) or `oras copy --to-oci-layout`"
            ))
        })?;
        if layout.image_layout_version != oci::LAYOUT_VERSION {
            return Err(layout_error(format!(
                "its imageLayoutVersion is {:?}; only {:?} is supported",
                layout.image_layout_version,
                oci::LAYOUT_VERSION
            )));
        }
        let index: Index = read_json(&source.join("index.json"))
            .map_err(|e| layout_error(format!("its index.json is missing or invalid ({e})")))?;
        if index.manifests.is_empty() {
            return Err(layout_error("its index.json lists no images".into()));
        }
        let base = options
            .base_name
            .as_deref()
            .map(|b| {
                Reference::parse(b).map_err(|source| ImageError::InvalidName {
                    reference: b.to_string(),
                    source,
                })
            })
            .transpose()?;

        let mut imported = Vec::new();
        let mut names: BTreeMap<String, Descriptor> = BTreeMap::new();
        for desc in &index.manifests {
            self.copy_tree(source, shown, desc, 0)?;
            let (name, note) = image_name(&desc.annotations, base.as_ref())?;
            let shown_name = name.clone().unwrap_or_else(|| desc.digest.clone());
            let resolved = self.resolve_digest(&shown_name, &desc.digest)?;
            if let Some(name) = &name {
                names.insert(name.clone(), desc.clone());
            }
            imported.push(ImportedImage {
                name,
                digest: desc.digest.clone(),
                kind: resolved.kind,
                note,
            });
        }
        let names: Vec<(String, Descriptor)> = names.into_iter().collect();
        self.tag_all(&names)?;
        Ok(imported)
    }

    /// Copies manifest or index `desc` and everything it references from layout `source`.
    fn copy_tree(
        &self,
        source: &Path,
        shown: &Path,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<(), ImageError> {
        self.copy_blob(source, shown, desc)?;
        let bytes = self.read_blob(&desc.digest)?;
        let doc = Document::parse(&bytes, &desc.media_type).map_err(|source| ImageError::Json {
            what: format!("manifest {}", desc.digest),
            source,
        })?;
        match doc {
            Document::Manifest(manifest) => {
                self.copy_blob(source, shown, &manifest.config)?;
                for layer in &manifest.layers {
                    self.copy_blob(source, shown, layer)?;
                }
            }
            Document::Index(index) => {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(ImageError::Layout {
                        path: shown.to_path_buf(),
                        reason: format!("image indexes nest deeper than {MAX_INDEX_DEPTH} levels"),
                    });
                }
                let candidates = select_children(&index.manifests);
                let mut copied = 0;
                for child in &candidates {
                    // Children for other platforms may be left out of a layout, as containerd
                    // leaves them out of an export; a lone candidate must be there.
                    if candidates.len() > 1 && !layout_has_blob(source, &child.digest) {
                        continue;
                    }
                    self.copy_tree(source, shown, child, depth + 1)?;
                    copied += 1;
                }
                if copied == 0 {
                    return Err(ImageError::MissingBlob {
                        digest: candidates
                            .first()
                            .map_or_else(|| desc.digest.clone(), |c| c.digest.clone()),
                        place: shown.display().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Copies one blob from layout `source` into the store, verifying digest and size.
    fn copy_blob(&self, source: &Path, shown: &Path, desc: &Descriptor) -> Result<(), ImageError> {
        let hex = digest_hex(&desc.digest)?;
        if self.has_blob(&desc.digest) {
            return Ok(());
        }
        let path = source.join("blobs").join("sha256").join(hex);
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ImageError::MissingBlob {
                digest: desc.digest.clone(),
                place: shown.display().to_string(),
            },
            _ => ImageError::Io {
                action: "open",
                path: path.clone(),
                source,
            },
        })?;
        check_entry_size(&self.limits, &format!("blob {}", desc.digest), desc.size)?;
        // A file longer than its descriptor says is read one byte past it, enough to fail
        // the size check, and no further.
        self.ingest_blob(
            file.take(desc.size.saturating_add(1)),
            Some((&desc.digest, Some(desc.size))),
        )?;
        Ok(())
    }
}

fn layout_has_blob(source: &Path, digest: &str) -> bool {
    digest_hex(digest).is_ok_and(|hex| source.join("blobs").join("sha256").join(hex).is_file())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The name of an index entry by containerd's rules (module docs), plus a note when it has
/// none.
fn image_name(
    annotations: &BTreeMap<String, String>,
    base: Option<&Reference>,
) -> Result<(Option<String>, Option<String>), ImageError> {
    let full = |name: &str| -> Result<(Option<String>, Option<String>), ImageError> {
        let r = Reference::parse(name).map_err(|source| ImageError::InvalidName {
            reference: name.to_string(),
            source,
        })?;
        let normalized = r.to_string();
        match base {
            Some(base) if !is_under(&normalized, &base.repository()) => Ok((
                None,
                Some(format!(
                    "its name {normalized} is not under the base name {}, so it was not named",
                    base.repository()
                )),
            )),
            _ => Ok((Some(normalized), None)),
        }
    };
    let get = |key: &str| annotations.get(key).filter(|v| !v.is_empty());
    if let Some(name) = get(oci::ANNOTATION_IMAGE_NAME) {
        return full(name);
    }
    match get(oci::ANNOTATION_REF_NAME) {
        Some(name) if name.contains(['/', ':', '@']) => full(name),
        Some(tag) => match base {
            Some(base) => full(&format!("{}:{tag}", base.repository())),
            None => Ok((
                None,
                Some(format!(
                    "the layout names it only by the tag {tag:?}; import again with \
                     --base-name REPO to name it REPO:{tag} (as `ctr image import --base-name` \
                     does)"
                )),
            )),
        },
        None => Ok((
            None,
            Some(
                "the layout gives it no name (no io.containerd.image.name or \
                 org.opencontainers.image.ref.name annotation); use it by digest"
                    .into(),
            ),
        )),
    }
}

/// containerd's prefix rule: `name` is `prefix` itself or continues it with `/`, `:` or `@`.
fn is_under(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':', '@']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn the_containerd_name_wins_over_the_oci_ref_name() {
        let both = annotations(&[
            (oci::ANNOTATION_IMAGE_NAME, "docker.io/team/app:1"),
            (oci::ANNOTATION_REF_NAME, "1"),
        ]);
        let (name, note) = image_name(&both, None).expect("name");
        assert_eq!(name.as_deref(), Some("docker.io/team/app:1"));
        assert_eq!(note, None);
    }

    #[test]
    fn a_base_name_names_tags_and_filters_full_names_of_other_repositories() {
        let base = Reference::parse("wasmkube.local/samples").expect("base");
        let tag = annotations(&[(oci::ANNOTATION_REF_NAME, "v1")]);
        let (name, _) = image_name(&tag, Some(&base)).expect("name");
        assert_eq!(name.as_deref(), Some("wasmkube.local/samples:v1"));
        let under = annotations(&[(oci::ANNOTATION_REF_NAME, "wasmkube.local/samples/hello:v1")]);
        let (name, _) = image_name(&under, Some(&base)).expect("name");
        assert_eq!(name.as_deref(), Some("wasmkube.local/samples/hello:v1"));
        let other = annotations(&[(oci::ANNOTATION_IMAGE_NAME, "docker.io/team/app:1")]);
        let (name, note) = image_name(&other, Some(&base)).expect("name");
        assert_eq!(name, None);
        assert!(note.is_some_and(|n| n.contains("not under the base name")));
    }

    #[test]
    fn an_unnamed_entry_is_imported_by_digest_with_a_note() {
        let (name, note) = image_name(&BTreeMap::new(), None).expect("name");
        assert_eq!(name, None);
        assert!(note.is_some_and(|n| n.contains("by digest")));
    }

    #[test]
    fn an_invalid_name_annotation_fails_the_import() {
        let bad = annotations(&[(oci::ANNOTATION_IMAGE_NAME, "Bad/Name:1")]);
        assert!(matches!(
            image_name(&bad, None),
            Err(ImageError::InvalidName { .. })
        ));
    }

    #[test]
    fn prefixes_match_whole_components_only() {
        assert!(is_under(
            "docker.io/library/hello:1",
            "docker.io/library/hello"
        ));
        assert!(is_under(
            "docker.io/library/hello/x:1",
            "docker.io/library/hello"
        ));
        assert!(!is_under(
            "docker.io/library/hello2:1",
            "docker.io/library/hello"
        ));
    }
}
