//! hostPath volumes: which host directories a node lets pods mount.
//!
//! A hostPath volume gives a guest a directory of the node. By default a node allows none:
//! the agent is given the directories it may hand out (`--allowed-host-path PREFIX[:ro]` on
//! `wasmkube agent` and `wasmkube server`), and a hostPath is mounted only when it is one of
//! them or beneath one. The path is canonicalized first (symlinks resolved, `..` refused), so
//! `/srv/data/link -> /etc` is judged as `/etc`. The agent's own data directory (store, keys,
//! the compiled-code cache it loads as native code, other pods' files) is never mounted,
//! nor any directory that contains it or lies inside it, whatever the allow-list says.
//!
//! The directory is then opened beneath its allowed prefix with `openat2` refusing symlinks
//! ([`super::beneath`]), so a link swapped in after the check is refused rather than followed.
//! A `:ro` prefix makes every mount under it read-only.

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::beneath::{BeneathError, DirHandle};

/// The flag that allows hostPath volumes, for messages.
pub(crate) const ALLOW_FLAG: &str = "--allowed-host-path";

/// One `--allowed-host-path` entry: a directory (and everything beneath it) pods may mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHostPath {
    /// The directory, absolute.
    pub prefix: PathBuf,
    /// Whether mounts under it are read-only whatever the pod asks (`PATH:ro`).
    pub read_only: bool,
}

impl FromStr for AllowedHostPath {
    type Err = String;

    /// `PATH`, `PATH:ro` or `PATH:rw`; PATH must be absolute.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, read_only) = match s.rsplit_once(':') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            _ => (s, false),
        };
        if !path.starts_with('/') {
            return Err(format!(
                "{ALLOW_FLAG} {s:?}: the directory must be an absolute path (PATH[:ro])"
            ));
        }
        Ok(AllowedHostPath {
            prefix: PathBuf::from(path),
            read_only,
        })
    }
}

/// Why the allow-list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostPathPolicyError {
    /// An allowed directory does not exist or cannot be resolved.
    #[error("{ALLOW_FLAG} {path}: {source}")]
    Prefix {
        /// The directory as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An allowed directory is the data directory or lies inside it.
    #[error(
        "{ALLOW_FLAG} {path}: it is inside the node agent's data directory {data_dir}, which \
         pods may never mount"
    )]
    InsideDataDir {
        /// The directory as given.
        path: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
}

/// The hostPath rules of one node.
#[derive(Debug, Clone)]
pub(crate) struct HostPathPolicy {
    /// Canonical allowed prefixes.
    allowed: Vec<AllowedHostPath>,
    /// The canonical data directory.
    data_dir: PathBuf,
}

/// Why a hostPath is not mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostPathError {
    /// The node does not allow it: retrying cannot help.
    #[error("{0}")]
    NotAllowed(String),
    /// It is allowed but cannot be set up now (missing, not a directory): retried.
    #[error("{0}")]
    SetUp(String),
}

/// A hostPath the policy allows, resolved.
#[derive(Debug)]
pub(crate) struct GrantedHostPath {
    /// The open directory.
    pub(crate) dir: DirHandle,
    /// Whether the prefix makes it read-only.
    pub(crate) read_only: bool,
}

impl HostPathPolicy {
    /// The rules for a node whose agent keeps its files in `data_dir` and allows `allowed`.
    /// The data directory is created if missing (it is canonicalized).
    pub(crate) fn new(
        allowed: &[AllowedHostPath],
        data_dir: &Path,
    ) -> Result<HostPathPolicy, HostPathPolicyError> {
        let data_dir = canonical_or_absolute(data_dir);
        let mut canonical = Vec::new();
        for a in allowed {
            let prefix =
                std::fs::canonicalize(&a.prefix).map_err(|source| HostPathPolicyError::Prefix {
                    path: a.prefix.clone(),
                    source,
                })?;
            if prefix.starts_with(&data_dir) {
                return Err(HostPathPolicyError::InsideDataDir {
                    path: a.prefix.clone(),
                    data_dir,
                });
            }
            canonical.push(AllowedHostPath {
                prefix,
                read_only: a.read_only,
            });
        }
        // Longest prefix first, so the most specific entry (and its :ro) wins.
        canonical.sort_by_key(|a| std::cmp::Reverse(a.prefix.components().count()));
        Ok(HostPathPolicy {
            allowed: canonical,
            data_dir,
        })
    }

    /// Opens the hostPath `path` if this node allows it, creating the missing directories
    /// with mode 0755 when `create` is set (`DirectoryOrCreate`). The error's message is for
    /// the pod's status.
    pub(crate) fn open(&self, path: &str, create: bool) -> Result<GrantedHostPath, HostPathError> {
        use HostPathError::{NotAllowed, SetUp};
        let requested = Path::new(path);
        if !path.starts_with('/')
            || requested
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(NotAllowed(format!(
                "hostPath {path:?} must be an absolute path without '.' or '..'"
            )));
        }
        let resolved = resolve_existing(requested)
            .map_err(|e| SetUp(format!("hostPath {path}: cannot resolve it: {e}")))?;
        let shown = if resolved == requested {
            path.to_string()
        } else {
            format!("{path} (resolved to {})", resolved.display())
        };
        let Some(allowed) = self
            .allowed
            .iter()
            .find(|a| resolved.starts_with(&a.prefix))
        else {
            let now = if self.allowed.is_empty() {
                "it allows none".to_string()
            } else {
                let list: Vec<String> = self
                    .allowed
                    .iter()
                    .map(|a| a.prefix.display().to_string())
                    .collect();
                format!("it allows {}", list.join(", "))
            };
            return Err(NotAllowed(format!(
                "hostPath {shown} is not allowed on this node: the node agent mounts host \
                 directories only under those given with {ALLOW_FLAG} on `wasmkube agent` or \
                 `wasmkube server` ({now})"
            )));
        };
        if resolved.starts_with(&self.data_dir) || self.data_dir.starts_with(&resolved) {
            return Err(NotAllowed(format!(
                "hostPath {shown} is not allowed: it overlaps the node agent's data directory \
                 {}, which pods may never mount (its keys, store and compiled code)",
                self.data_dir.display()
            )));
        }
        let root = DirHandle::open(&allowed.prefix).map_err(|e| {
            SetUp(format!(
                "hostPath {shown}: cannot open {}: {e}",
                allowed.prefix.display()
            ))
        })?;
        let rel = resolved
            .strip_prefix(&allowed.prefix)
            .unwrap_or(Path::new(""));
        let dir = if rel.as_os_str().is_empty() {
            root
        } else {
            // The path was just resolved without symlinks: any symlink now is a swap.
            root.open_beneath(rel, create.then_some(0o755), true)
                .map_err(|e| match e {
                    BeneathError::NotFound => SetUp(format!(
                        "hostPath {shown} is not an existing directory (use type \
                         DirectoryOrCreate to create it)"
                    )),
                    BeneathError::Escapes | BeneathError::Symlink => NotAllowed(format!(
                        "hostPath {shown} changed into a symlink while it was checked; \
                         it is not mounted"
                    )),
                    e => SetUp(format!("hostPath {shown}: {e}")),
                })?
        };
        Ok(GrantedHostPath {
            dir,
            read_only: allowed.read_only,
        })
    }
}

/// `path` with symlinks resolved: the longest existing ancestor canonicalized, the missing
/// rest appended as it is (plain names only, checked by the caller).
fn resolve_existing(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut canonical) => {
                for name in missing.iter().rev() {
                    canonical.push(name);
                }
                return Ok(canonical);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name().map(ToOwned::to_owned) else {
                    return Err(e);
                };
                missing.push(name);
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn canonical_or_absolute(path: &Path) -> PathBuf {
    let _ = std::fs::create_dir_all(path);
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    struct Node {
        _dir: tempfile::TempDir,
        root: PathBuf,
        data: PathBuf,
        srv: PathBuf,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical");
        let data = root.join("data");
        let srv = root.join("srv");
        fs::create_dir_all(data.join("pki")).expect("mkdir");
        fs::create_dir_all(srv.join("shared")).expect("mkdir");
        Node {
            _dir: dir,
            root,
            data,
            srv,
        }
    }

    fn allow(path: &Path, ro: bool) -> AllowedHostPath {
        AllowedHostPath {
            prefix: path.to_path_buf(),
            read_only: ro,
        }
    }

    #[test]
    fn flags_parse_with_an_optional_read_only_suffix() {
        assert_eq!(
            "/srv/data:ro".parse::<AllowedHostPath>(),
            Ok(allow(Path::new("/srv/data"), true))
        );
        assert_eq!(
            "/srv/data".parse::<AllowedHostPath>(),
            Ok(allow(Path::new("/srv/data"), false))
        );
        assert!("srv".parse::<AllowedHostPath>().is_err());
    }

    #[test]
    fn by_default_no_host_path_is_allowed_and_the_message_names_the_flag() {
        let n = node();
        let policy = HostPathPolicy::new(&[], &n.data).expect("policy");
        let err = policy
            .open(&n.srv.display().to_string(), false)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("--allowed-host-path"), "{err}");
        assert!(err.contains("it allows none"), "{err}");
    }

    #[test]
    fn the_data_directory_its_ancestors_and_descendants_are_never_mounted() {
        let n = node();
        let policy = HostPathPolicy::new(&[allow(&n.root, false)], &n.data).expect("policy");
        for path in [n.data.clone(), n.data.join("pki"), n.root.clone()] {
            let err = policy
                .open(&path.display().to_string(), false)
                .expect_err("refused")
                .to_string();
            assert!(err.contains("data directory"), "{err}");
        }
        // Through a symlink too.
        symlink(n.data.join("pki"), n.srv.join("keys")).expect("symlink");
        let err = policy
            .open(&n.srv.join("keys").display().to_string(), false)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("resolved to"), "{err}");
        assert!(err.contains("data directory"), "{err}");
        assert!(HostPathPolicy::new(&[allow(&n.data.join("pki"), false)], &n.data).is_err());
    }

    #[test]
    fn paths_under_an_allowed_prefix_open_and_links_out_of_it_are_judged_by_their_target() {
        let n = node();
        let policy = HostPathPolicy::new(&[allow(&n.srv, false)], &n.data).expect("policy");
        let granted = policy
            .open(&n.srv.join("shared").display().to_string(), false)
            .expect("allowed");
        assert!(!granted.read_only);
        symlink("/etc", n.srv.join("etc")).expect("symlink");
        let err = policy
            .open(&n.srv.join("etc").display().to_string(), false)
            .expect_err("a link out")
            .to_string();
        assert!(err.contains("resolved to /etc"), "{err}");
        assert!(
            policy
                .open(&format!("{}/../data", n.srv.display()), false)
                .is_err()
        );
        let made = n.srv.join("new/dir");
        policy
            .open(&made.display().to_string(), true)
            .expect("DirectoryOrCreate");
        assert!(made.is_dir());
        let err = policy
            .open(&n.srv.join("absent").display().to_string(), false)
            .expect_err("missing");
        assert!(matches!(err, HostPathError::SetUp(_)), "{err}");
        assert!(err.to_string().contains("DirectoryOrCreate"), "{err}");
    }

    #[test]
    fn a_read_only_prefix_makes_its_mounts_read_only() {
        let n = node();
        let policy = HostPathPolicy::new(
            &[allow(&n.srv, false), allow(&n.srv.join("shared"), true)],
            &n.data,
        )
        .expect("policy");
        assert!(
            policy
                .open(&n.srv.join("shared").display().to_string(), false)
                .expect("allowed")
                .read_only
        );
        assert!(
            !policy
                .open(&n.srv.display().to_string(), false)
                .expect("allowed")
                .read_only
        );
    }
}
