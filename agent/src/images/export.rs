//! `wasmkube image export`: images of the store written out as an OCI image layout (a
//! directory, or a tar archive of one), which `wasmkube image import` on another node, skopeo
//! (`oci:DIR` / `oci-archive:FILE`) and other OCI tools read. Each image is named in the
//! layout's `index.json` by containerd's `io.containerd.image.name` (the full reference) and
//! `org.opencontainers.image.ref.name` (its tag).
//!
//! Every blob an image reaches that the store holds is written: the manifest, its config and
//! layers, and for an index each child manifest the store has (a pull fetches only the wasm
//! child of an index, so the others are not there to export).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::Path;

use serde::Serialize;

use super::oci::{self, Descriptor};
use super::{ImageError, ImageStore, Reference};

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<Descriptor>,
}

impl ImageStore {
    /// Writes the images `names` to `dest`: an OCI layout directory (created; it must not
    /// exist or be empty), or, when `dest` ends in `.tar`, a tar archive of one.
    pub fn export(&self, names: &[String], dest: &Path) -> Result<(), ImageError> {
        let mut manifests = Vec::new();
        let mut blobs = BTreeSet::new();
        for name in names {
            let reference = Reference::parse(name).map_err(|source| ImageError::InvalidName {
                reference: name.clone(),
                source,
            })?;
            let mut top = self.descriptor_of(name)?;
            self.reachable(&top.digest, &mut blobs, 0)?;
            top.annotations
                .insert(oci::ANNOTATION_IMAGE_NAME.into(), reference.to_string());
            if let Some(tag) = &reference.tag {
                top.annotations
                    .insert(oci::ANNOTATION_REF_NAME.into(), tag.clone());
            }
            manifests.push(top);
        }
        let index = serde_json::to_vec_pretty(&Index {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_OCI_INDEX,
            manifests,
        })
        .map_err(|source| ImageError::Json {
            what: "index.json".into(),
            source,
        })?;
        let layout = format!(r#"{{"imageLayoutVersion":"{}"}}"#, oci::LAYOUT_VERSION);
        if dest.extension().is_some_and(|e| e == "tar") {
            self.write_tar(dest, &index, layout.as_bytes(), &blobs)
        } else {
            self.write_dir(dest, &index, layout.as_bytes(), &blobs)
        }
    }

    /// Adds `digest` and every blob it references that the store holds to `blobs`.
    pub(super) fn reachable(
        &self,
        digest: &str,
        blobs: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<(), ImageError> {
        if !blobs.insert(digest.to_string()) || depth > super::MAX_INDEX_DEPTH {
            return Ok(());
        }
        let bytes = self.read_blob(digest)?;
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(());
        };
        let children = doc
            .get("config")
            .into_iter()
            .chain(doc["layers"].as_array().into_iter().flatten());
        for child in children {
            if let Some(d) = child["digest"].as_str() {
                blobs.insert(d.to_string());
            }
        }
        for child in doc["manifests"].as_array().into_iter().flatten() {
            if let Some(d) = child["digest"].as_str().filter(|d| self.has_blob(d)) {
                self.reachable(d, blobs, depth + 1)?;
            }
        }
        Ok(())
    }

    fn write_dir(
        &self,
        dest: &Path,
        index: &[u8],
        layout: &[u8],
        blobs: &BTreeSet<String>,
    ) -> Result<(), ImageError> {
        if dest.exists()
            && fs::read_dir(dest)
                .map_err(ImageError::io("read", dest))?
                .next()
                .is_some()
        {
            return Err(ImageError::Io {
                action: "export into",
                path: dest.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the directory is not empty; give a new one",
                ),
            });
        }
        let blob_dir = dest.join("blobs/sha256");
        fs::create_dir_all(&blob_dir).map_err(ImageError::io("create", &blob_dir))?;
        for digest in blobs {
            let from = self.blob_path(digest)?;
            let to = blob_dir.join(digest.trim_start_matches("sha256:"));
            fs::copy(&from, &to).map_err(ImageError::io("copy a blob to", &to))?;
        }
        let layout_path = dest.join("oci-layout");
        fs::write(&layout_path, layout).map_err(ImageError::io("write", &layout_path))?;
        let index_path = dest.join("index.json");
        fs::write(&index_path, index).map_err(ImageError::io("write", &index_path))
    }

    fn write_tar(
        &self,
        dest: &Path,
        index: &[u8],
        layout: &[u8],
        blobs: &BTreeSet<String>,
    ) -> Result<(), ImageError> {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = parent.unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(ImageError::io("create a file in", dir))?;
        let mut tar = tar::Builder::new(tmp.as_file());
        let mut add = |path: &str, data: &mut dyn std::io::Read, size: u64| {
            let mut header = tar::Header::new_ustar();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, data)
                .map_err(ImageError::io("write", dest))
        };
        add("oci-layout", &mut &layout[..], layout.len() as u64)?;
        add("index.json", &mut &index[..], index.len() as u64)?;
        for digest in blobs {
            let path = self.blob_path(digest)?;
            let mut file = File::open(&path).map_err(ImageError::io("open", &path))?;
            let size = file
                .metadata()
                .map_err(ImageError::io("stat", &path))?
                .len();
            let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
            add(&name, &mut file, size)?;
        }
        tar.finish().map_err(ImageError::io("write", dest))?;
        drop(tar);
        tmp.persist(dest).map_err(|e| ImageError::Io {
            action: "write",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }
}
