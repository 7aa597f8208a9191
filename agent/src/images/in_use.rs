//! Which images the node's pods use: the pod manager tells the store each pod's container
//! images ([`ImageStore::pod_uses`]) and when a pod is gone ([`ImageStore::pod_gone`]); image
//! garbage collection never removes what they name. Like the kubelet's image GC, every pod
//! the node has counts, whatever its phase, until its worker is gone.
//!
//! The set of images is also written to `<store>/in-use.json` whenever it changes (not when
//! only the pods change, so pod churn writes nothing), for `wasmkube image rm`, which runs
//! in another process and refuses to remove an image a pod uses. The file is as fresh as the
//! running agent keeps it: an agent that stops lets its pods' workers end, which empties it;
//! a killed one leaves its last set behind.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{ImageError, ImageStore};

/// The file the agent writes its pods' images to.
pub const IN_USE_FILE: &str = "in-use.json";

/// The pods' images, per pod UID.
#[derive(Debug, Default)]
pub(crate) struct InUse {
    by_pod: HashMap<String, Vec<String>>,
    /// How many pods use each container image (as written).
    counts: BTreeMap<String, usize>,
}

/// The content of [`IN_USE_FILE`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InUseRecord {
    /// The container images the node's pods use, as the pods write them.
    pub images: Vec<String>,
}

impl ImageStore {
    /// Records that pod `uid` uses `images` (its containers' `image`s), replacing what it
    /// used before.
    pub(crate) fn pod_uses(&self, uid: &str, images: Vec<String>) {
        let changed = {
            let mut in_use = self.in_use_lock();
            let before = in_use.counts.len();
            let old = in_use.by_pod.insert(uid.to_string(), images.clone());
            if old.as_ref() == Some(&images) {
                return;
            }
            let mut added_new = false;
            for image in images {
                let count = in_use.counts.entry(image).or_insert(0);
                added_new |= *count == 0;
                *count += 1;
            }
            let removed = old.is_some_and(|old| in_use.forget(old));
            added_new || removed || before != in_use.counts.len()
        };
        if changed {
            self.write_in_use();
        }
    }

    /// Records that pod `uid` is gone from the node.
    pub(crate) fn pod_gone(&self, uid: &str) {
        let changed = {
            let mut in_use = self.in_use_lock();
            match in_use.by_pod.remove(uid) {
                Some(old) => in_use.forget(old),
                None => false,
            }
        };
        if changed {
            self.write_in_use();
        }
    }

    /// The container images the node's pods use (as written), sorted.
    pub fn images_in_use(&self) -> Vec<String> {
        self.in_use_lock().counts.keys().cloned().collect()
    }

    /// The images the agent last recorded as in use ([`IN_USE_FILE`]); none without a file.
    pub fn recorded_in_use(&self) -> Result<Vec<String>, ImageError> {
        let path = self.root.join(IN_USE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<InUseRecord>(&bytes)
                .map(|r| r.images)
                .map_err(|source| ImageError::Json {
                    what: path.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(ImageError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn in_use_lock(&self) -> std::sync::MutexGuard<'_, InUse> {
        self.in_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_in_use(&self) {
        let record = InUseRecord {
            images: self.images_in_use(),
        };
        // Replaced atomically but not synced: this runs on the pod manager's path before a
        // pod's worker starts, and a record lost in a crash is rewritten as pods come back.
        let path = self.root.join(IN_USE_FILE);
        let written = serde_json::to_vec_pretty(&record)
            .map_err(std::io::Error::other)
            .and_then(|body| {
                let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())?;
                std::io::Write::write_all(&mut tmp, &body)?;
                tmp.persist(&path).map(|_| ()).map_err(|e| e.error)
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "cannot record the images pods use");
        }
    }
}

impl InUse {
    /// Drops one use of each of `images`; whether an image lost its last use.
    fn forget(&mut self, images: Vec<String>) -> bool {
        let mut emptied = false;
        for image in images {
            if let Some(count) = self.counts.get_mut(&image) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&image);
                    emptied = true;
                }
            }
        }
        emptied
    }
}
