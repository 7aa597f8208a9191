//! Opening directories *beneath* another one without letting a symlink lead out of it.
//!
//! A guest can write symlinks into its writable volumes (an emptyDir, a hostPath). If the
//! agent then resolved a container's `subPath` by path, a link such as `esc -> ../../..`
//! would make it mount a directory outside the volume: the kubelet's CVE-2017-1002101. So
//! every directory the agent hands a guest is resolved here with `openat2(2)` from an open
//! handle of the volume, with `RESOLVE_BENEATH` (no `..` or absolute symlink may leave it)
//! and `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd` tricks), and kept open as a [`DirHandle`].
//! The runtime preopens the handle (through `/proc/self/fd/N`, which names exactly the open
//! directory), never the path again, so a symlink swapped in after the check changes nothing.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// An open directory of the node, handed to a guest as a preopen. Cloning shares the handle;
/// the descriptor closes when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct DirHandle {
    fd: Arc<OwnedFd>,
    /// The path it was opened as (for messages only; never opened again).
    shown: PathBuf,
}

impl DirHandle {
    /// Opens the directory at `path` (an agent-made path no guest can change, such as a
    /// volume's directory under the pod's directory).
    pub(crate) fn open(path: &Path) -> std::io::Result<DirHandle> {
        let fd = rustix::fs::open(path, dir_flags(), Mode::empty())?;
        Ok(DirHandle::new(fd, path.to_path_buf()))
    }

    fn new(fd: OwnedFd, shown: PathBuf) -> DirHandle {
        DirHandle {
            fd: Arc::new(fd),
            shown,
        }
    }

    /// The path that names exactly this open directory for as long as the handle lives:
    /// `/proc/self/fd/N`. Opening it reopens the same directory, whatever its path names now.
    pub(crate) fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    #[cfg(test)]
    /// The path the directory was opened as (for messages).
    pub(crate) fn shown_path(&self) -> &Path {
        &self.shown
    }

    /// Opens the directory `rel` beneath this one, creating missing directories with `mode`
    /// when `create` is set. Symlinks inside are followed only while they stay beneath this
    /// directory (unless `no_symlinks` refuses them all).
    pub(crate) fn open_beneath(
        &self,
        rel: &Path,
        create: Option<u32>,
        no_symlinks: bool,
    ) -> Result<DirHandle, BeneathError> {
        let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        if no_symlinks {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        let components: Vec<&std::ffi::OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(name) => Ok(name),
                _ => Err(BeneathError::NotRelative),
            })
            .collect::<Result<_, _>>()?;
        if components.is_empty() {
            return Err(BeneathError::NotRelative);
        }
        let shown = self.shown.join(rel);
        // Fast path: everything exists.
        match openat2_dir(&self.fd, rel, resolve) {
            Ok(fd) => return Ok(DirHandle::new(fd, shown)),
            Err(Errno::NOENT) if create.is_some() => {}
            Err(e) => return Err(BeneathError::from_errno(e)),
        }
        // Walk component by component, each step resolved from this directory again, and
        // make what is missing with mkdirat in the parent already opened beneath it.
        let mode = create.unwrap_or(0o755);
        let mut parent: Option<OwnedFd> = None;
        let mut prefix = PathBuf::new();
        for name in components {
            prefix.push(name);
            let fd = match openat2_dir(&self.fd, &prefix, resolve) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let at = parent.as_ref().map_or(self.fd.as_fd(), |p| p.as_fd());
                    match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(BeneathError::Io(e.into())),
                    }
                    openat2_dir(&self.fd, &prefix, resolve).map_err(BeneathError::from_errno)?
                }
                Err(e) => return Err(BeneathError::from_errno(e)),
            };
            parent = Some(fd);
        }
        let fd = parent.ok_or(BeneathError::NotRelative)?;
        Ok(DirHandle::new(fd, shown))
    }
}

impl std::fmt::Debug for DirHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirHandle")
            .field("fd", &self.fd.as_raw_fd())
            .field("path", &self.shown)
            .finish()
    }
}

/// Two handles are equal when they share one descriptor.
impl PartialEq for DirHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }
}

impl Eq for DirHandle {}

/// Why a directory cannot be opened beneath another.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BeneathError {
    /// The path is empty, absolute or has `.`/`..` components.
    #[error("must be a relative path without '..'")]
    NotRelative,
    /// Resolution would leave the directory (a `..` or absolute symlink, another mount).
    #[error("resolves outside of the volume (a symlink or '..' leads out of it)")]
    Escapes,
    /// A symlink was met where none is allowed.
    #[error("contains a symlink")]
    Symlink,
    /// Something on the way does not exist.
    #[error("does not exist")]
    NotFound,
    /// The path names a file, not a directory.
    #[error("is not a directory")]
    NotADirectory,
    /// Another OS error.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

impl BeneathError {
    fn from_errno(e: Errno) -> BeneathError {
        match e {
            Errno::XDEV => BeneathError::Escapes,
            Errno::LOOP => BeneathError::Symlink,
            Errno::NOENT => BeneathError::NotFound,
            Errno::NOTDIR => BeneathError::NotADirectory,
            e => BeneathError::Io(e.into()),
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
}

fn openat2_dir(dir: &OwnedFd, rel: &Path, resolve: ResolveFlags) -> Result<OwnedFd, Errno> {
    loop {
        match rustix::fs::openat2(dir, rel, dir_flags(), Mode::empty(), resolve) {
            // openat2 asks to retry when a rename raced the lookup.
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn a_symlink_that_stays_beneath_is_followed_and_one_that_leaves_is_refused() {
        let dir = tempdir();
        let volume = dir.path().join("volume");
        fs::create_dir_all(volume.join("real/inner")).expect("mkdir");
        symlink("real", volume.join("inside")).expect("symlink");
        symlink("../../..", volume.join("esc")).expect("symlink");
        symlink("/etc", volume.join("abs")).expect("symlink");
        let handle = DirHandle::open(&volume).expect("open");

        let inner = handle
            .open_beneath(Path::new("inside/inner"), None, false)
            .expect("a link within the volume");
        assert!(
            fs::read_dir(inner.proc_path()).is_ok(),
            "the handle reopens through /proc/self/fd"
        );
        for escape in ["esc", "abs", "esc/etc", "real/../../"] {
            let err = handle
                .open_beneath(Path::new(escape), Some(0o755), false)
                .expect_err(escape);
            assert!(
                matches!(err, BeneathError::Escapes | BeneathError::NotRelative),
                "{escape}: {err:?}"
            );
        }
        assert!(matches!(
            handle.open_beneath(Path::new("inside"), None, true),
            Err(BeneathError::Symlink)
        ));
    }

    #[test]
    fn missing_directories_are_made_beneath_and_never_through_a_link() {
        let dir = tempdir();
        let volume = dir.path().join("volume");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&volume).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        symlink(&outside, volume.join("out")).expect("symlink");
        let handle = DirHandle::open(&volume).expect("open");

        handle
            .open_beneath(Path::new("a/b/c"), Some(0o755), false)
            .expect("created");
        assert!(volume.join("a/b/c").is_dir());
        assert!(matches!(
            handle.open_beneath(Path::new("x"), None, false),
            Err(BeneathError::NotFound)
        ));
        let err = handle
            .open_beneath(Path::new("out/new"), Some(0o755), false)
            .expect_err("through a link out");
        assert!(matches!(err, BeneathError::Escapes), "{err:?}");
        assert!(
            !outside.join("new").exists(),
            "nothing is made outside the volume"
        );
        fs::write(volume.join("file"), "x").expect("write");
        assert!(matches!(
            handle.open_beneath(Path::new("file"), None, false),
            Err(BeneathError::NotADirectory)
        ));
    }
}
