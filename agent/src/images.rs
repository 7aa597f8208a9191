//! The node's image store: content-addressed blobs, image names, and the wasm module each
//! image runs.
//!
//! # Layout on disk
//! The store is itself an OCI image layout, so any OCI tool can read it:
//! ```text
//! <agent-dir>/images/            (<data-dir>/agent/images, see [`ImageStore::dir_in_data_dir`])
//!   oci-layout                   {"imageLayoutVersion":"1.0.0"}
//!   index.json                   the names: one descriptor per name, annotated with
//!                                io.containerd.image.name (the normalized reference)
//!   blobs/sha256/<hex>           manifests, configs, layers and extracted wasm modules
//!   meta/sha256/<hex>.json       per leaf manifest: kind, wasm module digest, entrypoint (a cache)
//!   tmp/                         staging for blobs being written and archives being unpacked
//!   .lock                        held (flock) while index.json is rewritten
//! ```
//! Every blob is verified against its digest (and descriptor size) before it enters `blobs/`,
//! written to `tmp/` first and renamed into place, so a reader never sees half a blob.
//! `index.json` is rewritten the same way (temp file + rename) under the lock, so
//! `wasmkube image import` can run while the agent resolves images: [`ImageStore::resolve`]
//! re-reads the names on every call (a small file; nothing to invalidate).
//!
//! # Images that run
//! - the CNCF wasm artifact: config `application/vnd.wasm.config.v0+json`, a layer
//!   `application/wasm` that is the module or component itself ([`ImageKind::WasmArtifact`]);
//! - the runwasi shape: an ordinary image (platform `wasi/wasm`, or any image whose layers hold
//!   the module) whose tar layers (optionally gzip) contain the `.wasm` file named by the config's
//!   `Entrypoint`/`Cmd`, or the only `.wasm` file when they name none ([`ImageKind::RunwasiLayer`]).
//!   The module is extracted once, at import, into a blob of its own.
//!
//! # Names
//! See [`import`] for how names are read from an OCI layout (containerd's rules) and
//! [`reference`] for Docker's normalization, which both the store's names and pods' `image:`
//! go through. Registry pulls come later through the [`Puller`] seam and [`ImageStore::ensure`].

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub mod airgap;
mod bounded;
pub mod build;
mod export;
pub mod gc;
pub(crate) mod import;
pub mod in_use;
mod inspect;
pub(crate) mod oci;
pub(crate) mod reference;
pub mod registry;
mod remove;
pub mod signature;
mod wasm;

#[cfg(test)]
mod tests;

pub use bounded::ImportLimits;
pub use gc::{GcOutcome, ImageGcPolicy, ImageGcPolicyError};
pub use import::{ImportOptions, ImportedImage};
pub use inspect::{BlobSummary, ImageInspection, WasmSummary};
pub use reference::{Reference, ReferenceError};
pub use remove::RemovedImage;

use oci::{Descriptor, Document, Index};

/// The agent's compiled-code cache, `<agent-dir>/wasm-cache`: an image's compiled code goes
/// with it when it is removed.
pub const CODE_CACHE_DIR: &str = "wasm-cache";

/// How deep image indexes may nest before the store gives up (they nest once in practice).
const MAX_INDEX_DEPTH: usize = 4;

/// The local image store of one node. Cheap to clone: it is a directory path and the
/// [`ImportLimits`] of what it unpacks.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: ImportLimits,
    /// One gate per image being pulled, so concurrent pulls of one image are one pull.
    pulls: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, PullGate>>>,
    /// The images the node's pods use ([`in_use`]).
    in_use: std::sync::Arc<std::sync::Mutex<in_use::InUse>>,
    /// When each image was first seen and last used, for image GC's order ([`gc`]).
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, gc::Seen>>>,
}

/// Held while an image is pulled.
type PullGate = std::sync::Arc<tokio::sync::Mutex<()>>;

/// What kind of wasm image a reference resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageKind {
    /// The CNCF wasm OCI artifact: the layer is the module or component.
    WasmArtifact,
    /// An ordinary image whose layer holds the `.wasm` file (runwasi style).
    RunwasiLayer,
}

/// An image reference resolved to a runnable wasm module in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalized reference that was resolved (e.g. `docker.io/library/hello:latest`).
    pub reference: String,
    /// The digest the reference points to (index or manifest): the pod status' `imageID`.
    pub digest: String,
    /// The path of the module or component blob in the store. Do not modify it.
    pub wasm: PathBuf,
    /// The `sha256:<hex>` digest of the module itself: the runtime's compile-cache key.
    pub wasm_digest: String,
    /// Which image shape it came from.
    pub kind: ImageKind,
    /// The image config's `Entrypoint` (empty for wasm artifacts). A container's `command`
    /// replaces it.
    pub entrypoint: Vec<String>,
    /// The image config's `Cmd`. A container's `args` replaces it.
    pub cmd: Vec<String>,
    /// The image config's `Env` as `(name, value)`; a container's env comes after it.
    pub env: Vec<(String, String)>,
}

impl ResolvedImage {
    /// The argv a container runs with, by Kubernetes' rules: `command` replaces the image's
    /// Entrypoint, `args` replaces its Cmd, and `command` alone drops the Cmd too.
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        match (command.is_empty(), args.is_empty()) {
            (false, _) => command.iter().chain(args).cloned().collect(),
            (true, false) => self.entrypoint.iter().chain(args).cloned().collect(),
            (true, true) => self.entrypoint.iter().chain(&self.cmd).cloned().collect(),
        }
    }
}

/// When to pull, as in a container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time (Kubernetes' default for `:latest` and untagged images).
    Always,
    /// Pull only when absent (the default otherwise).
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// Parses `imagePullPolicy`, defaulting like Kubernetes when it is unset: `Always` for a
    /// `:latest` or untagged, undigested image, `IfNotPresent` otherwise.
    pub fn for_container(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => match Reference::parse(image) {
                Ok(r) if r.digest.is_none() && r.tag.as_deref() == Some("latest") => {
                    PullPolicy::Always
                }
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

/// The future a [`Puller`] returns.
pub type PullFuture<'a> = Pin<Box<dyn Future<Output = Result<String, ImageError>> + Send + 'a>>;

/// Fetches images from somewhere else (an OCI registry, in a later issue) into the store.
///
/// A puller writes each blob with [`ImageStore::ingest_blob`] (verifying digests), then names
/// the image with [`ImageStore::tag`], and returns the digest the reference points to.
pub trait Puller: Send + Sync {
    /// Pulls `reference` into `store`.
    fn pull<'a>(&'a self, reference: &'a Reference, store: &'a ImageStore) -> PullFuture<'a>;
}

/// Why an image cannot be imported or resolved. [`ImageError::reason`] gives the pod's waiting
/// reason; the message tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse as an image name.
    #[error("invalid image name {reference:?}: {source}")]
    InvalidName {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        #[source]
        source: ReferenceError,
    },
    /// The image is not in the store (and there is no registry to pull from yet).
    #[error(
        "image {reference:?} is not in the node's image store; import it with: \
         wasmkube image import --data-dir {data_dir} <oci-layout>"
    )]
    NotFound {
        /// The normalized reference.
        reference: String,
        /// The data directory to pass to `wasmkube image import`.
        data_dir: String,
    },
    /// The image is absent and the pull policy is `Never`. The message is the kubelet's.
    #[error("Container image \"{image}\" is not present with pull policy of Never")]
    NeverPull {
        /// The container's `image` as written in the pod.
        image: String,
    },
    /// The image holds no runnable wasm module.
    #[error("image {reference} is not a wasm image: {reason}")]
    NotWasm {
        /// The reference or digest.
        reference: String,
        /// What was found instead.
        reason: String,
    },
    /// An import source is not a usable OCI image layout.
    #[error("{path} is not a usable OCI image layout: {reason}")]
    Layout {
        /// The directory or archive given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A digest is not `sha256:<64 lowercase hex digits>`, the only kind the store keeps.
    #[error("digest {digest:?} is not supported (only sha256:<64 lowercase hex digits>)")]
    InvalidDigest {
        /// The digest as found.
        digest: String,
    },
    /// A blob's content does not hash to its digest.
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch {
        /// The digest it is stored or referenced under.
        expected: String,
        /// The digest of its content.
        actual: String,
    },
    /// A blob's size differs from its descriptor.
    #[error("blob {digest} has {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The bytes read.
        actual: u64,
    },
    /// A referenced blob is absent.
    #[error("blob {digest} is missing from {place}")]
    MissingBlob {
        /// The blob.
        digest: String,
        /// Where it was looked for.
        place: String,
    },
    /// A JSON document (manifest, index, config) does not parse.
    #[error("{what} is not valid: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An archive or layer unpacks to more than the [`ImportLimits`] allow (a gzip bomb, a
    /// huge entry).
    #[error("refused to unpack: {reason}")]
    TooLarge {
        /// Which bound, and by what.
        reason: String,
    },
    /// A [`Puller`] failed.
    #[error("pulling image {reference:?}: {message}")]
    Pull {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// A push to a registry failed.
    #[error("pushing image {reference:?}: {message}")]
    Push {
        /// The destination.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// The image is used by a pod on this node and cannot be removed.
    #[error(
        "image {image:?} is in use by a pod on this node (its container image {container_image:?}); \
         delete the pods that use it first"
    )]
    InUse {
        /// The image as asked for.
        image: String,
        /// The container image of a pod that needs it.
        container_image: String,
    },
    /// A binary cannot be packaged as an image.
    #[error("cannot build {reference}: {reason}")]
    Build {
        /// The image's name.
        reference: String,
        /// Why not.
        reason: String,
    },
}

impl ImageError {
    /// The container waiting reason Kubernetes uses for this error: `InvalidImageName`,
    /// `ErrImageNeverPull` or `ErrImagePull`.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::InvalidName { .. } => "InvalidImageName",
            ImageError::NeverPull { .. } => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.to_path_buf();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}

impl ImageStore {
    /// Where the store of the agent with data directory `data_dir` lives: `<data_dir>/agent/images`
    /// (the same for `wasmkube server --data-dir D` and `wasmkube agent --data-dir D`).
    pub fn dir_in_data_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("agent").join("images")
    }

    /// Opens the store in `dir`, creating it (and its `oci-layout` and empty `index.json`) if
    /// needed.
    pub fn open(dir: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: dir.to_path_buf(),
            limits: ImportLimits::default(),
            pulls: Default::default(),
            in_use: Default::default(),
            seen: Default::default(),
        };
        for sub in [store.blob_dir(), store.meta_dir(), store.tmp_dir()] {
            fs::create_dir_all(&sub).map_err(ImageError::io("create", &sub))?;
        }
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            let body = serde_json::to_vec(&oci::LayoutFile {
                image_layout_version: oci::LAYOUT_VERSION.into(),
            })
            .map_err(|source| ImageError::Json {
                what: "oci-layout".into(),
                source,
            })?;
            store.write_atomic(&layout, &body)?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock()?;
            if !store.index_path().exists() {
                store.write_index(&Index {
                    schema_version: 2,
                    media_type: Some(oci::MEDIA_TYPE_OCI_INDEX.into()),
                    manifests: Vec::new(),
                })?;
            }
        }
        Ok(store)
    }

    /// The same store with other bounds on what imports unpack.
    pub fn with_limits(mut self, limits: ImportLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// The bounds on what imports unpack.
    pub fn limits(&self) -> ImportLimits {
        self.limits
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory to name in messages (`<data_dir>/agent/images` -> `<data_dir>`).
    fn data_dir_hint(&self) -> String {
        let hint = match self.root.parent() {
            Some(agent) if self.root.ends_with("agent/images") => agent.parent(),
            _ => None,
        };
        hint.map_or_else(
            || "<the agent's data dir>".to_string(),
            |d| d.display().to_string(),
        )
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn meta_dir(&self) -> PathBuf {
        self.root.join("meta").join("sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// The path of blob `digest` (which need not exist).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blob_dir().join(digest_hex(digest)?))
    }

    /// Whether blob `digest` is in the store.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Reads a whole blob (manifests, configs: small documents).
    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ImageError::MissingBlob {
                digest: digest.to_string(),
                place: "the node's image store".into(),
            },
            _ => ImageError::Io {
                action: "read",
                path,
                source,
            },
        })
    }

    /// Stores the file `downloaded` (made in [`ImageStore::tmp_dir`]) as blob `digest` of
    /// `size` bytes: renamed into place, not copied, so a large layer is written once. The
    /// caller has checked the bytes against `digest` as they streamed in (oci-client's
    /// `pull_blob` hashes them and fails on a mismatch); hashing them a third time here cost as
    /// much as the download. The size is checked again; a mismatch leaves nothing (the file
    /// is removed on drop).
    pub fn ingest_verified_download(
        &self,
        downloaded: tempfile::NamedTempFile,
        digest: &str,
        size: u64,
    ) -> Result<(), ImageError> {
        let dest = self.blob_path(digest)?;
        let actual = downloaded
            .as_file()
            .metadata()
            .map_err(ImageError::io("stat", downloaded.path()))?
            .len();
        if actual != size {
            return Err(ImageError::SizeMismatch {
                digest: digest.to_string(),
                expected: size,
                actual,
            });
        }
        if !dest.exists() {
            downloaded
                .as_file()
                .sync_all()
                .map_err(ImageError::io("sync", downloaded.path()))?;
            downloaded.persist(&dest).map_err(|e| ImageError::Io {
                action: "store blob",
                path: dest.clone(),
                source: e.error,
            })?;
        }
        Ok(())
    }

    /// Writes `reader` into the store as a blob, verifying it against `expected` (digest and,
    /// when given, size), and returns its digest. A blob already present is not rewritten.
    pub fn ingest_blob(
        &self,
        reader: impl Read,
        expected: Option<(&str, Option<u64>)>,
    ) -> Result<String, ImageError> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(ImageError::io("create a file in", &tmp_dir))?;
        let mut hashing = HashingReader {
            inner: reader,
            hasher: Sha256::new(),
            len: 0,
        };
        io::copy(&mut hashing, tmp.as_file_mut()).map_err(ImageError::io("write", tmp.path()))?;
        let actual = format!("sha256:{:x}", hashing.hasher.finalize());
        if let Some((digest, size)) = expected {
            digest_hex(digest)?;
            if actual != digest {
                return Err(ImageError::DigestMismatch {
                    expected: digest.to_string(),
                    actual,
                });
            }
            if let Some(size) = size.filter(|s| *s != hashing.len) {
                return Err(ImageError::SizeMismatch {
                    digest: actual,
                    expected: size,
                    actual: hashing.len,
                });
            }
        }
        let dest = self.blob_path(&actual)?;
        if !dest.exists() {
            tmp.as_file()
                .sync_all()
                .map_err(ImageError::io("sync", tmp.path()))?;
            tmp.persist(&dest).map_err(|e| ImageError::Io {
                action: "store blob",
                path: dest.clone(),
                source: e.error,
            })?;
        }
        Ok(actual)
    }

    /// Names `target` as `reference` (replacing what the name pointed to), atomically.
    pub fn tag(&self, reference: &Reference, target: &Descriptor) -> Result<(), ImageError> {
        self.tag_all(&[(reference.to_string(), target.clone())])
    }

    /// Names several images in one rewrite of `index.json`.
    pub(crate) fn tag_all(&self, names: &[(String, Descriptor)]) -> Result<(), ImageError> {
        if names.is_empty() {
            return Ok(());
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        for (name, target) in names {
            index
                .manifests
                .retain(|d| image_name_of(d) != Some(name.as_str()));
            let mut desc = target.clone();
            desc.platform = None;
            desc.annotations.clear();
            desc.annotations
                .insert(oci::ANNOTATION_IMAGE_NAME.into(), name.clone());
            if let Ok(r) = Reference::parse(name)
                && let Some(tag) = r.tag
            {
                desc.annotations
                    .insert(oci::ANNOTATION_REF_NAME.into(), tag);
            }
            index.manifests.push(desc);
        }
        self.write_index(&index)
    }

    /// The descriptor the name `image_ref` points to (normalized as Docker does).
    pub fn descriptor_of(&self, image_ref: &str) -> Result<Descriptor, ImageError> {
        let reference = Reference::parse(image_ref).map_err(|source| ImageError::InvalidName {
            reference: image_ref.to_string(),
            source,
        })?;
        let name = reference.to_string();
        self.read_index()?
            .manifests
            .into_iter()
            .find(|d| image_name_of(d) == Some(name.as_str()))
            .map(|mut d| {
                d.annotations.clear();
                d
            })
            .ok_or_else(|| ImageError::NotFound {
                reference: name,
                data_dir: self.data_dir_hint(),
            })
    }

    /// Every name in the store with the digest it points to, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, String)>, ImageError> {
        let mut names: Vec<(String, String)> = self
            .read_index()?
            .manifests
            .iter()
            .filter_map(|d| image_name_of(d).map(|n| (n.to_string(), d.digest.clone())))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Resolves a pod's `image:` to the module to run. Reads small files only (the module was
    /// extracted at import), so it is fine to call from async code.
    pub fn resolve(&self, image_ref: &str) -> Result<ResolvedImage, ImageError> {
        let (normalized, top) = if reference::is_bare_digest(image_ref) {
            (image_ref.to_string(), image_ref.to_string())
        } else {
            let r = Reference::parse(image_ref).map_err(|source| ImageError::InvalidName {
                reference: image_ref.to_string(),
                source,
            })?;
            let normalized = r.to_string();
            let top = match &r.digest {
                Some(digest) => Some(digest.clone()).filter(|d| self.has_blob(d)),
                None => self
                    .read_index()?
                    .manifests
                    .iter()
                    .find(|d| image_name_of(d) == Some(normalized.as_str()))
                    .map(|d| d.digest.clone()),
            };
            match top {
                Some(top) => (normalized, top),
                None => {
                    return Err(ImageError::NotFound {
                        reference: normalized,
                        data_dir: self.data_dir_hint(),
                    });
                }
            }
        };
        if !self.has_blob(&top) {
            return Err(ImageError::NotFound {
                reference: normalized,
                data_dir: self.data_dir_hint(),
            });
        }
        self.resolve_digest(&normalized, &top)
    }

    /// Resolves a pod's image with a pull policy: pulls through `puller` when the policy says so
    /// (or when the image is absent), otherwise uses the store. Without a puller, `Always`
    /// uses what the store has.
    pub async fn ensure(
        &self,
        image_ref: &str,
        policy: PullPolicy,
        puller: Option<&dyn Puller>,
    ) -> Result<ResolvedImage, ImageError> {
        self.ensure_pulling(image_ref, policy, puller, |_| {})
            .await
            .map(|(image, _)| image)
    }

    /// [`ImageStore::ensure`], calling `pulling` before a pull starts and saying whether the
    /// image was pulled.
    pub async fn ensure_pulling(
        &self,
        image_ref: &str,
        policy: PullPolicy,
        puller: Option<&dyn Puller>,
        pulling: impl FnOnce(&str),
    ) -> Result<(ResolvedImage, bool), ImageError> {
        let local = self.resolve(image_ref);
        // A name whose blobs are gone (removed while it was being named) is absent too.
        let absent = matches!(
            local,
            Err(ImageError::NotFound { .. } | ImageError::MissingBlob { .. })
        );
        let must_pull = match (&local, policy) {
            (_, PullPolicy::Never) if absent => {
                return Err(ImageError::NeverPull {
                    image: image_ref.to_string(),
                });
            }
            _ if absent => true,
            (Ok(_), PullPolicy::Always) => true,
            _ => false,
        };
        let Some(puller) = puller.filter(|_| must_pull) else {
            let image = local?;
            self.touch(&image.digest);
            return Ok((image, false));
        };
        let reference = Reference::parse(image_ref).map_err(|source| ImageError::InvalidName {
            reference: image_ref.to_string(),
            source,
        })?;
        // Concurrent pulls of one image are one pull: the others wait for it, then find the
        // image here (unless the policy is Always, which pulls again: a later tag may differ).
        let name = reference.to_string();
        let gate = self.pull_gate(&name);
        let held = gate.lock().await;
        if policy != PullPolicy::Always
            && let Ok(image) = self.resolve(image_ref)
        {
            drop(held);
            self.release_pull_gate(&name, gate);
            self.touch(&image.digest);
            return Ok((image, false));
        }
        pulling(image_ref);
        let pulled = puller.pull(&reference, self).await;
        drop(held);
        self.release_pull_gate(&name, gate);
        let image = self.resolve_digest(&name, &pulled?)?;
        self.touch(&image.digest);
        Ok((image, true))
    }

    fn pull_gate(&self, name: &str) -> PullGate {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pulls.entry(name.to_string()).or_default().clone()
    }

    /// Forgets `name`'s gate once nobody else holds it.
    fn release_pull_gate(&self, name: &str, gate: PullGate) {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // This handle and the map's: no other pull of the image waits.
        if std::sync::Arc::strong_count(&gate) <= 2 {
            pulls.remove(name);
        }
    }

    /// Resolves the image whose top-level blob is `top`: picks the wasm manifest of an index,
    /// then reads (or computes and caches) what that manifest runs.
    fn resolve_digest(&self, reference: &str, top: &str) -> Result<ResolvedImage, ImageError> {
        let leaf = self.leaf_manifest(reference, top, "", 0)?;
        let meta = wasm::meta_for(self, reference, &leaf)?;
        let wasm = self.blob_path(&meta.wasm_digest)?;
        if !wasm.is_file() {
            return Err(ImageError::MissingBlob {
                digest: meta.wasm_digest,
                place: "the node's image store".into(),
            });
        }
        Ok(ResolvedImage {
            reference: reference.to_string(),
            digest: top.to_string(),
            wasm,
            wasm_digest: meta.wasm_digest,
            kind: meta.kind,
            entrypoint: meta.entrypoint,
            cmd: meta.cmd,
            env: meta.env,
        })
    }

    /// Follows indexes down to one manifest: the child whose platform is wasm, else the only
    /// child, else the first child present in the store that holds a wasm module.
    fn leaf_manifest(
        &self,
        reference: &str,
        digest: &str,
        media_type: &str,
        depth: usize,
    ) -> Result<String, ImageError> {
        let bytes = self.read_blob(digest)?;
        let doc = Document::parse(&bytes, media_type).map_err(|source| ImageError::Json {
            what: format!("manifest {digest}"),
            source,
        })?;
        let index = match doc {
            Document::Manifest(_) => return Ok(digest.to_string()),
            Document::Index(index) => index,
        };
        if depth >= MAX_INDEX_DEPTH {
            return Err(ImageError::NotWasm {
                reference: reference.to_string(),
                reason: format!("image indexes nest deeper than {MAX_INDEX_DEPTH} levels"),
            });
        }
        let candidates = select_children(&index.manifests);
        let mut last_error = None;
        for child in candidates.iter().filter(|c| self.has_blob(&c.digest)) {
            match self.leaf_manifest(reference, &child.digest, &child.media_type, depth + 1) {
                Ok(leaf) if candidates.len() == 1 => return Ok(leaf),
                Ok(leaf) => match wasm::meta_for(self, reference, &leaf) {
                    Ok(_) => return Ok(leaf),
                    Err(e) => last_error = Some(e),
                },
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ImageError::NotWasm {
            reference: reference.to_string(),
            reason: format!(
                "its index lists no manifest for a wasm platform (wasi/wasm) present in the store \
                 (platforms: {})",
                describe_platforms(&index.manifests)
            ),
        }))
    }

    fn lock(&self) -> Result<File, ImageError> {
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("open", &path))?;
        file.lock().map_err(ImageError::io("lock", &path))?;
        Ok(file)
    }

    fn read_index(&self) -> Result<Index, ImageError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(source) => Err(ImageError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        let body = serde_json::to_vec_pretty(index).map_err(|source| ImageError::Json {
            what: "index.json".into(),
            source,
        })?;
        self.write_atomic(&self.index_path(), &body)
    }

    /// Writes `path` via a temp file and a rename, so readers see the old or the new content.
    fn write_atomic(&self, path: &Path, body: &[u8]) -> Result<(), ImageError> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(ImageError::io("create a file in", &tmp_dir))?;
        tmp.write_all(body)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(ImageError::io("write", tmp.path()))?;
        tmp.persist(path).map_err(|e| ImageError::Io {
            action: "replace",
            path: path.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// The children of an index worth trying: those for a wasm platform, else all of them.
fn select_children(children: &[Descriptor]) -> Vec<&Descriptor> {
    let wasm: Vec<&Descriptor> = children
        .iter()
        .filter(|c| c.platform.as_ref().is_some_and(oci::Platform::is_wasm))
        .collect();
    if wasm.is_empty() {
        children.iter().collect()
    } else {
        wasm
    }
}

fn describe_platforms(children: &[Descriptor]) -> String {
    let platforms: Vec<String> = children
        .iter()
        .map(|c| match &c.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => "unspecified".into(),
        })
        .collect();
    if platforms.is_empty() {
        "none".into()
    } else {
        platforms.join(", ")
    }
}

/// The name a descriptor of the store's index carries.
fn image_name_of(d: &Descriptor) -> Option<&str> {
    d.annotations
        .get(oci::ANNOTATION_IMAGE_NAME)
        .map(String::as_str)
}

/// The hex part of a `sha256:<hex>` digest, validated (it becomes a file name).
fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    if reference::is_bare_digest(digest) {
        Ok(&digest["sha256:".len()..])
    } else {
        Err(ImageError::InvalidDigest {
            digest: digest.to_string(),
        })
    }
}

/// A reader that hashes and counts what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}
