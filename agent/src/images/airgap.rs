//! The air-gap image directory, as k3s' `agent/images/`: OCI image layouts placed in
//! `<data-dir>/agent/image-imports/` — archives (`.tar`, `.tar.gz`, `.tgz`, what
//! `wasmkube image export -o FILE.tar` writes) or layout directories — are imported into the
//! store when the agent starts, before it runs any pod, so a node without a registry runs
//! pods from images copied there (`imagePullPolicy: Never` or `IfNotPresent`).
//!
//! Every start imports everything again: the store is content-addressed, so an image already
//! there costs only the verification of its blobs. Other files are ignored; an entry that
//! fails to import is reported and skipped, never stops the agent.

use std::path::{Path, PathBuf};

use super::{ImageError, ImageStore, ImportedImage};

/// The directory under the agent's directory (`<data-dir>/agent/`) images are imported from.
pub const AIRGAP_DIR: &str = "image-imports";

/// What importing one entry of the directory gave.
#[derive(Debug)]
pub struct AirgapImport {
    /// The archive or layout directory.
    pub path: PathBuf,
    /// Its images, or why it could not be imported.
    pub result: Result<Vec<ImportedImage>, ImageError>,
}

/// Whether `path` is something [`import_dir`] imports: an OCI layout directory (with an
/// `index.json`) or an archive by its name.
fn importable(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("index.json").is_file();
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    path.is_file()
        && [".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Imports every layout archive and directory in `dir` (sorted by name) into `store`. A
/// missing directory is no error: nothing to import.
pub fn import_dir(store: &ImageStore, dir: &Path) -> Vec<AirgapImport> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| importable(p))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let result = store.import(&path);
            AirgapImport { path, result }
        })
        .collect()
}
