//! Files of the PKI: owner-only keys and tokens, written atomically (temporary file,
//! fsync, rename) so a crash never leaves half a key behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::PkiError;

/// A [`PkiError::Invalid`] for `path`.
pub(super) fn invalid(path: &Path, reason: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

pub(super) fn create_private_dir(path: &Path) -> Result<(), PkiError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(io_error(path))
}

/// Writes a file readable only by its owner.
pub(super) fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file(path, contents, 0o600)
}

/// Writes a file anyone may read (certificates, public keys).
pub(super) fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file(path, contents, 0o644)
}

/// Writes `contents` to a temporary file beside `path` and renames it over `path`, so a
/// crash never leaves a half-written key or certificate.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    #[cfg(unix)]
    {
        // The mode given to open() only applies to a new file; fix a stale temp file's.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(io_error(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// The file names of one certificate and its key under `<data-dir>/pki/`.
pub(super) struct Pair {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

impl Pair {
    pub(super) fn new(pki_dir: &Path, name: &str) -> Self {
        Pair {
            cert: pki_dir.join(format!("{name}.crt")),
            key: pki_dir.join(format!("{name}.key")),
        }
    }

    /// Both files' contents, `None` if neither exists, an error if only one does.
    pub(super) fn read(&self) -> Result<Option<(String, String)>, PkiError> {
        match (read_optional(&self.cert)?, read_optional(&self.key)?) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(PkiError::Incomplete {
                present: self.cert.clone(),
                missing: self.key.clone(),
            }),
            (None, Some(_)) => Err(PkiError::Incomplete {
                present: self.key.clone(),
                missing: self.cert.clone(),
            }),
        }
    }

    pub(super) fn write(&self, cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        write_private(&self.key, key_pem.as_bytes())?;
        write_file(&self.cert, cert_pem.as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn rewriting_a_public_file_as_private_leaves_it_owner_only_and_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        write_file(&path, b"old", 0o644).expect("written");
        write_private(&path, b"new").expect("rewritten");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tokens.csv")]);
    }

    #[test]
    fn a_pair_with_neither_file_reads_as_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            Pair::new(dir.path(), "ca")
                .read()
                .expect("no error")
                .is_none()
        );
    }
}
